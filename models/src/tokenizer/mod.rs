//! The tokenizer of a GGUF model, reproducing llama.cpp.
//!
//! Built from the GGUF metadata (`tokenizer.ggml.*`), never from a separate
//! `tokenizer.json`, so the model file is the single source of truth:
//!
//! - **Model:** GPT-2 byte-level BPE (`tokenizer.ggml.model = "gpt2"`), using
//!   the `tokenizers` crate's BPE with the file's vocabulary and merges; or
//!   SentencePiece BPE by token scores with byte fallback
//!   (`tokenizer.ggml.model = "llama"`: Gemma, Llama 2, TinyLlama; see
//!   `spm.rs`), spaces written as `▁`, a space prefix where
//!   `tokenizer.ggml.add_space_prefix` asks for one.
//! - **Pre-tokenizer:** for `tokenizer.ggml.pre = "smollm"` every digit is
//!   split off alone, then the GPT-2 pattern applies; no prefix space. `gpt2`
//!   is the same without the digit split.
//! - **Special tokens** (control, user-defined and unknown token types) are
//!   atomic: when parsing specials, the text is first cut at every occurrence,
//!   longest token first, exactly like llama.cpp's `tokenizer_st_partition`;
//!   the pieces in between are encoded separately. No BOS is added by the
//!   encode functions; [`Tokenizer::add_bos`] says whether the model wants
//!   one (false for SmolLM2, true for Gemma).
//! - **Decoding** maps the byte-level characters back to bytes;
//!   [`StreamDecoder`] emits text as soon as the bytes form whole UTF-8
//!   characters, so a multi-token emoji is never shown half-done.
//!
//! Checked against llama.cpp's ids for every prompt in
//! `shared/fixtures/smollm2_reference.jsonl` (SmolLM2) and
//! `tests/fixtures/gemma3-270m-q4_k_m.jsonl` (Gemma 3).

mod bytes;
mod chat;
mod spm;
mod stream;
mod template;

use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

pub use chat::{ChatMessage, IM_END, IM_START, Role, SMOLLM2_DEFAULT_SYSTEM, render_chatml};
pub use stream::StreamDecoder;
pub use template::{
    ChatFormat, ChatTemplate, GEMMA_TEMPLATE, LLAMA3_TEMPLATE, MAX_TEMPLATE_BYTES, TemplateError,
    TemplateSource,
};

use crate::fingerprint::{Fingerprint, update_framed};
use crate::gguf::{Gguf, GgufError, MetaArray};

/// Domain separator of the tokenizer fingerprint.
const FINGERPRINT_DOMAIN: &[u8] = b"memkern/tokenizer-fingerprint/v1\0";

/// Token texts that end generation when they are control tokens, as in
/// llama.cpp's end-of-generation detection.
const EOG_TEXTS: &[&str] = &[
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|return|>",
    "<|call|>",
    "<EOT>",
];

/// Errors building or using a tokenizer.
///
/// Exists to tell an unsupported tokenizer (another model family) from a
/// broken file and from a bad request such as an unknown token id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// Required tokenizer metadata is missing or has the wrong type.
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),
    /// `tokenizer.ggml.model` is not byte-level BPE.
    #[error(
        "unsupported tokenizer model {0:?} (implemented: \"gpt2\" byte-level BPE, \"llama\" SentencePiece)"
    )]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error("unsupported pre-tokenizer {0:?} (implemented: \"smollm\", \"gpt2\")")]
    UnsupportedPreTokenizer(String),
    /// The vocabulary or merges are inconsistent.
    #[error("invalid vocabulary: {0}")]
    BadVocab(String),
    /// The `tokenizers` crate refused to build the BPE model.
    #[error("building the BPE tokenizer failed: {0}")]
    Build(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// BPE encoding failed.
    #[error("encoding failed: {0}")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    UnknownTokenId {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A special token the operation needs is not in the vocabulary.
    #[error("the vocabulary has no special token {0:?}")]
    MissingSpecialToken(&'static str),
    /// Chat messages in an order no chat format has (a system message
    /// only first, then user and assistant alternating).
    #[error("chat messages out of order: {0}")]
    BadChat(String),
}

/// The kind of a vocabulary entry (GGUF `tokenizer.ggml.token_type`).
///
/// Exists because kinds decide both special-token parsing and decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A regular BPE token (type 1, also used for unknown type values).
    Normal,
    /// The unknown token (type 2).
    Unknown,
    /// A control token such as `<|im_start|>` (type 3).
    Control,
    /// A user-defined token, always atomic (type 4).
    UserDefined,
    /// An unused slot (type 5).
    Unused,
    /// A raw byte token (type 6).
    Byte,
}

impl TokenKind {
    fn from_type(t: i128) -> Self {
        match t {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }

    fn is_special(self) -> bool {
        matches!(
            self,
            TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown
        )
    }
}

/// The algorithm that turns a text fragment into ids.
enum Engine {
    /// GPT-2 byte-level BPE with merges (`tokenizer.ggml.model = "gpt2"`).
    Bpe(Box<tokenizers::Tokenizer>),
    /// SentencePiece BPE by scores (`"llama"`), with llama.cpp's
    /// `add_space_prefix` (a space before text that starts the input or
    /// follows a special token).
    Spm {
        spm: spm::Spm,
        add_space_prefix: bool,
    },
}

/// A fragment of input text after special-token partitioning.
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// A byte-level BPE tokenizer equivalent to llama.cpp's for the same GGUF.
///
/// Exists to turn prompts into exactly the ids the model was evaluated
/// with, and generated ids back into text.
pub struct Tokenizer {
    engine: Engine,
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    /// Decoded bytes of every token, concatenated; token `i` is
    /// `piece_bytes[piece_ends[i-1]..piece_ends[i]]`.
    piece_bytes: Vec<u8>,
    piece_ends: Vec<usize>,
    /// Special tokens, longest text first (llama.cpp's matching order).
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    eog: Vec<u32>,
    fingerprint: Fingerprint,
    /// The turn markers of the file's chat template (ChatML without one).
    chat: ChatFormat,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("specials", &self.specials.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The chat format of `gguf`: its `tokenizer.chat_template` rendered over
/// sentinel turns. A file without one (Gemma 3 270M's GGUF has none), or
/// with one that does not compile or cannot be cut into turns (a warning
/// says so), gets a built-in template chosen by the turn tokens its
/// vocabulary has: Gemma's (`<start_of_turn>`), Llama 3's
/// (`<|start_header_id|>`), else ChatML.
fn chat_format(
    gguf: &Gguf,
    tokens: &[String],
    bos: &str,
    eos: &str,
) -> Result<ChatFormat, TokenizerError> {
    const KEY: &str = "tokenizer.chat_template";
    if gguf.get(KEY).is_some() {
        let source = gguf.get_str(KEY)?;
        match ChatTemplate::new(source, bos, eos)
            .and_then(|t| ChatFormat::from_template(&t, TemplateSource::File))
        {
            Ok(f) => return Ok(f),
            Err(e) => tracing::warn!("{e}; using a built-in chat template instead"),
        }
    }
    let has = |t: &str| tokens.iter().any(|x| x == t);
    let (name, source) = if has("<start_of_turn>") && has("<end_of_turn>") {
        ("gemma", GEMMA_TEMPLATE)
    } else if has("<|start_header_id|>") && has("<|eot_id|>") {
        ("llama3", LLAMA3_TEMPLATE)
    } else {
        return Ok(ChatFormat::chatml());
    };
    ChatTemplate::new(source, bos, eos)
        .and_then(|t| ChatFormat::from_template(&t, TemplateSource::Builtin(name)))
        .map_err(|e| TokenizerError::BadVocab(format!("built-in {name} template: {e}")))
}

fn optional_id(gguf: &Gguf, key: &str, vocab: usize) -> Result<Option<u32>, TokenizerError> {
    if gguf.get(key).is_none() {
        return Ok(None);
    }
    let id = gguf.get_u32(key)?;
    if id as usize >= vocab {
        return Err(TokenizerError::BadVocab(format!(
            "{key} = {id} is outside the vocabulary of {vocab} tokens"
        )));
    }
    Ok(Some(id))
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, TokenizerError> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" && model != "llama" {
            return Err(TokenizerError::UnsupportedModel(model.to_owned()));
        }
        let pre = match gguf.get("tokenizer.ggml.pre") {
            Some(_) => gguf.get_str("tokenizer.ggml.pre")?,
            None => "default",
        };
        let split_digits = match (model, pre) {
            ("gpt2", "smollm") => true,
            ("gpt2", "gpt2" | "gpt-2") => false,
            ("llama", _) => false,
            (_, other) => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_owned())),
        };
        let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
        if u32::try_from(tokens.len()).is_err() {
            return Err(TokenizerError::BadVocab(format!(
                "{} tokens do not fit u32 ids",
                tokens.len()
            )));
        }
        let kinds: Vec<TokenKind> = match gguf.get("tokenizer.ggml.token_type") {
            None => vec![TokenKind::Normal; tokens.len()],
            Some(_) => {
                let types = gguf.get_array("tokenizer.ggml.token_type")?;
                if types.len() != tokens.len() {
                    return Err(TokenizerError::BadVocab(format!(
                        "{} token types for {} tokens",
                        types.len(),
                        tokens.len()
                    )));
                }
                (0..types.len())
                    .map(|i| types.integer_at(i).map(TokenKind::from_type))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        TokenizerError::BadVocab("tokenizer.ggml.token_type is not integers".into())
                    })?
            }
        };
        let n = tokens.len();
        let unknown = optional_id(gguf, "tokenizer.ggml.unknown_token_id", n)?;
        let mut scores_bits: Vec<u32> = Vec::new();
        let (engine, merges_raw): (Engine, &[String]) = if model == "llama" {
            let scores = match gguf.get_array("tokenizer.ggml.scores")? {
                MetaArray::F32(v) if v.len() == n => v.clone(),
                other => {
                    return Err(TokenizerError::BadVocab(format!(
                        "tokenizer.ggml.scores holds {} {}, expected {n} f32",
                        other.len(),
                        other.element_type()
                    )));
                }
            };
            scores_bits = scores.iter().map(|v| v.to_bits()).collect();
            let add_space_prefix = match gguf.get("tokenizer.ggml.add_space_prefix") {
                Some(_) => gguf.get_bool("tokenizer.ggml.add_space_prefix")?,
                None => true,
            };
            (
                Engine::Spm {
                    spm: spm::Spm::new(tokens, scores, unknown),
                    add_space_prefix,
                },
                &[],
            )
        } else {
            (|| -> Result<(Engine, &[String]), TokenizerError> {
                let merges_raw = match gguf.get_array("tokenizer.ggml.merges")? {
                    MetaArray::String(m) => m,
                    other => {
                        return Err(TokenizerError::BadVocab(format!(
                            "tokenizer.ggml.merges holds {}, expected strings",
                            other.element_type()
                        )));
                    }
                };
                let mut merges = Vec::with_capacity(merges_raw.len());
                for m in merges_raw {
                    let (a, b) = m.split_once(' ').ok_or_else(|| {
                        TokenizerError::BadVocab(format!("merge {m:?} has no space"))
                    })?;
                    merges.push((a.to_owned(), b.to_owned()));
                }

                let mut vocab = Vocab::default();
                vocab.reserve(tokens.len());
                for (i, t) in tokens.iter().enumerate() {
                    // Fits: the length was checked against u32 above. A duplicate
                    // text keeps its first id, as llama.cpp's token_to_id map does.
                    vocab.entry(t.clone()).or_insert(i as u32);
                }
                let bpe = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .build()
                    .map_err(TokenizerError::Build)?;

                let byte_level = ByteLevel::new(false, true, true);
                let pre_tokenizer: PreTokenizerWrapper = if split_digits {
                    let digits = Split::new(
                        SplitPattern::Regex(r"\p{N}".into()),
                        SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .map_err(TokenizerError::Build)?;
                    Sequence::new(vec![digits.into(), byte_level.into()]).into()
                } else {
                    byte_level.into()
                };
                let mut inner = tokenizers::Tokenizer::new(bpe);
                inner.with_pre_tokenizer(Some(pre_tokenizer));
                Ok((Engine::Bpe(Box::new(inner)), merges_raw.as_slice()))
            })()?
        };

        let mut piece_bytes = Vec::new();
        let mut piece_ends = Vec::with_capacity(tokens.len());
        for (t, k) in tokens.iter().zip(&kinds) {
            if k.is_special() {
                piece_bytes.extend_from_slice(t.as_bytes());
            } else if matches!(engine, Engine::Spm { .. }) {
                spm::piece_bytes(t, *k == TokenKind::Byte, &mut piece_bytes);
            } else {
                bytes::decode_into(t, &mut piece_bytes);
            }
            piece_ends.push(piece_bytes.len());
        }

        let mut specials: Vec<u32> = (0..tokens.len())
            .filter(|&i| kinds[i].is_special() && !tokens[i].is_empty())
            .map(|i| i as u32)
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));

        let bos = optional_id(gguf, "tokenizer.ggml.bos_token_id", n)?;
        let eos = optional_id(gguf, "tokenizer.ggml.eos_token_id", n)?;
        let eot = optional_id(gguf, "tokenizer.ggml.eot_token_id", n)?;
        let eom = optional_id(gguf, "tokenizer.ggml.eom_token_id", n)?;
        let add_bos = match gguf.get("tokenizer.ggml.add_bos_token") {
            Some(_) => gguf.get_bool("tokenizer.ggml.add_bos_token")?,
            None => false,
        };
        let mut eog: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
        for &id in &specials {
            let i = id as usize;
            if kinds[i] == TokenKind::Control && EOG_TEXTS.contains(&tokens[i].as_str()) {
                eog.push(id);
            }
        }
        eog.sort_unstable();
        eog.dedup();

        let mut h = Sha256::new();
        h.update(FINGERPRINT_DOMAIN);
        update_framed(&mut h, model.as_bytes());
        update_framed(&mut h, pre.as_bytes());
        h.update((tokens.len() as u64).to_le_bytes());
        for (t, k) in tokens.iter().zip(&kinds) {
            update_framed(&mut h, t.as_bytes());
            h.update([*k as u8]);
        }
        h.update((merges_raw.len() as u64).to_le_bytes());
        for m in merges_raw {
            update_framed(&mut h, m.as_bytes());
        }
        if let Engine::Spm {
            add_space_prefix, ..
        } = &engine
        {
            // SentencePiece vocabularies: the scores and the space rule
            // decide the ids (absent for BPE, keeping its old fingerprints).
            h.update((scores_bits.len() as u64).to_le_bytes());
            for b in &scores_bits {
                h.update(b.to_le_bytes());
            }
            h.update([u8::from(*add_space_prefix)]);
        }
        for id in [bos, eos, eot, eom] {
            h.update(id.map_or(u64::MAX, u64::from).to_le_bytes());
        }
        h.update([u8::from(add_bos)]);
        let fingerprint = Fingerprint::from_sha256(h);

        let text_of = |id: Option<u32>| {
            id.and_then(|i| tokens.get(i as usize))
                .map_or("", |t| t.as_str())
        };
        let chat = chat_format(gguf, tokens, text_of(bos), text_of(eos))?;
        Ok(Self {
            engine,
            tokens: tokens.to_vec(),
            kinds,
            piece_bytes,
            piece_ends,
            specials,
            bos,
            eos,
            add_bos,
            eog,
            fingerprint,
            chat,
        })
    }

    /// The turn markers prompts are built with: from the file's
    /// `tokenizer.chat_template`, else a built-in template matching the
    /// vocabulary's turn tokens (Gemma, Llama 3, ChatML).
    pub fn chat_format(&self) -> &ChatFormat {
        &self.chat
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// A 128-bit fingerprint of the vocabulary, token kinds, merges, special
    /// ids and pre-tokenizer: equal fingerprints tokenize identically.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The beginning-of-sequence id (`<|im_start|>` for SmolLM2).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence id (`<|im_end|>` for SmolLM2).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the model expects a BOS token in front of every prompt
    /// (`tokenizer.ggml.add_bos_token`; false for SmolLM2). The encode
    /// methods never add it: prepend [`Self::bos_id`] when this is true.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// All end-of-generation ids (EOS, EOT and control tokens such as
    /// `<|endoftext|>` and `<|im_end|>`), sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether generation should stop at `id`.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The id of the token whose vocabulary text is `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        match &self.engine {
            Engine::Bpe(bpe) => bpe.token_to_id(text),
            Engine::Spm { spm, .. } => spm.id_of(text),
        }
    }

    /// The vocabulary text of `id` (byte-level characters for BPE tokens).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The kind of `id`.
    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// The raw bytes `id` decodes to (possibly a partial UTF-8 character).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let end = *self.piece_ends.get(i)?;
        let start = if i == 0 { 0 } else { self.piece_ends[i - 1] };
        self.piece_bytes.get(start..end)
    }

    /// Encodes `text`, parsing special tokens written in it (`<|im_start|>`
    /// becomes id 1), like llama.cpp with `parse_special = true`. No BOS is
    /// added. Use for trusted text such as templates; see
    /// [`Self::encode_literal`] for user data.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::new();
        self.encode_into(text, true, &mut out)?;
        Ok(out)
    }

    /// Encodes `text` with control tokens kept as plain text: a user writing
    /// `<|im_end|>` gets the characters, not the control token.
    /// (User-defined tokens stay atomic, as in llama.cpp.)
    pub fn encode_literal(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::new();
        self.encode_into(text, false, &mut out)?;
        Ok(out)
    }

    /// Encodes a conversation in the model's chat format
    /// ([`Self::chat_format`]; ChatML by default, see [`render_chatml`]):
    /// the turn markers are parsed for special tokens, message contents
    /// are encoded literally, so memories or user text cannot forge turns.
    /// For benign contents the ids equal those of the rendered text
    /// encoded whole (pieces and contents are joined before encoding, as
    /// llama.cpp tokenises a rendered template). BOS is not added (see
    /// [`Self::add_bos`]).
    ///
    /// Messages: an optional system message first, then user and
    /// assistant alternating; with `add_generation_prompt` the last one is
    /// a user message (or the system message) and the assistant's turn is
    /// opened.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let f = &self.chat;
        if f.source == TemplateSource::Builtin("chatml") {
            for t in [IM_START, IM_END] {
                self.token_id(t)
                    .ok_or(TokenizerError::MissingSpecialToken(t))?;
            }
        }
        let mut parts: Vec<(&str, bool)> = Vec::with_capacity(messages.len() * 2 + 1);
        let mut prev: Option<Role> = None;
        for m in messages {
            let sep = match (prev, m.role) {
                (None, Role::System) => f.system_prefix.as_str(),
                (None, Role::User) => f.user_prefix.as_str(),
                (Some(Role::System), Role::User) => f.system_to_user.as_str(),
                (Some(Role::User), Role::Assistant) => f.user_to_assistant.as_str(),
                (Some(Role::Assistant), Role::User) => f.assistant_to_user.as_str(),
                (p, r) => {
                    return Err(TokenizerError::BadChat(format!(
                        "a {r} message after {}",
                        p.map_or("the start".to_owned(), |p| format!("a {p} message"))
                    )));
                }
            };
            parts.push((sep, true));
            parts.push((m.content.as_str(), false));
            prev = Some(m.role);
        }
        let end = match (prev, add_generation_prompt) {
            (Some(Role::User), true) => f.generation_prompt.as_str(),
            (Some(Role::System), true) => {
                parts.push((f.system_close(), true));
                f.assistant_open()
            }
            (None, true) => f.user_prefix.as_str(),
            (Some(Role::Assistant), true) => {
                return Err(TokenizerError::BadChat(
                    "the assistant's turn is opened after an assistant message".into(),
                ));
            }
            (Some(Role::System), false) => f.system_close(),
            (Some(Role::User), false) => f.user_close(),
            (Some(Role::Assistant), false) => f.assistant_close.as_str(),
            (None, false) => "",
        };
        parts.push((end, true));
        let mut out = Vec::new();
        self.encode_parts(&parts, &mut out)?;
        Ok(out)
    }

    /// Encodes the concatenation of `parts`, each `(text, parse_special)`:
    /// special tokens are cut out where parsing is on, and the text
    /// between special tokens is encoded as one piece across part
    /// boundaries.
    fn encode_parts(
        &self,
        parts: &[(&str, bool)],
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        enum Owned {
            Text(String),
            Token(u32),
        }
        let mut frags: Vec<Owned> = Vec::new();
        for &(text, special) in parts {
            for f in self.partition(text, special) {
                match (f, frags.last_mut()) {
                    (Fragment::Text(t), Some(Owned::Text(s))) => s.push_str(t),
                    (Fragment::Text(t), _) => frags.push(Owned::Text(t.to_owned())),
                    (Fragment::Token(id), _) => frags.push(Owned::Token(id)),
                }
            }
        }
        let frags = frags.iter().map(|f| match f {
            Owned::Text(t) => Fragment::Text(t),
            Owned::Token(id) => Fragment::Token(*id),
        });
        self.encode_fragments(frags, out)
    }

    fn encode_into(
        &self,
        text: &str,
        parse_special: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        self.encode_fragments(self.partition(text, parse_special), out)
    }

    /// Encodes fragments: special tokens as their ids, text by the engine
    /// (SentencePiece adds its space prefix after a special token or at
    /// the start, where the file asks for one).
    fn encode_fragments<'t>(
        &self,
        frags: impl IntoIterator<Item = Fragment<'t>>,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let mut prev_special = true;
        for frag in frags {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    match &self.engine {
                        Engine::Bpe(bpe) => {
                            let enc = bpe.encode_fast(t, false).map_err(TokenizerError::Encode)?;
                            out.extend_from_slice(enc.get_ids());
                        }
                        Engine::Spm {
                            spm,
                            add_space_prefix,
                        } => {
                            let text = if *add_space_prefix && prev_special {
                                spm::escape_whitespace(&format!(" {t}"))
                            } else {
                                spm::escape_whitespace(t)
                            };
                            spm.tokenize(&text, out);
                        }
                    }
                    prev_special = false;
                }
            }
        }
        Ok(())
    }

    /// Cuts `text` at special tokens, longest token first over all text
    /// fragments, as llama.cpp's `tokenizer_st_partition` does.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text(text)];
        for &id in &self.specials {
            let i = id as usize;
            if !parse_special && self.kinds[i] != TokenKind::UserDefined {
                continue;
            }
            let needle = self.tokens[i].as_str();
            if !frags
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(pos) = rest.find(needle) {
                    if pos > 0 {
                        next.push(Fragment::Text(&rest[..pos]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[pos + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            frags = next;
        }
        frags
    }

    /// Decodes ids to text, special tokens included verbatim, so that
    /// `decode(encode(s)) == s`. Invalid UTF-8 (only possible for id
    /// sequences a model would not produce) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut d = self.stream_decoder(false);
        let mut s = String::new();
        for &id in ids {
            s.push_str(&d.push(id)?);
        }
        s.push_str(&d.finish());
        Ok(s)
    }

    /// Decodes ids to text, leaving out control tokens such as `<|im_end|>`
    /// (what a user should see of a generation).
    pub fn decode_skip_special(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut d = self.stream_decoder(true);
        let mut s = String::new();
        for &id in ids {
            s.push_str(&d.push(id)?);
        }
        s.push_str(&d.finish());
        Ok(s)
    }

    /// A decoder for ids arriving one at a time, optionally leaving out
    /// control tokens.
    pub fn stream_decoder(&self, skip_control: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_control)
    }
}
