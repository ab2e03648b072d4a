//! ggml's reference quantisers (`quantize_row_*_ref` in `ggml-quants.c`),
//! transcribed expression by expression so the bytes are llama-quantize's.
//!
//! Every float operation keeps C's order and types (`f32` throughout, no
//! fused multiply-adds: ggml-base is built without FMA), `nearest_int` is
//! the same magic-number rounding, and C's float-to-int conversions are
//! Rust's `as` casts over the same (in-range) values. What these functions
//! produce is checked file by file against llama-quantize's SHA-256 in the
//! `quantize` tests.
//!
//! Each function appends the blocks of one row (`x.len()` a multiple of
//! the type's block size, checked by the caller) to `out`.

use half::f16;

/// f32 → f16 bits, round to nearest even (ggml's `GGML_FP32_TO_FP16`).
#[inline]
fn fp16(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// f16 bits → f32 (ggml's `GGML_FP16_TO_FP32`).
#[inline]
fn fp32(h: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(h)).to_f32()
}

/// ggml's `nearest_int`: round to nearest (ties to even) through the
/// mantissa of `x + 1.5·2²³`; defined for |x| ≤ 4 194 303.
#[inline(always)]
fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The value of largest magnitude in `x` (the first one on ties), as
/// Q4_0 / Q5_0 pick it.
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Q4_0: `d = max / -8`, nibble `min(15, x/d + 8.5)`.
pub fn q4_0(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(32) {
        let d = signed_absmax(b) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&fp16(d));
        for j in 0..16 {
            let x0 = ((b[j] * id + 8.5) as i8).min(15) as u8;
            let x1 = ((b[j + 16] * id + 8.5) as i8).min(15) as u8;
            out.push(x0 | (x1 << 4));
        }
    }
}

/// Q4_1: `d = (max - min) / 15`, `m = min`, nibble `min(15, (x-m)/d + ½)`.
pub fn q4_1(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(32) {
        let (min, max) = min_max(b);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&fp16(d));
        out.extend_from_slice(&fp16(min));
        for j in 0..16 {
            let x0 = (((b[j] - min) * id + 0.5) as i8).min(15) as u8;
            let x1 = (((b[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            out.push(x0 | (x1 << 4));
        }
    }
}

/// Appends a Q5 block's high-bit word and nibbles.
fn push_q5(v: &[u8; 32], out: &mut Vec<u8>) {
    let mut qh = 0u32;
    for j in 0..16 {
        qh |= u32::from((v[j] & 0x10) >> 4) << j;
        qh |= u32::from((v[j + 16] & 0x10) >> 4) << (j + 16);
    }
    out.extend_from_slice(&qh.to_le_bytes());
    for j in 0..16 {
        out.push((v[j] & 0x0f) | ((v[j + 16] & 0x0f) << 4));
    }
}

/// Q5_0: `d = max / -16`, value `min(31, x/d + 16.5)`.
pub fn q5_0(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(32) {
        let d = signed_absmax(b) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&fp16(d));
        let mut v = [0u8; 32];
        for (v, &x) in v.iter_mut().zip(b) {
            *v = ((x * id + 16.5) as i8).min(31) as u8;
        }
        push_q5(&v, out);
    }
}

/// Q5_1: `d = (max - min) / 31`, `m = min`, value `(x-m)/d + ½`.
pub fn q5_1(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(32) {
        let (min, max) = min_max(b);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&fp16(d));
        out.extend_from_slice(&fp16(min));
        let mut v = [0u8; 32];
        for (v, &x) in v.iter_mut().zip(b) {
            *v = ((x - min) * id + 0.5) as u8;
        }
        push_q5(&v, out);
    }
}

/// Q8_0: `d = amax / 127`, value `round(x/d)` (half away from zero).
pub fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&fp16(d));
        for &v in b {
            out.push((v * id).round() as i8 as u8);
        }
    }
}

/// ggml's `make_qkx2_quants`: the scale and minimum of a 32-value
/// sub-block (`L` in `0..=nmax`), searched over `nstep + 1` scales.
/// Returns `(scale, -min)`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32; 32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * f32::from(l_out[i]) + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * f32::from(laux[i]) + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The shared first half of Q4_K / Q5_K: per-sub-block scales and
/// minimums packed into 6 bits, the super-block's `d` / `dmin`, and the
/// final levels `L` (`0..=nmax`). Returns the 16 header bytes.
fn k_scales(x: &[f32], nmax: i32, rmin: f32, nstep: i32, l: &mut [u8; 256]) -> [u8; 16] {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0f32; 32];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; 12];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let d = fp16(max_scale / 63.0);
    let dmin = fp16(max_min / 63.0);
    for j in 0..8 {
        let (s, m) = crate::gguf::kquant::scale_min_k4(j, &sc);
        let dj = fp32(d) * f32::from(s);
        if dj == 0.0 {
            continue;
        }
        let dm = fp32(dmin) * f32::from(m);
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax);
            l[32 * j + ii] = q as u8;
        }
    }
    let mut head = [0u8; 16];
    head[..2].copy_from_slice(&d);
    head[2..4].copy_from_slice(&dmin);
    head[4..].copy_from_slice(&sc);
    head
}

/// Q4_K: 8 sub-blocks of 32 with 6-bit scales and minimums.
pub fn q4_k(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(256) {
        let mut l = [0u8; 256];
        out.extend_from_slice(&k_scales(b, 15, -1.0, 20, &mut l));
        for j in (0..256).step_by(64) {
            for i in 0..32 {
                out.push(l[j + i] | (l[j + i + 32] << 4));
            }
        }
    }
}

/// Q5_K: as Q4_K with a fifth bit per weight.
pub fn q5_k(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(256) {
        let mut l = [0u8; 256];
        out.extend_from_slice(&k_scales(b, 31, -0.5, 15, &mut l));
        let mut qh = [0u8; 32];
        let mut ql = [0u8; 128];
        let (mut m1, mut m2) = (1u8, 2u8);
        for (c, n) in (0..256).step_by(64).enumerate() {
            for j in 0..32 {
                let mut l1 = l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[32 * c + j] = l1 | (l2 << 4);
            }
            m1 = m1.wrapping_shl(2);
            m2 = m2.wrapping_shl(2);
        }
        out.extend_from_slice(&qh);
        out.extend_from_slice(&ql);
    }
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance
/// weights (what Q6_K uses): the scale of a 16-value group, levels
/// `0..2·nmax` in `l_out`.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [u8]) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l_out[..n].fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let l = level(iscale, x[i]);
        l_out[i] = (l + nmax) as u8;
        let (w, l) = (x[i] * x[i], l as f32);
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let (w, l) = (v * v, level(iscale, v) as f32);
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                l_out[i] = (level(iscale, x[i]) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q6_K: 16 groups of 16 with signed 8-bit scales, 6-bit levels.
pub fn q6_k(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(256) {
        let mut l = [0u8; 256];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..16 {
            let s = make_qx_quants(32, &b[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < 1e-15 {
            out.extend_from_slice(&[0u8; 210]);
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d = fp16(1.0 / iscale);
        let mut sc = [0i8; 16];
        for (s, &v) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v).min(127) as i8;
        }
        for j in 0..16 {
            let dj = fp32(d) * f32::from(sc[j]);
            if dj == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(b[16 * j + ii] / dj).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as u8;
            }
        }
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for (h, j) in (0..256).step_by(128).enumerate() {
            for i in 0..32 {
                let (q1, q2, q3, q4) = (l[j + i], l[j + i + 32], l[j + i + 64], l[j + i + 96]);
                ql[64 * h + i] = (q1 & 0xf) | ((q3 & 0xf) << 4);
                ql[64 * h + i + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
                qh[32 * h + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend_from_slice(&d);
    }
}

/// Deterministic pseudo-random values in `±scale/2` (an LCG), for the
/// quantisation and kernel tests.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::kquant;
    use crate::gguf::quant;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        super::test_values(n, seed, 0.2)
    }

    fn rms(a: &[f32], b: &[f32]) -> f32 {
        let s: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        (s / a.len() as f32).sqrt()
    }

    /// Each quantiser's blocks decode (with the independent dequantisers)
    /// to values near the input: the coarser the type, the larger the
    /// error, and none is garbage. Bit-exactness against ggml is the
    /// `quantize` integration test's job (llama-quantize's SHA-256).
    #[test]
    fn every_type_round_trips_within_its_precision() {
        let x = values(1024, 7);
        let mut y = vec![0f32; x.len()];
        let mut errs = Vec::new();
        for (name, f) in [
            ("q4_0", q4_0 as fn(&[f32], &mut Vec<u8>)),
            ("q4_1", q4_1),
            ("q5_0", q5_0),
            ("q5_1", q5_1),
            ("q8_0", q8_0),
            ("q4_k", q4_k),
            ("q5_k", q5_k),
            ("q6_k", q6_k),
        ] {
            let mut out = Vec::new();
            f(&x, &mut out);
            match name {
                "q4_0" => quant::dequantize_q4_0(out.as_chunks().0, &mut y),
                "q4_1" => quant::dequantize_q4_1(out.as_chunks().0, &mut y),
                "q5_0" => kquant::dequantize_q5_0(out.as_chunks().0, &mut y),
                "q5_1" => kquant::dequantize_q5_1(out.as_chunks().0, &mut y),
                "q8_0" => quant::dequantize_q8_0(out.as_chunks().0, &mut y),
                "q4_k" => kquant::dequantize_q4_k(out.as_chunks().0, &mut y),
                "q5_k" => kquant::dequantize_q5_k(out.as_chunks().0, &mut y),
                _ => kquant::dequantize_q6_k(out.as_chunks().0, &mut y),
            }
            .unwrap();
            errs.push((name, rms(&x, &y)));
        }
        let e = |n: &str| errs.iter().find(|(k, _)| *k == n).unwrap().1;
        // Uniform values in ±0.1: a 4-bit grid step is ≈ 0.013.
        for (n, v) in &errs {
            assert!(*v < 0.006, "{n}: rms {v}");
        }
        assert!(e("q8_0") < e("q6_k") && e("q6_k") < e("q5_k") && e("q5_k") < e("q4_k"));
        assert!(e("q5_0") < e("q4_0") && e("q5_1") < e("q4_1"));
    }

    #[test]
    fn zero_rows_quantise_to_zero_weights() {
        let x = vec![0f32; 256];
        let mut y = vec![1f32; 256];
        let mut out = Vec::new();
        q6_k(&x, &mut out);
        kquant::dequantize_q6_k(out.as_chunks().0, &mut y).unwrap();
        assert!(y.iter().all(|v| *v == 0.0));
        out.clear();
        q4_k(&x, &mut out);
        kquant::dequantize_q4_k(out.as_chunks().0, &mut y).unwrap();
        assert!(y.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.4), 0);
        assert_eq!(nearest_int(62.6), 63);
    }
}
