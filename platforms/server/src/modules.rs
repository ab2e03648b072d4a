//! `/v1/modules` and `/v1/publishers`: installed memory modules and the
//! publishers this device trusts, over HTTP.

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use memkern_runtime::modules::{InstallAction, Scope};
use serde::Deserialize;

use super::ApiState;
use super::extract::{ApiError, Auth, BinaryBody, JsonBody, blocking};

/// The module and publisher routes.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/modules", get(list).post(install))
        .route("/v1/modules/{id}", get(info).delete(remove))
        .route("/v1/publishers", get(publishers).post(trust))
        .route("/v1/publishers/{key}", delete(distrust))
}

async fn list(State(s): State<ApiState>, Auth(who): Auth) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(blocking(move || s.rt.modules(&who)).await?))
}

async fn info(
    State(s): State<ApiState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(blocking(move || s.rt.module(&who, &id)).await?))
}

async fn remove(
    State(s): State<ApiState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(blocking(move || s.rt.remove_module(&who, &id)).await?))
}

/// `?for=NAME&for=NAME` or `?global=true`; nothing: for the caller.
fn scope(query: Option<&str>) -> Result<(Vec<String>, bool), ApiError> {
    let mut users = Vec::new();
    let mut global = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "for" if !v.is_empty() => users.push(v.to_owned()),
            "global" => {
                global = match v {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(ApiError::bad_request("global is true or false")),
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {k:?}: use for=USER (repeatable) or global=true"
                )));
            }
        }
    }
    if global && !users.is_empty() {
        return Err(ApiError::bad_request(
            "give for=USER or global=true, not both",
        ));
    }
    Ok((users, global))
}

async fn install(
    State(s): State<ApiState>,
    Auth(who): Auth,
    RawQuery(query): RawQuery,
    BinaryBody(bytes): BinaryBody,
) -> Result<impl IntoResponse, ApiError> {
    let (users, global) = scope(query.as_deref())?;
    let report = blocking(move || {
        let scope = if global {
            Scope::Global
        } else if users.is_empty() {
            Scope::Users(vec![who.user])
        } else {
            Scope::Users(
                users
                    .iter()
                    .map(|u| s.rt.user(u).map(|i| i.id))
                    .collect::<Result<_, _>>()?,
            )
        };
        s.rt.install_module(&who, &bytes, &scope)
    })
    .await?;
    let status = match report.action {
        InstallAction::Installed | InstallAction::Updated => StatusCode::CREATED,
        InstallAction::Extended | InstallAction::AlreadyInstalled => StatusCode::OK,
    };
    Ok((status, Json(report)))
}

async fn publishers(
    State(s): State<ApiState>,
    Auth(_who): Auth,
) -> Result<impl IntoResponse, ApiError> {
    let list = blocking(move || s.rt.publishers()).await?;
    Ok(Json(
        list.into_iter()
            .map(|(key, name)| serde_json::json!({ "key": key, "name": name }))
            .collect::<Vec<_>>(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Trust {
    key: String,
    name: String,
}

async fn trust(
    State(s): State<ApiState>,
    Auth(who): Auth,
    JsonBody(body): JsonBody<Trust>,
) -> Result<impl IntoResponse, ApiError> {
    let name = body.name.clone();
    let key = blocking(move || s.rt.trust_publisher(&who, &body.key, &body.name)).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "key": key, "name": name })),
    ))
}

async fn distrust(
    State(s): State<ApiState>,
    Auth(who): Auth,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let was = blocking(move || s.rt.distrust_publisher(&who, &key)).await?;
    Ok(Json(serde_json::json!({ "distrusted": was })))
}
