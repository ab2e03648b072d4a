//! A tiny GGUF writer for building valid and deliberately broken files.

/// A metadata value to encode.
#[derive(Clone, Debug)]
pub enum V {
    U8(u8),
    I32(i32),
    U32(u32),
    U64(u64),
    F32(f32),
    Bool(bool),
    Str(String),
    ArrI32(Vec<i32>),
    ArrStr(Vec<String>),
    /// A raw value: type id followed by the given payload bytes.
    Raw(u32, Vec<u8>),
}

pub fn s(x: &str) -> V {
    V::Str(x.to_owned())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &V) {
    match v {
        V::U8(x) => {
            out.extend_from_slice(&0u32.to_le_bytes());
            out.push(*x);
        }
        V::U32(x) => {
            out.extend_from_slice(&4u32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        V::I32(x) => {
            out.extend_from_slice(&5u32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        V::F32(x) => {
            out.extend_from_slice(&6u32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        V::Bool(x) => {
            out.extend_from_slice(&7u32.to_le_bytes());
            out.push(u8::from(*x));
        }
        V::Str(x) => {
            out.extend_from_slice(&8u32.to_le_bytes());
            put_str(out, x);
        }
        V::U64(x) => {
            out.extend_from_slice(&10u32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        V::ArrI32(xs) => {
            out.extend_from_slice(&9u32.to_le_bytes());
            out.extend_from_slice(&5u32.to_le_bytes());
            out.extend_from_slice(&(xs.len() as u64).to_le_bytes());
            for x in xs {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        V::ArrStr(xs) => {
            out.extend_from_slice(&9u32.to_le_bytes());
            out.extend_from_slice(&8u32.to_le_bytes());
            out.extend_from_slice(&(xs.len() as u64).to_le_bytes());
            for x in xs {
                put_str(out, x);
            }
        }
        V::Raw(ty, payload) => {
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(payload);
        }
    }
}

/// A tensor to write.
#[derive(Clone, Debug)]
pub struct T {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
    /// Written instead of the computed offset when set.
    pub offset: Option<u64>,
}

pub fn tensor(name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> T {
    T {
        name: name.to_owned(),
        dims: dims.to_vec(),
        ty,
        data,
        offset: None,
    }
}

/// Byte positions of interest in a built file.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Start of the first tensor info.
    pub infos_start: usize,
    /// End of the tensor infos.
    pub header_len: usize,
    /// Start of the data section.
    pub data_offset: usize,
}

/// A GGUF file under construction.
#[derive(Clone, Debug)]
pub struct Builder {
    pub version: u32,
    pub kvs: Vec<(String, V)>,
    pub tensors: Vec<T>,
    /// Alignment used for layout (write `general.alignment` yourself).
    pub alignment: usize,
    /// Overrides the written tensor count.
    pub tensor_count: Option<u64>,
    /// Overrides the written metadata count.
    pub kv_count: Option<u64>,
}

impl Builder {
    pub fn new() -> Self {
        Self {
            version: 3,
            kvs: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
            tensor_count: None,
            kv_count: None,
        }
    }

    pub fn kv(mut self, k: &str, v: V) -> Self {
        self.kvs.push((k.to_owned(), v));
        self
    }

    /// The value of `k`, if set.
    pub fn value(&self, k: &str) -> Option<V> {
        self.kvs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    }

    /// Replaces the value of `k` (appends it when absent).
    pub fn set(mut self, k: &str, v: V) -> Self {
        match self.kvs.iter_mut().find(|(key, _)| key == k) {
            Some(kv) => kv.1 = v,
            None => self.kvs.push((k.to_owned(), v)),
        }
        self
    }

    pub fn tensor(mut self, t: T) -> Self {
        self.tensors.push(t);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        self.build_with_layout().0
    }

    /// Builds the file; it ends exactly at the end of the last tensor's
    /// data, so every shorter prefix is invalid.
    pub fn build_with_layout(&self) -> (Vec<u8>, Layout) {
        let a = self.alignment.max(1);
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        let n_t = self.tensor_count.unwrap_or(self.tensors.len() as u64);
        let n_kv = self.kv_count.unwrap_or(self.kvs.len() as u64);
        out.extend_from_slice(&n_t.to_le_bytes());
        out.extend_from_slice(&n_kv.to_le_bytes());
        for (k, v) in &self.kvs {
            put_str(&mut out, k);
            put_value(&mut out, v);
        }
        let infos_start = out.len();
        let mut offsets = Vec::new();
        let mut off = 0usize;
        for t in &self.tensors {
            off = off.next_multiple_of(a);
            offsets.push(off);
            off += t.data.len();
        }
        for (t, &o) in self.tensors.iter().zip(&offsets) {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.to_le_bytes());
            out.extend_from_slice(&t.offset.unwrap_or(o as u64).to_le_bytes());
        }
        let header_len = out.len();
        let data_offset = header_len.next_multiple_of(a);
        out.resize(data_offset, 0);
        for (t, &o) in self.tensors.iter().zip(&offsets) {
            out.resize(data_offset + o, 0);
            out.extend_from_slice(&t.data);
        }
        (
            out,
            Layout {
                infos_start,
                header_len,
                data_offset,
            },
        )
    }
}

/// GPT-2's byte-to-character table.
pub fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in bs.iter().zip(&cs) {
        table[*b as usize] = char::from_u32(*c).unwrap();
    }
    table
}

/// Deterministic pseudo-random bytes.
pub fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 24) as u8
        })
        .collect()
}

/// Sets every block's leading f16 fields (`n_scales` of them) to small
/// finite values so dequantised numbers are sane.
pub fn with_scales(mut data: Vec<u8>, block: usize, n_scales: usize) -> Vec<u8> {
    for b in data.chunks_mut(block) {
        for k in 0..n_scales {
            b[2 * k..2 * k + 2].copy_from_slice(&0x2c00u16.to_le_bytes()); // 0.0625
        }
    }
    data
}

/// A small but complete llama-style model: metadata, a byte-level BPE
/// tokenizer (256 byte tokens, 3 merges, 3 control tokens) and one tensor
/// of each interesting type.
pub fn small_model() -> Builder {
    let chars = byte_chars();
    let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let merged = ["he", "ll", "hell"];
    tokens.extend(merged.iter().map(|m| m.to_string()));
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    tokens.extend(specials.iter().map(|m| m.to_string()));
    let mut types = vec![1i32; 256 + merged.len()];
    types.extend([3, 3, 3]);
    let merges = vec!["h e".to_owned(), "l l".to_owned(), "he ll".to_owned()];
    let eos = (tokens.len() - 1) as u32;

    Builder::new()
        .kv("general.architecture", s("llama"))
        .kv("general.alignment", V::U32(32))
        .kv("llama.block_count", V::U32(1))
        .kv("llama.embedding_length", V::U32(64))
        .kv("llama.feed_forward_length", V::U32(128))
        .kv("llama.attention.head_count", V::U32(4))
        .kv("llama.attention.head_count_kv", V::U32(2))
        .kv("llama.context_length", V::U32(256))
        .kv("llama.rope.freq_base", V::F32(10000.0))
        .kv("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5))
        .kv("tokenizer.ggml.model", s("gpt2"))
        .kv("tokenizer.ggml.pre", s("smollm"))
        .kv("tokenizer.ggml.tokens", V::ArrStr(tokens))
        .kv("tokenizer.ggml.token_type", V::ArrI32(types))
        .kv("tokenizer.ggml.merges", V::ArrStr(merges))
        .kv("tokenizer.ggml.eos_token_id", V::U32(eos))
        .kv("tokenizer.ggml.add_bos_token", V::Bool(false))
        .tensor(tensor(
            "norm.f32",
            &[8, 2],
            0,
            (0..16)
                .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
                .collect(),
        ))
        .tensor(tensor(
            "emb.f16",
            &[32, 1],
            1,
            (0..32u16)
                .flat_map(|i| (0x3c00 + i).to_le_bytes())
                .collect(),
        ))
        .tensor(tensor(
            "w.q4_1",
            &[64, 2],
            3,
            with_scales(noise(80, 1), 20, 2),
        ))
        .tensor(tensor(
            "head.q8_0",
            &[32, 3],
            8,
            with_scales(noise(102, 2), 34, 1),
        ))
        .tensor(tensor(
            "w.q4_0",
            &[32, 1],
            2,
            with_scales(noise(18, 3), 18, 1),
        ))
        .tensor(tensor("w.q6_k", &[256, 1], 14, noise(210, 4)))
        .tensor(tensor("w.q2_k", &[256, 1], 10, noise(84, 5)))
}
