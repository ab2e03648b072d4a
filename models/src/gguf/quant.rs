//! ggml block formats: dequantisation to f32 and quantised dot products.
//!
//! Blocks are handed out as fixed-size byte arrays cut from the mapped file
//! with `<[u8]>::as_chunks`, so the hot loops index constant-size arrays and
//! carry no bounds checks. Layouts (all little-endian, 32 weights a block):
//!
//! | type | bytes | layout | weight `i` |
//! |------|-------|--------|------------|
//! | Q4_0 | 18 | f16 `d`, 16 B nibbles | `(q_i - 8)·d` |
//! | Q4_1 | 20 | f16 `d`, f16 `m`, 16 B nibbles | `q_i·d + m` |
//! | Q8_0 | 34 | f16 `d`, 32 × i8 | `q_i·d` |
//!
//! In the nibble formats byte `j` holds weight `j` in its low nibble and
//! weight `j + 16` in its high nibble.

use super::error::GgufError;

/// Weights per Q4_0/Q4_1/Q8_0 block.
pub const QK: usize = 32;
/// Bytes per Q4_0 block.
pub const Q4_0_BYTES: usize = 18;
/// Bytes per Q4_1 block.
pub const Q4_1_BYTES: usize = 20;
/// Bytes per Q8_0 block.
pub const Q8_0_BYTES: usize = 34;

/// One Q4_0 block: f16 scale, 16 bytes of nibbles.
pub type BlockQ4_0 = [u8; Q4_0_BYTES];
/// One Q4_1 block: f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles.
pub type BlockQ4_1 = [u8; Q4_1_BYTES];
/// One Q8_0 block: f16 scale, 32 signed bytes.
pub type BlockQ8_0 = [u8; Q8_0_BYTES];

/// Converts IEEE 754 half-precision bits to f32, exactly (every f16 is
/// representable as f32), including subnormals, infinities and NaN.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x03ff);
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // Subnormal: man · 2^-24, exact in f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            sign | v.to_bits()
        }
        0x1f => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

#[inline(always)]
pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

pub(super) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), GgufError> {
    if expected == got {
        Ok(())
    } else {
        Err(GgufError::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}

/// Dequantises Q4_1 blocks into `out` (`out.len()` must be `32 × blocks`).
pub fn dequantize_q4_1(blocks: &[BlockQ4_1], out: &mut [f32]) -> Result<(), GgufError> {
    check_len("dequantize_q4_1 output", blocks.len() * QK, out.len())?;
    let (chunks, _) = out.as_chunks_mut::<QK>();
    for (b, o) in blocks.iter().zip(chunks) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let (lo, hi) = o.split_at_mut(16);
        for j in 0..16 {
            let q = b[4 + j];
            lo[j] = f32::from(q & 0x0f) * d + m;
            hi[j] = f32::from(q >> 4) * d + m;
        }
    }
    Ok(())
}

/// Dequantises Q4_0 blocks into `out` (`out.len()` must be `32 × blocks`).
pub fn dequantize_q4_0(blocks: &[BlockQ4_0], out: &mut [f32]) -> Result<(), GgufError> {
    check_len("dequantize_q4_0 output", blocks.len() * QK, out.len())?;
    let (chunks, _) = out.as_chunks_mut::<QK>();
    for (b, o) in blocks.iter().zip(chunks) {
        let d = f16_at(b, 0);
        let (lo, hi) = o.split_at_mut(16);
        for j in 0..16 {
            let q = b[2 + j];
            lo[j] = (f32::from(q & 0x0f) - 8.0) * d;
            hi[j] = (f32::from(q >> 4) - 8.0) * d;
        }
    }
    Ok(())
}

/// Dequantises Q8_0 blocks into `out` (`out.len()` must be `32 × blocks`).
pub fn dequantize_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) -> Result<(), GgufError> {
    check_len("dequantize_q8_0 output", blocks.len() * QK, out.len())?;
    let (chunks, _) = out.as_chunks_mut::<QK>();
    for (b, o) in blocks.iter().zip(chunks) {
        let d = f16_at(b, 0);
        for j in 0..QK {
            o[j] = f32::from(b[2 + j] as i8) * d;
        }
    }
    Ok(())
}

/// Converts little-endian f16 values into `out` (same length).
pub fn dequantize_f16(values: &[[u8; 2]], out: &mut [f32]) -> Result<(), GgufError> {
    check_len("dequantize_f16 output", values.len(), out.len())?;
    for (v, o) in values.iter().zip(out.iter_mut()) {
        *o = f16_to_f32(u16::from_le_bytes(*v));
    }
    Ok(())
}

/// Converts little-endian f32 bytes into `out` (same length); the copying
/// path for buffers not aligned for a zero-copy view.
pub fn dequantize_f32(values: &[[u8; 4]], out: &mut [f32]) -> Result<(), GgufError> {
    check_len("dequantize_f32 output", values.len(), out.len())?;
    for (v, o) in values.iter().zip(out.iter_mut()) {
        *o = f32::from_le_bytes(*v);
    }
    Ok(())
}

/// `Σ w_i · x_i` for one row of Q4_1 blocks against f32 activations, without
/// dequantising the row (`x.len()` must be `32 × blocks`).
///
/// The building block of a Q4_1 GEMV: per block it computes
/// `d · Σ q_i x_i + m · Σ x_i` in 16 independent lanes that the compiler
/// vectorises.
pub fn dot_q4_1_f32(blocks: &[BlockQ4_1], x: &[f32]) -> Result<f32, GgufError> {
    check_len("dot_q4_1_f32 activations", blocks.len() * QK, x.len())?;
    let (xs, _) = x.as_chunks::<QK>();
    let mut acc = [0f32; 16];
    for (b, xb) in blocks.iter().zip(xs) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        for j in 0..16 {
            let q = b[4 + j];
            let qx = f32::from(q & 0x0f) * xb[j] + f32::from(q >> 4) * xb[j + 16];
            acc[j] += d * qx + m * (xb[j] + xb[j + 16]);
        }
    }
    Ok(acc.iter().sum())
}

/// `Σ w_i · x_i` for one row of Q8_0 blocks against f32 activations
/// (`x.len()` must be `32 × blocks`); the LM-head / embedding counterpart
/// of [`dot_q4_1_f32`].
pub fn dot_q8_0_f32(blocks: &[BlockQ8_0], x: &[f32]) -> Result<f32, GgufError> {
    check_len("dot_q8_0_f32 activations", blocks.len() * QK, x.len())?;
    let (xs, _) = x.as_chunks::<QK>();
    let mut acc = [0f32; 16];
    for (b, xb) in blocks.iter().zip(xs) {
        let d = f16_at(b, 0);
        for j in 0..16 {
            let qx = f32::from(b[2 + j] as i8) * xb[j] + f32::from(b[18 + j] as i8) * xb[j + 16];
            acc[j] += d * qx;
        }
    }
    Ok(acc.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference f16 decoding by the definition, in f64.
    fn f16_reference(h: u16) -> f64 {
        let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let exp = i32::from((h >> 10) & 0x1f);
        let man = f64::from(h & 0x3ff);
        match exp {
            0 => sign * man * 2f64.powi(-24),
            0x1f if man == 0.0 => sign * f64::INFINITY,
            0x1f => f64::NAN,
            _ => sign * (1.0 + man / 1024.0) * 2f64.powi(exp - 15),
        }
    }

    #[test]
    fn f16_conversion_is_exact_for_all_values() {
        for h in 0..=u16::MAX {
            let got = f16_to_f32(h);
            let want = f16_reference(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(f64::from(got), want, "{h:#06x}");
                assert_eq!(got.is_sign_negative(), h & 0x8000 != 0, "{h:#06x}");
            }
        }
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 24) as u8
            })
            .collect()
    }

    /// Overwrites the f16 fields with finite, moderate values.
    fn sane_scales(bytes: &mut [u8], block: usize, n_scales: usize) {
        for (i, b) in bytes.chunks_mut(block).enumerate() {
            for k in 0..n_scales {
                // 0x2000..0x3bff: about 0.008 to 0.99, alternating sign.
                let h: u16 = 0x2000 + ((i * 131 + k * 17) % 0x1bff) as u16;
                let h = if (i + k) % 2 == 0 { h } else { h | 0x8000 };
                b[2 * k..2 * k + 2].copy_from_slice(&h.to_le_bytes());
            }
        }
    }

    #[test]
    fn q4_1_layout_matches_definition() {
        let mut raw = pseudo_random(Q4_1_BYTES * 5, 7);
        sane_scales(&mut raw, Q4_1_BYTES, 2);
        let (blocks, _) = raw.as_chunks::<Q4_1_BYTES>();
        let mut out = vec![0f32; 5 * QK];
        dequantize_q4_1(blocks, &mut out).unwrap();
        for (bi, b) in blocks.iter().enumerate() {
            let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            let m = f16_to_f32(u16::from_le_bytes([b[2], b[3]]));
            for i in 0..QK {
                let q = if i < 16 {
                    b[4 + i] & 15
                } else {
                    b[4 + i - 16] >> 4
                };
                assert_eq!(out[bi * QK + i], f32::from(q) * d + m);
            }
        }
    }

    #[test]
    fn q8_0_and_q4_0_layouts_match_definition() {
        let mut raw = pseudo_random(Q8_0_BYTES * 3, 9);
        sane_scales(&mut raw, Q8_0_BYTES, 1);
        let (blocks, _) = raw.as_chunks::<Q8_0_BYTES>();
        let mut out = vec![0f32; 3 * QK];
        dequantize_q8_0(blocks, &mut out).unwrap();
        for (bi, b) in blocks.iter().enumerate() {
            let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            for i in 0..QK {
                assert_eq!(out[bi * QK + i], f32::from(b[2 + i] as i8) * d);
            }
        }

        let mut raw = pseudo_random(Q4_0_BYTES * 3, 11);
        sane_scales(&mut raw, Q4_0_BYTES, 1);
        let (blocks, _) = raw.as_chunks::<Q4_0_BYTES>();
        dequantize_q4_0(blocks, &mut out).unwrap();
        for (bi, b) in blocks.iter().enumerate() {
            let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            for i in 0..QK {
                let q = if i < 16 {
                    b[2 + i] & 15
                } else {
                    b[2 + i - 16] >> 4
                };
                assert_eq!(out[bi * QK + i], (f32::from(q) - 8.0) * d);
            }
        }
    }

    fn naive_dot(w: &[f32], x: &[f32]) -> f64 {
        w.iter()
            .zip(x)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    }

    #[test]
    fn dots_match_dequantised_reference() {
        let n_blocks = 18; // 576 weights, one SmolLM2 row
        let x: Vec<f32> = pseudo_random(n_blocks * QK, 3)
            .iter()
            .map(|&b| (f32::from(b) - 128.0) / 64.0)
            .collect();

        let mut raw = pseudo_random(Q4_1_BYTES * n_blocks, 5);
        sane_scales(&mut raw, Q4_1_BYTES, 2);
        let (blocks, _) = raw.as_chunks::<Q4_1_BYTES>();
        let mut w = vec![0f32; n_blocks * QK];
        dequantize_q4_1(blocks, &mut w).unwrap();
        let got = f64::from(dot_q4_1_f32(blocks, &x).unwrap());
        let want = naive_dot(&w, &x);
        assert!(
            (got - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{got} vs {want}"
        );

        let mut raw = pseudo_random(Q8_0_BYTES * n_blocks, 6);
        sane_scales(&mut raw, Q8_0_BYTES, 1);
        let (blocks, _) = raw.as_chunks::<Q8_0_BYTES>();
        dequantize_q8_0(blocks, &mut w).unwrap();
        let got = f64::from(dot_q8_0_f32(blocks, &x).unwrap());
        let want = naive_dot(&w, &x);
        assert!(
            (got - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }

    #[test]
    fn length_mismatches_are_errors() {
        let blocks = [[0u8; Q4_1_BYTES]; 2];
        assert!(matches!(
            dot_q4_1_f32(&blocks, &[0.0; 63]),
            Err(GgufError::LengthMismatch {
                expected: 64,
                got: 63,
                ..
            })
        ));
        let mut out = [0f32; 65];
        assert!(dequantize_q4_1(&blocks, &mut out).is_err());
        let q8 = [[0u8; Q8_0_BYTES]; 1];
        assert!(dot_q8_0_f32(&q8, &[]).is_err());
    }
}
