//! Parametric memory: LoRA adapters beside the quantised base model,
//! trained on the device from plaintext memories.
//!
//! - [`Adapter`]: low-rank `A`/`B` pairs on the attention (q, k, v, o) and
//!   optionally MLP (gate, up, down) projections, applied as a separate
//!   path `y = Wx + (α/r)·B(Ax)` so the base weights stay quantised and
//!   shared; a [`crate::Session`] takes one per conversation
//!   ([`crate::Session::with_adapter`]). [`Adapter::merge_into`] folds one
//!   into the weights when a single adapter is used alone.
//! - Files: safetensors with llama.cpp's tensor names (what memkern
//!   stores, with the base model's fingerprint in the metadata) and
//!   llama.cpp's GGUF LoRA format ([`Adapter::to_gguf`]).
//! - [`Trainer`]: burn autodiff through the frozen base model (its weights
//!   are plain tensors, constants to autodiff), Adam from `burn-optim`,
//!   loss on answer tokens only, held to the base model's distributions on
//!   unrelated text by [`Anchor`]s (a KL term); checkpoint and resume.
//! - [`pairs`]: question/answer templates that turn a first-person fact
//!   into training pairs without an LLM.
//!
//! burn 0.22 ships its own `Module::apply_lora`, a reparameterisation that
//! computes `W + scale·AB` as the effective weight on every forward: that
//! materialises a dense matrix per projection per call and would also
//! adapt every 2-D parameter (the embedding, the Q4_1 minimums). The
//! explicit low-rank path here adds `2·r·(in + out)` multiply-adds per
//! token instead and touches only the chosen projections.

mod adapter;
mod anchor;
mod error;
mod file;
pub mod pairs;
mod train;

pub use adapter::{Adapter, LayerLora, LoraConfig, LoraPair, Target};
pub use anchor::{ANCHOR_QUESTIONS, ANCHOR_TEXTS, Anchor, standard_anchors};
pub use error::LoraError;
pub use file::{FORMAT, MAX_FILE, VERSION, parametric_of_file, parse_targets, targets_string};
pub use train::{Example, StepLoss, TrainConfig, Trainer, mean_answer_nll, remove_checkpoint};

use sha2::{Digest, Sha256};

use crate::fingerprint::{Fingerprint, update_framed};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Fingerprint of the model a session computes with `adapter` applied to
/// the base model `base`: a hash of the base fingerprint and the
/// adapter's content ([`Adapter::content_fingerprint`]). KV snapshots
/// taken with the adapter record it, so they never restore into the bare
/// base model or under another adapter.
pub fn applied_fingerprint(base: Fingerprint, adapter: &Adapter) -> Result<Fingerprint, LoraError> {
    let mut h = Sha256::new();
    update_framed(&mut h, b"memkern base+lora v1");
    update_framed(&mut h, &base.0);
    update_framed(&mut h, &adapter.content_fingerprint()?.0);
    Ok(Fingerprint::from_sha256(h))
}

/// The system prompt `memkern chat` opens with (see [`crate::prompt`]).
/// Adapters are trained on this layout with no memory lines (closed
/// book), so the knowledge they hold is asked for the way chat asks.
pub use crate::prompt::CHAT_SYSTEM;

/// Token ids of a closed-book chat turn asking `question`: the system
/// prompt without memory lines, the user's message and the opened
/// assistant turn, in the model's chat format — exactly what `memkern
/// chat` prefills when no memory is retrieved. The question is literal
/// text (no control tokens).
pub fn chat_prompt(tok: &Tokenizer, question: &str) -> Result<Vec<u32>, TokenizerError> {
    let mut ids = crate::prompt::header(tok)?;
    ids.extend(crate::prompt::system_to_user(tok)?);
    ids.extend(tok.encode_literal(question)?);
    ids.extend(crate::prompt::generation_prompt(tok)?);
    Ok(ids)
}

/// [`chat_prompt`] as text (BOS left to the tool), for tools that take a
/// prompt string (llama.cpp's `llama-completion -p`); it tokenizes to the
/// same ids when `question` holds no control-token text.
pub fn chat_prompt_text(tok: &Tokenizer, question: &str) -> String {
    let f = tok.chat_format();
    format!(
        "{}{CHAT_SYSTEM}{}{question}{}",
        f.system_prefix, f.system_to_user, f.generation_prompt
    )
}

/// A training example from a question/answer pair in the chat layout of
/// [`chat_prompt`]; the answer ends with the format's turn end
/// (`<|im_end|>`, `<end_of_turn>`) so the adapted model also learns to
/// stop.
pub fn chat_example(tok: &Tokenizer, pair: &pairs::Pair) -> Result<Example, LoraError> {
    let prompt = chat_prompt(tok, &pair.question).map_err(tokenizer_err)?;
    let mut answer = tok.encode_literal(&pair.answer).map_err(tokenizer_err)?;
    answer.extend(crate::prompt::reply_end(tok).map_err(tokenizer_err)?);
    Example::new(prompt, &answer)
}

fn tokenizer_err(e: TokenizerError) -> LoraError {
    LoraError::Llm(crate::llama::LlmError::Tokenizer(e))
}
