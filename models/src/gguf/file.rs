//! A GGUF file held in memory (mapped or owned) and zero-copy tensor views.

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;
use sha2::{Digest, Sha256};

use super::error::GgufError;
use super::kquant;
use super::parse::{Gguf, TensorInfo};
use super::quant::{self, BlockQ4_0, BlockQ4_1, BlockQ8_0, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES};
use super::types::GgmlType;
use crate::fingerprint::Fingerprint;

/// Domain separator of the model fingerprint; bump the version if the
/// hashed content ever changes.
const FINGERPRINT_DOMAIN: &[u8] = b"memkern/gguf-fingerprint/v1\0";

/// A GGUF file's bytes plus its validated header.
///
/// Exists to tie tensor views to the bytes they borrow: `D` is a memory map
/// for real models ([`GgufFile::open`]) or any byte buffer for tests and
/// fuzzing ([`GgufFile::from_bytes`]). Derefs to [`Gguf`] for metadata.
pub struct GgufFile<D = Mmap> {
    data: D,
    gguf: Gguf,
}

impl GgufFile<Mmap> {
    /// Memory-maps and validates the GGUF file at `path`.
    ///
    /// The file must not be modified or truncated while it is open (the
    /// usual memory-map contract); files in the model cache are only ever
    /// replaced by rename, never rewritten in place. Use
    /// [`GgufFile::from_bytes`] with `std::fs::read` to avoid mapping.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        // SAFETY: the map is read-only and private to this value; the
        // documented contract above forbids concurrent modification of the
        // file, which is the only way the mapped bytes could change.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        Self::from_bytes(map)
    }
}

impl<D: AsRef<[u8]>> GgufFile<D> {
    /// Parses and validates a GGUF file held in `data`.
    pub fn from_bytes(data: D) -> Result<Self, GgufError> {
        let gguf = Gguf::parse(data.as_ref())?;
        Ok(Self { data, gguf })
    }

    /// The validated header (also reachable through `Deref`).
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.data.as_ref()
    }

    /// A zero-copy view of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, GgufError> {
        let info = self.gguf.tensor_info(name)?;
        self.view(info)
    }

    /// Zero-copy views of all tensors in file order.
    pub fn tensor_views(&self) -> impl Iterator<Item = Result<TensorView<'_>, GgufError>> {
        self.gguf.tensors().iter().map(|info| self.view(info))
    }

    fn view<'a>(&'a self, info: &'a TensorInfo) -> Result<TensorView<'a>, GgufError> {
        let bytes = self.data.as_ref();
        let out_of_bounds = || GgufError::TensorOutOfBounds {
            name: info.name().to_owned(),
            start: info.file_offset(),
            end: info.file_offset().saturating_add(info.n_bytes()),
            file_len: bytes.len() as u64,
        };
        // Bounds were validated at parse time; `get` keeps this panic-free
        // even for a `D` whose `as_ref` changes length.
        let start = usize::try_from(info.file_offset()).map_err(|_| out_of_bounds())?;
        let len = usize::try_from(info.n_bytes()).map_err(|_| out_of_bounds())?;
        let data = start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(out_of_bounds)?;
        Ok(TensorView { info, data })
    }

    /// A 128-bit fingerprint of the model: SHA-256 (truncated) over the
    /// header (magic, metadata, tensor infos) and every tensor's data bytes
    /// in file order, skipping alignment padding.
    ///
    /// Cost: one full sequential read of the file (≈ 98 MB for SmolLM2
    /// Q4_1; see the crate's tests for the measured time). Compute it once
    /// per model file and keep it.
    pub fn fingerprint(&self) -> Result<Fingerprint, GgufError> {
        let bytes = self.data.as_ref();
        let mut h = Sha256::new();
        h.update(FINGERPRINT_DOMAIN);
        let header_len = usize::try_from(self.gguf.header_len()).unwrap_or(usize::MAX);
        let header = bytes.get(..header_len).ok_or(GgufError::Truncated {
            what: "header",
            offset: 0,
            needed: self.gguf.header_len(),
            available: bytes.len() as u64,
        })?;
        h.update(header);
        for view in self.tensor_views() {
            h.update(view?.data());
        }
        Ok(Fingerprint::from_sha256(h))
    }
}

impl<D> Deref for GgufFile<D> {
    type Target = Gguf;

    fn deref(&self) -> &Gguf {
        &self.gguf
    }
}

/// A borrowed view of one tensor's bytes, plus its info.
///
/// Exists to hand tensor data to model code without copying: block slices
/// point straight into the mapped file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    info: &'a TensorInfo,
    data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// The tensor's info (name, type, shape, location).
    pub fn info(&self) -> &'a TensorInfo {
        self.info
    }

    /// The tensor's name.
    pub fn name(&self) -> &'a str {
        self.info.name()
    }

    /// The element type.
    pub fn ty(&self) -> GgmlType {
        self.info.ty()
    }

    /// Dimensions, `ne0` (row length) first.
    pub fn dims(&self) -> &'a [u64] {
        self.info.dims()
    }

    /// The raw bytes, exactly [`TensorInfo::n_bytes`] long.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    fn require_type(&self, ty: GgmlType, op: &'static str) -> Result<(), GgufError> {
        if self.ty() == ty {
            Ok(())
        } else {
            Err(GgufError::UnsupportedType {
                name: self.name().to_owned(),
                ty: self.ty(),
                op,
            })
        }
    }

    /// The bytes of row `row` (`ne0` elements).
    pub fn row_data(&self, row: u64) -> Result<&'a [u8], GgufError> {
        let rows = self.info.n_rows();
        let row_bytes = self.info.row_bytes();
        if row >= rows {
            return Err(GgufError::RowOutOfRange {
                name: self.name().to_owned(),
                row,
                rows,
            });
        }
        // row < rows and rows · row_bytes == n_bytes ≤ data.len(), so
        // neither the products nor the slice can overflow or go out of bounds;
        // `get` keeps it panic-free regardless.
        let start = (row * row_bytes) as usize;
        self.data
            .get(start..start + row_bytes as usize)
            .ok_or(GgufError::RowOutOfRange {
                name: self.name().to_owned(),
                row,
                rows,
            })
    }

    /// The data as `f32` values without copying (F32 tensors only).
    ///
    /// Fails with [`GgufError::UnalignedData`] if the buffer is not 4-byte
    /// aligned (never for [`GgufFile::open`], whose data offsets are aligned
    /// within a page-aligned map) or on big-endian targets.
    pub fn as_f32(&self) -> Result<&'a [f32], GgufError> {
        self.require_type(GgmlType::F32, "as_f32")?;
        let unaligned = || GgufError::UnalignedData {
            name: self.name().to_owned(),
            ty: self.ty(),
        };
        if cfg!(target_endian = "big") {
            return Err(unaligned());
        }
        // SAFETY: every bit pattern is a valid f32 and `align_to` returns a
        // correctly aligned middle slice within `data`; we accept it only
        // when it covers all of `data`. Little-endian byte order matches the
        // file (checked above).
        let (pre, mid, post) = unsafe { self.data.align_to::<f32>() };
        if pre.is_empty() && post.is_empty() {
            Ok(mid)
        } else {
            Err(unaligned())
        }
    }

    /// The data as little-endian f16 values (F16 tensors only).
    pub fn f16_values(&self) -> Result<&'a [[u8; 2]], GgufError> {
        self.require_type(GgmlType::F16, "f16_values")?;
        Ok(self.data.as_chunks::<2>().0)
    }

    /// The data as Q4_0 blocks (Q4_0 tensors only).
    pub fn q4_0_blocks(&self) -> Result<&'a [BlockQ4_0], GgufError> {
        self.require_type(GgmlType::Q4_0, "q4_0_blocks")?;
        Ok(self.data.as_chunks::<Q4_0_BYTES>().0)
    }

    /// The data as Q4_1 blocks (Q4_1 tensors only); row `r` is blocks
    /// `r·k .. (r+1)·k` with `k = ne0 / 32`.
    pub fn q4_1_blocks(&self) -> Result<&'a [BlockQ4_1], GgufError> {
        self.require_type(GgmlType::Q4_1, "q4_1_blocks")?;
        Ok(self.data.as_chunks::<Q4_1_BYTES>().0)
    }

    /// The data as Q8_0 blocks (Q8_0 tensors only).
    pub fn q8_0_blocks(&self) -> Result<&'a [BlockQ8_0], GgufError> {
        self.require_type(GgmlType::Q8_0, "q8_0_blocks")?;
        Ok(self.data.as_chunks::<Q8_0_BYTES>().0)
    }

    /// Dequantises row `row` into `out` (`out.len()` must be `ne0`), for
    /// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K
    /// tensors; other types are
    /// [`GgufError::UnsupportedType`].
    pub fn dequantize_row(&self, row: u64, out: &mut [f32]) -> Result<(), GgufError> {
        let data = self.row_data(row)?;
        dequantize_bytes(self, data, out)
    }

    /// The whole tensor dequantised to a new `Vec<f32>` of `n_elements`
    /// values (supported types as for [`Self::dequantize_row`]).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, GgufError> {
        if !self.ty().can_dequantize() {
            return Err(GgufError::UnsupportedType {
                name: self.name().to_owned(),
                ty: self.ty(),
                op: "to_f32_vec",
            });
        }
        // Supported types store at least 0.56 bytes per element (Q4_0, Q4_K), so
        // `n_elements` is below twice the tensor's validated byte length:
        // the allocation is bounded by the file size.
        let n = usize::try_from(self.info.n_elements()).map_err(|_| GgufError::ShapeOverflow {
            name: self.name().to_owned(),
            dims: self.dims().to_vec(),
        })?;
        let mut out = vec![0f32; n];
        dequantize_bytes(self, self.data, &mut out)?;
        Ok(out)
    }
}

fn dequantize_bytes(view: &TensorView<'_>, data: &[u8], out: &mut [f32]) -> Result<(), GgufError> {
    match view.ty() {
        GgmlType::F32 => quant::dequantize_f32(data.as_chunks::<4>().0, out),
        GgmlType::F16 => quant::dequantize_f16(data.as_chunks::<2>().0, out),
        GgmlType::Q4_0 => quant::dequantize_q4_0(data.as_chunks::<Q4_0_BYTES>().0, out),
        GgmlType::Q4_1 => quant::dequantize_q4_1(data.as_chunks::<Q4_1_BYTES>().0, out),
        GgmlType::Q8_0 => quant::dequantize_q8_0(data.as_chunks::<Q8_0_BYTES>().0, out),
        GgmlType::Bf16 => kquant::dequantize_bf16(data.as_chunks::<2>().0, out),
        GgmlType::Q5_0 => {
            kquant::dequantize_q5_0(data.as_chunks::<{ kquant::Q5_0_BYTES }>().0, out)
        }
        GgmlType::Q5_1 => {
            kquant::dequantize_q5_1(data.as_chunks::<{ kquant::Q5_1_BYTES }>().0, out)
        }
        GgmlType::Q4K => kquant::dequantize_q4_k(data.as_chunks::<{ kquant::Q4_K_BYTES }>().0, out),
        GgmlType::Q5K => kquant::dequantize_q5_k(data.as_chunks::<{ kquant::Q5_K_BYTES }>().0, out),
        GgmlType::Q6K => kquant::dequantize_q6_k(data.as_chunks::<{ kquant::Q6_K_BYTES }>().0, out),
        ty => Err(GgufError::UnsupportedType {
            name: view.name().to_owned(),
            ty,
            op: "dequantize",
        }),
    }
}
