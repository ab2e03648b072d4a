//! The HTTP plumbing every route shares: JSON errors, bearer
//! authentication, JSON bodies with a size limit, path ids, blocking
//! runtime calls and the request log.

use std::pin::Pin;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header::{
    ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use memkern_core::governance::Principal;
use serde::de::DeserializeOwned;

use super::ApiState;
use memkern_runtime::{MemoryId, RuntimeError};

/// A failed request: a status and a message, answered as
/// `{"error": message}`.
///
/// Exists so every failure — runtime errors, bad input, auth — reaches
/// the client in one JSON shape with the right status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Also close the connection (the rest of a refused body was not read).
    close: bool,
}

impl ApiError {
    /// An error with HTTP status `status` (an invalid code becomes 500).
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            close: false,
        }
    }

    /// 400: the request is malformed or out of range.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// The message sent as `error`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status.as_u16(), self.message)
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> ApiError {
        let status = e.status();
        if status >= 500 {
            tracing::error!("runtime error: {e}");
        }
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Runs a (blocking) runtime call on tokio's blocking pool.
///
/// Exists because runtime calls fsync (redb commits), take locks and may
/// embed text: on the async workers they would stall every connection.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, RuntimeError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => {
            tracing::error!("runtime call failed: {e}");
            Err(ApiError::new(
                500,
                "internal error: the runtime call did not complete",
            ))
        }
    }
}

/// The authenticated caller, from `Authorization: Bearer <api key>`.
///
/// Exists so a handler cannot forget authentication: taking `Auth` is the
/// only way to get the [`Principal`] that runtime calls need. Missing,
/// malformed or unknown keys are answered 401.
#[derive(Clone, Copy, Debug)]
pub struct Auth(pub Principal);

impl<S> FromRequestParts<S> for Auth
where
    ApiState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Auth, ApiError> {
        let unauthorised = |m: &str| ApiError::new(401, m);
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            unauthorised("missing Authorization header: send `Authorization: Bearer <api key>`")
        })?;
        let value = header
            .to_str()
            .map_err(|_| unauthorised("the Authorization header is not ASCII"))?;
        let key = match value.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
            _ => {
                return Err(unauthorised(
                    "malformed Authorization header: expected `Bearer <api key>`",
                ));
            }
        };
        if key.is_empty() {
            return Err(unauthorised("empty API key in the Authorization header"));
        }
        let rt = ApiState::from_ref(state).rt;
        let key = key.to_owned();
        let principal = blocking(move || rt.authenticate(&key)).await?;
        Ok(Auth(principal))
    }
}

/// How much of a too-large body is still read (and thrown away) so the
/// client finishes sending and receives the 413, instead of a connection
/// reset; beyond this the connection is simply closed.
const DRAIN_LIMIT: usize = 1 << 20;

/// A JSON request body deserialized into `T`.
///
/// Exists instead of `axum::Json` to answer every body problem as a JSON
/// error: 415 without `Content-Type: application/json`, 413 over
/// [`ApiState::max_body_bytes`], 400 for malformed JSON, wrong types,
/// missing or unknown fields (with serde's message and position).
#[derive(Clone, Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    ApiState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<JsonBody<T>, ApiError> {
        let limit = ApiState::from_ref(state).max_body_bytes;
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = read_body(req.into_body(), limit, declared).await?;
        if !json {
            return Err(ApiError::new(
                415,
                "expected `Content-Type: application/json` with a JSON body",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(describe_json_error(&e)))
    }
}

/// Largest binary upload (a module file), bytes.
pub const MAX_UPLOAD_BYTES: usize = 256 << 20;

/// A binary request body (`Content-Type: application/octet-stream`) of
/// at most [`MAX_UPLOAD_BYTES`]: a module file.
///
/// Exists so uploads larger than the JSON limit get the same JSON errors
/// (415 with another content type, 413 over the limit).
#[derive(Clone, Debug)]
pub struct BinaryBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for BinaryBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<BinaryBody, ApiError> {
        let binary = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/octet-stream")
            });
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = read_body(req.into_body(), MAX_UPLOAD_BYTES, declared).await?;
        if !binary {
            return Err(ApiError::new(
                415,
                "expected `Content-Type: application/octet-stream` with the file as the body",
            ));
        }
        Ok(BinaryBody(bytes))
    }
}

fn is_json(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || mime.rsplit_once('+').is_some_and(|(ty, suffix)| {
            ty.starts_with("application/") && suffix.eq_ignore_ascii_case("json")
        })
}

fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax => format!("malformed JSON in the request body: {e}"),
        Category::Eof => format!("truncated JSON in the request body: {e}"),
        Category::Data => format!("invalid request body: {e}"),
        Category::Io => format!("cannot read the request body: {e}"),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("request body too large: the limit is {limit} bytes"),
        close: true,
    }
}

/// Reads the whole body if it fits in `limit` bytes; otherwise drains up
/// to [`DRAIN_LIMIT`] more and answers 413.
async fn read_body(mut body: Body, limit: usize, declared: Option<u64>) -> Result<Bytes, ApiError> {
    let drain_to = limit.saturating_add(DRAIN_LIMIT);
    if let Some(n) = declared
        && n > limit as u64
        && n > drain_to as u64
    {
        return Err(too_large(limit));
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else if seen > drain_to {
            break;
        }
    }
    if seen > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(buf))
}

/// A memory id from the path (`/v1/memories/{id}`).
///
/// Exists so a malformed id is a JSON 400 naming the expected form.
#[derive(Clone, Copy, Debug)]
pub struct MemoryPath(pub MemoryId);

impl<S: Send + Sync> FromRequestParts<S> for MemoryPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<MemoryPath, ApiError> {
        let raw = path_param(parts, state).await?;
        raw.parse().map(MemoryPath).map_err(ApiError::from)
    }
}

/// The route's single path parameter, as text.
pub(super) async fn path_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<String, ApiError> {
    axum::extract::Path::<String>::from_request_parts(parts, state)
        .await
        .map(|p| p.0)
        .map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))
}

/// The fallback: a JSON 404 naming what was asked.
pub(super) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(404, format!("no route for {method} {}", uri.path()))
}

/// Logs each request (method, path, status, ms) and turns axum's empty
/// 405 answers into JSON ones (keeping their `Allow` header).
pub(super) async fn log_and_finish(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut response = next.run(req).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(CONTENT_TYPE)
    {
        let allow = response.headers().get(ALLOW).cloned();
        let allowed = allow
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" (allowed: {v})"))
            .unwrap_or_default();
        response = ApiError::new(
            405,
            format!("method {method} not allowed on {path}{allowed}"),
        )
        .into_response();
        if let Some(allow) = allow {
            response.headers_mut().insert(ALLOW, allow);
        }
    }
    tracing::debug!(
        %method,
        path = %path,
        status = response.status().as_u16(),
        ms = format_args!("{:.1}", start.elapsed().as_secs_f64() * 1e3),
        "http request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge+json",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/jsonx",
            "text/x+json",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }

    #[test]
    fn runtime_errors_keep_their_status() {
        let e = ApiError::from(RuntimeError::NotFound {
            what: "memory",
            id: "x".to_owned(),
        });
        assert_eq!((e.status(), e.message()), (404, "memory x not found"));
        assert_eq!(ApiError::from(RuntimeError::BadKey).status(), 401);
        assert_eq!(ApiError::new(42, "odd").status(), 500);
    }
}
