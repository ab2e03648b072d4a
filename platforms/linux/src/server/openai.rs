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
//!   newlines). Earlier messages — system prompts, previous turns — are
//!   ignored: memkern's retrieval and scheduler supply the context, from
//!   the user's memories (which, by default, include their earlier turns).
//!   No user message with text → 400.
//! * `max_completion_tokens`, else `max_tokens`, else 64; clamped to
//!   1–512.
//! * `model`, `temperature`, `top_p`, `n`, `stop`, `seed`, `tools` and any
//!   other field are accepted and ignored: decoding is always greedy, one
//!   choice, by the loaded model (answered as [`MODEL`]).
//! * `stream_options.include_usage` adds OpenAI's usage chunk (empty
//!   `choices`) before `[DONE]`.
//! * The non-standard `memkern` object sets memkern options:
//!   `{"remember": bool (default true: store the user's message as a
//!   memory), "remember_in": cube id, "namespaces": [cube id],
//!   "snapshots": bool (default true)}`; unknown fields in it are errors.
//!   OpenAI SDKs send it with `extra_body={"memkern": {...}}`.
//!
//! The answer carries a non-standard `memkern` object too: the memories
//! in the prompt (`id`, `text`, `used_as`), the stored turn and timings.

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
use axum::routing::post;
use memkern_core::governance::Principal;
use memkern_core::ids::NamespaceId;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{ApiError, ApiState, Auth, JsonBody};
use crate::runtime::{ChatRequest, ChatResponse, RuntimeError};

/// The model name answers carry (the language model memkern serves).
pub(crate) const MODEL: &str = "smollm2-135m-instruct";

/// `max_tokens` when the request names none.
const DEFAULT_MAX_TOKENS: i64 = 64;

/// Largest `max_tokens` (the runtime's limit).
const MAX_MAX_TOKENS: i64 = 512;

/// The OpenAI-compatible route.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/chat/completions", post(completions))
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

/// The chat-completions request: the fields memkern reads; every other
/// field is accepted and ignored.
#[derive(Debug, Deserialize)]
struct CompletionRequest {
    messages: Vec<Message>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
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
        let last_user = self
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .ok_or_else(|| OpenAiError::new(400, "`messages` has no message with role `user`"))?;
        let message = content_text(&last_user.content)?;
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

/// `"length"` when generation used the whole budget, else `"stop"`.
fn finish_reason(generated: usize, max_tokens: usize) -> &'static str {
    if generated >= max_tokens {
        "length"
    } else {
        "stop"
    }
}

fn usage(resp: &ChatResponse, generated: usize) -> Value {
    json!({
        "prompt_tokens": resp.prompt_tokens,
        "completion_tokens": generated,
        "total_tokens": resp.prompt_tokens + generated,
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
    let max_tokens = req.max_tokens;
    let done = tokio::task::spawn_blocking(move || {
        let mut generated = 0usize;
        let resp = assistant.chat_streaming(&who, &req, |_| {
            generated += 1;
            true
        });
        resp.map(|r| (r, generated))
    })
    .await;
    let (resp, generated) = match done {
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
            "finish_reason": finish_reason(generated, max_tokens),
        }],
        "usage": usage(&resp, generated),
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
    assistant: std::sync::Arc<crate::runtime::Assistant>,
    who: Principal,
    req: ChatRequest,
    include_usage: bool,
) -> Result<Response, OpenAiError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let chunks = Chunks {
        id: completion_id(),
        created: unix_now(),
    };
    let max_tokens = req.max_tokens;
    let _detached = tokio::task::spawn_blocking(move || {
        let mut generated = 0usize;
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
            generated += 1;
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
                let finish = finish_reason(generated, max_tokens);
                let last = chunks.frame(
                    json!({}),
                    Some(finish),
                    Some(("memkern", memkern_info(&resp))),
                );
                let _ = tx.send(Event::Frame(last));
                if include_usage {
                    let _ = tx.send(Event::Frame(chunks.usage_frame(usage(&resp, generated))));
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
        let r = request(json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}));
        let c = r.to_chat().expect("maps");
        assert_eq!((c.max_tokens, c.remember), (1, true));
        let r = request(json!({"messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(r.to_chat().expect("maps").max_tokens, 64);
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
        assert_eq!(finish_reason(24, 24), "length");
        assert_eq!(finish_reason(3, 24), "stop");
        let id = completion_id();
        assert!(id.starts_with("chatcmpl-") && id.len() == 9 + 24, "{id}");
    }
}
