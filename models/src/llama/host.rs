//! The CPU decode path: one-row matmuls computed straight from the GGUF's
//! Q4_1 / Q8_0 blocks with 8-bit activations, as llama.cpp does.
//!
//! Decoding one token multiplies a single activation row by every weight
//! matrix: memory-bound work (≈ 97 MB of quantised weights per token for
//! SmolLM2-135M) that an f32 GEMM does with 4–8× the bytes (dequantised
//! weights). Here the weights stay in their 4.5/8.5-bit blocks and each
//! block's dot product is an exact integer sum, scaled once:
//! `d_w·d_x·Σ q_w q_x (+ m_w·s_x for Q4_1)` — the same arithmetic as
//! [`super::Numerics::Ggml`], so only float summation order differs.

use super::quant::BLOCK;
use crate::gguf::quant::{Q4_1_BYTES, Q8_0_BYTES, f16_to_f32};

/// An activation row quantised to ggml's Q8_1 blocks.
///
/// Exists so one quantisation serves every matrix that reads the same
/// input (q/k/v, gate/up).
#[derive(Clone, Debug, Default)]
pub struct Q8Row {
    /// Per block: the f16-rounded scale `d`.
    d: Vec<f32>,
    /// Per block: the f16-rounded `d·Σq` (Q4_1's minimum term).
    s: Vec<f32>,
    /// The int8 values, 32 per block.
    q: Vec<i8>,
}

impl Q8Row {
    /// Quantises `x` (length a multiple of 32) exactly as
    /// [`super::quantize_q8`] does: `id = 127 / max|x|`, round half to
    /// even, scale and sum stored as f16.
    pub fn quantize(x: &[f32]) -> Self {
        let blocks = x.len() / BLOCK;
        let mut row = Self {
            d: Vec::with_capacity(blocks),
            s: Vec::with_capacity(blocks),
            q: Vec::with_capacity(blocks * BLOCK),
        };
        for b in x.chunks_exact(BLOCK) {
            let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            let mut sum = 0i32;
            for v in b {
                // |v·id| <= 127 (up to rounding), so the cast is exact.
                let q = (v * id).round_ties_even() as i8;
                sum += i32::from(q);
                row.q.push(q);
            }
            row.d.push(half::f16::from_f32(d).to_f32());
            row.s.push(half::f16::from_f32(d * sum as f32).to_f32());
        }
        row
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// True for an empty row.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

/// The storage type of a [`HostMatrix`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostType {
    /// 20-byte blocks: f16 `d`, f16 `m`, 16 bytes of nibbles.
    Q4_1,
    /// 34-byte blocks: f16 `d`, 32 int8.
    Q8_0,
}

/// A quantised weight matrix (`rows` outputs × `cols` inputs, GGUF row
/// order) kept in host memory for the CPU decode path.
#[derive(Clone, Debug)]
pub struct HostMatrix {
    ty: HostType,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
}

impl HostMatrix {
    /// Wraps a copy of a tensor's blocks; `None` unless the byte length
    /// matches `rows × cols` of `ty` and `cols` is a multiple of 32.
    pub fn new(ty: HostType, rows: usize, cols: usize, bytes: &[u8]) -> Option<Self> {
        let block_bytes = match ty {
            HostType::Q4_1 => Q4_1_BYTES,
            HostType::Q8_0 => Q8_0_BYTES,
        };
        if cols % BLOCK != 0 || bytes.len() != rows * (cols / BLOCK) * block_bytes {
            return None;
        }
        Some(Self {
            ty,
            rows,
            cols,
            bytes: bytes.to_vec(),
        })
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `out[r] = Σ_c w[r][c] · x[c]` for the quantised row `x`
    /// (`x.len() == cols`, `out.len() == rows`), spread over the rayon
    /// pool in chunks of rows.
    pub fn gemv(&self, x: &Q8Row, out: &mut [f32]) {
        use rayon::prelude::*;
        if x.len() != self.cols || out.len() != self.rows {
            return;
        }
        let nb = self.cols / BLOCK;
        let (ty, bytes) = (self.ty, &self.bytes);
        let row_bytes = match ty {
            HostType::Q4_1 => nb * Q4_1_BYTES,
            HostType::Q8_0 => nb * Q8_0_BYTES,
        };
        // Chunks large enough (~64 KB of weights) to amortise scheduling.
        let chunk = (65_536 / row_bytes).max(1);
        out.par_chunks_mut(chunk).enumerate().for_each(|(ci, o)| {
            for (i, y) in o.iter_mut().enumerate() {
                let r = ci * chunk + i;
                let w = &bytes[r * row_bytes..(r + 1) * row_bytes];
                *y = match ty {
                    HostType::Q4_1 => dot_q4_1(w, x),
                    HostType::Q8_0 => dot_q8_0(w, x),
                };
            }
        });
    }
}

/// One Q4_1 row against a Q8_1 row.
fn dot_q4_1(w: &[u8], x: &Q8Row) -> f32 {
    let (blocks, _) = w.as_chunks::<Q4_1_BYTES>();
    let (qs, _) = x.q.as_chunks::<BLOCK>();
    let mut acc = 0f32;
    let mut mins = 0f32;
    for (((b, q), &dx), &sx) in blocks.iter().zip(qs).zip(&x.d).zip(&x.s) {
        let dw = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
        let mw = f16_to_f32(u16::from_le_bytes([b[2], b[3]]));
        let mut sumi = 0i32;
        for j in 0..16 {
            let n = b[4 + j];
            sumi += i32::from(n & 0x0f) * i32::from(q[j]) + i32::from(n >> 4) * i32::from(q[j + 16]);
        }
        acc += dw * dx * sumi as f32;
        mins += mw * sx;
    }
    acc + mins
}

/// One Q8_0 row against a Q8 row (its `s` is unused).
fn dot_q8_0(w: &[u8], x: &Q8Row) -> f32 {
    let (blocks, _) = w.as_chunks::<Q8_0_BYTES>();
    let (qs, _) = x.q.as_chunks::<BLOCK>();
    let mut acc = 0f32;
    for ((b, q), &dx) in blocks.iter().zip(qs).zip(&x.d) {
        let dw = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
        let mut sumi = 0i32;
        for j in 0..BLOCK {
            sumi += i32::from(b[2 + j] as i8) * i32::from(q[j]);
        }
        acc += dw * dx * sumi as f32;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::quant::{dequantize_q4_1, dequantize_q8_0};

    fn pseudo(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 24) as u8
            })
            .collect()
    }

    fn with_scales(mut raw: Vec<u8>, block: usize, n: usize) -> Vec<u8> {
        for (i, b) in raw.chunks_mut(block).enumerate() {
            for k in 0..n {
                let h = half::f16::from_f32(0.01 + 0.001 * ((i + k) % 7) as f32);
                b[2 * k..2 * k + 2].copy_from_slice(&h.to_le_bytes());
            }
        }
        raw
    }

    #[test]
    fn gemv_matches_dequantised_weights_times_quantised_input() {
        let (rows, cols) = (37, 96);
        let x: Vec<f32> = pseudo(cols, 1).iter().map(|&b| (f32::from(b) - 128.0) / 50.0).collect();
        let xq = Q8Row::quantize(&x);
        // What the row represents: q·d per value.
        let xr: Vec<f32> = xq
            .q
            .iter()
            .enumerate()
            .map(|(i, &q)| f32::from(q) * xq.d[i / BLOCK])
            .collect();
        for (ty, block) in [(HostType::Q4_1, Q4_1_BYTES), (HostType::Q8_0, Q8_0_BYTES)] {
            let scales = if ty == HostType::Q4_1 { 2 } else { 1 };
            let raw = with_scales(pseudo(rows * cols / BLOCK * block, 2), block, scales);
            let m = HostMatrix::new(ty, rows, cols, &raw).unwrap();
            let mut w = vec![0f32; rows * cols];
            match ty {
                HostType::Q4_1 => dequantize_q4_1(raw.as_chunks().0, &mut w).unwrap(),
                HostType::Q8_0 => dequantize_q8_0(raw.as_chunks().0, &mut w).unwrap(),
            }
            let mut out = vec![0f32; rows];
            m.gemv(&xq, &mut out);
            for r in 0..rows {
                let want: f32 = w[r * cols..(r + 1) * cols].iter().zip(&xr).map(|(a, b)| a * b).sum();
                // The minimum term uses the f16-rounded block sum.
                assert!((out[r] - want).abs() < 2e-3 * want.abs().max(1.0), "{ty:?} row {r}: {} vs {want}", out[r]);
            }
        }
    }
}
