//! `POST /v1/chat`: one assistant turn over HTTP; `GET /v1/stats`: the
//! vault's tiers and chat counters (administrator).
//!
//! Exists apart from the memory routes because it needs the language
//! model: a server started without one (`memkern serve --no-llm`) answers
//! 503 here and serves everything else.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{ApiError, ApiState, Auth, JsonBody, blocking};
use memkern_runtime::ChatRequest;

/// The chat and statistics routes.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/chat", post(chat))
        .route("/v1/stats", get(stats))
}

/// Live snapshot tiers of the running assistant.
#[derive(serde::Serialize)]
struct Tiers {
    stored_blocks: usize,
    stored_bytes: u64,
    resident_blocks: usize,
    resident_bytes: u64,
}

async fn stats(State(s): State<ApiState>, Auth(who): Auth) -> Result<impl IntoResponse, ApiError> {
    if who.role != memkern_core::governance::Role::Admin {
        return Err(ApiError::new(403, "statistics are for the administrator"));
    }
    let rt = s.rt.clone();
    let (vault, parametric) = blocking(move || {
        let vault = rt.stats()?;
        let mut adapters = Vec::new();
        for u in rt.users(&who)? {
            if let Some(a) = rt.adapter_info(&who, u.id)? {
                adapters.push(serde_json::json!({ "user": u.name, "adapter": a }));
            }
        }
        Ok::<_, memkern_runtime::RuntimeError>((vault, adapters))
    })
    .await?;
    let tiers = s.assistant.as_ref().map(|a| {
        let (stored_blocks, stored_bytes, resident_blocks, resident_bytes) = a.tiers();
        Tiers {
            stored_blocks,
            stored_bytes,
            resident_blocks,
            resident_bytes,
        }
    });
    Ok(Json(
        serde_json::json!({ "vault": vault, "parametric": parametric, "snapshot_tiers": tiers }),
    ))
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
