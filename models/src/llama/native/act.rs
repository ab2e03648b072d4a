//! Activation rows quantised to ggml's 8-bit blocks (Q8_0 / Q8_1), as
//! `quantize_row_q8_0` / `quantize_row_q8_1` do it on x86.

use half::f16;

use super::BLOCK;
use super::dot::XRow;

/// Blocks quantised per parallel task.
const BLOCKS_PER_TASK: usize = 64;

fast_fn! {
    /// Quantises whole blocks `x` into `q` and `d` (and `s` unless it is
    /// empty): the body of [`Q8Rows::quantize`].
    fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [f32]) {
        let (xb, _) = x.as_chunks::<BLOCK>();
        let (qb, _) = q.as_chunks_mut::<BLOCK>();
        for (b, (xs, qs)) in xb.iter().zip(qb).enumerate() {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mut sum = 0i32;
            for (v, o) in xs.iter().zip(qs.iter_mut()) {
                // |v·id| ≤ 127 up to one rounding; the clamp is ggml's
                // saturating pack.
                let r = (v * id).round_ties_even().clamp(-128.0, 127.0) as i32;
                sum += r;
                *o = r as i8;
            }
            if let Some(d) = d.get_mut(b) {
                *d = f16::from_f32(scale).to_f32();
            }
            if let Some(s) = s.get_mut(b) {
                *s = f16::from_f32(scale * sum as f32).to_f32();
            }
        }
    }
}

/// Rows of activations as 8-bit blocks of 32: the int8 values, each
/// block's scale and (Q8_1) its scaled sum, the scales and sums already
/// rounded to f16 and widened back, as ggml stores and reads them.
///
/// Exists because every quantised matmul of llama.cpp starts by turning
/// its f32 input into these blocks; computing them once per input lets
/// several projections share them.
#[derive(Clone, Debug)]
pub struct Q8Rows {
    /// `rows × cols` int8 values.
    pub(super) q: Vec<i8>,
    /// Per-block scale `d = max|x| / 127`, f16-rounded.
    pub(super) d: Vec<f32>,
    /// Per-block `d·Σq` (f32 `d`, f16-rounded result); empty for Q8_0.
    pub(super) s: Vec<f32>,
    /// Values per row (a multiple of 32).
    pub(super) cols: usize,
}

impl Q8Rows {
    /// Quantises `x` (`rows × cols`, row-major, `cols` a multiple of 32;
    /// checked by the caller) to Q8_1 blocks when `sums`, Q8_0 otherwise.
    ///
    /// Operation for operation as ggml's AVX code: `d = max|x| / 127`,
    /// `id = 127 / max|x|` (0 for an all-zero block), `q = round_half_even(x·id)`,
    /// `s = f16(d · Σq)`.
    pub fn quantize(x: &[f32], cols: usize, sums: bool) -> Self {
        use rayon::prelude::*;
        let blocks = x.len() / BLOCK;
        let mut q = vec![0i8; blocks * BLOCK];
        let mut d = vec![0f32; blocks];
        let mut s = vec![0f32; if sums { blocks } else { 0 }];
        // Blocks are independent: chunks of them run in parallel.
        let (per, x) = (BLOCKS_PER_TASK, &x[..blocks * BLOCK]);
        let xs = x.par_chunks(per * BLOCK);
        let qd = q.par_chunks_mut(per * BLOCK).zip(d.par_chunks_mut(per));
        if sums {
            xs.zip(qd)
                .zip(s.par_chunks_mut(per))
                .for_each(|((x, (q, d)), s)| quantize_blocks(x, q, d, s));
        } else {
            xs.zip(qd)
                .for_each(|(x, (q, d))| quantize_blocks(x, q, d, &mut []));
        }
        Self { q, d, s, cols }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.q.len().checked_div(self.cols).unwrap_or(0)
    }

    /// Blocks per row.
    pub(super) fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    /// Row `j` as a kernel operand: its blocks, scales and (Q8_1) sums.
    /// `j` must be below [`Self::rows`].
    pub(super) fn row(&self, j: usize) -> XRow<'_> {
        let nb = self.blocks_per_row();
        let (q, _) = self.q.as_chunks::<BLOCK>();
        let a = j * nb..(j + 1) * nb;
        XRow {
            q: &q[a.clone()],
            d: &self.d[a.clone()],
            s: self.s.get(a).unwrap_or(&[]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantises_as_ggml() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173)
            .collect();
        let r = Q8Rows::quantize(&x, 64, true);
        for (b, block) in x.chunks(32).enumerate() {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let id = 127.0 / amax;
            let mut sum = 0f32;
            for (i, v) in block.iter().enumerate() {
                let q = (v * id).round_ties_even();
                sum += q;
                assert_eq!(f32::from(r.q[b * 32 + i]), q);
            }
            assert_eq!(r.d[b], f16::from_f32(amax / 127.0).to_f32());
            assert_eq!(r.s[b], f16::from_f32(amax / 127.0 * sum).to_f32());
        }
    }

    #[test]
    fn zero_block_is_zero() {
        let r = Q8Rows::quantize(&[0.0; 32], 32, true);
        assert!(r.q.iter().all(|&q| q == 0));
        assert_eq!((r.d[0], r.s[0]), (0.0, 0.0));
    }
}
