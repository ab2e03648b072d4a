//! The chat template a GGUF file carries (`tokenizer.chat_template`),
//! rendered with minijinja, and the turn markers memkern builds prompts
//! from.
//!
//! Why it exists: every model family wraps turns differently (ChatML's
//! `<|im_start|>user\n…<|im_end|>`, Gemma's `<start_of_turn>user\n…
//! <end_of_turn>` with no system role, Llama 3's headers), and the file
//! says which in a Jinja template written for Python's `jinja2`. memkern
//! renders that template with minijinja (the Jinja engine Rust LLM servers
//! use) instead of hard-coding one format. The runtime needs more than one
//! rendered string, though: it caches the prompt prefix (system header +
//! memory lines) as KV blocks and appends history turns under a token
//! budget, so it builds prompts from the pieces *between* turns. Those
//! pieces are found by rendering the template once over sentinel messages
//! ([`ChatFormat::from_template`]).
//!
//! A file without a template (the Gemma 3 270M GGUF has none) gets a
//! built-in one chosen by the turn tokens of its vocabulary: Gemma's
//! ([`GEMMA_TEMPLATE`]), Llama 3's ([`LLAMA3_TEMPLATE`]), else ChatML
//! ([`ChatFormat::chatml`], llama.cpp's own fallback).

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value, context};

use super::chat::{ChatMessage, Role};

/// Why a chat template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template does not parse or fails while rendering.
    #[error("chat template: {0}")]
    Jinja(String),
    /// Rendering worked but the turns cannot be told apart (the template
    /// drops or reorders messages).
    #[error("chat template: {0}")]
    Shape(String),
}

impl From<JinjaError> for TemplateError {
    fn from(e: JinjaError) -> Self {
        // minijinja's Display names the kind and the line.
        TemplateError::Jinja(e.to_string())
    }
}

/// Largest template accepted (GGUF metadata is untrusted input; real
/// templates are a few KiB, the largest known ones ≈ 20 KiB).
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

/// A Jinja chat template with the special-token texts it refers to.
///
/// Exists to render a conversation exactly as the model was trained to
/// see it (the OpenAI-style `messages` list, `add_generation_prompt`,
/// `bos_token`, `eos_token`, `raise_exception`), e.g. to show a user what
/// the model receives.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `bos` and `eos` are the texts of the model's
    /// BOS and EOS tokens (the template's `bos_token` / `eos_token`).
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, TemplateError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::Shape(format!(
                "{} bytes, more than {MAX_TEMPLATE_BYTES}",
                source.len()
            )));
        }
        let mut env = Environment::new();
        // Python's str methods (`.strip()`, `.startswith()`) are not
        // Jinja: templates that use them fail with a named error. Trim
        // blocks as Hugging Face renders templates.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat", source.to_owned())?;
        Ok(Self {
            env,
            bos: bos.to_owned(),
            eos: eos.to_owned(),
        })
    }

    /// Renders `messages`, opening the assistant's turn at the end when
    /// `add_generation_prompt` is set.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with(messages, add_generation_prompt, &self.bos)
    }

    /// [`Self::render`] with `bos` as the template's `bos_token`.
    fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos: &str,
    ) -> Result<String, TemplateError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| context! { role => m.role.as_str(), content => m.content.clone() })
            .collect();
        let t = self.env.get_template("chat")?;
        Ok(t.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos.to_owned(),
            eos_token => self.eos.clone(),
        })?)
    }
}

/// The text between the turns of a conversation, as one model's template
/// writes it.
///
/// Exists because the runtime builds prompts piece by piece (a cached
/// prefix, memory lines, history under a budget) rather than rendering a
/// whole conversation: with these pieces, `system_prefix + S +
/// system_to_user + U₁ + user_to_assistant + A₁ + assistant_to_user + U₂ +
/// generation_prompt` is what the template renders for system `S` and
/// turns `U₁ A₁ U₂`. Pieces are plain text holding special-token markers
/// (the tokenizer parses them); the BOS token is not part of them (the
/// tokenizer adds it where the file asks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatFormat {
    /// Before the system text (for Gemma, which has no system role, the
    /// opening of the first user turn).
    pub system_prefix: String,
    /// Before the first user message of a conversation without a system
    /// message.
    pub user_prefix: String,
    /// After the system text, before the first user message.
    pub system_to_user: String,
    /// After a user message, before the assistant's reply.
    pub user_to_assistant: String,
    /// After an assistant reply, before the next user message.
    pub assistant_to_user: String,
    /// After the last user message: the opened assistant turn.
    pub generation_prompt: String,
    /// After an assistant reply that ends the conversation (its turn
    /// closed, no new turn opened).
    pub assistant_close: String,
    /// The template the pieces came from.
    pub source: TemplateSource,
}

/// Where a [`ChatFormat`] came from.
///
/// Exists so a caller (and `memkern models list`) can tell the file's own
/// template from memkern's fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    /// The file's `tokenizer.chat_template`.
    File,
    /// A template built into memkern, chosen by the vocabulary's turn
    /// tokens because the file has none (or one that does not render):
    /// `"gemma"`, `"llama3"` or `"chatml"`.
    Builtin(&'static str),
}

/// Gemma's chat template (Gemma 2 and 3 use it; the Gemma 3 270M base
/// model's GGUF carries none): no system role, the system text opens the
/// first user turn, the assistant is `model`.
pub const GEMMA_TEMPLATE: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// Llama 3's chat template (headers, `<|eot_id|>`).
pub const LLAMA3_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// Sentinel texts for [`ChatFormat::from_template`]: private-use
/// characters no template adds, without whitespace for `trim` to eat.
const SENTINELS: [&str; 4] = [
    "\u{e000}S\u{e000}",
    "\u{e001}U\u{e001}",
    "\u{e002}A\u{e002}",
    "\u{e003}V\u{e003}",
];

impl ChatFormat {
    /// ChatML (`<|im_start|>role\n…<|im_end|>\n`): the fallback for a file
    /// without a template, and SmolLM2's and Qwen's own format.
    pub fn chatml() -> Self {
        Self {
            system_prefix: "<|im_start|>system\n".into(),
            user_prefix: "<|im_start|>user\n".into(),
            system_to_user: "<|im_end|>\n<|im_start|>user\n".into(),
            user_to_assistant: "<|im_end|>\n<|im_start|>assistant\n".into(),
            assistant_to_user: "<|im_end|>\n<|im_start|>user\n".into(),
            generation_prompt: "<|im_end|>\n<|im_start|>assistant\n".into(),
            assistant_close: "<|im_end|>\n".into(),
            source: TemplateSource::Builtin("chatml"),
        }
    }

    /// The pieces `template` (from `source`) writes between turns, found
    /// by rendering sentinel conversations and cutting at the sentinels.
    /// A leading `bos_token` is dropped. A template whose pieces are
    /// ChatML's gives [`Self::chatml`]'s pieces (llama.cpp's ChatML: no
    /// default system prompt inserted before a first user message, as
    /// SmolLM2's template would).
    pub fn from_template(
        template: &ChatTemplate,
        source: TemplateSource,
    ) -> Result<Self, TemplateError> {
        let [s, u, a, v] = SENTINELS;
        let full = cut(
            template,
            &[
                ChatMessage::new(Role::System, s),
                ChatMessage::new(Role::User, u),
                ChatMessage::new(Role::Assistant, a),
                ChatMessage::new(Role::User, v),
            ],
            true,
        )?;
        let user_first = cut(template, &[ChatMessage::new(Role::User, u)], true)?;
        let closed = cut(
            template,
            &[
                ChatMessage::new(Role::User, u),
                ChatMessage::new(Role::Assistant, a),
            ],
            false,
        )?;
        let f = Self {
            system_prefix: full[0].clone(),
            user_prefix: user_first[0].clone(),
            system_to_user: full[1].clone(),
            user_to_assistant: full[2].clone(),
            assistant_to_user: full[3].clone(),
            generation_prompt: full[4].clone(),
            assistant_close: closed[2].clone(),
            source,
        };
        let chatml = Self::chatml();
        let same = |a: &Self| {
            (
                a.system_prefix.as_str(),
                a.system_to_user.as_str(),
                a.user_to_assistant.as_str(),
            ) == (
                chatml.system_prefix.as_str(),
                chatml.system_to_user.as_str(),
                chatml.user_to_assistant.as_str(),
            ) && a.assistant_to_user == chatml.assistant_to_user
                && a.generation_prompt == chatml.generation_prompt
                && a.assistant_close == chatml.assistant_close
        };
        if same(&f) {
            return Ok(Self { source, ..chatml });
        }
        Ok(f)
    }

    /// What closes a system text when nothing follows it (a prompt prefix
    /// cached on its own): [`Self::system_to_user`] without the opening of
    /// the user turn, e.g. `<|im_end|>\n`; empty for Gemma, whose system
    /// text sits inside the first user turn.
    pub fn system_close(&self) -> &str {
        let open = self.user_open();
        if open.is_empty() {
            return "";
        }
        self.system_to_user.strip_suffix(open).unwrap_or("")
    }

    /// What closes a user or assistant turn: the text the template writes
    /// after a final reply ([`Self::assistant_close`]: `<|im_end|>\n`,
    /// `<end_of_turn>\n`, `<|eot_id|>`).
    pub fn user_close(&self) -> &str {
        &self.assistant_close
    }

    /// The opening of a user turn after a closed one
    /// ([`Self::assistant_to_user`] after the turn's close).
    pub fn user_open(&self) -> &str {
        let t = self.assistant_to_user.as_str();
        t.strip_prefix(self.assistant_close.as_str()).unwrap_or(t)
    }

    /// The opening of the assistant's turn alone ([`Self::generation_prompt`]
    /// after the user turn's close: `<|im_start|>assistant\n`).
    pub fn assistant_open(&self) -> &str {
        let t = self.generation_prompt.as_str();
        t.strip_prefix(self.assistant_close.as_str()).unwrap_or(t)
    }

    /// The marker that ends a turn in this format (what generation stops
    /// at besides the end-of-generation tokens): [`Self::assistant_close`]
    /// without surrounding whitespace, e.g. `<|im_end|>`, `<end_of_turn>`.
    pub fn turn_end(&self) -> &str {
        self.assistant_close.trim()
    }
}

/// What [`cut`] passes as `bos_token`.
const BOS_SENTINEL: &str = "\u{e004}B\u{e004}";

/// Renders `messages` (sentinel contents, in [`SENTINELS`] order) and
/// cuts the text at each sentinel: `messages.len() + 1` pieces, a leading
/// `bos_token` dropped from the first.
fn cut(
    template: &ChatTemplate,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
) -> Result<Vec<String>, TemplateError> {
    // A sentinel BOS: the real BOS text may also be a turn marker
    // (SmolLM2's BOS is `<|im_start|>`), so only what the template writes
    // as `bos_token` may be dropped.
    let text = template.render_with(messages, add_generation_prompt, BOS_SENTINEL)?;
    let mut pieces = Vec::with_capacity(messages.len() + 1);
    let mut rest = text.as_str();
    for m in messages {
        let Some(at) = rest.find(m.content.as_str()) else {
            return Err(TemplateError::Shape(format!(
                "a message went missing or out of order when rendered: {text:?}"
            )));
        };
        pieces.push(rest[..at].to_owned());
        rest = &rest[at + m.content.len()..];
    }
    pieces.push(rest.to_owned());
    if let Some(first) = pieces.first_mut()
        && first.starts_with(BOS_SENTINEL)
    {
        first.drain(..BOS_SENTINEL.len());
    }
    if pieces.iter().any(|p| p.contains(BOS_SENTINEL)) {
        return Err(TemplateError::Shape(format!(
            "BOS written inside the conversation: {text:?}"
        )));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gemma 3's template as its GGUF carries it (no system role: the
    /// system text opens the first user turn).
    const GEMMA3: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- endif -%}
    {{ '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}
"#;

    /// SmolLM2-Instruct's ChatML template.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn gemma3_pieces_fold_the_system_text_into_the_first_turn() {
        let t = ChatTemplate::new(GEMMA3, "<bos>", "<eos>").unwrap();
        let f = ChatFormat::from_template(&t, TemplateSource::File).unwrap();
        // The built-in copy gives the same pieces.
        let builtin = ChatTemplate::new(GEMMA_TEMPLATE, "<bos>", "<eos>").unwrap();
        let g = ChatFormat::from_template(&builtin, TemplateSource::Builtin("gemma")).unwrap();
        assert_eq!(
            ChatFormat {
                source: TemplateSource::File,
                ..g
            },
            f
        );
        assert_eq!(f.system_prefix, "<start_of_turn>user\n");
        assert_eq!(f.user_prefix, "<start_of_turn>user\n");
        assert_eq!(f.assistant_close, "<end_of_turn>\n");
        assert_eq!(f.system_close(), "");
        assert_eq!(f.system_to_user, "\n\n");
        assert_eq!(f.user_to_assistant, "<end_of_turn>\n<start_of_turn>model\n");
        assert_eq!(f.assistant_to_user, "<end_of_turn>\n<start_of_turn>user\n");
        assert_eq!(f.generation_prompt, "<end_of_turn>\n<start_of_turn>model\n");
        assert_eq!(f.turn_end(), "<end_of_turn>");
        // A whole conversation renders as the pieces say.
        let text = t
            .render(
                &[ChatMessage::system("Be brief."), ChatMessage::user(" Hi ")],
                true,
            )
            .unwrap();
        assert_eq!(
            text,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
        // The template's own check is an error, not a panic.
        let err = t
            .render(&[ChatMessage::assistant("x")], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("roles must alternate"), "{err}");
    }

    #[test]
    fn smollm2_template_gives_chatml() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let f = ChatFormat::from_template(&t, TemplateSource::File).unwrap();
        assert_eq!(f.source, TemplateSource::File);
        let f = ChatFormat {
            source: TemplateSource::Builtin("chatml"),
            ..f
        };
        assert_eq!(f, ChatFormat::chatml());
        assert_eq!(f.turn_end(), "<|im_end|>");
        assert_eq!(f.system_close(), "<|im_end|>\n");
    }

    #[test]
    fn llama3_template_pieces() {
        let t = ChatTemplate::new(LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>").unwrap();
        let f = ChatFormat::from_template(&t, TemplateSource::Builtin("llama3")).unwrap();
        assert_eq!(
            f.system_prefix,
            "<|start_header_id|>system<|end_header_id|>\n\n"
        );
        assert_eq!(
            f.generation_prompt,
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(f.turn_end(), "<|eot_id|>");
        assert_eq!(
            f.user_open(),
            "<|start_header_id|>user<|end_header_id|>\n\n"
        );
        assert_eq!(f.system_close(), "<|eot_id|>");
    }

    #[test]
    fn broken_templates_are_errors() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
        let drops = ChatTemplate::new("{{ messages[0]['content'] }}", "", "").unwrap();
        assert!(matches!(
            ChatFormat::from_template(&drops, TemplateSource::File),
            Err(TemplateError::Shape(_))
        ));
        let huge = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        assert!(ChatTemplate::new(&huge, "", "").is_err());
    }
}
