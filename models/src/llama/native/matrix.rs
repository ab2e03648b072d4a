//! [`QMatrix`]: a quantised weight matrix (Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
//! Q5_K, Q6_K) and its ggml-exact matmul.

use rayon::prelude::*;

use super::BLOCK;
use super::act::Q8Rows;
use super::dot::{self, XRow};
use super::kquant::{self, KRow, Q4K_BYTES, Q5K_BYTES, Q6K_BYTES, Q8KRows};
use crate::gguf::kquant as file_k;
use crate::gguf::kquant::QK_K;
use crate::gguf::quant::f16_to_f32;
use crate::gguf::{GgmlType, TensorView};
use crate::llama::error::LlmError;

/// Weight rows handed to one rayon task (small enough to balance 576-row
/// matrices over many cores, large enough to amortise the task).
const ROWS_PER_TASK: usize = 16;

/// Output rows per task when the result is transposed back (16 f32s: one
/// cache line of each weight row's outputs).
const TRANSPOSE_ROWS: usize = 16;

/// Batches from this many input rows on go through ggml's tiled K-quant
/// matmul (`ggml_tiled_min_batch`) for K-quant weights that are not
/// repacked (Q5_K, Q6_K on x86). The batch is one call's rows: llama.cpp
/// decides per micro-batch (`n_ubatch`, 512 by default), so a prompt that
/// leaves fewer than 8 rows in its last micro-batch there is one prefill
/// call here — the one case where the two may differ.
const TILED_MIN_BATCH: usize = 8;

/// Activation rows multiplied per unpacked weight block in prefill.
const TILE: usize = 4;

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
    /// Q4_0 (rows a multiple of 8, which llama.cpp repacks): per block 32
    /// values `q − 8` and scale `d`.
    Q4_0Repacked { q: Vec<[i8; 32]>, d: Vec<f32> },
    /// Q5_1: per block 32 values `0..=31`, scale `d`, minimum `m`.
    Q5_1 {
        q: Vec<[i8; 32]>,
        d: Vec<f32>,
        m: Vec<f32>,
    },
    /// Q4_K super-blocks as the file stores them.
    Q4K(Vec<[u8; Q4K_BYTES]>),
    /// Q5_K super-blocks as the file stores them.
    Q5K(Vec<[u8; Q5K_BYTES]>),
    /// Q6_K super-blocks as the file stores them.
    Q6K(Vec<[u8; Q6K_BYTES]>),
}

/// The activation format a matrix's kernel multiplies.
///
/// Exists because llama.cpp quantises a matmul's input for the weight's
/// type: Q8_0 for Q8_0 / Q5_0 / Q4_0, Q8_1 (with block sums) for Q4_1 /
/// Q5_1, Q8_K for Q5_K / Q6_K, and Q8_K with the 4-row repack quantiser's
/// sign rule for Q4_K.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// 32-value blocks, f16 scale.
    Q8_0,
    /// 32-value blocks, f16 scale and scaled sum.
    Q8_1,
    /// 256-value blocks, f32 scale, sums of 16 (reference quantiser).
    Q8K,
    /// As `Q8K`, rows in whole groups of four quantised as the repacked
    /// Q4_K kernels' input.
    Q8KGrouped,
}

impl InputFormat {
    /// Every format, in the order of [`Self::index`].
    pub const COUNT: usize = 4;

    /// A small index (for per-format caches).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A matmul input quantised for one [`InputFormat`].
#[derive(Clone, Debug)]
pub enum Input {
    /// Q8_0 or Q8_1 blocks.
    Q8(Q8Rows),
    /// Q8_K blocks.
    Q8K(Q8KRows),
}

impl Input {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        match self {
            Input::Q8(x) => x.rows(),
            Input::Q8K(x) => x.rows(),
        }
    }

    fn cols(&self) -> usize {
        match self {
            Input::Q8(x) => x.cols,
            Input::Q8K(x) => x.cols(),
        }
    }
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
    /// NEON with widening multiplies (Armv8.0).
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// NEON with `SDOT` (Armv8.2 dot-product extension).
    #[cfg(target_arch = "aarch64")]
    NeonDot,
}

impl Kernel {
    /// Every kernel this CPU can run, slowest first: portable, then AVX2 on
    /// x86-64, NEON and NEON with `SDOT` on aarch64.
    fn all() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        if dot::avx2::available() {
            all.push(Kernel::Avx2);
        }
        #[cfg(target_arch = "aarch64")]
        {
            all.push(Kernel::Neon);
            if dot::neon::has_dotprod() {
                all.push(Kernel::NeonDot);
            }
        }
        all
    }
}

/// The kernel every matmul uses: the fastest this CPU has, or the portable
/// one under `MEMKERN_PORTABLE_KERNELS` (chosen once per process).
fn kernel() -> Kernel {
    use std::sync::OnceLock;
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        if std::env::var_os("MEMKERN_PORTABLE_KERNELS").is_some() {
            return Kernel::Portable;
        }
        Kernel::all().pop().unwrap_or(Kernel::Portable)
    })
}

impl QMatrix {
    /// Copies a GGUF matrix of a type with a native kernel (`dims = [cols, rows]`).
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
        if matches!(ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K) {
            // llama.cpp repacks Q4_K with rows in groups of 8 and runs the
            // others through kernels not reproduced here: those stay dense.
            if !cols.is_multiple_of(QK_K) || (ty == GgmlType::Q4K && !rows.is_multiple_of(8)) {
                return Ok(None);
            }
            let n = rows * kquant::blocks_per_row(cols);
            let per = match ty {
                GgmlType::Q4K => Q4K_BYTES,
                GgmlType::Q5K => Q5K_BYTES,
                _ => Q6K_BYTES,
            };
            if data.len() != n * per {
                return Err(format!(
                    "{} bytes for {n} blocks of {per} bytes",
                    data.len()
                ));
            }
            let blocks = match ty {
                GgmlType::Q4K => Blocks::Q4K(data.as_chunks::<Q4K_BYTES>().0.to_vec()),
                GgmlType::Q5K => Blocks::Q5K(data.as_chunks::<Q5K_BYTES>().0.to_vec()),
                _ => Blocks::Q6K(data.as_chunks::<Q6K_BYTES>().0.to_vec()),
            };
            return Ok(Some(Self { blocks, rows, cols }));
        }
        let n = rows * (cols / BLOCK);
        let per = match ty {
            GgmlType::Q4_1 => 20,
            GgmlType::Q8_0 => 34,
            GgmlType::Q5_0 => file_k::Q5_0_BYTES,
            GgmlType::Q5_1 => file_k::Q5_1_BYTES,
            // Other shapes go through llamafile's tinyBLAS / vec_dot in
            // llama.cpp, not reproduced here: they stay dense.
            GgmlType::Q4_0 if rows.is_multiple_of(8) => 18,
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
        } else if ty == GgmlType::Q4_0 {
            let (raw, _) = data.as_chunks::<18>();
            let mut q = Vec::with_capacity(n);
            let mut d = Vec::with_capacity(n);
            for b in raw {
                d.push(f16_at(b, 0));
                let mut v = [0i8; 32];
                for j in 0..16 {
                    // Nibbles are 0..=15, so `nibble - 8` fits an i8.
                    v[j] = (b[2 + j] & 0x0f) as i8 - 8;
                    v[j + 16] = (b[2 + j] >> 4) as i8 - 8;
                }
                q.push(v);
            }
            Blocks::Q4_0Repacked { q, d }
        } else if ty == GgmlType::Q5_1 {
            let (raw, _) = data.as_chunks::<{ file_k::Q5_1_BYTES }>();
            let (q, d, m) = widen_q5(raw, 4, 0);
            Blocks::Q5_1 { q, d, m }
        } else if ty == GgmlType::Q5_0 {
            // ggml multiplies a Q5_0 block as the signed bytes `q - 16`
            // against Q8_0 activations, with the same lane sums and FMA
            // order as Q8_0 × Q8_0 (`ggml_vec_dot_q5_0_q8_0`, AVX2): widened
            // once here, the Q8_0 kernels give its bits.
            let (raw, _) = data.as_chunks::<{ file_k::Q5_0_BYTES }>();
            let (q, d, _) = widen_q5(raw, 2, 16);
            Blocks::Q8_0 { q, d }
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

    /// The activation format this matrix's kernel multiplies.
    pub fn input_format(&self) -> InputFormat {
        match self.blocks {
            Blocks::Q4_1 { .. } | Blocks::Q5_1 { .. } => InputFormat::Q8_1,
            Blocks::Q8_0 { .. } | Blocks::Q4_0Repacked { .. } => InputFormat::Q8_0,
            Blocks::Q4K(_) => InputFormat::Q8KGrouped,
            Blocks::Q5K(_) | Blocks::Q6K(_) => InputFormat::Q8K,
        }
    }

    /// Quantises `x` (`n × cols`, row-major) the way this matrix's
    /// kernel expects. `None` if `x` is not a whole number of rows.
    pub fn quantize(&self, x: &[f32]) -> Option<Input> {
        if !x.len().is_multiple_of(self.cols) {
            return None;
        }
        Some(match self.input_format() {
            InputFormat::Q8_0 => Input::Q8(Q8Rows::quantize(x, self.cols, false)),
            InputFormat::Q8_1 => Input::Q8(Q8Rows::quantize(x, self.cols, true)),
            InputFormat::Q8K => Input::Q8K(Q8KRows::quantize(x, self.cols, false)),
            InputFormat::Q8KGrouped => Input::Q8K(Q8KRows::quantize(x, self.cols, true)),
        })
    }

    /// `x · Wᵀ`: `[n, rows]` row-major for `n` quantised input rows.
    ///
    /// Fails (no panic) if `x` was quantised for another width or format.
    pub fn matmul(&self, x: &Input) -> Result<Vec<f32>, LlmError> {
        let mut out = Self::matmul_many(&[self], x)?;
        out.pop()
            .ok_or_else(|| LlmError::Backend("a matmul returned nothing".into()))
    }

    /// [`Self::matmul`] of several matrices with the same input, as one
    /// parallel loop over all their weight rows: in decode every parallel
    /// loop costs a hand-over between threads, so the q/k/v and gate/up
    /// projections share one. The same bits as separate calls.
    pub fn matmul_many(ms: &[&QMatrix], x: &Input) -> Result<Vec<Vec<f32>>, LlmError> {
        for m in ms {
            let fits = match (x, m.input_format()) {
                (Input::Q8(q), InputFormat::Q8_1) => q.s.len() == q.d.len(),
                (Input::Q8(_), InputFormat::Q8_0) => true,
                (Input::Q8K(_), InputFormat::Q8K | InputFormat::Q8KGrouped) => true,
                _ => false,
            };
            if x.cols() != m.cols || !fits {
                return Err(LlmError::Backend(format!(
                    "input of width {} for a {}×{} matrix taking {:?}",
                    x.cols(),
                    m.rows,
                    m.cols,
                    m.input_format()
                )));
            }
        }
        let x = match x {
            Input::Q8(x) => x,
            Input::Q8K(x) => return Ok(Self::matmul_many_k(ms, x)),
        };
        let n = x.rows();
        let row = |j: usize| x.row(j);
        let kernel = kernel();
        // Outputs transposed, [rows, n]: each task owns whole weight rows
        // of one matrix. Inside a task, groups of TILE activation rows go
        // outermost, so a group stays in L1 while the task's weight rows
        // pass over it, and each weight block is unpacked once per group.
        let mut outs: Vec<Vec<f32>> = ms.iter().map(|m| vec![0f32; m.rows * n]).collect();
        let tasks = row_tasks(ms, &mut outs, n);
        tasks.into_par_iter().for_each(|(m, r0, chunk)| {
            let mut j = 0;
            while j < n {
                let full = n - j >= TILE;
                for (i, col) in chunk.chunks_mut(n).enumerate() {
                    let r = r0 + i;
                    if full {
                        let v = m.tile(kernel, r, [row(j), row(j + 1), row(j + 2), row(j + 3)]);
                        col[j..j + TILE].copy_from_slice(&v);
                    } else {
                        for (jj, o) in col.iter_mut().enumerate().skip(j) {
                            *o = m.tile(kernel, r, [row(jj)])[0];
                        }
                    }
                }
                j = if full { j + TILE } else { n };
            }
        });
        Ok(untranspose(ms, outs, n))
    }

    /// [`Self::matmul_many`] for K-quant matrices: one dot product per
    /// (weight row, input row), with Q4_K's gemm rule for input rows in
    /// whole groups of four and its gemv rule for the rest (as llama.cpp).
    fn matmul_many_k(ms: &[&QMatrix], x: &Q8KRows) -> Vec<Vec<f32>> {
        let n = x.rows();
        let grouped = n - n % 4;
        let mut outs: Vec<Vec<f32>> = ms.iter().map(|m| vec![0f32; m.rows * n]).collect();
        let tasks = row_tasks(ms, &mut outs, n);
        tasks.into_par_iter().for_each(|(m, r0, chunk)| {
            for (i, col) in chunk.chunks_mut(n.max(1)).enumerate() {
                for (j, o) in col.iter_mut().enumerate() {
                    *o = m.k_dot(r0 + i, x.row(j), j < grouped, n >= TILED_MIN_BATCH);
                }
            }
        });
        untranspose(ms, outs, n)
    }

    /// Weight row `r` of a K-quant matrix against one input row, by the
    /// rule llama.cpp applies to that row: Q4_K's gemm rule for rows in a
    /// group of four, Q6_K's tiled rule in batches of 8 or more.
    fn k_dot(&self, r: usize, x: KRow<'_>, in_group: bool, tiled: bool) -> f32 {
        let nb = kquant::blocks_per_row(self.cols);
        let w = r * nb..(r + 1) * nb;
        match &self.blocks {
            Blocks::Q4K(b) => kquant::q4_k_dot(&b[w], x, in_group),
            Blocks::Q5K(b) if tiled => kquant::q5_k_dot_tiled(&b[w], x),
            Blocks::Q5K(b) => kquant::q5_k_dot(&b[w], x),
            Blocks::Q6K(b) if tiled => kquant::q6_k_dot_tiled(&b[w], x),
            Blocks::Q6K(b) => kquant::q6_k_dot(&b[w], x),
            // `matmul_many` routes only K-quant matrices here.
            Blocks::Q4_1 { .. }
            | Blocks::Q5_1 { .. }
            | Blocks::Q8_0 { .. }
            | Blocks::Q4_0Repacked { .. } => f32::NAN,
        }
    }

    /// Weight row `r` against `R` activation rows, each with this matrix's
    /// block count (checked by [`Self::matmul`]).
    #[inline]
    fn tile<const R: usize>(&self, kernel: Kernel, r: usize, x: [XRow<'_>; R]) -> [f32; R] {
        let nb = self.cols / BLOCK;
        let w = r * nb..(r + 1) * nb;
        match (&self.blocks, kernel) {
            (Blocks::Q4_1 { q, d, m }, Kernel::Portable) => {
                dot::q4_1_portable_tile(&q[w.clone()], &d[w.clone()], &m[w], x)
            }
            (Blocks::Q8_0 { q, d }, Kernel::Portable) => {
                dot::q8_0_portable_tile(&q[w.clone()], &d[w], x)
            }
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q4_1 { q, d, m }, Kernel::Avx2) => {
                // SAFETY: `Kernel::Avx2` is chosen only when the CPU has
                // AVX2 and FMA; `matmul` checked every row has `nb` blocks
                // and (for Q4_1) sums.
                unsafe { dot::avx2::q4_1_tile(&q[w.clone()], &d[w.clone()], &m[w], x) }
            }
            #[cfg(target_arch = "x86_64")]
            (Blocks::Q8_0 { q, d }, Kernel::Avx2) => {
                // SAFETY: as above.
                unsafe { dot::avx2::q8_0_tile(&q[w.clone()], &d[w], x) }
            }
            #[cfg(target_arch = "aarch64")]
            (Blocks::Q4_1 { q, d, m }, Kernel::Neon) => {
                // SAFETY: `matmul` checked every row has `nb` blocks and sums.
                unsafe { dot::neon::q4_1_tile(&q[w.clone()], &d[w.clone()], &m[w], x) }
            }
            #[cfg(target_arch = "aarch64")]
            (Blocks::Q8_0 { q, d }, Kernel::Neon) => {
                // SAFETY: as above.
                unsafe { dot::neon::q8_0_tile(&q[w.clone()], &d[w], x) }
            }
            #[cfg(target_arch = "aarch64")]
            (Blocks::Q4_1 { q, d, m }, Kernel::NeonDot) => {
                // SAFETY: `Kernel::NeonDot` is chosen only when the CPU has
                // SDOT; block counts as above.
                unsafe { dot::neon::q4_1_tile_dot(&q[w.clone()], &d[w.clone()], &m[w], x) }
            }
            #[cfg(target_arch = "aarch64")]
            (Blocks::Q8_0 { q, d }, Kernel::NeonDot) => {
                // SAFETY: as above.
                unsafe { dot::neon::q8_0_tile_dot(&q[w.clone()], &d[w], x) }
            }
            // Q4_0 and Q5_1 have one kernel each (vectorised by the
            // compiler), run per row.
            (Blocks::Q4_0Repacked { q, d }, _) => {
                x.map(|x| dot::q4_0_repacked_dot(&q[w.clone()], &d[w.clone()], x))
            }
            (Blocks::Q5_1 { q, d, m }, _) => {
                x.map(|x| dot::q5_1_dot(&q[w.clone()], &d[w.clone()], &m[w.clone()], x))
            }
            // K-quant matrices take Q8_K inputs (`matmul_many_k`); the
            // format check in `matmul_many` keeps them from here.
            (Blocks::Q4K(_) | Blocks::Q5K(_) | Blocks::Q6K(_), _) => [f32::NAN; R],
        }
    }
}

/// The parallel tasks of a matmul over `ms`: each owns `ROWS_PER_TASK`
/// whole weight rows of one matrix and their `n` outputs in `outs`
/// (`[rows, n]` per matrix).
fn row_tasks<'a, 'm>(
    ms: &[&'m QMatrix],
    outs: &'a mut [Vec<f32>],
    n: usize,
) -> Vec<(&'m QMatrix, usize, &'a mut [f32])> {
    let mut tasks = Vec::new();
    for (m, out_t) in ms.iter().zip(outs.iter_mut()) {
        for (t, chunk) in out_t.chunks_mut(ROWS_PER_TASK * n.max(1)).enumerate() {
            tasks.push((*m, t * ROWS_PER_TASK, chunk));
        }
    }
    tasks
}

/// The `[rows, n]` outputs of [`row_tasks`] as `[n, rows]` row-major.
fn untranspose(ms: &[&QMatrix], outs: Vec<Vec<f32>>, n: usize) -> Vec<Vec<f32>> {
    if n == 1 {
        return outs;
    }
    ms.iter()
        .zip(outs)
        .map(|(m, out_t)| transpose(&out_t, m.rows, n))
        .collect()
}

/// Q5_0 / Q5_1 blocks widened to one signed byte per weight (`q -
/// offset`), with their scales (and, when the header holds one after the
/// scale, minimums: `head` is 4 for Q5_1, 2 for Q5_0).
fn widen_q5<const N: usize>(
    raw: &[[u8; N]],
    head: usize,
    offset: i8,
) -> (Vec<[i8; 32]>, Vec<f32>, Vec<f32>) {
    let f16_at = |b: &[u8], i: usize| f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]));
    let mut q = Vec::with_capacity(raw.len());
    let mut d = Vec::with_capacity(raw.len());
    let mut m = Vec::with_capacity(if head == 4 { raw.len() } else { 0 });
    for b in raw {
        d.push(f16_at(b, 0));
        if head == 4 {
            m.push(f16_at(b, 2));
        }
        let qh = u32::from_le_bytes([b[head], b[head + 1], b[head + 2], b[head + 3]]);
        let vals = file_k::q5_values(qh, &b[head + 4..]);
        // Values are 0..=31, so `v - offset` fits an i8.
        q.push(vals.map(|v| v as i8 - offset));
    }
    (q, d, m)
}

/// `[rows, n]` → `[n, rows]`, in parallel: each task writes
/// TRANSPOSE_ROWS whole output rows, reading 64-byte runs of each input
/// row.
fn transpose(out_t: &[f32], rows: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * rows];
    out.par_chunks_mut(TRANSPOSE_ROWS * rows.max(1))
        .enumerate()
        .for_each(|(task, o)| {
            let j0 = task * TRANSPOSE_ROWS;
            let here = o.len() / rows.max(1);
            for (r, col) in out_t.chunks_exact(n.max(1)).enumerate() {
                for (jj, v) in col[j0..j0 + here].iter().enumerate() {
                    o[jj * rows + r] = *v;
                }
            }
        });
    out
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
            // 7 inputs: one full tile of 4 and a remainder of 3.
            let (rows, cols, n) = (37, 96, 7);
            let data = blocks(ty, rows * cols / 32, 7);
            let m = QMatrix::from_blocks(ty, rows, cols, &data)
                .unwrap()
                .unwrap();
            let x = input(n * cols, 11);
            let input = m.quantize(&x).unwrap();
            let Input::Q8(q) = &input else {
                panic!("a 32-block matrix takes Q8 input")
            };
            let nb = cols / 32;
            let row = |j: usize| q.row(j);
            let y = m.matmul(&input).unwrap();
            assert_eq!(y.len(), n * rows);
            for r in 0..rows {
                let tiled = m.tile(Kernel::Portable, r, [row(0), row(1), row(2), row(3)]);
                for j in 0..n {
                    let portable = m.tile(Kernel::Portable, r, [row(j)])[0];
                    // Every kernel this CPU has (AVX2 on x86-64; NEON with
                    // and without SDOT on aarch64), alone and in a tile.
                    for k in Kernel::all() {
                        let fast = m.tile(k, r, [row(j)])[0];
                        assert_eq!(
                            portable.to_bits(),
                            fast.to_bits(),
                            "{ty:?} row {r} input {j}"
                        );
                        let tiled_fast = m.tile(k, r, [row(0), row(1), row(2), row(3)]);
                        if j < 4 {
                            assert_eq!(tiled_fast[j].to_bits(), portable.to_bits(), "tile {r} {j}");
                        }
                    }
                    assert_eq!(
                        y[j * rows + r].to_bits(),
                        portable.to_bits(),
                        "matmul {r} {j}"
                    );
                    if j < 4 {
                        assert_eq!(tiled[j].to_bits(), portable.to_bits(), "tile {r} {j}");
                    }
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
        let wrong = Input::Q8(Q8Rows::quantize(&[0.5; 64], 64, false));
        assert!(m.matmul(&wrong).is_err());
    }
}
