//! ChatML, the chat format of SmolLM2 (and Qwen, Hermes, …).
//!
//! ```text
//! <|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n
//! ```

use std::fmt;

/// The ChatML turn opener.
pub const IM_START: &str = "<|im_start|>";
/// The ChatML turn closer (also SmolLM2's end-of-generation token).
pub const IM_END: &str = "<|im_end|>";
/// The system prompt SmolLM2's Jinja chat template inserts when a chat does
/// not start with a system message; kept so callers can reproduce that
/// template exactly (see [`render_chatml`]).
pub const SMOLLM2_DEFAULT_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// Who speaks a chat message.
///
/// Exists so role names are spelled once, the way the model was trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions and context (memories) for the assistant.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role name as written after `<|im_start|>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One turn of a conversation.
///
/// Exists as the input of [`render_chatml`] and
/// [`super::Tokenizer::encode_chat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// Renders messages as ChatML text, optionally followed by the opener of
/// the assistant's turn (`add_generation_prompt`).
///
/// Matches llama.cpp's ChatML rendering, which the reference fixtures use.
/// Unlike the Jinja template stored in SmolLM2's GGUF, no default system
/// prompt is inserted when the first message is not a system message; to
/// reproduce the Jinja template exactly, start with
/// `ChatMessage::system(SMOLLM2_DEFAULT_SYSTEM)`.
///
/// Tokenising this string with [`super::Tokenizer::encode`] parses special
/// tokens inside message contents too; for untrusted contents use
/// [`super::Tokenizer::encode_chat`], which cannot be spoofed.
pub fn render_chatml(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str(IM_START);
        out.push_str(m.role.as_str());
        out.push('\n');
        out.push_str(&m.content);
        out.push_str(IM_END);
        out.push('\n');
    }
    if add_generation_prompt {
        out.push_str(IM_START);
        out.push_str(Role::Assistant.as_str());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fixture_layout() {
        let msgs = [
            ChatMessage::system("You are a helpful assistant."),
            ChatMessage::user("What is the capital of Germany?"),
        ];
        assert_eq!(
            render_chatml(&msgs, true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nWhat is the capital of Germany?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(
            render_chatml(&msgs[1..], false),
            "<|im_start|>user\nWhat is the capital of Germany?<|im_end|>\n"
        );
    }
}
