//! `memkern models quantize`: a GGUF model rewritten in another file type,
//! byte for byte what llama.cpp's `llama-quantize` writes.
//!
//! Exists so a user can quantise their own fine-tune (or CI can make the
//! K-quant variants of SmolLM2) without building llama.cpp, and so the
//! files memkern makes are the files every other GGUF runtime reads.
//!
//! What "the same bytes" takes (each part checked against llama-quantize's
//! SHA-256 in the `quantize` tests):
//! - the type of each tensor chosen as llama.cpp does ([`recipe`]);
//! - ggml's reference quantisers, float for float ([`rows`]);
//! - the metadata copied entry by entry, `general.quantization_version`
//!   and `general.file_type` moved to the end, split keys dropped;
//! - tensors in llama.cpp's order (by layer, then name), 32-byte aligned.
//!
//! Not supported (a clear error): an importance matrix, the IQ and
//! ternary types, mixture-of-experts files, Falcon, inputs with a
//! non-default alignment.

mod recipe;
pub(crate) mod rows;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::str::FromStr;

use rayon::prelude::*;

use crate::gguf::{GgmlType, Gguf, GgufError, GgufFile, TensorView};

pub use recipe::{Planned, plan};

/// A llama.cpp file type (`LLAMA_FTYPE_MOSTLY_*`) that memkern writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Every matrix Q4_0.
    Q4_0,
    /// Every matrix Q4_1.
    Q4_1,
    /// Every matrix Q5_0.
    Q5_0,
    /// Every matrix Q5_1.
    Q5_1,
    /// Every matrix Q8_0.
    Q8_0,
    /// Q4_K, with Q5_K for the first attn_v and ffn_down layers.
    Q4KS,
    /// Q4_K, with Q6_K for half of attn_v and ffn_down (the common pick).
    Q4KM,
    /// Every matrix Q5_K.
    Q5KS,
    /// Q5_K, with Q6_K for half of attn_v and ffn_down.
    Q5KM,
    /// Every matrix Q6_K.
    Q6K,
}

impl FileType {
    /// Every supported file type, in the order `--help` lists them.
    pub const ALL: [FileType; 10] = [
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q8_0,
        FileType::Q4KS,
        FileType::Q4KM,
        FileType::Q5KS,
        FileType::Q5KM,
        FileType::Q6K,
    ];

    /// The name llama.cpp and model hubs use (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        match self {
            FileType::Q4_0 => "Q4_0",
            FileType::Q4_1 => "Q4_1",
            FileType::Q5_0 => "Q5_0",
            FileType::Q5_1 => "Q5_1",
            FileType::Q8_0 => "Q8_0",
            FileType::Q4KS => "Q4_K_S",
            FileType::Q4KM => "Q4_K_M",
            FileType::Q5KS => "Q5_K_S",
            FileType::Q5KM => "Q5_K_M",
            FileType::Q6K => "Q6_K",
        }
    }

    /// The `general.file_type` value (`llama_ftype`).
    pub fn id(self) -> u32 {
        match self {
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q4KS => 14,
            FileType::Q4KM => 15,
            FileType::Q5KS => 16,
            FileType::Q5KM => 17,
            FileType::Q6K => 18,
        }
    }

    /// The type most matrices get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        match self {
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q4KS | FileType::Q4KM => GgmlType::Q4K,
            FileType::Q5KS | FileType::Q5KM => GgmlType::Q5K,
            FileType::Q6K => GgmlType::Q6K,
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FileType {
    type Err = QuantizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FileType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| QuantizeError::UnknownFileType(s.to_owned()))
    }
}

/// Why a model could not be quantised.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// The input is not a readable GGUF file.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Reading or writing failed.
    #[error("writing the quantised model: {0}")]
    Io(#[from] io::Error),
    /// The requested file type is not one memkern writes.
    #[error(
        "unknown file type {0:?}; memkern writes Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K"
    )]
    UnknownFileType(String),
    /// A tensor is already quantised and `allow_requantize` was not given.
    #[error(
        "tensor {tensor} is already {ty}: requantising loses quality; pass --allow-requantize to do it anyway (as llama-quantize)"
    )]
    Requantize {
        /// Tensor name.
        tensor: String,
        /// Its type in the input.
        ty: GgmlType,
    },
    /// A tensor's type cannot be read.
    #[error("tensor {tensor} is {ty}, which memkern cannot dequantise")]
    UnsupportedInput {
        /// Tensor name.
        tensor: String,
        /// Its type.
        ty: GgmlType,
    },
    /// No 32-wide type fits a tensor's rows.
    #[error("tensor {tensor}: no fallback for {ty}")]
    NoFallback {
        /// Tensor name.
        tensor: String,
        /// The type that did not fit.
        ty: GgmlType,
    },
    /// Falcon has rules of its own that memkern does not reproduce.
    #[error("architecture {0} is not supported by memkern's quantiser")]
    Architecture(String),
    /// Mixture-of-experts files have rules of their own.
    #[error("{0} is a mixture-of-experts model, which memkern's quantiser does not support")]
    MixtureOfExperts(String),
    /// A metadata entry the rules need is missing.
    #[error("the model has no {0} metadata entry")]
    MissingKey(String),
    /// llama-quantize writes 32-byte alignment whatever the input says.
    #[error("general.alignment is {0}; only the default 32 is supported")]
    Alignment(u64),
}

/// What [`quantize_file`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizeReport {
    /// The file type written.
    pub ftype: FileType,
    /// Tensors written.
    pub tensors: usize,
    /// Tensors whose type changed.
    pub quantized: usize,
    /// Input size in bytes.
    pub bytes_in: u64,
    /// Output size in bytes.
    pub bytes_out: u64,
    /// How many tensors of each output type.
    pub types: BTreeMap<String, usize>,
}

/// Keys llama-quantize drops (split bookkeeping) or rewrites at the end.
const DROPPED_KEYS: [&str; 5] = [
    "general.quantization_version",
    "general.file_type",
    "split.no",
    "split.count",
    "split.tensors.count",
];
/// ggml's `GGML_QNT_VERSION`.
const QNT_VERSION: u32 = 2;
/// `GGUF_DEFAULT_ALIGNMENT`.
const ALIGN: u64 = 32;
/// Rows quantised per parallel slab (bounds the f32 buffer).
const SLAB_ROWS: usize = 512;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_u32_kv(out: &mut Vec<u8>, key: &str, v: u32) {
    put_str(out, key);
    out.extend_from_slice(&4u32.to_le_bytes()); // GGUF_TYPE_UINT32
    out.extend_from_slice(&v.to_le_bytes());
}

fn padded(n: u64) -> u64 {
    n.next_multiple_of(ALIGN)
}

/// Bytes of a tensor of `dims` in `ty`.
fn tensor_bytes(dims: &[u64], ty: GgmlType) -> u64 {
    let elems: u64 = dims.iter().product();
    elems / ty.block_size() * ty.block_bytes()
}

/// The header (metadata, tensor infos, padding) of the output.
fn header(gguf: &Gguf, bytes: &[u8], plan: &[Planned], ftype: FileType) -> Vec<u8> {
    let mut kv = Vec::new();
    let mut n_kv = 0u64;
    for ((key, _), span) in gguf.metadata().iter().zip(gguf.metadata_spans()) {
        if DROPPED_KEYS.contains(&key.as_str()) {
            continue;
        }
        kv.extend_from_slice(&bytes[span.start as usize..span.end as usize]);
        n_kv += 1;
    }
    put_u32_kv(&mut kv, "general.quantization_version", QNT_VERSION);
    put_u32_kv(&mut kv, "general.file_type", ftype.id());
    n_kv += 2;

    let mut out = Vec::with_capacity(kv.len() + 64 * plan.len() + 64);
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(plan.len() as u64).to_le_bytes());
    out.extend_from_slice(&n_kv.to_le_bytes());
    out.extend_from_slice(&kv);
    let mut offset = 0u64;
    for p in plan {
        let t = &gguf.tensors()[p.index];
        put_str(&mut out, t.name());
        let nd = recipe::n_dims(t.dims());
        out.extend_from_slice(&(nd as u32).to_le_bytes());
        for d in &t.dims()[..nd] {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&p.ty.id().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += padded(tensor_bytes(t.dims(), p.ty));
    }
    out.resize(padded(out.len() as u64) as usize, 0);
    out
}

/// Quantises rows `[r0, r0 + n)` of `view` to `ty`.
fn quantize_rows(
    view: &TensorView<'_>,
    ty: GgmlType,
    r0: u64,
    n: u64,
) -> Result<Vec<u8>, GgufError> {
    let ne0 = view.dims()[0] as usize;
    let row_out = (ne0 as u64 / ty.block_size() * ty.block_bytes()) as usize;
    let quantize_row: fn(&[f32], &mut Vec<u8>) = match ty {
        GgmlType::Q4_0 => rows::q4_0,
        GgmlType::Q4_1 => rows::q4_1,
        GgmlType::Q5_0 => rows::q5_0,
        GgmlType::Q5_1 => rows::q5_1,
        GgmlType::Q8_0 => rows::q8_0,
        GgmlType::Q4K => rows::q4_k,
        GgmlType::Q5K => rows::q5_k,
        GgmlType::Q6K => rows::q6_k,
        GgmlType::F16 => |x, out| {
            for v in x {
                out.extend_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes());
            }
        },
        other => {
            return Err(GgufError::UnsupportedType {
                name: view.name().to_owned(),
                ty: other,
                op: "quantize",
            });
        }
    };
    let parts: Vec<Result<Vec<u8>, GgufError>> = (r0..r0 + n)
        .into_par_iter()
        .map(|r| {
            let mut x = vec![0f32; ne0];
            view.dequantize_row(r, &mut x)?;
            let mut out = Vec::with_capacity(row_out);
            quantize_row(&x, &mut out);
            Ok(out)
        })
        .collect();
    let mut out = Vec::with_capacity(row_out * n as usize);
    for p in parts {
        out.extend_from_slice(&p?);
    }
    Ok(out)
}

/// Writes `input` quantised to `ftype` into `out`; `progress(done, total)`
/// is called after each tensor.
pub fn quantize<D: AsRef<[u8]>>(
    input: &GgufFile<D>,
    ftype: FileType,
    allow_requantize: bool,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<QuantizeReport, QuantizeError> {
    let gguf = input.gguf();
    if gguf.alignment() != ALIGN {
        return Err(QuantizeError::Alignment(gguf.alignment()));
    }
    let plan = plan(gguf, ftype)?;
    for p in &plan {
        let t = &gguf.tensors()[p.index];
        if p.ty == t.ty() {
            continue;
        }
        if !t.ty().can_dequantize() {
            return Err(QuantizeError::UnsupportedInput {
                tensor: t.name().to_owned(),
                ty: t.ty(),
            });
        }
        let quantised_input = !matches!(t.ty(), GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16);
        if quantised_input && !allow_requantize {
            return Err(QuantizeError::Requantize {
                tensor: t.name().to_owned(),
                ty: t.ty(),
            });
        }
    }
    let head = header(gguf, input.bytes(), &plan, ftype);
    out.write_all(&head)?;
    let mut written = head.len() as u64;
    let mut types = BTreeMap::new();
    let mut quantized = 0;
    for (i, p) in plan.iter().enumerate() {
        let t = &gguf.tensors()[p.index];
        let view = input.tensor(t.name())?;
        let size = if p.ty == t.ty() {
            out.write_all(view.data())?;
            view.data().len() as u64
        } else {
            quantized += 1;
            let rows = t.n_rows();
            let mut size = 0u64;
            let mut r = 0;
            while r < rows {
                let n = (rows - r).min(SLAB_ROWS as u64);
                let bytes = quantize_rows(&view, p.ty, r, n)?;
                out.write_all(&bytes)?;
                size += bytes.len() as u64;
                r += n;
            }
            size
        };
        let pad = padded(size) - size;
        out.write_all(&vec![0u8; pad as usize])?;
        written += size + pad;
        *types.entry(p.ty.to_string()).or_insert(0) += 1;
        progress(i + 1, plan.len());
    }
    Ok(QuantizeReport {
        ftype,
        tensors: plan.len(),
        quantized,
        bytes_in: gguf.file_len(),
        bytes_out: written,
        types,
    })
}

/// [`quantize`] from file to file; the output appears only once complete
/// (written to a temporary file, synced, renamed).
pub fn quantize_file(
    input: &Path,
    output: &Path,
    ftype: FileType,
    allow_requantize: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<QuantizeReport, QuantizeError> {
    let file = GgufFile::open(input)?;
    let mut report = None;
    let mut failure = None;
    crate::atomic::write_atomic_with(output, |w| {
        match quantize(&file, ftype, allow_requantize, w, progress) {
            Ok(r) => {
                report = Some(r);
                Ok(())
            }
            Err(QuantizeError::Io(e)) => Err(e),
            Err(e) => {
                failure = Some(e);
                Err(io::Error::other("quantisation failed"))
            }
        }
    })
    .map_err(|e| failure.take().unwrap_or(QuantizeError::Io(e)))?;
    // `write_atomic_with` returned Ok only after `fill` did, which set it.
    report.ok_or_else(|| QuantizeError::Io(io::Error::other("no report")))
}
