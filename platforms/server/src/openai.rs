//! `POST /v1/chat/completions`: OpenAI's chat-completions API over the
//! memkern assistant, so existing OpenAI clients (SDKs, UIs) get answers
//! grounded in the user's memories without changing a line.
//!
//! Exists apart from `POST /v1/chat` because it speaks OpenAI's wire
//! format: its request shape (unknown fields accepted, since OpenAI
//! clients send many), its `chat.completion` / `chat.completion.chunk`
//! answers, server-sent events for `"stream": true`, and its error shape
//! `{"error": {"message", "type", "code"}}` for every failure on this
//! route (authentication and body errors included).
//!
//! # Mapping
//!
//! * The memkern message is the text of the **last** `user` message
//!   (string content, or the `text` parts of an array content joined by
//!   newlines). `system` (and `developer`) messages become the caller's
//!   instructions and the `user` / `assistant` messages before the last
//!   become the conversation history; both go into the prompt after the
//!   retrieved memories, within half the model's context (the oldest
//!   turns are left out first). No user message with text → 400.
//! * `max_completion_tokens`, else `max_tokens`, else 256; 1–512.
//! * `temperature` (0–2; 0, the default, is greedy), `top_p` ((0, 1]),
//!   `seed` and `stop` (a string or up to 4) are honoured; `n` must be 1;
//!   `tools`, `tool_choice`, `functions`, `logprobs: true`,
//!   `top_logprobs`, a non-text `response_format`, nonzero
//!   `frequency_penalty` / `presence_penalty` and `logit_bias` are refused
//!   with a 400 naming the field — never accepted and ignored. `model`,
//!   `user`, `store`, `metadata` and unknown fields are accepted (answers
//!   name the model memkern serves, [`MODEL`]).
//! * `stream_options.include_usage` adds OpenAI's usage chunk (empty
//!   `choices`) before `[DONE]`.
//! * The non-standard `memkern` object sets memkern options:
//!   `{"remember": bool (default true: store the user's message as a
//!   memory unless it only asks a question), "remember_in": cube id,
//!   "namespaces": [cube id], "snapshots": bool (default true)}`; unknown
//!   fields in it are errors. OpenAI SDKs send it with
//!   `extra_body={"memkern": {...}}`.
//!
//! The answer carries a non-standard `memkern` object too: the memories
//! in the prompt (`id`, `text`, `used_as`), the stored turn and timings.
//!
//! `GET /v1/models` and `GET /v1/models/{id}` list the model (none when
//! the server runs without one), so `client.models.list()` works; every
//! error on these routes has OpenAI's shape.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use memkern_core::governance::Principal;
use memkern_core::ids::NamespaceId;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{ApiError, ApiState, Auth, JsonBody};
use memkern_runtime::{ChatRequest, ChatResponse, Finish, Role, RuntimeError, Turn};

/// The model name answers carry (the language model memkern serves).
pub(crate) const MODEL: &str = "smollm2-135m-instruct";

/// `max_tokens` when the request names none: enough that a normal answer
/// is not cut.
const DEFAULT_MAX_TOKENS: i64 = 256;

/// Largest `max_tokens` (the runtime's limit).
const MAX_MAX_TOKENS: i64 = 512;

/// The OpenAI-compatible routes.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
}

/// One entry of `/v1/models`.
fn model_entry() -> Value {
    json!({ "id": MODEL, "object": "model", "created": 0, "owned_by": "memkern" })
}

/// `GET /v1/models`: the model this server answers with (none without).
async fn models(
    State(s): State<ApiState>,
    OpenAiAuth(_): OpenAiAuth,
) -> Result<Response, OpenAiError> {
    let data: Vec<Value> = s.assistant.iter().map(|_| model_entry()).collect();
    Ok(Json(json!({ "object": "list", "data": data })).into_response())
}

/// `GET /v1/models/{id}`.
async fn model(
    State(s): State<ApiState>,
    OpenAiAuth(_): OpenAiAuth,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, OpenAiError> {
    if s.assistant.is_some() && id == MODEL {
        return Ok(Json(model_entry()).into_response());
    }
    let shown: String = id.chars().take(64).collect();
    Err(OpenAiError::new(
        404,
        format!("the model {shown:?} does not exist here; GET /v1/models lists the one there is"),
    ))
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "code"}}`.
///
/// Exists because OpenAI clients parse that shape (the native API answers
/// `{"error": "<message>"}`, which they would misreport).
#[derive(Debug)]
struct OpenAiError {
    status: StatusCode,
    message: String,
}

impl OpenAiError {
    fn new(status: u16, message: impl Into<String>) -> OpenAiError {
        OpenAiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
        }
    }

    /// OpenAI's `type` and a `code` for the status.
    fn kind(&self) -> (&'static str, &'static str) {
        match self.status.as_u16() {
            401 => ("authentication_error", "invalid_api_key"),
            403 => ("permission_error", "permission_denied"),
            404 => ("invalid_request_error", "not_found"),
            409 => ("invalid_request_error", "conflict"),
            413 => ("invalid_request_error", "request_too_large"),
            415 => ("invalid_request_error", "unsupported_media_type"),
            503 => ("server_error", "model_not_loaded"),
            s if s >= 500 => ("server_error", "internal_error"),
            _ => ("invalid_request_error", "invalid_request"),
        }
    }

    /// The `{"error": {...}}` body.
    fn body(&self) -> Value {
        let (ty, code) = self.kind();
        json!({ "error": { "message": self.message, "type": ty, "code": code } })
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> OpenAiError {
        OpenAiError::new(e.status(), e.message())
    }
}

impl From<RuntimeError> for OpenAiError {
    fn from(e: RuntimeError) -> OpenAiError {
        ApiError::from(e).into()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of a refused body was not read (as `ApiError` does).
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// [`Auth`] with its rejection in OpenAI's shape.
struct OpenAiAuth(Principal);

impl FromRequestParts<ApiState> for OpenAiAuth {
    type Rejection = OpenAiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<OpenAiAuth, OpenAiError> {
        let Auth(who) = Auth::from_request_parts(parts, state).await?;
        Ok(OpenAiAuth(who))
    }
}

/// [`JsonBody`] with its rejection in OpenAI's shape.
struct OpenAiJson<T>(T);

impl<T: serde::de::DeserializeOwned> FromRequest<ApiState> for OpenAiJson<T> {
    type Rejection = OpenAiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<OpenAiJson<T>, OpenAiError> {
        let JsonBody(body) = JsonBody::<T>::from_request(req, state).await?;
        Ok(OpenAiJson(body))
    }
}

/// The chat-completions request: the fields memkern reads or refuses;
/// other fields (`model`, `user`, `store`, …) are accepted.
#[derive(Debug, Deserialize)]
struct CompletionRequest {
    messages: Vec<Message>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    n: Option<i64>,
    /// Fields memkern cannot honour: present and not null/neutral → 400.
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    memkern: Option<MemkernOptions>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Value,
}

/// OpenAI's `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Request fields memkern cannot honour, with the value that asks for
/// nothing (absent, null and that value are accepted).
const REFUSED: &[(&str, &str)] = &[
    ("tools", "tool calls are not supported"),
    ("tool_choice", "tool calls are not supported"),
    ("functions", "function calls are not supported"),
    ("function_call", "function calls are not supported"),
    ("logprobs", "log probabilities are not returned"),
    ("top_logprobs", "log probabilities are not returned"),
    ("logit_bias", "logit_bias is not supported"),
    ("frequency_penalty", "frequency_penalty is not supported"),
    ("presence_penalty", "presence_penalty is not supported"),
    ("response_format", "only text answers are supported"),
    ("audio", "audio output is not supported"),
    ("modalities", "only text output is supported"),
    ("prediction", "predicted outputs are not supported"),
];

/// Whether `v` asks for nothing: null, false, 0, an empty array or
/// object, or `{"type": "text"}` / `["text"]`.
fn neutral(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty() || a == &[json!("text")],
        Value::Object(o) => o.is_empty() || v == &json!({ "type": "text" }),
        _ => false,
    }
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// memkern's own options (`"memkern": {...}`); typos here are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemkernOptions {
    #[serde(default = "yes")]
    remember: bool,
    #[serde(default)]
    remember_in: Option<NamespaceId>,
    #[serde(default)]
    namespaces: Option<Vec<NamespaceId>>,
    #[serde(default = "yes")]
    snapshots: bool,
}

fn yes() -> bool {
    true
}

/// The text of a message's `content`: a string, or the `text` parts of
/// an array joined by newlines (other parts, e.g. images, are skipped).
fn content_text(content: &Value) -> Result<String, OpenAiError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::new();
            for part in parts {
                if part.get("type").and_then(Value::as_str) == Some("text") {
                    match part.get("text").and_then(Value::as_str) {
                        Some(t) => texts.push(t),
                        None => {
                            return Err(OpenAiError::new(
                                400,
                                "a content part of type `text` needs a string `text`",
                            ));
                        }
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(OpenAiError::new(
            400,
            "message `content` must be a string or an array of content parts",
        )),
    }
}

impl CompletionRequest {
    /// The memkern request this asks for.
    fn to_chat(&self) -> Result<ChatRequest, OpenAiError> {
        for (field, why) in REFUSED {
            if self.rest.get(*field).is_some_and(|v| !neutral(v)) {
                return Err(OpenAiError::new(
                    400,
                    format!("`{field}`: {why} by memkern"),
                ));
            }
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(OpenAiError::new(
                400,
                "`n` must be 1: memkern generates one choice",
            ));
        }
        let last = self
            .messages
            .iter()
            .rposition(|m| m.role == "user")
            .ok_or_else(|| OpenAiError::new(400, "`messages` has no message with role `user`"))?;
        let mut system = Vec::new();
        let mut history = Vec::new();
        for (i, m) in self.messages[..last].iter().enumerate() {
            let text = content_text(&m.content)?;
            match m.role.as_str() {
                "system" | "developer" => system.push(text),
                "user" => history.push(Turn {
                    role: Role::User,
                    text,
                }),
                "assistant" => history.push(Turn {
                    role: Role::Assistant,
                    text,
                }),
                // Tool results belong to tool calls, which are refused.
                other => {
                    let shown: String = other.chars().take(32).collect();
                    return Err(OpenAiError::new(
                        400,
                        format!(
                            "messages[{i}]: role {shown:?} is not supported (system, developer, user, assistant)"
                        ),
                    ));
                }
            }
        }
        history.retain(|t| !t.text.trim().is_empty());
        let message = content_text(&self.messages[last].content)?;
        if message.trim().is_empty() {
            return Err(OpenAiError::new(
                400,
                "the last `user` message has no text content",
            ));
        }
        let max_tokens = self
            .max_completion_tokens
            .or(self.max_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS)
            .clamp(1, MAX_MAX_TOKENS);
        let mut req = ChatRequest::new(message);
        // Clamped to 1–512 above, so the conversion cannot fail.
        req.max_tokens = usize::try_from(max_tokens).unwrap_or(1);
        req.system = (!system.is_empty()).then(|| system.join("\n"));
        req.history = history;
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(OpenAiError::new(
                    400,
                    format!("`temperature` must be 0–2, got {t}"),
                ));
            }
            req.temperature = t as f32;
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(OpenAiError::new(
                    400,
                    format!("`top_p` must be in (0, 1], got {p}"),
                ));
            }
            req.top_p = p as f32;
        }
        // OpenAI's seed is a signed integer; its bits seed the sampler.
        req.seed = self.seed.map(|s| s as u64);
        req.stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if let Some(o) = &self.memkern {
            req.remember = o.remember;
            req.remember_in = o.remember_in;
            req.namespaces = o.namespaces.clone();
            req.snapshots = o.snapshots;
        }
        Ok(req)
    }
}

/// `chatcmpl-` and 24 random hex digits (time-based if the OS has no
/// randomness to give).
fn completion_id() -> String {
    let mut b = [0u8; 12];
    if getrandom::fill(&mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b.copy_from_slice(&nanos.to_le_bytes()[..12]);
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("chatcmpl-{hex}")
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// OpenAI's `finish_reason`: `"length"` when `max_tokens` ran out, else
/// `"stop"` (end of turn or a stop sequence).
fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Length => "length",
        Finish::Stop => "stop",
    }
}

fn usage(resp: &ChatResponse) -> Value {
    json!({
        "prompt_tokens": resp.prompt_tokens,
        "completion_tokens": resp.completion_tokens,
        "total_tokens": resp.prompt_tokens + resp.completion_tokens,
    })
}

/// The non-standard `memkern` object of an answer.
fn memkern_info(resp: &ChatResponse) -> Value {
    json!({
        "memories": resp.memories,
        "stored": resp.stored,
        "retrieval_ms": resp.retrieval_ms,
        "ttft_ms": resp.ttft_ms,
        "total_ms": resp.total_ms,
        "restored_tokens": resp.restored_tokens,
    })
}

async fn completions(
    State(s): State<ApiState>,
    OpenAiAuth(who): OpenAiAuth,
    OpenAiJson(body): OpenAiJson<CompletionRequest>,
) -> Result<Response, OpenAiError> {
    let req = body.to_chat()?;
    let Some(assistant) = s.assistant.clone() else {
        return Err(OpenAiError::new(
            503,
            "this server runs without a language model (memkern serve --no-llm)",
        ));
    };
    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    if body.stream {
        return stream(assistant, who, req, include_usage).await;
    }
    let done =
        tokio::task::spawn_blocking(move || assistant.chat_streaming(&who, &req, |_| true)).await;
    let resp = match done {
        Ok(result) => result?,
        Err(e) => {
            tracing::error!("chat completion failed: {e}");
            return Err(OpenAiError::new(
                500,
                "internal error: the chat turn did not complete",
            ));
        }
    };
    let out = json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": unix_now(),
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": resp.answer },
            "logprobs": null,
            "finish_reason": finish_reason(resp.finish),
        }],
        "usage": usage(&resp),
        "memkern": memkern_info(&resp),
    });
    Ok(Json(out).into_response())
}

/// What the generating thread sends the response body.
enum Event {
    /// A complete SSE frame (`data: …\n\n`).
    Frame(Bytes),
    /// The turn failed.
    Failed(OpenAiError),
}

/// Builds `chat.completion.chunk` frames, all with one id and time.
struct Chunks {
    id: String,
    created: u64,
}

impl Chunks {
    fn frame(
        &self,
        choice_delta: Value,
        finish: Option<&str>,
        extra: Option<(&str, Value)>,
    ) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": MODEL,
            "choices": [{
                "index": 0,
                "delta": choice_delta,
                "logprobs": null,
                "finish_reason": finish,
            }],
        });
        if let (Some((key, value)), Some(map)) = (extra, chunk.as_object_mut()) {
            map.insert(key.to_owned(), value);
        }
        sse(&chunk)
    }

    fn usage_frame(&self, usage: Value) -> Bytes {
        sse(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": MODEL,
            "choices": [],
            "usage": usage,
        }))
    }
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// Turns generated pieces into the deltas of the trimmed answer: leading
/// whitespace is dropped and trailing whitespace held back until more
/// text follows, so the deltas concatenate to exactly the
/// non-streaming `content` (which is trimmed).
#[derive(Default)]
struct Deltas {
    sent: String,
    held: String,
}

impl Deltas {
    /// The text to send now for piece `t` (possibly empty).
    fn push(&mut self, t: &str) -> String {
        let t = if self.sent.is_empty() && self.held.is_empty() {
            t.trim_start()
        } else {
            t
        };
        self.held.push_str(t);
        let body = self.held.trim_end().len();
        if body == 0 {
            return String::new();
        }
        let out: String = self.held.drain(..body).collect();
        self.sent.push_str(&out);
        out
    }

    /// What of the final `answer` has not been sent (text the model
    /// flushed after the last piece); empty when nothing is left.
    fn rest(&mut self, answer: &str) -> String {
        let rest = answer
            .strip_prefix(self.sent.as_str())
            .unwrap_or("")
            .to_owned();
        self.sent.push_str(&rest);
        rest
    }
}

/// Runs the turn on the blocking pool and streams its tokens as
/// server-sent events; a failure before the first token is an ordinary
/// error answer.
async fn stream(
    assistant: std::sync::Arc<memkern_runtime::Assistant>,
    who: Principal,
    req: ChatRequest,
    include_usage: bool,
) -> Result<Response, OpenAiError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let chunks = Chunks {
        id: completion_id(),
        created: unix_now(),
    };
    let _detached = tokio::task::spawn_blocking(move || {
        let mut deltas = Deltas::default();
        let mut started = false;
        // `send` fails once the response body is dropped (the client went
        // away): returning false then stops generation.
        let send_text = |text: &str, started: &mut bool| -> bool {
            if text.is_empty() {
                return true;
            }
            if !*started {
                *started = true;
                let role = chunks.frame(json!({ "role": "assistant", "content": "" }), None, None);
                if tx.send(Event::Frame(role)).is_err() {
                    return false;
                }
            }
            tx.send(Event::Frame(chunks.frame(
                json!({ "content": text }),
                None,
                None,
            )))
            .is_ok()
        };
        let result = assistant.chat_streaming(&who, &req, |t| {
            let text = deltas.push(t);
            send_text(&text, &mut started)
        });
        match result {
            Ok(resp) => {
                let rest = deltas.rest(&resp.answer);
                if !send_text(&rest, &mut started) {
                    return;
                }
                if !started {
                    let role =
                        chunks.frame(json!({ "role": "assistant", "content": "" }), None, None);
                    let _ = tx.send(Event::Frame(role));
                }
                let finish = finish_reason(resp.finish);
                let last = chunks.frame(
                    json!({}),
                    Some(finish),
                    Some(("memkern", memkern_info(&resp))),
                );
                let _ = tx.send(Event::Frame(last));
                if include_usage {
                    let _ = tx.send(Event::Frame(chunks.usage_frame(usage(&resp))));
                }
                let _ = tx.send(Event::Frame(Bytes::from_static(b"data: [DONE]\n\n")));
            }
            Err(e) => {
                let _ = tx.send(Event::Failed(e.into()));
            }
        }
    });
    match rx.recv().await {
        Some(Event::Frame(first)) => {
            let body = Body::from_stream(SseBody {
                first: Some(first),
                rx,
            });
            let mut response = Response::new(body);
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(response)
        }
        Some(Event::Failed(e)) => Err(e),
        None => {
            tracing::error!("streaming chat turn ended without an answer");
            Err(OpenAiError::new(
                500,
                "internal error: the chat turn did not complete",
            ))
        }
    }
}

/// The response body of a streamed completion: the first frame, then the
/// frames the generating thread sends; a failure mid-stream becomes an
/// error event (without `[DONE]`).
struct SseBody {
    first: Option<Bytes>,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl futures_core::Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Event::Frame(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Event::Failed(e))) => {
                tracing::warn!("chat completion failed mid-stream: {}", e.message);
                Poll::Ready(Some(Ok(sse(&e.body()))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: Value) -> CompletionRequest {
        serde_json::from_value(v).expect("request parses")
    }

    #[test]
    fn maps_the_last_user_message_and_accepts_unknown_fields() {
        let r = request(json!({
            "model": "gpt-4o", "temperature": 0.2, "n": 1, "user": "x",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": null, "tool_calls": []},
                {"role": "user", "content": [
                    {"type": "text", "text": "Where"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                    {"type": "text", "text": "is Dana?"}
                ]}
            ],
            "max_completion_tokens": 9000,
            "max_tokens": 3,
            "memkern": {"remember": false}
        }));
        let c = r.to_chat().expect("maps");
        assert_eq!(c.message, "Where\nis Dana?");
        assert_eq!(c.max_tokens, 512, "max_completion_tokens wins, clamped");
        assert!(!c.remember && c.snapshots);
        // The conversation comes along: system text and earlier turns (the
        // empty assistant turn of a tool call is left out).
        assert_eq!(c.system.as_deref(), Some("Be brief."));
        assert_eq!(
            c.history,
            [Turn {
                role: Role::User,
                text: "first".to_owned()
            }]
        );
        assert_eq!(c.temperature, 0.2);
        let r = request(json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}));
        let c = r.to_chat().expect("maps");
        assert_eq!((c.max_tokens, c.remember), (1, true));
        let r = request(json!({"messages": [{"role": "user", "content": "hi"}]}));
        let c = r.to_chat().expect("maps");
        assert_eq!((c.max_tokens, c.temperature, c.top_p), (256, 0.0, 1.0));
        let r = request(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "seed": 7, "top_p": 0.9, "stop": "\n", "tools": [], "logprobs": false,
            "response_format": {"type": "text"}, "frequency_penalty": 0
        }));
        let c = r.to_chat().expect("neutral values of refused fields pass");
        assert_eq!(
            (c.seed, c.top_p, c.stop.clone()),
            (Some(7), 0.9, vec!["\n".to_owned()])
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (extra, says) in [
            (json!({"n": 2}), "`n` must be 1"),
            (json!({"temperature": 3}), "`temperature` must be 0–2"),
            (json!({"top_p": 0}), "`top_p` must be in (0, 1]"),
            (json!({"tools": [{"type": "function"}]}), "`tools`"),
            (json!({"logprobs": true}), "`logprobs`"),
            (
                json!({"response_format": {"type": "json_object"}}),
                "`response_format`",
            ),
            (json!({"presence_penalty": 0.5}), "`presence_penalty`"),
        ] {
            let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            let e = request(body).to_chat().expect_err("refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{extra}");
            let msg = e.body()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            assert!(msg.contains(says), "{extra}: {msg}");
        }
        let tool = request(json!({"messages": [
            {"role": "tool", "content": "42"}, {"role": "user", "content": "hi"}
        ]}));
        assert!(tool.to_chat().is_err());
    }

    #[test]
    fn refuses_requests_without_user_text() {
        for messages in [
            json!([]),
            json!([{"role": "system", "content": "hi"}]),
            json!([{"role": "user", "content": "  "}]),
            json!([{"role": "user", "content": [{"type": "image_url"}]}]),
            json!([{"role": "user", "content": 7}]),
        ] {
            let e = request(json!({ "messages": messages }))
                .to_chat()
                .expect_err("refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        }
        let bad = serde_json::from_value::<CompletionRequest>(json!({
            "messages": [], "memkern": {"remembr": false}
        }));
        assert!(bad.is_err(), "typos in memkern options are errors");
    }

    #[test]
    fn deltas_concatenate_to_the_trimmed_answer() {
        let mut d = Deltas::default();
        let pieces = [" ", " Dana", " lives", " in", " Porto", ".", "\n", " "];
        let mut out = String::new();
        for p in pieces {
            out.push_str(&d.push(p));
        }
        let answer = pieces.concat().trim().to_owned();
        out.push_str(&d.rest(&answer));
        assert_eq!(out, answer);
        let mut d = Deltas::default();
        d.push("Hi");
        assert_eq!(d.rest("Hi!"), "!", "text flushed after the last piece");
    }

    #[test]
    fn errors_have_openai_shape() {
        let e = OpenAiError::from(ApiError::new(401, "no key"));
        assert_eq!(
            e.body(),
            json!({"error": {"message": "no key", "type": "authentication_error", "code": "invalid_api_key"}})
        );
        assert_eq!(OpenAiError::new(503, "x").kind().0, "server_error");
        assert_eq!(finish_reason(Finish::Length), "length");
        assert_eq!(finish_reason(Finish::Stop), "stop");
        let id = completion_id();
        assert!(id.starts_with("chatcmpl-") && id.len() == 9 + 24, "{id}");
    }
}
