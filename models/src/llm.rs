//! A loaded language model: weights on a device, its tokenizer, and the
//! fingerprints that name both.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use memkern_core::cube::{KvDtype, KvLayout};
use tracing::info;

use crate::fingerprint::Fingerprint;
use crate::gguf::GgufFile;
use crate::llama::native::{GgmlIsa, Threads};
use crate::llama::{Backend, Llama, LlamaConfig, LlmError, Numerics, load_llama};
use crate::sampling::SamplingDefaults;
use crate::tokenizer::Tokenizer;

/// A Llama model ready to run: the model on a burn device, the tokenizer
/// from the same GGUF file, and their fingerprints.
///
/// Exists as the shared, read-only half of inference: any number of
/// [`Session`](crate::session::Session)s (each with its own KV cache) borrow one `Llm`. The
/// fingerprints tie every derived artefact (KV snapshots) to exactly this
/// model and tokenizer.
#[derive(Debug)]
pub struct Llm {
    model: Llama,
    tokenizer: Tokenizer,
    backend: Backend,
    device: Device,
    fingerprint: Fingerprint,
    load_time: Duration,
    sampling: SamplingDefaults,
}

impl Llm {
    /// Loads the GGUF model at `path` onto `backend`.
    pub fn load(path: impl AsRef<Path>, backend: Backend) -> Result<Self, LlmError> {
        let gguf = GgufFile::open(path)?;
        Self::from_gguf(&gguf, backend)
    }

    /// Builds the model and tokenizer from an open GGUF file. Computes the
    /// model fingerprint (one read over the file).
    pub fn from_gguf<D: AsRef<[u8]>>(
        gguf: &GgufFile<D>,
        backend: Backend,
    ) -> Result<Self, LlmError> {
        let t = Instant::now();
        let device = backend.device()?;
        let tokenizer = Tokenizer::from_gguf(gguf)?;
        let fingerprint = gguf.fingerprint()?;
        let model = load_llama(gguf, &device)?;
        if tokenizer.vocab_size() != model.config.vocab {
            return Err(LlmError::UnsupportedModel(format!(
                "tokenizer has {} tokens, the model {}",
                tokenizer.vocab_size(),
                model.config.vocab
            )));
        }
        let load_time = t.elapsed();
        info!(%backend, %fingerprint, ?load_time, "model loaded");
        Ok(Self {
            model,
            tokenizer,
            backend,
            device,
            fingerprint,
            load_time,
            sampling: SamplingDefaults::from_gguf(gguf),
        })
    }

    /// The sampling settings the model's file recommends
    /// (`general.sampling.*`).
    pub fn sampling_defaults(&self) -> SamplingDefaults {
        self.sampling
    }

    /// Switches the arithmetic of the forward pass (sessions created
    /// before keep their cache, computed the old way).
    pub fn set_numerics(&mut self, numerics: Numerics) {
        self.model.numerics = numerics;
    }

    /// Turns the native CPU kernels (ggml-exact quantised matmuls, see
    /// [`crate::llama::native`]) on or off; off runs burn's dense matmuls
    /// over the dequantised weights, the baseline the benchmarks compare
    /// against. No effect on other backends, which have no native kernels.
    pub fn set_native_kernels(&mut self, on: bool) {
        self.model.native_kernels = on;
    }

    /// Chooses which ggml x86 build (AVX2 or AVX-512) the native CPU path
    /// reproduces bit for bit; see [`GgmlIsa`].
    pub fn set_ggml_isa(&mut self, isa: GgmlIsa) {
        self.model.ggml_isa = isa;
    }

    /// Runs the native CPU path on `n` threads of its own (default: the
    /// process's shared pool, `MEMKERN_THREADS` or one per CPU). The
    /// thread count never changes a result bit.
    pub fn set_threads(&mut self, n: usize) -> Result<(), LlmError> {
        self.model.threads = Some(Threads::new(n)?);
        Ok(())
    }

    /// Whether a forward pass runs on the ggml-exact native CPU path
    /// (every matrix in a format its kernels multiply, numerics and
    /// kernels left at llama.cpp's) rather than burn's dense path.
    ///
    /// Exists so callers (the CLI's `--json`, tests) can say which path
    /// produced the numbers: only the native one is llama.cpp to the bit.
    pub fn runs_native(&self) -> bool {
        self.model().host_ready()
    }

    /// Threads the native CPU path runs on.
    pub fn threads(&self) -> usize {
        self.model
            .threads
            .as_ref()
            .or(Threads::shared())
            .map_or_else(rayon::current_num_threads, Threads::count)
    }

    /// The model definition and weights.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.model.config
    }

    /// The tokenizer read from the same file.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The burn device holding the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Fingerprint of the GGUF file (metadata and tensor data).
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Fingerprint of the tokenizer.
    pub fn tokenizer_fingerprint(&self) -> Fingerprint {
        self.tokenizer.fingerprint()
    }

    /// The KV layout of this model stored as `dtype`.
    pub fn kv_layout(&self, dtype: KvDtype) -> KvLayout {
        self.model.config.kv_layout(dtype)
    }

    /// Wall time [`Self::from_gguf`] took (weights, tokenizer, fingerprint).
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
}
