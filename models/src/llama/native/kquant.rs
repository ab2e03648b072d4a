//! K-quant matmuls as ggml's x86 CPU backend computes them: Q8_K
//! activations, Q6_K × Q8_K (`ggml_vec_dot_q6_K_q8_K`, AVX2) and Q4_K ×
//! Q8_K through the repacked 8×8 kernels (`ggml_gemv_q4_K_8x8_q8_K` for
//! single rows, `ggml_gemm_q4_K_8x8_q8_K` for groups of four), which is
//! what llama.cpp runs for Q4_K on any AVX2 CPU.
//!
//! What fixes the bits (every integer sum below is exact, so only the
//! float steps matter):
//! - Q8_K: per 256 values `d = 1/iscale`, `iscale = ∓127/max|x|`, values
//!   `round_half_even(x·iscale)`, 16 sums of 16. The reference rule takes
//!   the sign of the first value of largest magnitude; the 4-row repack
//!   quantiser (`ggml_quantize_mat_q8_K_4x8`, used for rows in whole groups
//!   of four feeding Q4_K) takes `-127` whenever that magnitude occurs as a
//!   positive value. They differ only when `+a` and `-a` both occur.
//! - Q6_K in batches of 8 rows or more goes through ggml's tiled K-quant
//!   matmul instead: see [`q6_k_dot_tiled`].
//! - Q6_K otherwise: eight i32 lanes per super-block — lane `l` sums, over the eight
//!   32-value chunks, the products at positions `4l..4l+3` times their
//!   group scale, minus `32·(bsum[2l]·s[2l] + bsum[2l+1]·s[2l+1])` — each
//!   converted to f32 and accumulated `acc[l] = fma(d_x·d_w, lane, acc[l])`,
//!   reduced at the end as `hsum_float_8`.
//! - Q4_K, one row (gemv): per super-block one integer `Σ sc_j·dot_j` and
//!   one `Σ m_j·bsum32_j`, each accumulated with one FMA (scales
//!   `d_w·d_x`, `dmin_w·d_x`); the result is `acc − acc_min`.
//! - Q4_K, rows in groups of four (gemm): the same, but one FMA per pair
//!   of sub-blocks (64 values), four per super-block.

use crate::gguf::kquant::{QK_K, scale_min_k4};
use crate::gguf::quant::f16_to_f32;

/// Bytes of one Q4_K super-block.
pub(super) const Q4K_BYTES: usize = 144;
/// Bytes of one Q6_K super-block.
pub(super) const Q6K_BYTES: usize = 210;

/// Rows of activations as Q8_K blocks.
///
/// Exists because K-quant weights multiply 256-value activation blocks
/// with an exact f32 scale and per-16 sums, not Q8_0's 32-value blocks.
#[derive(Clone, Debug)]
pub struct Q8KRows {
    q: Vec<[i8; QK_K]>,
    d: Vec<f32>,
    bsums: Vec<[i32; 16]>,
    cols: usize,
}

/// One activation row of Q8_K blocks.
#[derive(Clone, Copy)]
pub(super) struct KRow<'a> {
    pub q: &'a [[i8; QK_K]],
    pub d: &'a [f32],
    pub bsums: &'a [[i32; 16]],
}

fast_fn! {
    /// Quantises one 256-value block (see the module docs for `group4`).
    fn quantize_block(x: &[f32; QK_K], group4: bool, q: &mut [i8; QK_K], bsums: &mut [i32; 16]) -> f32 {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            q.fill(0);
            bsums.fill(0);
            return 0.0;
        }
        let iscale = if group4 {
            if x.contains(&amax) { -127.0 / amax } else { 127.0 / amax }
        } else {
            -127.0 / max
        };
        for (o, &v) in q.iter_mut().zip(x) {
            *o = (iscale * v).round_ties_even().clamp(-128.0, 127.0) as i8;
        }
        for (s, c) in bsums.iter_mut().zip(q.chunks_exact(16)) {
            *s = c.iter().map(|&v| i32::from(v)).sum();
        }
        1.0 / iscale
    }
}

impl Q8KRows {
    /// Quantises `x` (`rows × cols`, `cols` a multiple of 256, checked by
    /// the caller). With `repack_groups`, rows in whole groups of four
    /// take the 4-row quantiser's sign rule (what feeds repacked Q4_K);
    /// the last `rows % 4` rows, and every row otherwise, the reference one.
    pub fn quantize(x: &[f32], cols: usize, repack_groups: bool) -> Self {
        use rayon::prelude::*;
        let rows = x.len() / cols.max(1);
        let grouped = if repack_groups { rows - rows % 4 } else { 0 };
        let per_row = cols / QK_K;
        let n = rows * per_row;
        let mut q = vec![[0i8; QK_K]; n];
        let mut d = vec![0f32; n];
        let mut bsums = vec![[0i32; 16]; n];
        let (xb, _) = x[..n * QK_K].as_chunks::<QK_K>();
        q.par_iter_mut()
            .zip(d.par_iter_mut())
            .zip(bsums.par_iter_mut())
            .enumerate()
            .for_each(|(b, ((q, d), s))| {
                *d = quantize_block(&xb[b], b / per_row.max(1) < grouped, q, s);
            });
        Self { q, d, bsums, cols }
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        (self.q.len() * QK_K).checked_div(self.cols).unwrap_or(0)
    }

    /// Row `j` (below [`Self::rows`]).
    pub(super) fn row(&self, j: usize) -> KRow<'_> {
        let nb = self.cols / QK_K;
        let a = j * nb..(j + 1) * nb;
        KRow {
            q: &self.q[a.clone()],
            d: &self.d[a.clone()],
            bsums: &self.bsums[a],
        }
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// ggml's `hsum_float_8`.
#[inline(always)]
fn hsum8(a: [f32; 8]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

fast_fn! {
    /// One Q6_K weight row against one Q8_K activation row.
    pub(super) fn q6_k_dot(w: &[[u8; Q6K_BYTES]], x: KRow<'_>) -> f32 {
        let mut acc = [0f32; 8];
        for (b, blk) in w.iter().enumerate() {
            let d = x.d[b] * f16_at(blk, 208);
            let sc: [i32; 16] = core::array::from_fn(|i| i32::from(blk[192 + i] as i8));
            let q8 = &x.q[b];
            let mut lanes = [0i32; 8];
            for h in 0..2 {
                let ql = &blk[64 * h..64 * h + 64];
                let qh = &blk[128 + 32 * h..128 + 32 * h + 32];
                for l in 0..32 {
                    let vals = [
                        i32::from((ql[l] & 0xf) | ((qh[l] & 3) << 4)),
                        i32::from((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)),
                        i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)),
                        i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)),
                    ];
                    for (k, v) in vals.into_iter().enumerate() {
                        let e = 128 * h + 32 * k + l;
                        lanes[l / 4] += sc[e / 16] * v * i32::from(q8[e]);
                    }
                }
            }
            let bs = &x.bsums[b];
            for (l, lane) in lanes.iter_mut().enumerate() {
                *lane -= (bs[2 * l] * sc[2 * l] + bs[2 * l + 1] * sc[2 * l + 1]) << 5;
            }
            for (a, &lane) in acc.iter_mut().zip(&lanes) {
                *a = d.mul_add(lane as f32, *a);
            }
        }
        hsum8(acc)
    }
}

fast_fn! {
    /// One Q6_K weight row against one Q8_K activation row as ggml's
    /// tiled K-quant matmul computes it (`ggml-cpu/tiled`, taken for
    /// batches of 8 rows or more): per super-block the exact integer
    /// `Σ s_g·Σ (q−32)·q8`, scaled `d_w·s1`, then `acc = fma(·, d_x, acc)`.
    pub(super) fn q6_k_dot_tiled(w: &[[u8; Q6K_BYTES]], x: KRow<'_>) -> f32 {
        let mut acc = 0f32;
        for (b, blk) in w.iter().enumerate() {
            let q8 = &x.q[b];
            let mut s1 = 0i32;
            for h in 0..2 {
                let ql = &blk[64 * h..64 * h + 64];
                let qh = &blk[128 + 32 * h..128 + 32 * h + 32];
                for l in 0..32 {
                    let vals = [
                        (ql[l] & 0xf) | ((qh[l] & 3) << 4),
                        (ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4),
                        (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                        (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                    ];
                    for (k, v) in vals.into_iter().enumerate() {
                        let e = 128 * h + 32 * k + l;
                        let sc = i32::from(blk[192 + e / 16] as i8);
                        s1 += sc * (i32::from(v) - 32) * i32::from(q8[e]);
                    }
                }
            }
            let res = f16_at(blk, 208) * s1 as f32;
            acc = res.mul_add(x.d[b], acc);
        }
        acc
    }
}

fast_fn! {
    /// One Q4_K weight row against one Q8_K activation row: the gemv rule
    /// (`pairs == false`, one FMA per super-block) or the gemm rule
    /// (`pairs == true`, one per 64 values).
    pub(super) fn q4_k_dot(w: &[[u8; Q4K_BYTES]], x: KRow<'_>, pairs: bool) -> f32 {
        let (mut acc, mut acc_min) = (0f32, 0f32);
        for (b, blk) in w.iter().enumerate() {
            let dx = x.d[b];
            let scale = f16_at(blk, 0) * dx;
            let dmin = f16_at(blk, 2) * dx;
            let (sc, mins) = k_scales(blk);
            let qs = &blk[16..];
            let q8 = &x.q[b];
            let bs = &x.bsums[b];
            let (mut isum, mut imin) = (0i32, 0i32);
            for c in 0..4 {
                let (s0, m0) = (sc[2 * c], mins[2 * c]);
                let (s1, m1) = (sc[2 * c + 1], mins[2 * c + 1]);
                let (mut d0, mut d1) = (0i32, 0i32);
                for i in 0..32 {
                    let byte = qs[32 * c + i];
                    d0 += i32::from(byte & 0xf) * i32::from(q8[64 * c + i]);
                    d1 += i32::from(byte >> 4) * i32::from(q8[64 * c + 32 + i]);
                }
                let sum = s0 * d0 + s1 * d1;
                let min_sum = m0 * (bs[4 * c] + bs[4 * c + 1]) + m1 * (bs[4 * c + 2] + bs[4 * c + 3]);
                if pairs {
                    acc = scale.mul_add(sum as f32, acc);
                    acc_min = dmin.mul_add(min_sum as f32, acc_min);
                } else {
                    isum += sum;
                    imin += min_sum;
                }
            }
            if !pairs {
                acc = scale.mul_add(isum as f32, acc);
                acc_min = dmin.mul_add(imin as f32, acc_min);
            }
        }
        acc - acc_min
    }
}

fast_fn! {
    /// One Q5_K weight row against one Q8_K activation row as
    /// `ggml_vec_dot_q5_K_q8_K` (AVX2) computes it: eight lanes of
    /// `Σ sc_s·q·q8` over positions `4l..4l+3` of each 32-value sub-block,
    /// `acc[l] = fma(d_x·d_w, lane, acc[l])`, plus the minimums' term
    /// `summs = fma(−d_x·dmin_w, Σ m_s·bsum32_s, summs)`; the result is
    /// `hsum_float_8(acc) + summs`.
    pub(super) fn q5_k_dot(w: &[[u8; Q5K_BYTES]], x: KRow<'_>) -> f32 {
        let mut acc = [0f32; 8];
        let mut summs = 0f32;
        for (b, blk) in w.iter().enumerate() {
            let d = x.d[b] * f16_at(blk, 0);
            let dmin = -x.d[b] * f16_at(blk, 2);
            let (sc, mins) = k_scales(blk);
            let bs = &x.bsums[b];
            let mut imin = 0i32;
            for s in 0..8 {
                imin += mins[s] * (bs[2 * s] + bs[2 * s + 1]);
            }
            summs = dmin.mul_add(imin as f32, summs);
            let q = q5_values(blk);
            let q8 = &x.q[b];
            let mut lanes = [0i32; 8];
            for (s, &scale) in sc.iter().enumerate() {
                for e in 0..32 {
                    let i = 32 * s + e;
                    lanes[e / 4] += scale * i32::from(q[i]) * i32::from(q8[i]);
                }
            }
            for (a, &lane) in acc.iter_mut().zip(&lanes) {
                *a = d.mul_add(lane as f32, *a);
            }
        }
        hsum8(acc) + summs
    }
}

fast_fn! {
    /// One Q5_K weight row against one Q8_K activation row by ggml's
    /// tiled K-quant rule (batches of 8 or more): per super-block
    /// `res = fma(−dmin_w, Σ m_s·bsum32_s, d_w·Σ sc_s·q·q8)`, then
    /// `acc = fma(res, d_x, acc)`.
    pub(super) fn q5_k_dot_tiled(w: &[[u8; Q5K_BYTES]], x: KRow<'_>) -> f32 {
        let mut acc = 0f32;
        for (b, blk) in w.iter().enumerate() {
            let (sc, mins) = k_scales(blk);
            let q = q5_values(blk);
            let q8 = &x.q[b];
            let bs = &x.bsums[b];
            let (mut s1, mut s2) = (0i32, 0i32);
            for s in 0..8 {
                let mut dot = 0i32;
                for e in 32 * s..32 * s + 32 {
                    dot += i32::from(q[e]) * i32::from(q8[e]);
                }
                s1 += sc[s] * dot;
                s2 += mins[s] * (bs[2 * s] + bs[2 * s + 1]);
            }
            let res = (-f16_at(blk, 2)).mul_add(s2 as f32, f16_at(blk, 0) * s1 as f32);
            acc = res.mul_add(x.d[b], acc);
        }
        acc
    }
}

/// The eight 6-bit scales and minimums of a Q4_K / Q5_K super-block.
#[inline(always)]
fn k_scales(blk: &[u8]) -> ([i32; 8], [i32; 8]) {
    let mut sc12 = [0u8; 12];
    sc12.copy_from_slice(&blk[4..16]);
    let mut sc = [0i32; 8];
    let mut mins = [0i32; 8];
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &sc12);
        sc[j] = i32::from(s);
        mins[j] = i32::from(m);
    }
    (sc, mins)
}

/// The 256 five-bit values of a Q5_K super-block, in element order.
#[inline(always)]
fn q5_values(blk: &[u8]) -> [u8; QK_K] {
    let qh = &blk[16..48];
    let ql = &blk[48..176];
    let mut v = [0u8; QK_K];
    for c in 0..4 {
        for l in 0..32 {
            let lo = ql[32 * c + l];
            v[64 * c + l] = (lo & 0xf) | (((qh[l] >> (2 * c)) & 1) << 4);
            v[64 * c + 32 + l] = (lo >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
        }
    }
    v
}

/// Bytes of one Q5_K super-block.
pub(super) const Q5K_BYTES: usize = 176;

/// The number of Q4_K / Q6_K super-blocks in a row of `cols` values.
pub(super) fn blocks_per_row(cols: usize) -> usize {
    cols / QK_K
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        crate::quantize::rows::test_values(n, seed, 3.0)
    }

    #[test]
    fn q8_k_rows_keep_the_values_and_sums() {
        let x = values(512, 3);
        let r = Q8KRows::quantize(&x, 512, false);
        assert_eq!((r.rows(), r.cols()), (1, 512));
        for b in 0..2 {
            for i in 0..QK_K {
                let back = f32::from(r.q[b][i]) * r.d[b];
                assert!((back - x[b * QK_K + i]).abs() <= r.d[b].abs() * 0.5 + 1e-6);
            }
            for k in 0..16 {
                let s: i32 = r.q[b][16 * k..16 * k + 16]
                    .iter()
                    .map(|&v| i32::from(v))
                    .sum();
                assert_eq!(r.bsums[b][k], s);
            }
        }
    }

    /// `Σ w·x` over the dequantised weights and activations, in f64.
    fn reference(w: &[f32], x: &Q8KRows) -> f64 {
        let r = x.row(0);
        let mut sum = 0f64;
        for (b, q) in r.q.iter().enumerate() {
            for (i, &v) in q.iter().enumerate() {
                sum += f64::from(w[b * QK_K + i]) * f64::from(v) * f64::from(r.d[b]);
            }
        }
        sum
    }

    #[test]
    fn k_quant_dots_match_the_dequantised_product_by_every_rule() {
        use crate::gguf::kquant as file_k;
        let cols = 4 * QK_K;
        let w = values(cols, 17);
        let x = Q8KRows::quantize(&values(cols, 23), cols, false);
        let mut back = vec![0f32; cols];

        let mut q4 = Vec::new();
        crate::quantize::rows::q4_k(&w, &mut q4);
        file_k::dequantize_q4_k(q4.as_chunks().0, &mut back).unwrap();
        let want = reference(&back, &x);
        let (blocks, _) = q4.as_chunks::<Q4K_BYTES>();
        for pairs in [false, true] {
            let got = q4_k_dot(blocks, x.row(0), pairs);
            assert!(
                (f64::from(got) - want).abs() < 1e-3 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }

        let mut q6 = Vec::new();
        crate::quantize::rows::q6_k(&w, &mut q6);
        file_k::dequantize_q6_k(q6.as_chunks().0, &mut back).unwrap();
        let want = reference(&back, &x);
        let (blocks, _) = q6.as_chunks::<Q6K_BYTES>();
        for got in [q6_k_dot(blocks, x.row(0)), q6_k_dot_tiled(blocks, x.row(0))] {
            assert!(
                (f64::from(got) - want).abs() < 1e-3 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn the_two_sign_rules_differ_only_on_a_tie_of_signs() {
        let mut x = values(256, 9);
        let ref_rule = Q8KRows::quantize(&x, 256, false);
        let grouped = Q8KRows::quantize(&x.repeat(4), 256, true);
        assert_eq!(ref_rule.q[0], grouped.q[0]);
        assert_eq!(ref_rule.d[0], grouped.d[0]);
        // -a first, then +a: the reference rule takes the first (negative)
        // one, the repack rule the positive one.
        x[0] = -9.0;
        x[1] = 9.0;
        let ref_rule = Q8KRows::quantize(&x, 256, false);
        let grouped = Q8KRows::quantize(&x.repeat(4), 256, true);
        assert_eq!(ref_rule.d[0], -grouped.d[0]);
        assert_eq!(ref_rule.q[0][5], -grouped.q[0][5]);
    }
}
