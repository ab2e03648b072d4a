//! The sentence embedder: WordPiece tokenizer + the exported BERT graph on
//! tract.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use memkern_core::cube::{Embedding, Int8Vec};
use memkern_core::ids::Fingerprint as CoreFingerprint;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};
use tracing::info;
use tract_onnx::prelude::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::{
    Framework, InferenceModelExt, IntoRunnable, Tensor, TypedRunnableModel, tvec,
};

use super::config::BertConfig;
use super::error::EmbedError;
use super::onnx_cache::{self, Origin, Source, sha256_file};
use super::quant::quantize_i8;
use crate::fetch::ModelFiles;
use crate::fingerprint::{Fingerprint, update_framed};
use crate::llama::native::Threads;

/// Longest input in tokens, `[CLS]` and `[SEP]` included (sentence-transformers'
/// `max_seq_length` for all-MiniLM-L6-v2); longer text is truncated.
pub const MAX_TOKENS: usize = 256;
/// Texts per forward pass unless [`EmbedderOptions::max_batch`] says
/// otherwise.
pub const DEFAULT_MAX_BATCH: usize = 32;

/// Domain separator of the embedder fingerprint.
const FINGERPRINT_DOMAIN: &[u8] = b"memkern/embedder-fingerprint/v1\0";
/// First prefix (bytes) of a long text tokenized before the whole text.
const PREFIX_BYTES: usize = 16 * 1024;

/// Knobs for [`Embedder::load_with`].
///
/// Exists so callers can bound memory per forward pass (the attention
/// scores of one batch take `batch × 12 × seq² × 4` bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbedderOptions {
    /// Most texts per forward pass (at least 1); larger inputs are split,
    /// after sorting by length so each batch pads little.
    pub max_batch: usize,
    /// Threads the matrix products of one forward pass are spread over:
    /// `None` = as many as the LLM's native path uses (`MEMKERN_THREADS`,
    /// else one per CPU); `Some(1)` = the calling thread alone. The pool
    /// is the embedder's own, so a query is never queued behind an LLM
    /// prefill running in the LLM's pool.
    ///
    /// The split changes which thread computes which output tile, not the
    /// order of any sum, so a vector is the same whatever the count.
    pub threads: Option<usize>,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        Self {
            max_batch: DEFAULT_MAX_BATCH,
            threads: None,
        }
    }
}

/// The files of a BERT sentence embedder and their SHA-256 digests.
struct ModelPaths {
    dir: PathBuf,
    safetensors: PathBuf,
    safetensors_sha256: String,
    config: PathBuf,
    config_sha256: String,
    tokenizer: PathBuf,
    tokenizer_sha256: String,
}

impl ModelPaths {
    fn from_files(files: &ModelFiles) -> Result<Self, EmbedError> {
        let get = |name: &'static str| -> Result<(PathBuf, String), EmbedError> {
            let f = files
                .files()
                .iter()
                .find(|f| f.name == name)
                .ok_or(EmbedError::MissingFile(name))?;
            let sha = match &f.sha256 {
                Some(s) => s.clone(),
                None => sha256_file(&f.path)?,
            };
            Ok((f.path.clone(), sha))
        };
        let (safetensors, safetensors_sha256) = get("model.safetensors")?;
        let (config, config_sha256) = get("config.json")?;
        let (tokenizer, tokenizer_sha256) = get("tokenizer.json")?;
        Ok(Self {
            dir: files.dir().to_path_buf(),
            safetensors,
            safetensors_sha256,
            config,
            config_sha256,
            tokenizer,
            tokenizer_sha256,
        })
    }

    fn from_dir(dir: &Path) -> Result<Self, EmbedError> {
        let get = |name: &'static str| -> Result<(PathBuf, String), EmbedError> {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(EmbedError::MissingFile(name));
            }
            let sha = sha256_file(&path)?;
            Ok((path, sha))
        };
        let (safetensors, safetensors_sha256) = get("model.safetensors")?;
        let (config, config_sha256) = get("config.json")?;
        let (tokenizer, tokenizer_sha256) = get("tokenizer.json")?;
        Ok(Self {
            dir: dir.to_path_buf(),
            safetensors,
            safetensors_sha256,
            config,
            config_sha256,
            tokenizer,
            tokenizer_sha256,
        })
    }

    fn fingerprint(&self) -> CoreFingerprint {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_DOMAIN);
        update_framed(&mut h, self.safetensors_sha256.as_bytes());
        update_framed(&mut h, self.config_sha256.as_bytes());
        update_framed(&mut h, self.tokenizer_sha256.as_bytes());
        update_framed(
            &mut h,
            format!("mean-pool,l2,max_tokens={MAX_TOKENS}").as_bytes(),
        );
        CoreFingerprint(Fingerprint::from_sha256(h).0)
    }
}

/// all-MiniLM-L6-v2 (or another BERT sentence embedder with the same file
/// layout) ready to turn texts into L2-normalised vectors.
///
/// Exists as the one place where memkern turns text into vectors for
/// plaintext memory; it is `Send + Sync`, and [`Embedder::embed`] takes
/// `&self`, so one instance can serve several threads.
pub struct Embedder {
    tokenizer: Tokenizer,
    plan: Arc<TypedRunnableModel>,
    fingerprint: CoreFingerprint,
    dim: usize,
    /// Ids at or above this are refused (the tokenizer's vocabulary, which
    /// load checked fits the model's embedding table).
    vocab: usize,
    options: EmbedderOptions,
    onnx_path: PathBuf,
    /// The pool the forward pass runs in (`None`: the calling thread).
    threads: Option<Threads>,
    /// Held while a forward pass runs in `threads`: tract keeps per-thread
    /// scratch space that is not re-entrant, and a rayon worker waiting
    /// inside one pass could otherwise pick up a second caller's pass.
    pool_busy: Mutex<()>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("fingerprint", &self.fingerprint)
            .field("dim", &self.dim)
            .field("options", &self.options)
            .field("onnx_path", &self.onnx_path)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the embedder from verified model files
    /// (`ModelCache::ensure(&MINILM_L6_V2)`), converting the weights to ONNX
    /// on first use and caching the result next to them.
    pub fn load(files: &ModelFiles) -> Result<Self, EmbedError> {
        Self::load_with(files, EmbedderOptions::default())
    }

    /// [`Embedder::load`] with explicit options.
    pub fn load_with(files: &ModelFiles, options: EmbedderOptions) -> Result<Self, EmbedError> {
        Self::from_paths(ModelPaths::from_files(files)?, options)
    }

    /// Loads from a directory holding `model.safetensors`, `config.json` and
    /// `tokenizer.json` (hashed on every load; the ONNX export is cached in
    /// the same directory).
    ///
    /// Exists for models outside memkern's cache (`--model-dir`).
    pub fn from_dir(dir: &Path, options: EmbedderOptions) -> Result<Self, EmbedError> {
        Self::from_paths(ModelPaths::from_dir(dir)?, options)
    }

    fn from_paths(paths: ModelPaths, options: EmbedderOptions) -> Result<Self, EmbedError> {
        let started = Instant::now();
        let config_bytes =
            std::fs::read(&paths.config).map_err(EmbedError::io("reading", &paths.config))?;
        let config = BertConfig::from_json(&config_bytes)?;
        if MAX_TOKENS > config.max_position_embeddings {
            return Err(EmbedError::Config(format!(
                "max_position_embeddings {} is below the {MAX_TOKENS}-token input",
                config.max_position_embeddings
            )));
        }
        let tokenizer = load_tokenizer(&paths.tokenizer, config.vocab_size)?;

        let source = Source {
            safetensors: &paths.safetensors,
            safetensors_sha256: &paths.safetensors_sha256,
            config: &paths.config,
            config_sha256: &paths.config_sha256,
        };
        let (bytes, onnx_path, origin) = onnx_cache::load_or_export(&paths.dir, &source)?;
        let plan = plan_from_onnx(&bytes)?;
        drop(bytes);
        let threads = match options.threads.unwrap_or_else(Threads::default_count) {
            0 => {
                return Err(EmbedError::Config(
                    "the embedder needs at least one thread".into(),
                ));
            }
            1 => None,
            n => Some(Threads::new(n).map_err(|e| EmbedError::Runtime(e.to_string()))?),
        };
        info!(
            secs = started.elapsed().as_secs_f64(),
            onnx = %onnx_path.display(),
            exported = origin != Origin::Cached,
            "embedder loaded"
        );
        Ok(Self {
            vocab: tokenizer.get_vocab_size(true),
            tokenizer,
            plan,
            fingerprint: paths.fingerprint(),
            dim: config.hidden_size,
            options,
            onnx_path,
            threads,
            pool_busy: Mutex::new(()),
        })
    }

    /// Identity of this embedder (weights, config, tokenizer, pooling and
    /// truncation): vectors with different fingerprints are not comparable.
    pub fn fingerprint(&self) -> CoreFingerprint {
        self.fingerprint
    }

    /// Vector dimension (384 for MiniLM).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Where the ONNX export lives (it may be missing if the model directory
    /// is read-only).
    pub fn onnx_path(&self) -> &Path {
        &self.onnx_path
    }

    /// The options in use.
    pub fn options(&self) -> &EmbedderOptions {
        &self.options
    }

    /// Token ids of `text` as the model sees them: `[CLS] … [SEP]`, at most
    /// [`MAX_TOKENS`], no padding.
    ///
    /// Never fails on ordinary text; an error means the tokenizer itself
    /// gave up (its regex engine's backtracking limit, for instance).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        // A text far longer than MAX_TOKENS is tokenized from a prefix cut
        // at whitespace: BERT's normaliser and pre-tokenizer work per
        // whitespace-separated word, so the prefix's tokens are the whole
        // text's first tokens. If the prefix already fills MAX_TOKENS the
        // result is the same as tokenizing everything, and megabytes of
        // input cost microseconds.
        let mut limit = PREFIX_BYTES;
        while limit < text.len() {
            let end = text.floor_char_boundary(limit);
            if let Some(cut) = text[..end].rfind(char::is_whitespace) {
                let ids = self.encode(&text[..cut])?;
                if ids.len() >= MAX_TOKENS {
                    return Ok(ids);
                }
            }
            limit = limit.saturating_mul(4);
        }
        self.encode(text)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// One L2-normalised vector of [`Embedder::dim`] components per text, in
    /// order. Texts are batched (sorted by length, at most
    /// [`EmbedderOptions::max_batch`] per pass, padded and masked), which
    /// gives the same vectors as embedding them one by one.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        self.embed_token_ids(&refs)
    }

    /// The vector of one text.
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let ids = self.tokenize(text)?;
        let mut out = self.run_batch(&[ids.as_slice()])?;
        out.pop()
            .ok_or_else(|| EmbedError::Runtime("the model returned no vector".into()))
    }

    /// Embeds already tokenized inputs (as from [`Embedder::tokenize`]);
    /// each must be non-empty, at most [`MAX_TOKENS`] long and within the
    /// vocabulary.
    ///
    /// Exists so callers that show or store token ids tokenize once.
    pub fn embed_token_ids(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| inputs[i].len());
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); inputs.len()];
        for chunk in order.chunks(self.options.max_batch.max(1)) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| inputs[i]).collect();
            let vectors = self.run_batch(&batch)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// One forward pass over `batch`, padded to its longest input.
    fn run_batch(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let vocab = self.vocab;
        let seq = batch.iter().map(|b| b.len()).max().unwrap_or(0);
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if batch.iter().any(|b| b.is_empty()) || seq > MAX_TOKENS {
            return Err(EmbedError::InvalidInput(format!(
                "token inputs must hold 1..={MAX_TOKENS} ids"
            )));
        }
        if let Some(&bad) = batch
            .iter()
            .flat_map(|b| b.iter())
            .find(|&&id| id as usize >= vocab)
        {
            return Err(EmbedError::InvalidInput(format!(
                "token id {bad} is outside the {vocab}-token vocabulary"
            )));
        }
        let mut ids = vec![0i64; batch.len() * seq];
        let mut mask = vec![0i64; batch.len() * seq];
        for (row, input) in batch.iter().enumerate() {
            for (col, &id) in input.iter().enumerate() {
                ids[row * seq + col] = i64::from(id);
                mask[row * seq + col] = 1;
            }
        }
        let shape = [batch.len(), seq];
        let ids =
            Tensor::from_shape(&shape, &ids).map_err(|e| EmbedError::runtime("input ids", e))?;
        let mask = Tensor::from_shape(&shape, &mask)
            .map_err(|e| EmbedError::runtime("attention mask", e))?;
        let inputs = tvec!(ids.into(), mask.into());
        // One pass at a time in the pool; a caller that finds it busy runs
        // its pass on its own thread instead of waiting.
        let busy = self.pool_busy.try_lock();
        let outputs = match (&self.threads, busy) {
            // Inside the pool, so tract's parallel matmuls start from one
            // of its workers instead of handing over to it and sleeping
            // on a latch ~40 times per pass.
            (Some(threads), Ok(_guard)) => threads.run(|| {
                let executor = Executor::MultiThread(threads.rayon_pool());
                multithread_tract_scope(executor, || self.plan.run(inputs))
            }),
            _ => self.plan.run(inputs),
        }
        .map_err(|e| EmbedError::runtime("running the model", e))?;
        let out = outputs
            .first()
            .ok_or_else(|| EmbedError::Runtime("the model has no output".into()))?;
        let view = out
            .to_plain_array_view::<f32>()
            .map_err(|e| EmbedError::runtime("reading the output", e))?;
        if view.shape() != [batch.len(), self.dim] {
            return Err(EmbedError::Runtime(format!(
                "output shape {:?}, expected [{}, {}]",
                view.shape(),
                batch.len(),
                self.dim
            )));
        }
        Ok(view
            .outer_iter()
            .map(|row| row.iter().copied().collect())
            .collect())
    }

    /// The core's int8 storage form of a vector from this embedder
    /// ([`quantize_i8`]), stamped with [`Embedder::fingerprint`].
    ///
    /// Exists so platforms build plaintext MemCubes without repeating the
    /// quantisation rule.
    pub fn to_cube_embedding(&self, v: &[f32]) -> Embedding<Vec<u8>> {
        let (scale, q) = quantize_i8(v);
        Embedding {
            embedder: self.fingerprint,
            scale,
            values: Int8Vec(q.into_iter().map(|x| x.to_ne_bytes()[0]).collect()),
        }
    }
}

/// The model's `tokenizer.json` with padding off and truncation at
/// [`MAX_TOKENS`] (the file pads and truncates at 128).
fn load_tokenizer(path: &Path, vocab_size: usize) -> Result<Tokenizer, EmbedError> {
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|e| EmbedError::Tokenizer(format!("{}: {e}", path.display())))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MAX_TOKENS,
            ..TruncationParams::default()
        }))
        .map_err(|e| EmbedError::Tokenizer(format!("setting truncation: {e}")))?;
    let n = tokenizer.get_vocab_size(true);
    if n > vocab_size {
        return Err(EmbedError::Tokenizer(format!(
            "tokenizer has {n} tokens, the model only {vocab_size}"
        )));
    }
    Ok(tokenizer)
}

/// Parses ONNX bytes and optimises them into a runnable tract plan with
/// symbolic batch and sequence dimensions.
fn plan_from_onnx(bytes: &[u8]) -> Result<Arc<TypedRunnableModel>, EmbedError> {
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| EmbedError::runtime("decoding the ONNX file", e))?;
    let model = onnx
        .model_for_proto_model(&proto)
        .map_err(|e| EmbedError::runtime("loading the ONNX graph", e))?;
    drop(proto);
    model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| EmbedError::runtime("optimising the graph", e))
}
