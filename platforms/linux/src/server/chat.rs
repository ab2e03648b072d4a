//! `POST /v1/chat`: one assistant turn over HTTP.
//!
//! Exists apart from the memory routes because it needs the language
//! model: a server started without one (`memkern serve --no-llm`) answers
//! 503 here and serves everything else.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};

use super::{ApiError, ApiState, Auth, JsonBody, blocking};
use crate::runtime::ChatRequest;

/// The chat route.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/chat", post(chat))
}

async fn chat(
    State(s): State<ApiState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<ChatRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(assistant) = s.assistant.clone() else {
        return Err(ApiError::new(
            503,
            "this server runs without a language model (memkern serve --no-llm)",
        ));
    };
    Ok(Json(blocking(move || assistant.chat(&who, &req)).await?))
}
