//! The `/v1` handlers: health, users and cubes, memories, search, audit.
//!
//! Each handler authenticates ([`Auth`]), parses its input, runs one
//! runtime call on the blocking pool and answers its JSON.

use axum::Json;
use axum::extract::{FromRequestParts, RawQuery};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Router, extract::State};
use memkern_core::ids::{NamespaceId, UserId};
use memkern_core::time::Timestamp;
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::extract::{ApiError, Auth, JsonBody, MemoryPath, blocking, path_param};
use memkern_runtime::input::{parse_duration_ms, parse_time};
use memkern_runtime::{
    AddAction, AddRequest, DedupMode, MemoryId, SearchRequest, ShareAccess, now,
};

/// `GET /v1/health`.
pub(super) fn health() -> Router<ApiState> {
    Router::new().route("/v1/health", get(ok))
}

async fn ok() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Users and cubes.
pub(super) fn accounts() -> Router<ApiState> {
    Router::new()
        .route("/v1/users", post(create_user).get(list_users))
        .route("/v1/cubes", post(create_cube).get(list_cubes))
        .route("/v1/cubes/{id}/share", post(share_cube))
}

/// Memories and search.
pub(super) fn memories() -> Router<ApiState> {
    Router::new()
        .route("/v1/memories", post(add))
        .route(
            "/v1/memories/{id}",
            get(get_memory).put(update).delete(delete),
        )
        .route("/v1/memories/{id}/history", get(history))
        .route("/v1/memories/{id}/rollback", post(rollback))
        .route("/v1/memories/{id}/expire", post(expire))
        .route("/v1/search", post(search))
}

/// The audit log.
pub(super) fn audit() -> Router<ApiState> {
    Router::new().route("/v1/audit", get(audit_log))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    name: String,
}

async fn create_user(
    State(s): State<ApiState>,
    Auth(who): Auth,
    JsonBody(body): JsonBody<CreateUser>,
) -> Result<impl IntoResponse, ApiError> {
    let (user, key) = blocking(move || s.rt.create_user(&who, &body.name)).await?;
    let out = serde_json::json!({ "user": user, "api_key": key.0 });
    Ok((StatusCode::CREATED, Json(out)))
}

async fn list_users(
    State(s): State<ApiState>,
    Auth(who): Auth,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(blocking(move || s.rt.users(&who)).await?))
}

/// A user as a request names them: their id or their name.
#[derive(Debug)]
enum UserSel {
    Id(u64),
    Name(String),
}

impl<'de> Deserialize<'de> for UserSel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = UserSel;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a user id (a whole number) or a user name")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<UserSel, E> {
                Ok(UserSel::Id(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UserSel, E> {
                Ok(UserSel::Name(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl UserSel {
    fn resolve(self, rt: &memkern_runtime::Runtime) -> memkern_runtime::Result<UserId> {
        match self {
            UserSel::Id(id) => Ok(UserId(id)),
            UserSel::Name(name) => Ok(rt.user(&name)?.id),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCube {
    name: String,
    #[serde(default)]
    owner: Option<UserSel>,
}

async fn create_cube(
    State(s): State<ApiState>,
    Auth(who): Auth,
    JsonBody(body): JsonBody<CreateCube>,
) -> Result<impl IntoResponse, ApiError> {
    let info = blocking(move || {
        let owner = match body.owner {
            Some(u) => u.resolve(&s.rt)?,
            None => who.user,
        };
        s.rt.create_namespace(&who, owner, &body.name)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn list_cubes(
    State(s): State<ApiState>,
    Auth(who): Auth,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(blocking(move || s.rt.namespaces(&who)).await?))
}

/// A cube id from the path (`/v1/cubes/{id}/…`).
struct CubePath(NamespaceId);

impl<S: Send + Sync> FromRequestParts<S> for CubePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<CubePath, ApiError> {
        let raw = path_param(parts, state).await?;
        raw.parse::<u64>()
            .map(|n| CubePath(NamespaceId(n)))
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "{} is not a cube id (a whole number)",
                    memkern_runtime::input::shown(&raw)
                ))
            })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Share {
    user: UserSel,
    access: ShareAccess,
}

async fn share_cube(
    State(s): State<ApiState>,
    Auth(who): Auth,
    CubePath(ns): CubePath,
    JsonBody(body): JsonBody<Share>,
) -> Result<impl IntoResponse, ApiError> {
    let info = blocking(move || {
        let user = body.user.resolve(&s.rt)?;
        s.rt.share(&who, ns, user, body.access)
    })
    .await?;
    Ok(Json(info))
}

/// A cube as a request names it: its id, or the name of one of the
/// caller's cubes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CubeSel {
    Id(u64),
    Name(String),
}

/// `POST /v1/memories`'s body: [`AddRequest`] with the cube optional and
/// nameable, as on the CLI (default: the caller's cube "default").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    #[serde(default)]
    namespace: Option<CubeSel>,
    text: String,
    #[serde(default)]
    time: Option<Timestamp>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    dedup: Option<DedupMode>,
}

async fn add(
    State(s): State<ApiState>,
    Auth(who): Auth,
    JsonBody(body): JsonBody<AddBody>,
) -> Result<impl IntoResponse, ApiError> {
    let out = blocking(move || {
        let namespace = match body.namespace {
            Some(CubeSel::Id(id)) => NamespaceId(id),
            Some(CubeSel::Name(name)) => s.rt.namespace_named(who.user, &name)?.id,
            None => s.rt.namespace_named(who.user, "default")?.id,
        };
        let req = AddRequest {
            namespace,
            text: body.text,
            time: body.time,
            tags: body.tags,
            ttl_ms: body.ttl_ms,
            dedup: body.dedup,
        };
        s.rt.add(&who, &req)
    })
    .await?;
    // 201 only for a new memory; a merge or an update answers with the
    // existing memory's id.
    let status = match out.action {
        AddAction::Stored => StatusCode::CREATED,
        AddAction::Merged | AddAction::Updated => StatusCode::OK,
    };
    Ok((status, Json(out)))
}

async fn get_memory(
    State(s): State<ApiState>,
    Auth(who): Auth,
    MemoryPath(id): MemoryPath,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(blocking(move || s.rt.get(&who, id)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    text: String,
}

async fn update(
    State(s): State<ApiState>,
    Auth(who): Auth,
    MemoryPath(id): MemoryPath,
    JsonBody(body): JsonBody<Update>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        blocking(move || s.rt.update(&who, id, &body.text)).await?,
    ))
}

async fn delete(
    State(s): State<ApiState>,
    Auth(who): Auth,
    MemoryPath(id): MemoryPath,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(blocking(move || s.rt.delete(&who, id)).await?))
}

async fn history(
    State(s): State<ApiState>,
    Auth(who): Auth,
    MemoryPath(id): MemoryPath,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(blocking(move || s.rt.history(&who, id)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    version: u32,
}

async fn rollback(
    State(s): State<ApiState>,
    Auth(who): Auth,
    MemoryPath(id): MemoryPath,
    JsonBody(body): JsonBody<Rollback>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        blocking(move || s.rt.rollback(&who, id, body.version)).await?,
    ))
}

/// A number, or text in the CLI's forms ("30d", "2023-05-08").
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expire {
    /// Milliseconds from now, or a duration such as "30d".
    #[serde(default)]
    ttl_ms: Option<NumberOrText>,
    /// Epoch milliseconds, or a time such as "2023-05-08T13:56:00Z".
    #[serde(default)]
    at: Option<NumberOrText>,
}

#[derive(Serialize)]
struct Expired {
    id: MemoryId,
    expires_at: Timestamp,
    /// The time was not in the future: the memory is deleted.
    deleted: bool,
}

async fn expire(
    State(s): State<ApiState>,
    Auth(who): Auth,
    MemoryPath(id): MemoryPath,
    JsonBody(body): JsonBody<Expire>,
) -> Result<impl IntoResponse, ApiError> {
    let start = now();
    let at = match (body.ttl_ms, body.at) {
        (Some(ttl), None) => {
            let ms = match ttl {
                NumberOrText::Number(n) => u64::try_from(n).map_err(|_| {
                    ApiError::bad_request(format!("ttl_ms must not be negative, got {n}"))
                })?,
                NumberOrText::Text(t) => parse_duration_ms(&t)?,
            };
            start.saturating_add_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        }
        (None, Some(NumberOrText::Number(ms))) => Timestamp(ms),
        (None, Some(NumberOrText::Text(t))) => parse_time(&t)?,
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `ttl_ms` (milliseconds from now) or `at` (epoch milliseconds)",
            ));
        }
    };
    blocking(move || s.rt.expire(&who, id, at)).await?;
    Ok(Json(Expired {
        id,
        expires_at: at,
        deleted: at <= start,
    }))
}

async fn search(
    State(s): State<ApiState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<SearchRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(blocking(move || s.rt.search(&who, &req)).await?))
}

/// Most audit entries one request returns.
const MAX_AUDIT_LIMIT: usize = 10_000;

/// `from` and `limit` from `?from=N&limit=N` (defaults 0 and 100).
fn audit_query(query: Option<&str>) -> Result<(u64, usize), ApiError> {
    let (mut from, mut limit) = (0u64, 100usize);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || {
            ApiError::bad_request(format!(
                "query parameter {name}={value:?}: expected a whole number"
            ))
        };
        match name {
            "from" => from = value.parse().map_err(|_| bad())?,
            "limit" => limit = value.parse().map_err(|_| bad())?,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {name:?}: use from and limit"
                )));
            }
        }
    }
    if limit == 0 || limit > MAX_AUDIT_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be 1–{MAX_AUDIT_LIMIT}, got {limit}"
        )));
    }
    Ok((from, limit))
}

async fn audit_log(
    State(s): State<ApiState>,
    Auth(who): Auth,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    let (from, limit) = audit_query(query.as_deref())?;
    Ok(Json(
        blocking(move || s.rt.audit_log(&who, from, limit)).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_query_parses_and_rejects() {
        assert_eq!(audit_query(None).ok(), Some((0, 100)));
        assert_eq!(audit_query(Some("from=5&limit=7")).ok(), Some((5, 7)));
        assert_eq!(audit_query(Some("limit=3&")).ok(), Some((0, 3)));
        for bad in ["from=x", "limit=0", "limit=99999", "page=2", "from"] {
            assert_eq!(
                audit_query(Some(bad)).map_err(|e| e.status()).err(),
                Some(400),
                "{bad}"
            );
        }
    }
}
