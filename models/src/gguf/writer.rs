//! A minimal GGUF v3 writer: string/f32 metadata and f32 tensors.
//!
//! Exists to export adapters in llama.cpp's GGUF LoRA format; the layout
//! mirrors what [`super::Gguf`] parses (and the tests read every exported
//! file back through it).

use super::parse::{DEFAULT_ALIGNMENT, GGUF_MAGIC};

/// GGUF value type ids used here.
const TYPE_F32: u32 = 6;
const TYPE_STRING: u32 = 8;
/// ggml tensor type id of f32.
const GGML_F32: u32 = 0;

/// Builds a GGUF file in memory.
///
/// Exists so file layout (header, metadata, tensor infos, aligned data)
/// lives in one place instead of in each exporter.
#[derive(Debug, Default)]
pub struct GgufWriter {
    kv: Vec<u8>,
    kv_count: u64,
    infos: Vec<u8>,
    data: Vec<u8>,
    tensor_count: u64,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn pad(out: &mut Vec<u8>, align: usize) {
    while !out.len().is_multiple_of(align) {
        out.push(0);
    }
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a string metadata entry.
    pub fn kv_str(&mut self, key: &str, value: &str) {
        put_str(&mut self.kv, key);
        self.kv.extend_from_slice(&TYPE_STRING.to_le_bytes());
        put_str(&mut self.kv, value);
        self.kv_count += 1;
    }

    /// Adds an f32 metadata entry.
    pub fn kv_f32(&mut self, key: &str, value: f32) {
        put_str(&mut self.kv, key);
        self.kv.extend_from_slice(&TYPE_F32.to_le_bytes());
        self.kv.extend_from_slice(&value.to_le_bytes());
        self.kv_count += 1;
    }

    /// Adds an f32 tensor with ggml dimensions `ne` (fastest first);
    /// `values` in ggml row order (`ne[0]` consecutive values per row).
    pub fn tensor_f32(&mut self, name: &str, ne: &[u64], values: &[f32]) {
        pad(&mut self.data, DEFAULT_ALIGNMENT as usize);
        put_str(&mut self.infos, name);
        self.infos
            .extend_from_slice(&(ne.len() as u32).to_le_bytes());
        for d in ne {
            self.infos.extend_from_slice(&d.to_le_bytes());
        }
        self.infos.extend_from_slice(&GGML_F32.to_le_bytes());
        self.infos
            .extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        for v in values {
            self.data.extend_from_slice(&v.to_le_bytes());
        }
        self.tensor_count += 1;
    }

    /// The file's bytes.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.kv.len() + self.infos.len() + self.data.len());
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&self.tensor_count.to_le_bytes());
        out.extend_from_slice(&self.kv_count.to_le_bytes());
        out.extend_from_slice(&self.kv);
        out.extend_from_slice(&self.infos);
        pad(&mut out, DEFAULT_ALIGNMENT as usize);
        out.extend_from_slice(&self.data);
        out
    }
}
