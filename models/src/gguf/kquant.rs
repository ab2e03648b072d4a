//! The 5-bit and K-quant block formats: layouts and dequantisation, as
//! ggml's `dequantize_row_*` computes them (same float expressions, so the
//! values are bit for bit ggml's).
//!
//! | type | weights | bytes | layout |
//! |------|--------:|------:|--------|
//! | Q5_0 | 32 | 22 | f16 `d`, 4 B high bits, 16 B nibbles; weight `(q - 16)·d` |
//! | Q5_1 | 32 | 24 | f16 `d`, f16 `m`, 4 B high bits, 16 B nibbles; `q·d + m` |
//! | Q4_K | 256 | 144 | f16 `d`, f16 `dmin`, 12 B of 6-bit scales/mins, 128 B nibbles |
//! | Q5_K | 256 | 176 | f16 `d`, f16 `dmin`, 12 B scales/mins, 32 B high bits, 128 B nibbles |
//! | Q6_K | 256 | 210 | 128 B low nibbles, 64 B high 2-bit pairs, 16 × i8 scales, f16 `d` |
//!
//! Exists because the models people bring are `Q4_K_M` files: K-quants for
//! most matrices, and Q5_0 / Q5_1 / Q8_0 wherever a row is not a multiple
//! of 256 (SmolLM2's 576, Gemma 3 270M's 640).

use super::error::GgufError;
use super::quant::{check_len, f16_at};

/// Weights per K-quant super-block.
pub const QK_K: usize = 256;
/// Bytes per Q5_0 block.
pub const Q5_0_BYTES: usize = 22;
/// Bytes per Q5_1 block.
pub const Q5_1_BYTES: usize = 24;
/// Bytes per Q4_K super-block.
pub const Q4_K_BYTES: usize = 144;
/// Bytes per Q5_K super-block.
pub const Q5_K_BYTES: usize = 176;
/// Bytes per Q6_K super-block.
pub const Q6_K_BYTES: usize = 210;

/// The 6-bit scale and minimum of sub-block `j` (0..8) of a Q4_K / Q5_K
/// super-block's 12 packed bytes (ggml's `get_scale_min_k4`).
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 5-bit values of one Q5_0 / Q5_1 block: `qh` holds bit 4 of weight
/// `j` at bit `j`, `qs` the 16 nibble bytes.
#[inline(always)]
pub fn q5_values(qh: u32, qs: &[u8]) -> [u8; 32] {
    let mut v = [0u8; 32];
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        v[j] = (qs[j] & 0x0f) | h0;
        v[j + 16] = (qs[j] >> 4) | h1;
    }
    v
}

/// Dequantises Q5_0 blocks (`out.len()` must be `32 × blocks`).
pub fn dequantize_q5_0(blocks: &[[u8; Q5_0_BYTES]], out: &mut [f32]) -> Result<(), GgufError> {
    check_len("dequantize_q5_0 output", blocks.len() * 32, out.len())?;
    for (b, o) in blocks.iter().zip(out.as_chunks_mut::<32>().0) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for (o, q) in o.iter_mut().zip(q5_values(qh, &b[6..])) {
            *o = (i32::from(q) - 16) as f32 * d;
        }
    }
    Ok(())
}

/// Dequantises Q5_1 blocks (`out.len()` must be `32 × blocks`).
pub fn dequantize_q5_1(blocks: &[[u8; Q5_1_BYTES]], out: &mut [f32]) -> Result<(), GgufError> {
    check_len("dequantize_q5_1 output", blocks.len() * 32, out.len())?;
    for (b, o) in blocks.iter().zip(out.as_chunks_mut::<32>().0) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for (o, q) in o.iter_mut().zip(q5_values(qh, &b[8..])) {
            *o = f32::from(q) * d + m;
        }
    }
    Ok(())
}

/// The 12 packed scale bytes of a Q4_K / Q5_K super-block.
#[inline(always)]
fn scales12(b: &[u8]) -> &[u8; 12] {
    // `b` is a whole super-block (at least 16 bytes), so bytes 4..16 exist.
    b[4..16].as_chunks::<12>().0.first().unwrap_or(&[0; 12])
}

/// Dequantises Q4_K super-blocks (`out.len()` must be `256 × blocks`).
pub fn dequantize_q4_k(blocks: &[[u8; Q4_K_BYTES]], out: &mut [f32]) -> Result<(), GgufError> {
    check_len("dequantize_q4_k output", blocks.len() * QK_K, out.len())?;
    for (b, o) in blocks.iter().zip(out.as_chunks_mut::<QK_K>().0) {
        let d = f16_at(b, 0);
        let min = f16_at(b, 2);
        let sc = scales12(b);
        let qs = &b[16..];
        for (c, o) in o.chunks_exact_mut(64).enumerate() {
            let (s1, m1) = scale_min_k4(2 * c, sc);
            let (s2, m2) = scale_min_k4(2 * c + 1, sc);
            let (d1, m1) = (d * f32::from(s1), min * f32::from(m1));
            let (d2, m2) = (d * f32::from(s2), min * f32::from(m2));
            let q = &qs[32 * c..32 * c + 32];
            for l in 0..32 {
                o[l] = d1 * f32::from(q[l] & 0xf) - m1;
                o[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
            }
        }
    }
    Ok(())
}

/// Dequantises Q5_K super-blocks (`out.len()` must be `256 × blocks`).
pub fn dequantize_q5_k(blocks: &[[u8; Q5_K_BYTES]], out: &mut [f32]) -> Result<(), GgufError> {
    check_len("dequantize_q5_k output", blocks.len() * QK_K, out.len())?;
    for (b, o) in blocks.iter().zip(out.as_chunks_mut::<QK_K>().0) {
        let d = f16_at(b, 0);
        let min = f16_at(b, 2);
        let sc = scales12(b);
        let qh = &b[16..48];
        let ql = &b[48..];
        for (c, o) in o.chunks_exact_mut(64).enumerate() {
            let (s1, m1) = scale_min_k4(2 * c, sc);
            let (s2, m2) = scale_min_k4(2 * c + 1, sc);
            let (d1, m1) = (d * f32::from(s1), min * f32::from(m1));
            let (d2, m2) = (d * f32::from(s2), min * f32::from(m2));
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            let q = &ql[32 * c..32 * c + 32];
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                o[l] = d1 * f32::from((q[l] & 0xf) + h1) - m1;
                o[l + 32] = d2 * f32::from((q[l] >> 4) + h2) - m2;
            }
        }
    }
    Ok(())
}

/// Dequantises Q6_K super-blocks (`out.len()` must be `256 × blocks`).
pub fn dequantize_q6_k(blocks: &[[u8; Q6_K_BYTES]], out: &mut [f32]) -> Result<(), GgufError> {
    check_len("dequantize_q6_k output", blocks.len() * QK_K, out.len())?;
    for (b, o) in blocks.iter().zip(out.as_chunks_mut::<QK_K>().0) {
        let d = f16_at(b, 208);
        for (h, y) in o.chunks_exact_mut(128).enumerate() {
            let ql = &b[64 * h..64 * h + 64];
            let qh = &b[128 + 32 * h..128 + 32 * h + 32];
            let sc = &b[192 + 8 * h..192 + 8 * h + 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                let s = |k: usize| f32::from(sc[is + k] as i8);
                y[l] = d * s(0) * f32::from(q1);
                y[l + 32] = d * s(2) * f32::from(q2);
                y[l + 64] = d * s(4) * f32::from(q3);
                y[l + 96] = d * s(6) * f32::from(q4);
            }
        }
    }
    Ok(())
}

/// Converts little-endian bf16 values into `out` (same length); exact.
pub fn dequantize_bf16(values: &[[u8; 2]], out: &mut [f32]) -> Result<(), GgufError> {
    check_len("dequantize_bf16 output", values.len(), out.len())?;
    for (v, o) in values.iter().zip(out.iter_mut()) {
        *o = f32::from_bits(u32::from(u16::from_le_bytes(*v)) << 16);
    }
    Ok(())
}
