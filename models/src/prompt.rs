//! The prompt layout of memkern's chat, in any model's chat format.
//!
//! Exists so the three places that must agree token for token — a chat
//! turn (`memkern-runtime`), the KV blocks cached for its prefix, and the
//! examples LoRA adapters are trained on ([`crate::lora::chat_prompt`]) —
//! build prompts from one definition. The turn markers come from the
//! model's chat template ([`ChatFormat`]); pieces are encoded one after the
//! other (markers with special tokens parsed, text literally), so a
//! prefix's ids never depend on what follows it:
//!
//! ```text
//! [BOS] system_prefix CHAT_SYSTEM {memory lines} {caller's system text}
//! system_to_user {user} user_close {assistant_open} {assistant} … {message}
//! generation_prompt
//! ```

use crate::tokenizer::{ChatFormat, Role, Tokenizer, TokenizerError};

/// The system prompt `memkern chat` opens with; retrieved memories follow
/// as `- text` lines.
pub const CHAT_SYSTEM: &str = "You are a helpful assistant running on the user's own device. \
Answer in one short sentence, using these memories about the user when they are relevant:\n";

/// BOS where the model asks for it, the system turn's opening and
/// [`CHAT_SYSTEM`]: the prefix every chat turn and KV block starts with.
pub fn header(tok: &Tokenizer) -> Result<Vec<u32>, TokenizerError> {
    let mut ids: Vec<u32> = tok.bos_id().filter(|_| tok.add_bos()).into_iter().collect();
    ids.extend(tok.encode(&tok.chat_format().system_prefix)?);
    ids.extend(tok.encode_literal(CHAT_SYSTEM)?);
    Ok(ids)
}

/// What closes the system text and opens the first user turn (for Gemma,
/// whose system text sits inside the first user turn, a blank line).
pub fn system_to_user(tok: &Tokenizer) -> Result<Vec<u32>, TokenizerError> {
    tok.encode(&tok.chat_format().system_to_user)
}

/// The opening of a turn of `role` after a closed turn (`<|im_start|>user\n`,
/// `<start_of_turn>model\n`).
pub fn turn_open(f: &ChatFormat, role: Role) -> &str {
    match role {
        Role::Assistant => f.assistant_open(),
        Role::User => f.user_open(),
        // ChatML's system opener; formats without a system role (Gemma)
        // open the first user turn there instead.
        Role::System => &f.system_prefix,
    }
}

/// The end of the last user message and the opened assistant turn.
pub fn generation_prompt(tok: &Tokenizer) -> Result<Vec<u32>, TokenizerError> {
    tok.encode(&tok.chat_format().generation_prompt)
}

/// What ends an assistant reply (`<|im_end|>`, `<end_of_turn>`): the
/// target an adapter learns to stop with.
pub fn reply_end(tok: &Tokenizer) -> Result<Vec<u32>, TokenizerError> {
    tok.encode(tok.chat_format().turn_end())
}
