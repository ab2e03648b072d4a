//! Parsing and validating the GGUF header: metadata, tensor infos, layout.
//!
//! Every read goes through [`Cursor`], which checks the remaining length
//! first; every count is checked against the bytes that remain before
//! anything is allocated for it, so a hostile file cannot make the parser
//! allocate more than a small constant factor of its own size.

use std::collections::HashMap;
use std::ops::Range;

use super::error::GgufError;
use super::metadata::{MetaArray, MetaType, MetaValue};
use super::types::GgmlType;

/// `GGUF` as the first four bytes.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and tensor offsets when `general.alignment`
/// is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of arrays of arrays accepted (protects the stack).
pub const MAX_ARRAY_NESTING: usize = 8;

/// Smallest possible encoded tensor info: name length (8) + n_dims (4) +
/// one dimension (8) + type (4) + offset (8).
const MIN_TENSOR_INFO_LEN: u64 = 32;
/// Smallest possible encoded metadata entry: key length (8) + type (4) +
/// a one-byte value.
const MIN_KV_LEN: u64 = 13;

/// Reads little-endian values from a byte slice, never past its end.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        if n > available {
            return Err(GgufError::Truncated {
                what,
                offset: self.offset(),
                needed: n,
                available,
            });
        }
        // n <= remaining <= usize::MAX, so the cast is lossless.
        let n = n as usize;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count of items that each occupy at least `min_len` bytes, checked
    /// against the remaining bytes so it can be used as a capacity.
    fn count(&mut self, min_len: u64, what: &'static str) -> Result<usize, GgufError> {
        let offset = self.offset();
        let count = self.u64(what)?;
        let available = self.remaining();
        match count.checked_mul(min_len) {
            Some(need) if need <= available => Ok(count as usize),
            _ => Err(GgufError::CountTooLarge {
                what,
                count,
                offset,
                available,
            }),
        }
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let offset = self.offset();
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 { what, offset }),
        }
    }
}

/// Reads `count` fixed-size little-endian values into a vector.
fn read_vec<const N: usize, T>(
    cur: &mut Cursor<'_>,
    count: usize,
    conv: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, GgufError> {
    // `count` was checked against the remaining bytes by `Cursor::count`.
    let bytes = cur.take((count as u64) * N as u64, "metadata array")?;
    let (chunks, _) = bytes.as_chunks::<N>();
    Ok(chunks.iter().map(|c| conv(*c)).collect())
}

fn value_type(cur: &mut Cursor<'_>, key: &str) -> Result<MetaType, GgufError> {
    let ty = cur.u32("metadata value type")?;
    MetaType::from_id(ty).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_owned(),
        ty,
    })
}

fn read_bool(cur: &mut Cursor<'_>, key: &str) -> Result<bool, GgufError> {
    match cur.u8("bool")? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(GgufError::InvalidBool {
            key: key.to_owned(),
            value,
        }),
    }
}

fn read_value(cur: &mut Cursor<'_>, ty: MetaType, key: &str) -> Result<MetaValue, GgufError> {
    const W: &str = "metadata value";
    Ok(match ty {
        MetaType::U8 => MetaValue::U8(cur.u8(W)?),
        MetaType::I8 => MetaValue::I8(i8::from_le_bytes(cur.array(W)?)),
        MetaType::U16 => MetaValue::U16(u16::from_le_bytes(cur.array(W)?)),
        MetaType::I16 => MetaValue::I16(i16::from_le_bytes(cur.array(W)?)),
        MetaType::U32 => MetaValue::U32(cur.u32(W)?),
        MetaType::I32 => MetaValue::I32(i32::from_le_bytes(cur.array(W)?)),
        MetaType::F32 => MetaValue::F32(f32::from_le_bytes(cur.array(W)?)),
        MetaType::Bool => MetaValue::Bool(read_bool(cur, key)?),
        MetaType::String => MetaValue::String(cur.string("metadata string")?),
        MetaType::U64 => MetaValue::U64(cur.u64(W)?),
        MetaType::I64 => MetaValue::I64(i64::from_le_bytes(cur.array(W)?)),
        MetaType::F64 => MetaValue::F64(f64::from_le_bytes(cur.array(W)?)),
        MetaType::Array => MetaValue::Array(read_array(cur, key, 1)?),
    })
}

fn read_array(cur: &mut Cursor<'_>, key: &str, depth: usize) -> Result<MetaArray, GgufError> {
    if depth > MAX_ARRAY_NESTING {
        return Err(GgufError::NestingTooDeep {
            key: key.to_owned(),
            max: MAX_ARRAY_NESTING,
        });
    }
    let elem = value_type(cur, key)?;
    let n = cur.count(elem.min_encoded_len(), "metadata array element")?;
    Ok(match elem {
        MetaType::U8 => MetaArray::U8(read_vec::<1, _>(cur, n, |b| b[0])?),
        MetaType::I8 => MetaArray::I8(read_vec(cur, n, i8::from_le_bytes)?),
        MetaType::U16 => MetaArray::U16(read_vec(cur, n, u16::from_le_bytes)?),
        MetaType::I16 => MetaArray::I16(read_vec(cur, n, i16::from_le_bytes)?),
        MetaType::U32 => MetaArray::U32(read_vec(cur, n, u32::from_le_bytes)?),
        MetaType::I32 => MetaArray::I32(read_vec(cur, n, i32::from_le_bytes)?),
        MetaType::F32 => MetaArray::F32(read_vec(cur, n, f32::from_le_bytes)?),
        MetaType::U64 => MetaArray::U64(read_vec(cur, n, u64::from_le_bytes)?),
        MetaType::I64 => MetaArray::I64(read_vec(cur, n, i64::from_le_bytes)?),
        MetaType::F64 => MetaArray::F64(read_vec(cur, n, f64::from_le_bytes)?),
        MetaType::Bool => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_bool(cur, key)?);
            }
            MetaArray::Bool(v)
        }
        MetaType::String => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(cur.string("metadata array string")?);
            }
            MetaArray::String(v)
        }
        MetaType::Array => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(cur, key, depth + 1)?);
            }
            MetaArray::Array(v)
        }
    })
}

/// One tensor's name, type, shape and location, validated against the file.
///
/// Exists so tensors can be listed and located without touching their data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    /// Absolute byte offset of the first byte in the file.
    start: u64,
    n_bytes: u64,
    n_elements: u64,
    n_rows: u64,
}

impl TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimensions in ggml order: `ne0` (the contiguous row length) first.
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    /// The element type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Absolute offset of the tensor's first byte in the file.
    pub fn file_offset(&self) -> u64 {
        self.start
    }

    /// Size of the tensor's data in bytes.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }

    /// Number of elements (product of the dimensions).
    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// Elements in one row (`ne0`).
    pub fn row_len(&self) -> u64 {
        // `dims` has 1 to 4 entries: infos are only built by `Gguf::parse`,
        // which refuses any other dimension count.
        self.dims[0]
    }

    /// Number of rows: the product of all dimensions after the first.
    pub fn n_rows(&self) -> u64 {
        self.n_rows
    }

    /// Bytes in one row.
    pub fn row_bytes(&self) -> u64 {
        self.dims[0] / self.ty.block_size() * self.ty.block_bytes()
    }
}

/// The parsed, validated header of a GGUF file: version, metadata in file
/// order, tensor infos and the data-section layout.
///
/// Exists as the data-free part of a GGUF file: parsing it proves every
/// tensor lies inside the file, so tensor views can be cut without checks
/// that could fail later.
#[derive(Clone, Debug)]
pub struct Gguf {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    metadata_spans: Vec<Range<u64>>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    header_len: u64,
    data_offset: u64,
    file_len: u64,
}

impl Gguf {
    /// Parses and validates the header of the GGUF file held in `bytes`
    /// (the whole file: tensor bounds are checked against its length).
    pub fn parse(bytes: &[u8]) -> Result<Self, GgufError> {
        let mut cur = Cursor::new(bytes);
        let magic: [u8; 4] = cur.array("magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = cur.u32("version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = cur.u64("tensor count")?;
        let n_kv = cur.count(MIN_KV_LEN, "metadata entry")?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut metadata_spans = Vec::with_capacity(n_kv);
        let mut key_index = HashMap::with_capacity(n_kv);
        for _ in 0..n_kv {
            let start = cur.offset();
            let key = cur.string("metadata key")?;
            let ty = value_type(&mut cur, &key)?;
            let value = read_value(&mut cur, ty, &key)?;
            if key_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
            metadata_spans.push(start..cur.offset());
        }

        let n_tensors = match n_tensors.checked_mul(MIN_TENSOR_INFO_LEN) {
            Some(need) if need <= cur.remaining() => n_tensors as usize,
            _ => {
                return Err(GgufError::CountTooLarge {
                    what: "tensor info",
                    count: n_tensors,
                    offset: 8,
                    available: cur.remaining(),
                });
            }
        };

        let alignment = match key_index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let v = metadata[i].1.as_integer().unwrap_or(0);
                let a = u64::try_from(v).unwrap_or(0);
                if a == 0 || !a.is_power_of_two() {
                    return Err(GgufError::BadAlignment(a));
                }
                a
            }
        };

        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            raw.push(read_tensor_info(&mut cur)?);
        }
        let header_len = cur.offset();
        let file_len = bytes.len() as u64;
        let data_offset =
            header_len
                .checked_next_multiple_of(alignment)
                .ok_or(GgufError::DataPastEof {
                    data_offset: u64::MAX,
                    file_len,
                })?;
        if data_offset > file_len && !raw.is_empty() {
            return Err(GgufError::DataPastEof {
                data_offset,
                file_len,
            });
        }

        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::with_capacity(raw.len());
        for r in raw {
            let info = validate_tensor(r, alignment, data_offset, file_len)?;
            if tensor_index
                .insert(info.name.clone(), tensors.len())
                .is_some()
            {
                return Err(GgufError::DuplicateTensor(info.name));
            }
            tensors.push(info);
        }
        check_overlaps(&tensors)?;

        Ok(Self {
            version,
            alignment,
            metadata,
            metadata_spans,
            key_index,
            tensors,
            tensor_index,
            header_len,
            data_offset,
            file_len,
        })
    }

    /// Where each metadata entry (key, type and value) lies in the file, in
    /// the order of [`Self::metadata`].
    ///
    /// Exists so a rewriter (`quantize`) can copy entries byte for byte
    /// instead of re-encoding them.
    pub fn metadata_spans(&self) -> &[Range<u64>] {
        &self.metadata_spans
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of every tensor offset.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Length of the file the header was validated against.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes of magic, counts, metadata and tensor infos (before padding).
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// Absolute offset of the aligned data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The metadata value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_owned()))
    }

    fn wrong(key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
        GgufError::WrongType {
            key: key.to_owned(),
            expected,
            found: found.describe(),
        }
    }

    /// A required string value.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "a string", v))
    }

    /// A required non-negative integer of any stored width that fits `u64`.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| Self::wrong(key, "a non-negative integer", v))
    }

    /// A required non-negative integer that fits `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.require(key)?;
        v.as_integer()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| Self::wrong(key, "an integer in u32 range", v))
    }

    /// A required number (float or integer) as `f64`.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| Self::wrong(key, "a number", v))
    }

    /// A required bool.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            MetaValue::Bool(b) => Ok(*b),
            v => Err(Self::wrong(key, "a bool", v)),
        }
    }

    /// A required array.
    pub fn get_array(&self, key: &str) -> Result<&MetaArray, GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| Self::wrong(key, "an array", v))
    }

    /// A required array of strings, e.g. `tokenizer.ggml.tokens`.
    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        let v = self.require(key)?;
        match v {
            MetaValue::Array(MetaArray::String(s)) => Ok(s),
            _ => Err(Self::wrong(key, "an array of strings", v)),
        }
    }

    /// `general.architecture`, e.g. `llama`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of the tensor called `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor_index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| GgufError::TensorNotFound(name.to_owned()))
    }
}

struct RawTensor {
    name: String,
    dims: Vec<u64>,
    ty_id: u32,
    offset: u64,
}

fn read_tensor_info(cur: &mut Cursor<'_>) -> Result<RawTensor, GgufError> {
    let name = cur.string("tensor name")?;
    let n_dims = cur.u32("tensor dimension count")?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(GgufError::BadDimCount { name, n_dims });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64("tensor dimension")?);
    }
    let ty_id = cur.u32("tensor type")?;
    let offset = cur.u64("tensor offset")?;
    Ok(RawTensor {
        name,
        dims,
        ty_id,
        offset,
    })
}

fn validate_tensor(
    r: RawTensor,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<TensorInfo, GgufError> {
    let Some(ty) = GgmlType::from_id(r.ty_id) else {
        return Err(GgufError::UnknownTensorType {
            name: r.name,
            ty: r.ty_id,
        });
    };
    let n_elements = r
        .dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64);
    let Some(n_elements) = n_elements else {
        return Err(GgufError::ShapeOverflow {
            name: r.name,
            dims: r.dims,
        });
    };
    // Checked separately: with ne0 == 0 the element count is 0 even when
    // the other dimensions overflow.
    let n_rows = r.dims[1..]
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64);
    let Some(n_rows) = n_rows else {
        return Err(GgufError::ShapeOverflow {
            name: r.name,
            dims: r.dims,
        });
    };
    let block = ty.block_size();
    if !r.dims[0].is_multiple_of(block) {
        return Err(GgufError::BadRowLength {
            ne0: r.dims[0],
            name: r.name,
            ty,
            block,
        });
    }
    let Some(n_bytes) = (n_elements / block).checked_mul(ty.block_bytes()) else {
        return Err(GgufError::ShapeOverflow {
            name: r.name,
            dims: r.dims,
        });
    };
    if !r.offset.is_multiple_of(alignment) {
        return Err(GgufError::MisalignedTensor {
            name: r.name,
            offset: r.offset,
            alignment,
        });
    }
    let start = data_offset.checked_add(r.offset);
    let end = start.and_then(|s| s.checked_add(n_bytes));
    match (start, end) {
        (Some(start), Some(end)) if end <= file_len => Ok(TensorInfo {
            name: r.name,
            dims: r.dims,
            ty,
            start,
            n_bytes,
            n_elements,
            n_rows,
        }),
        _ => Err(GgufError::TensorOutOfBounds {
            name: r.name,
            start: start.unwrap_or(u64::MAX),
            end: end.unwrap_or(u64::MAX),
            file_len,
        }),
    }
}

fn check_overlaps(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| t.start);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Both ends were checked not to overflow in `validate_tensor`.
        if a.start + a.n_bytes > b.start {
            return Err(GgufError::TensorOverlap {
                first: a.name.clone(),
                second: b.name.clone(),
            });
        }
    }
    Ok(())
}
