//! [`QMatrix`]: a Q4_1 / Q8_0 weight matrix and its ggml-exact matmul.

use rayon::prelude::*;

use super::BLOCK;
use super::act::Q8Rows;
use super::dot;
use crate::gguf::quant::f16_to_f32;
use crate::gguf::{GgmlType, TensorView};
use crate::llama::error::LlmError;

/// Weight rows handed to one rayon task (small enough to balance 576-row
/// matrices over many cores, large enough to amortise the task).
const ROWS_PER_TASK: usize = 16;

/// A weight matrix in one of the block formats this module multiplies.
#[derive(Debug)]
enum Blocks {
    /// Q4_1: per block 16 nibble bytes, scale `d`, minimum `m`.
    Q4_1 {
        q: Vec<[u8; 16]>,
        d: Vec<f32>,
        m: Vec<f32>,
    },
    /// Q8_0: per block 32 int8 values and scale `d`.
    Q8_0 { q: Vec<[i8; 32]>, d: Vec<f32> },
}

/// A quantised weight matrix `[rows (outputs), cols (inputs)]` in the
/// GGUF's own row order, with its f16 scales widened once at load.
///
/// Exists so the CPU forward pass multiplies the file's blocks directly,
/// the way llama.cpp does (see the module docs).
#[derive(Debug)]
pub struct QMatrix {
    blocks: Blocks,
    rows: usize,
    cols: usize,
}

/// Which kernel runs the dot products (chosen once per process).
#[derive(Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

fn kernel() -> Kernel {
    use std::sync::OnceLock;
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        if std::env::var_os("MEMKERN_PORTABLE_KERNELS").is_some() {
            return Kernel::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        if dot::avx2::available() {
            return Kernel::Avx2;
        }
        Kernel::Portable
    })
}

impl QMatrix {
    /// Copies a Q4_1 or Q8_0 GGUF matrix (`dims = [cols, rows]`).
    ///
    /// `None` for other types, or when `cols` is not a whole number of
    /// blocks: those stay on the dense path. Errors only for a view whose
    /// data does not match its declared shape.
    pub fn from_view(view: &TensorView<'_>) -> Result<Option<Self>, LlmError> {
        let &[cols, rows] = view.dims() else {
            return Ok(None);
        };
        let (Ok(cols), Ok(rows)) = (usize::try_from(cols), usize::try_from(rows)) else {
            return Ok(None);
        };
        Self::from_blocks(view.ty(), rows, cols, view.data())
            .map_err(|e| LlmError::Backend(format!("tensor {}: {e}", view.name())))
    }

    /// Builds a `rows × cols` matrix from ggml blocks of type `ty` (row
    /// after row, as GGUF stores them). `Ok(None)` for a type without a
    /// kernel or a width that is not a whole number of blocks; an error
    /// if `data` is not exactly that many blocks.
    pub fn from_blocks(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<Option<Self>, String> {
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Ok(None);
        }
        let n = rows * (cols / BLOCK);
        let per = match ty {
            GgmlType::Q4_1 => 20,
            GgmlType::Q8_0 => 34,
            _ => return Ok(None),
        };
        if data.len() != n * per {
            return Err(format!(
                "{} bytes for {n} blocks of {per} bytes",
                data.len()
            ));
        }
        let f16_at = |b: &[u8], i: usize| f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]));
        let blocks = if ty == GgmlType::Q4_1 {
            let (raw, _) = data.as_chunks::<20>();
            let mut q = Vec::with_capacity(n);
            let mut d = Vec::with_capacity(n);
            let mut m = Vec::with_capacity(n);
            for b in raw {
                d.push(f16_at(b, 0));
                m.push(f16_at(b, 2));
                let mut nib = [0u8; 16];
                nib.copy_from_slice(&b[4..]);
                q.push(nib);
            }
            Blocks::Q4_1 { q, d, m }
        } else {
            let (raw, _) = data.as_chunks::<34>();
            let mut q = Vec::with_capacity(n);
            let mut d = Vec::with_capacity(n);
            for b in raw {
                d.push(f16_at(b, 0));
                let mut v = [0i8; 32];
                for (o, &byte) in v.iter_mut().zip(&b[2..]) {
                    *o = byte as i8;
                }
                q.push(v);
            }
            Blocks::Q8_0 { q, d }
        };
        Ok(Some(Self { blocks, rows, cols }))
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Whether inputs must be quantised with block sums (Q8_1) for this
    /// matrix, rather than as plain Q8_0.
    pub fn wants_sums(&self) -> bool {
        matches!(self.blocks, Blocks::Q4_1 { .. })
    }

    /// Quantises `x` (`n × cols`, row-major) the way this matrix's
    /// kernel expects. `None` if `x` is not a whole number of rows.
    pub fn quantize(&self, x: &[f32]) -> Option<Q8Rows> {
        (x.len().is_multiple_of(self.cols))
            .then(|| Q8Rows::quantize(x, self.cols, self.wants_sums()))
    }

    /// `x · Wᵀ`: `[n, rows]` row-major for `n` quantised input rows.
    ///
    /// Fails (no panic) if `x` was quantised for another width or without
    /// the block sums a Q4_1 matrix needs.
    pub fn matmul(&self, x: &Q8Rows) -> Result<Vec<f32>, LlmError> {
        if x.cols != self.cols || (self.wants_sums() && x.s.len() != x.d.len()) {
            return Err(LlmError::Backend(format!(
                "input of width {} (sums: {}) for a {}×{} {} matrix",
                x.cols,
                !x.s.is_empty(),
                self.rows,
                self.cols,
                if self.wants_sums() { "Q4_1" } else { "Q8_0" }
            )));
        }
        let n = x.rows();
        let nb = x.blocks_per_row();
        let (xq, _) = x.q.as_chunks::<BLOCK>();
        let kernel = kernel();
        // Output transposed, [rows, n]: each task owns whole weight rows.
        let mut out_t = vec![0f32; self.rows * n];
        out_t
            .par_chunks_mut(ROWS_PER_TASK * n.max(1))
            .enumerate()
            .for_each(|(task, chunk)| {
                for (i, col) in chunk.chunks_mut(n.max(1)).enumerate() {
                    let r = task * ROWS_PER_TASK + i;
                    let w = r * nb..(r + 1) * nb;
                    for (j, o) in col.iter_mut().enumerate() {
                        let a = j * nb..(j + 1) * nb;
                        *o = self.dot(
                            kernel,
                            w.clone(),
                            &xq[a.clone()],
                            &x.d[a.clone()],
                            x.s.get(a).unwrap_or(&[]),
                        );
                    }
                }
            });
        if n == 1 {
            return Ok(out_t);
        }
        let mut out = vec![0f32; n * self.rows];
        for (r, col) in out_t.chunks_exact(n).enumerate() {
            for (j, v) in col.iter().enumerate() {
                out[j * self.rows + r] = *v;
            }
        }
        Ok(out)
    }

    /// One output value: weight blocks `w` against one activation row.
    #[inline]
    fn dot(
        &self,
        kernel: Kernel,
        w: std::ops::Range<usize>,
        xq: &[[i8; 32]],
        xd: &[f32],
        xs: &[f32],
    ) -> f32 {
        match (&self.blocks, kernel) {
            (Blocks::Q4_1 { q, d, m }, Kernel::Portable) => {
                dot::q4_1_portable(&q[w.clone()], &d[w.clone()], &m[w], xq, xd, xs)
            }
            (Blocks::Q8_0 { q, d }, Kernel::Portable) => {
                dot::q8_0_portable(&q[w.clone()], &d[w], xq, xd)
            }
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q4_1 { q, d, m }, Kernel::Avx2) => {
                // SAFETY: `Kernel::Avx2` is chosen only when the CPU has
                // AVX2 and FMA.
                unsafe { dot::avx2::q4_1(&q[w.clone()], &d[w.clone()], &m[w], xq, xd, xs) }
            }
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q8_0 { q, d }, Kernel::Avx2) => {
                // SAFETY: as above.
                unsafe { dot::avx2::q8_0(&q[w.clone()], &d[w], xq, xd) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic byte soup with sane f16 scales.
    fn blocks(ty: GgmlType, n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let per = if ty == GgmlType::Q4_1 { 20 } else { 34 };
        let mut out = Vec::with_capacity(n * per);
        for _ in 0..n {
            let scale = half::f16::from_f32((next() % 1000) as f32 * 1e-5 + 1e-4);
            out.extend(scale.to_le_bytes());
            if ty == GgmlType::Q4_1 {
                let m = half::f16::from_f32(-((next() % 1000) as f32) * 1e-4);
                out.extend(m.to_le_bytes());
            }
            out.extend((0..per - out.len() % per).map(|_| next() as u8));
        }
        out
    }

    fn input(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
            .collect()
    }

    #[test]
    fn kernels_agree_to_the_bit_and_match_a_reference() {
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
            let (rows, cols, n) = (37, 96, 3);
            let data = blocks(ty, rows * cols / 32, 7);
            let m = QMatrix::from_blocks(ty, rows, cols, &data)
                .unwrap()
                .unwrap();
            let x = input(n * cols, 11);
            let q = m.quantize(&x).unwrap();
            let nb = cols / 32;
            let (xq, _) = q.q.as_chunks::<32>();
            for r in 0..rows {
                for j in 0..n {
                    let a = j * nb..(j + 1) * nb;
                    let s = q.s.get(a.clone()).unwrap_or(&[]);
                    let portable = m.dot(
                        Kernel::Portable,
                        r * nb..(r + 1) * nb,
                        &xq[a.clone()],
                        &q.d[a.clone()],
                        s,
                    );
                    let fast = m.dot(
                        kernel(),
                        r * nb..(r + 1) * nb,
                        &xq[a.clone()],
                        &q.d[a.clone()],
                        s,
                    );
                    assert_eq!(
                        portable.to_bits(),
                        fast.to_bits(),
                        "{ty:?} row {r} input {j}"
                    );
                    // Against the plain formula in f64: close, not equal.
                    let mut want = 0f64;
                    for b in 0..nb {
                        let blk =
                            &data[(r * nb + b) * if ty == GgmlType::Q4_1 { 20 } else { 34 }..];
                        let dw = f64::from(f16_to_f32(u16::from_le_bytes([blk[0], blk[1]])));
                        for e in 0..32 {
                            let xv =
                                f64::from(q.q[(j * nb + b) * 32 + e]) * f64::from(q.d[j * nb + b]);
                            let wv = if ty == GgmlType::Q4_1 {
                                let mw =
                                    f64::from(f16_to_f32(u16::from_le_bytes([blk[2], blk[3]])));
                                let nib = if e < 16 {
                                    blk[4 + e] & 15
                                } else {
                                    blk[4 + e - 16] >> 4
                                };
                                f64::from(nib) * dw + mw
                            } else {
                                f64::from(blk[2 + e] as i8) * dw
                            };
                            want += xv * wv;
                        }
                        if ty == GgmlType::Q4_1 {
                            // ggml uses the f16 block sum, not Σq·d exactly.
                            let mw = f64::from(f16_to_f32(u16::from_le_bytes([blk[2], blk[3]])));
                            let exact: f64 = (0..32)
                                .map(|e| f64::from(q.q[(j * nb + b) * 32 + e]))
                                .sum::<f64>()
                                * f64::from(q.d[j * nb + b]);
                            want += mw * (f64::from(q.s[j * nb + b]) - exact);
                        }
                    }
                    assert!(
                        (f64::from(portable) - want).abs() < 1e-4,
                        "{ty:?} {r} {j}: {portable} vs {want}"
                    );
                }
            }
            let y = m.matmul(&q).unwrap();
            assert_eq!(y.len(), n * rows);
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        assert!(QMatrix::from_blocks(GgmlType::Q4_1, 2, 64, &[0; 79]).is_err());
        assert!(
            QMatrix::from_blocks(GgmlType::Q4_1, 2, 48, &[0; 80])
                .unwrap()
                .is_none()
        );
        assert!(
            QMatrix::from_blocks(GgmlType::F32, 2, 64, &[0; 512])
                .unwrap()
                .is_none()
        );
        let m = QMatrix::from_blocks(GgmlType::Q8_0, 1, 32, &[0; 34])
            .unwrap()
            .unwrap();
        let wrong = Q8Rows::quantize(&[0.5; 64], 64, false);
        assert!(m.matmul(&wrong).is_err());
    }
}
