//! Adapter files: safetensors (what memkern stores) and llama.cpp's GGUF
//! LoRA format (what `llama-cli --lora` loads).
//!
//! Both use llama.cpp's tensor names and orientation: for the base weight
//! `blk.{i}.attn_q.weight`, `….lora_a` holds `Aᵀ` (`[rank, in]`, PyTorch
//! order; ggml `ne = [in, rank]`) and `….lora_b` holds `Bᵀ` (`[out, rank]`;
//! ggml `ne = [rank, out]`), and the update is `(alpha / rank)·B(Ax)` in
//! the GGUF (RoPE-permuted) weight space the model is loaded in.

use std::path::Path;

use burn::tensor::Device;
use memkern_core::cube::{AdapterFormat, BlobRef, Parametric, TargetModules};
use memkern_core::ids::{self, BlobDigest};
use safetensors::tensor::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use super::adapter::{Adapter, LoraConfig, Target};
use super::error::LoraError;
use crate::fingerprint::Fingerprint;
use crate::llama::LlamaConfig;

/// Value of the `format` metadata key in memkern adapter files.
pub const FORMAT: &str = "memkern-lora";
/// Adapter file format version.
pub const VERSION: &str = "1";

/// Largest adapter file read (1 GiB): a bound on what a corrupt header can
/// make the reader allocate.
pub const MAX_FILE: u64 = 1 << 30;

fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for (r, row) in m.chunks_exact(cols).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Every pair of `adapter` as `(base name, Aᵀ [rank][in], Bᵀ [out][rank],
/// in, out)`, in layer then target order.
type FilePair = (String, Vec<f32>, Vec<f32>, usize, usize);

fn file_pairs(adapter: &Adapter, model: &LlamaConfig) -> Result<Vec<FilePair>, LoraError> {
    let r = adapter.config().rank();
    let mut out = Vec::new();
    for layer in 0..adapter.layers.len() {
        for t in adapter.config().target_list() {
            let (i, o) = t.dims(model);
            let (a, b) = adapter.host_pair(layer, t)?;
            out.push((
                t.gguf_name(layer),
                transpose(&a, i, r),
                transpose(&b, r, o),
                i,
                o,
            ));
        }
    }
    Ok(out)
}

/// `t` as comma-separated names (`q,k,v,o`), as adapter files store it.
pub fn targets_string(t: TargetModules) -> String {
    TargetModules::NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| t.0 & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses comma-separated target names (`q,k,v,o,gate,up,down`); an
/// unknown name is [`LoraError::Format`].
pub fn parse_targets(s: &str) -> Result<TargetModules, LoraError> {
    let mut bits = 0u16;
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let i = TargetModules::NAMES
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| LoraError::Format(format!("unknown target {name:?}")))?;
        bits |= 1 << i;
    }
    Ok(TargetModules(bits))
}

impl Adapter {
    /// The adapter as a safetensors file: llama.cpp-named `lora_a`/`lora_b`
    /// tensors (f32) and metadata `format`, `version`, `base_model`,
    /// `rank`, `alpha`, `targets`.
    ///
    /// Written here rather than with `safetensors::serialize`, whose
    /// metadata is a `HashMap` (random order): these bytes are
    /// reproducible, so the same adapter always has the same blob digest.
    /// The reader is the `safetensors` crate's, which validates them.
    pub fn to_safetensors(&self, model: &LlamaConfig) -> Result<Vec<u8>, LoraError> {
        let c = self.config();
        let r = c.rank();
        let mut header = serde_json::Map::new();
        header.insert(
            "__metadata__".into(),
            serde_json::json!({
                "format": FORMAT,
                "version": VERSION,
                "base_model": self.base().to_hex(),
                "rank": r.to_string(),
                "alpha": c.alpha().to_string(),
                "targets": targets_string(c.targets()),
            }),
        );
        let mut data = Vec::new();
        let mut put = |name: String, values: &[f32], shape: [usize; 2]| {
            let start = data.len();
            data.extend_from_slice(&le_bytes(values));
            header.insert(
                name,
                serde_json::json!({
                    "dtype": "F32",
                    "shape": shape,
                    "data_offsets": [start, data.len()],
                }),
            );
        };
        for (name, a, b, i, o) in file_pairs(self, model)? {
            put(format!("{name}.lora_a"), &a, [r, i]);
            put(format!("{name}.lora_b"), &b, [o, r]);
        }
        let mut json = serde_json::to_vec(&serde_json::Value::Object(header))
            .map_err(|e| LoraError::Format(e.to_string()))?;
        while json.len() % 8 != 0 {
            json.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + json.len() + data.len());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Reads a safetensors adapter for the model with fingerprint `base`
    /// and shape `model` onto `device`.
    ///
    /// Refuses with a typed error, before building anything: a file that
    /// is not a memkern adapter, another base model
    /// ([`LoraError::BaseMismatch`]), a bad configuration, missing
    /// tensors, wrong shapes or dtypes, and NaN or infinite weights.
    pub fn from_safetensors(
        bytes: &[u8],
        base: Fingerprint,
        model: &LlamaConfig,
        device: &Device,
    ) -> Result<Self, LoraError> {
        let (found, config) = read_header(bytes)?;
        if found != base {
            return Err(LoraError::BaseMismatch {
                expected: base,
                found,
            });
        }
        let rank = config.rank();
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| LoraError::Format(format!("not a safetensors file: {e}")))?;
        let read = |name: &str, shape: [usize; 2]| -> Result<Vec<f32>, LoraError> {
            let t = st
                .tensor(name)
                .map_err(|_| LoraError::MissingTensor(name.to_owned()))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                return Err(LoraError::Format(format!(
                    "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        Adapter::from_host(config, model, base, device, |layer, t: Target| {
            let (i, o) = t.dims(model);
            let name = t.gguf_name(layer);
            let at = read(&format!("{name}.lora_a"), [rank, i])?;
            let bt = read(&format!("{name}.lora_b"), [o, rank])?;
            Ok((transpose(&at, rank, i), transpose(&bt, o, rank)))
        })
    }

    /// Writes [`Self::to_safetensors`] to `path` atomically (temporary
    /// file, fsync, rename) and returns the bytes' SHA-256.
    pub fn save(&self, path: &Path, model: &LlamaConfig) -> Result<[u8; 32], LoraError> {
        let bytes = self.to_safetensors(model)?;
        crate::atomic::write_atomic(path, &bytes).map_err(|source| LoraError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Sha256::digest(&bytes).into())
    }

    /// Reads an adapter file (see [`Self::from_safetensors`]); with
    /// `digest`, the file's SHA-256 must equal it
    /// ([`LoraError::Checksum`] otherwise).
    pub fn load(
        path: &Path,
        digest: Option<&[u8; 32]>,
        base: Fingerprint,
        model: &LlamaConfig,
        device: &Device,
    ) -> Result<Self, LoraError> {
        let io = |source| LoraError::Io {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_FILE {
            return Err(LoraError::Format(format!(
                "{len} bytes is larger than the {MAX_FILE}-byte limit"
            )));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        if let Some(d) = digest
            && <[u8; 32]>::from(Sha256::digest(&bytes)) != *d
        {
            return Err(LoraError::Checksum);
        }
        Self::from_safetensors(&bytes, base, model, device)
    }

    /// The identity of the adapter file `file` (as
    /// [`Self::to_safetensors`] wrote it) as the core's Parametric-cube
    /// payload: base-model fingerprint, format, rank, alpha, targets and
    /// the blob reference (SHA-256 and size).
    pub fn parametric_payload(&self, file: &[u8]) -> Parametric {
        payload(self.base(), self.config(), file)
    }

    /// Loads the adapter a Parametric cube names from its blob `file`.
    ///
    /// Checks, in order and before building anything: the format, the
    /// base model ([`LoraError::BaseMismatch`] — an adapter of another
    /// model is never applied), the blob's size and SHA-256
    /// ([`LoraError::Checksum`]), the file itself, and that the file's
    /// rank, alpha and targets are the cube's.
    pub fn from_cube(
        cube: &Parametric,
        file: &[u8],
        base: Fingerprint,
        model: &LlamaConfig,
        device: &Device,
    ) -> Result<Self, LoraError> {
        if cube.format != AdapterFormat::SafetensorsLora {
            return Err(LoraError::Format(format!(
                "cube holds a {:?} adapter; only safetensors adapters are loaded",
                cube.format
            )));
        }
        if cube.base_model.0 != base.0 {
            return Err(LoraError::BaseMismatch {
                expected: base,
                found: Fingerprint(cube.base_model.0),
            });
        }
        if cube.blob.size != file.len() as u64
            || cube.blob.digest.0 != <[u8; 32]>::from(Sha256::digest(file))
        {
            return Err(LoraError::Checksum);
        }
        let adapter = Self::from_safetensors(file, base, model, device)?;
        let c = adapter.config();
        if usize::from(cube.rank) != c.rank()
            || cube.alpha.to_bits() != c.alpha().to_bits()
            || cube.targets != c.targets()
        {
            return Err(LoraError::Format(
                "the cube's rank, alpha or targets differ from the file's".into(),
            ));
        }
        Ok(adapter)
    }

    /// The adapter in llama.cpp's GGUF LoRA format (GGUF v3,
    /// `general.type = "adapter"`, `adapter.type = "lora"`,
    /// `adapter.lora.alpha`, f32 `lora_a`/`lora_b` tensors named after the
    /// base weights), so `llama-cli -m base.gguf --lora adapter.gguf`
    /// applies the same update. `architecture` is the base model's
    /// `general.architecture` (llama.cpp refuses a mismatch); the base
    /// fingerprint is kept under `memkern.base_model`.
    pub fn to_gguf(&self, model: &LlamaConfig, architecture: &str) -> Result<Vec<u8>, LoraError> {
        let r = self.config().rank() as u64;
        let mut w = crate::gguf::writer::GgufWriter::new();
        w.kv_str("general.architecture", architecture);
        w.kv_str("general.type", "adapter");
        w.kv_str("general.name", "memkern parametric memory");
        w.kv_str("adapter.type", "lora");
        w.kv_f32("adapter.lora.alpha", self.config().alpha());
        w.kv_str("memkern.base_model", &self.base().to_hex());
        for (name, a, b, i, o) in file_pairs(self, model)? {
            w.tensor_f32(&format!("{name}.lora_a"), &[i as u64, r], &a);
            w.tensor_f32(&format!("{name}.lora_b"), &[r, o as u64], &b);
        }
        Ok(w.finish())
    }
}

/// The base model and configuration a memkern adapter file names in its
/// metadata (format and version checked; tensors not read).
fn read_header(bytes: &[u8]) -> Result<(Fingerprint, LoraConfig), LoraError> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| LoraError::Format(format!("not a safetensors file: {e}")))?;
    let kv = meta
        .metadata()
        .as_ref()
        .ok_or_else(|| LoraError::Format("no metadata".into()))?;
    let get = |k: &str| {
        kv.get(k)
            .map(String::as_str)
            .ok_or_else(|| LoraError::Format(format!("metadata lacks {k:?}")))
    };
    if get("format")? != FORMAT {
        return Err(LoraError::Format(format!(
            "format {:?} is not {FORMAT:?}",
            get("format")?
        )));
    }
    if get("version")? != VERSION {
        return Err(LoraError::Format(format!(
            "version {:?} is not supported (expected {VERSION})",
            get("version")?
        )));
    }
    let found = Fingerprint::from_hex(get("base_model")?)
        .ok_or_else(|| LoraError::Format("base_model is not 32 hex digits".into()))?;
    let rank: usize = get("rank")?
        .parse()
        .map_err(|_| LoraError::Format("rank is not a number".into()))?;
    let alpha: f32 = get("alpha")?
        .parse()
        .map_err(|_| LoraError::Format("alpha is not a number".into()))?;
    Ok((
        found,
        LoraConfig::new(rank, alpha, parse_targets(get("targets")?)?)?,
    ))
}

/// The Parametric-cube payload of adapter file `file`, from its metadata
/// alone: exists so a module can ship an adapter without loading its base
/// model (the shapes are checked against the model where it is applied).
pub fn parametric_of_file(file: &[u8]) -> Result<Parametric, LoraError> {
    let (base, c) = read_header(file)?;
    Ok(payload(base, &c, file))
}

fn payload(base: Fingerprint, c: &LoraConfig, file: &[u8]) -> Parametric {
    Parametric {
        base_model: ids::Fingerprint(base.0),
        format: AdapterFormat::SafetensorsLora,
        rank: u16::try_from(c.rank()).unwrap_or(u16::MAX),
        alpha: c.alpha(),
        targets: c.targets(),
        blob: BlobRef {
            digest: BlobDigest(Sha256::digest(file).into()),
            size: file.len() as u64,
        },
    }
}
