//! Inference state: a KV cache, the tokens in it, the next-token logits;
//! prefill, step, streaming generation, snapshot and restore.

use std::ops::Range;

use memkern_core::cube::{Activation, KvDtype};
use tracing::debug;

use crate::fingerprint::Fingerprint;
use crate::llama::{KvCache, LlmError, Logits};
use crate::llm::Llm;
use crate::lora::{Adapter, LoraError, applied_fingerprint};
use crate::sampling::Sampler;
use crate::snapshot::{Snapshot, SnapshotBuilder, SnapshotError, prefix_fingerprint};
use crate::tokenizer::StreamDecoder;

// `Llm::session` lives here, beside the type it makes, so that `llm`
// needs nothing from this module (sessions borrow the model, not the
// other way round).
impl Llm {
    /// A new session with an empty KV cache.
    pub fn session(&self) -> Session<'_> {
        Session::new(self)
    }
}

/// One conversation's state on a shared [`Llm`].
///
/// Exists to own what changes while generating — the KV cache, the tokens
/// it holds and the logits for the next token — so the model itself stays
/// read-only and shareable. A session can export any run of its cached
/// tokens as a [`Snapshot`] and can start from one.
#[derive(Debug)]
pub struct Session<'m> {
    llm: &'m Llm,
    adapter: Option<&'m Adapter>,
    /// The base model's fingerprint, or the adapted model's
    /// ([`crate::lora::applied_fingerprint`]): what snapshots record.
    model_fingerprint: Fingerprint,
    cache: KvCache,
    tokens: Vec<u32>,
    logits: Option<Vec<f32>>,
}

/// How [`Session::snapshot`] stores the cache.
///
/// Exists to choose between exactness (f32), half the size (f16) and about
/// a quarter (q8), and whether to keep the next-token logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Element type of the stored keys and values.
    pub dtype: KvDtype,
    /// Store the next-token logits when the range ends at the session's
    /// last token, so a restored session can sample at once (exactly as
    /// the original would) without re-running that token.
    pub include_logits: bool,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            dtype: KvDtype::F16,
            include_logits: true,
        }
    }
}

impl SnapshotOptions {
    /// Options storing `dtype`, with logits.
    pub fn dtype(dtype: KvDtype) -> Self {
        Self {
            dtype,
            ..Self::default()
        }
    }
}

impl<'m> Session<'m> {
    /// An empty session on `llm`.
    pub fn new(llm: &'m Llm) -> Self {
        Self {
            llm,
            adapter: None,
            model_fingerprint: llm.fingerprint(),
            cache: KvCache::new(llm.config(), llm.device()),
            tokens: Vec::new(),
            logits: None,
        }
    }

    /// An empty session on `llm` with `adapter` applied beside the base
    /// weights (parametric memory, per session: other sessions on the same
    /// model are unaffected).
    ///
    /// Refuses an adapter trained on another base model
    /// ([`LoraError::BaseMismatch`]). Snapshots of this session record the
    /// adapted model's fingerprint, so they restore only into sessions with
    /// the same base and adapter.
    pub fn with_adapter(llm: &'m Llm, adapter: &'m Adapter) -> Result<Self, LoraError> {
        adapter.check_base(llm.fingerprint(), llm.config())?;
        let fp = applied_fingerprint(llm.fingerprint(), adapter)?;
        let mut s = Self::new(llm);
        s.adapter = Some(adapter);
        s.model_fingerprint = fp;
        Ok(s)
    }

    /// The adapter applied, if any.
    pub fn adapter(&self) -> Option<&'m Adapter> {
        self.adapter
    }

    /// Fingerprint of the model this session computes: the base model's,
    /// or the base-plus-adapter one.
    pub fn model_fingerprint(&self) -> Fingerprint {
        self.model_fingerprint
    }

    /// The model this session runs.
    pub fn llm(&self) -> &'m Llm {
        self.llm
    }

    /// Tokens in the cache, in order (position `i` holds `tokens()[i]`).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of cached tokens: the position of the next token.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when nothing has been processed.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Logits for the next token, once a token was processed (or restored
    /// from a snapshot that stores them).
    pub fn logits(&self) -> Option<&[f32]> {
        self.logits.as_deref()
    }

    /// Empties the session (the cache's memory is kept for reuse).
    pub fn reset(&mut self) {
        self.cache.truncate(0);
        self.tokens.clear();
        self.logits = None;
    }

    /// Forgets every token after the first `len`; the next-token logits
    /// are dropped (prefill again to get them).
    pub fn truncate(&mut self, len: usize) {
        if len < self.tokens.len() {
            self.tokens.truncate(len);
            self.cache.truncate(len);
            self.logits = None;
        }
    }

    /// Runs `ids` through the model after the cached tokens and returns the
    /// logits for the token that follows them.
    ///
    /// At position 0 the model's BOS token is put first when its file asks
    /// for one ([`crate::tokenizer::Tokenizer::add_bos`], e.g. Gemma) and
    /// `ids` does not start with it, as llama.cpp tokenises prompts: a
    /// Gemma prompt without BOS gives poor answers.
    pub fn prefill(&mut self, ids: &[u32]) -> Result<&[f32], LlmError> {
        let tok = self.llm.tokenizer();
        let bos = tok
            .bos_id()
            .filter(|_| tok.add_bos() && self.tokens.is_empty());
        let with_bos: Vec<u32>;
        let ids = match bos {
            Some(b) if !ids.is_empty() && ids.first() != Some(&b) => {
                with_bos = std::iter::once(b).chain(ids.iter().copied()).collect();
                &with_bos[..]
            }
            _ => ids,
        };
        let out =
            self.llm
                .model()
                .forward_with(ids, &mut self.cache, Logits::Last, self.adapter)?;
        let logits = out
            .try_into_vec_as::<f32>()
            .map_err(|e| LlmError::Backend(format!("reading logits: {e:?}")))?;
        self.tokens.extend_from_slice(ids);
        Ok(self.logits.insert(logits))
    }

    /// Processes one token (`prefill(&[id])`).
    pub fn feed(&mut self, id: u32) -> Result<&[f32], LlmError> {
        self.prefill(&[id])
    }

    /// Chooses the next token from the current logits (not yet processed).
    pub fn sample(&self, sampler: &mut Sampler) -> Result<u32, LlmError> {
        let logits = self.logits.as_deref().ok_or(LlmError::NoLogits)?;
        Ok(sampler.sample(logits, &self.tokens))
    }

    /// Samples the next token and processes it; returns its id.
    pub fn step(&mut self, sampler: &mut Sampler) -> Result<u32, LlmError> {
        let id = self.sample(sampler)?;
        self.feed(id)?;
        Ok(id)
    }

    /// A streaming generator of up to `max_tokens` tokens; it stops early
    /// at an end-of-generation token (which it yields, unprocessed) or at
    /// the end of the context.
    pub fn generate(&mut self, sampler: Sampler, max_tokens: usize) -> Generator<'_, 'm> {
        let decoder = self.llm.tokenizer().stream_decoder(true);
        Generator {
            session: self,
            sampler,
            decoder,
            pending: None,
            remaining: max_tokens,
            stop: None,
            ids: Vec::new(),
        }
    }

    /// Generates up to `max_tokens` tokens, calling `on_token` with each
    /// token and its text as it arrives; `on_token` returning `false` stops.
    pub fn generate_with(
        &mut self,
        sampler: Sampler,
        max_tokens: usize,
        mut on_token: impl FnMut(&GeneratedToken) -> bool,
    ) -> Result<Generation, LlmError> {
        let mut g = self.generate(sampler, max_tokens);
        let mut text = String::new();
        while let Some(t) = g.next() {
            let t = t?;
            text.push_str(&t.text);
            if !on_token(&t) {
                g.stop = Some(StopReason::Stopped);
                break;
            }
        }
        let stop = g.stop.unwrap_or(StopReason::MaxTokens);
        let ids = std::mem::take(&mut g.ids);
        text.push_str(&g.finish());
        Ok(Generation { ids, text, stop })
    }

    /// Exports the cache of the tokens at positions `range` as a snapshot.
    ///
    /// The snapshot records the model and tokenizer fingerprints, the
    /// tokens, the first position and a fingerprint of the tokens before
    /// it. With [`SnapshotOptions::include_logits`] and a range ending at
    /// the last token, the next-token logits are stored too.
    pub fn snapshot(
        &self,
        range: Range<usize>,
        options: SnapshotOptions,
    ) -> Result<Snapshot, LlmError> {
        let len = self.len();
        if range.start >= range.end || range.end > len {
            return Err(LlmError::BadRange {
                start: range.start,
                end: range.end,
                len,
            });
        }
        let llm = self.llm;
        let logits = match &self.logits {
            Some(l) if options.include_logits && range.end == len => Some(l.as_slice()),
            _ => None,
        };
        let first = u32::try_from(range.start).map_err(|_| LlmError::BadRange {
            start: range.start,
            end: range.end,
            len,
        })?;
        let mut b = SnapshotBuilder::new(
            llm.kv_layout(options.dtype),
            self.model_fingerprint,
            llm.tokenizer_fingerprint(),
            prefix_fingerprint(&self.tokens[..range.start]),
            first,
            &self.tokens[range.clone()],
            logits.map_or(0, |l| l.len() as u32),
        )?;
        for layer in 0..llm.config().layers {
            let (k, v) = self.cache.export_layer(layer, range.clone())?;
            b.push_layer(&k, &v);
        }
        Ok(b.finish(logits)?)
    }

    /// Restores a snapshot at the session's current position.
    ///
    /// Refuses, with a [`SnapshotError`] and the session unchanged, a
    /// snapshot of another model or tokenizer, another layout, positions
    /// beyond the context, a first position other than [`Self::len`], or
    /// preceding tokens other than this session's. Any dtype is accepted
    /// (use [`Self::restore_cube`] to require the one a cube records).
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<(), LlmError> {
        self.check_restorable(snapshot)?;
        let h = snapshot.header();
        let first = h.first_position as usize;
        let n = h.token_count as usize;
        self.cache.reserve(first + n)?;
        for layer in 0..self.llm.config().layers {
            let (k, v) = snapshot.layer_kv(layer)?;
            self.cache.import_layer(layer, first, n, k, v)?;
        }
        self.cache.set_len(first + n);
        self.tokens.extend(snapshot.token_ids());
        self.logits = snapshot.logits();
        debug!(first, tokens = n, dtype = ?h.layout.dtype, "snapshot restored");
        Ok(())
    }

    /// Checks `snapshot` against the activation cube that names it (digest,
    /// fingerprints, layout and dtype, position), then restores it.
    pub fn restore_cube(&mut self, snapshot: &Snapshot, cube: &Activation) -> Result<(), LlmError> {
        snapshot.verify_against(cube)?;
        self.restore(snapshot)
    }

    fn check_restorable(&self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        let llm = self.llm;
        let h = snapshot.header();
        if h.model != self.model_fingerprint {
            return Err(SnapshotError::ModelMismatch {
                expected: self.model_fingerprint,
                found: h.model,
            });
        }
        if h.tokenizer != llm.tokenizer_fingerprint() {
            return Err(SnapshotError::TokenizerMismatch {
                expected: llm.tokenizer_fingerprint(),
                found: h.tokenizer,
            });
        }
        let expected = llm.kv_layout(h.layout.dtype);
        if h.layout != expected {
            return Err(SnapshotError::LayoutMismatch {
                expected,
                found: h.layout,
            });
        }
        let context = llm.config().context;
        if u64::from(h.first_position) + u64::from(h.token_count) > context as u64 {
            return Err(SnapshotError::PositionOutOfContext {
                first: h.first_position,
                tokens: h.token_count,
                context,
            });
        }
        if h.first_position as usize != self.len() {
            return Err(SnapshotError::PositionMismatch {
                first: h.first_position,
                session: self.len(),
            });
        }
        if prefix_fingerprint(&self.tokens) != h.prefix {
            return Err(SnapshotError::PrefixMismatch {
                first: h.first_position,
            });
        }
        let vocab = llm.config().vocab;
        if h.has_logits && h.logits_len as usize != vocab {
            return Err(SnapshotError::Malformed(format!(
                "{} logits for a vocabulary of {vocab}",
                h.logits_len
            )));
        }
        if let Some(id) = snapshot
            .token_ids()
            .into_iter()
            .find(|&t| t as usize >= vocab)
        {
            return Err(SnapshotError::Malformed(format!(
                "token id {id} outside the vocabulary"
            )));
        }
        Ok(())
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token (`<|im_end|>`, `<|endoftext|>`, …).
    EndOfGeneration(u32),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The caller stopped it.
    Stopped,
}

/// One generated token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedToken {
    /// Its id.
    pub id: u32,
    /// The text it completes (empty for control tokens and while a
    /// multi-token character is incomplete).
    pub text: String,
}

/// A finished generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// Generated ids, including a final end-of-generation token.
    pub ids: Vec<u32>,
    /// Their text, control tokens left out.
    pub text: String,
    /// Why it stopped.
    pub stop: StopReason,
}

/// Streams generated tokens one at a time (an [`Iterator`]).
///
/// Exists so a UI can show each token as soon as it is sampled. A token is
/// processed (its KV appended) lazily, just before the next one is sampled,
/// so the final token — often end-of-generation — costs no forward pass.
pub struct Generator<'s, 'm> {
    session: &'s mut Session<'m>,
    sampler: Sampler,
    decoder: StreamDecoder<'m>,
    pending: Option<u32>,
    remaining: usize,
    stop: Option<StopReason>,
    ids: Vec<u32>,
}

impl Generator<'_, '_> {
    /// Why the generation stopped (`None` while it can continue).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    /// Ids generated so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Ends the stream, returning text held back for an unfinished
    /// character. The last token is processed first, so the session holds
    /// every generated token except a final end-of-generation one.
    pub fn finish(mut self) -> String {
        if let Some(t) = self.pending.take() {
            // A failure here only means the last token's KV is missing; the
            // tokens and text already returned stay valid.
            let _ = self.session.feed(t);
        }
        self.decoder.finish()
    }

    fn advance(&mut self) -> Result<Option<GeneratedToken>, LlmError> {
        if self.stop.is_some() {
            return Ok(None);
        }
        if let Some(t) = self.pending.take() {
            self.session.feed(t)?;
        }
        if self.remaining == 0 {
            self.stop = Some(StopReason::MaxTokens);
            return Ok(None);
        }
        if self.session.len() >= self.session.llm.config().context {
            self.stop = Some(StopReason::ContextFull);
            return Ok(None);
        }
        let logits = self.session.logits.as_deref().ok_or(LlmError::NoLogits)?;
        let id = self
            .sampler
            .sample_generated(logits, &self.session.tokens, &self.ids);
        self.remaining -= 1;
        self.ids.push(id);
        if self.session.llm.tokenizer().is_eog(id) {
            self.stop = Some(StopReason::EndOfGeneration(id));
            return Ok(Some(GeneratedToken {
                id,
                text: String::new(),
            }));
        }
        let text = self.decoder.push(id)?;
        self.pending = Some(id);
        Ok(Some(GeneratedToken { id, text }))
    }
}

impl Iterator for Generator<'_, '_> {
    type Item = Result<GeneratedToken, LlmError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.advance() {
            Ok(t) => t.map(Ok),
            Err(e) => {
                self.stop = Some(StopReason::Stopped);
                Some(Err(e))
            }
        }
    }
}
