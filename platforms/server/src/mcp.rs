//! The Model Context Protocol server: memkern's memory as MCP tools, over
//! stdio (`memkern mcp`, acting as one user) and streamable HTTP (`/mcp`
//! on `memkern serve`, one bearer API key per request).
//!
//! Exists because MCP is how desktop assistants and agent tools use
//! memory today. Built on the official Rust SDK (`rmcp`, pinned). Every
//! tool is a call of the same [`Runtime`] API the HTTP routes and the CLI
//! use, with the caller's [`Principal`]: governance stays in the query
//! path exactly as it is there (user B's client never sees user A's
//! memories).
//!
//! Tools: `add`, `search`, `get`, `update`, `delete`, `list`, `history`,
//! `rollback`, `chat`, `cube_create`, `cube_share`, `stats`. Each takes a
//! JSON object described by its input schema; each answers with the
//! runtime's JSON (as structured content and as text). A refusal or a bad
//! argument is a tool error (`isError: true`) whose structured content
//! is `{"error": {"status", "message"}}` with the HTTP API's status code;
//! malformed arguments are JSON-RPC `invalid_params` errors.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use memkern_core::governance::{Principal, Role};
use memkern_core::ids::NamespaceId;
use memkern_runtime::{
    AddRequest, Assistant, ChatRequest, DedupMode, MemoryId, Runtime, RuntimeError, SearchRequest,
    ShareAccess,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::schemars::{self, JsonSchema};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, Auth, blocking};

/// Most memories `list` returns.
const MAX_LIST: usize = 1000;

/// The MCP tools over one runtime.
///
/// Exists as the rmcp handler: stdio serves one with a fixed principal,
/// streamable HTTP makes one per session and takes the principal from
/// each request's bearer key.
#[derive(Clone)]
pub struct MemoryTools {
    rt: Arc<Runtime>,
    assistant: Option<Arc<Assistant>>,
    /// The user a stdio server acts as; `None` on HTTP.
    fixed: Option<Principal>,
}

impl std::fmt::Debug for MemoryTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTools")
            .field("fixed", &self.fixed)
            .field("llm", &self.assistant.is_some())
            .finish_non_exhaustive()
    }
}

/// `add`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddArgs {
    /// The memory text (secrets are redacted before storage).
    pub text: String,
    /// The cube (a name of the caller's, or a numeric id); default: the
    /// caller's cube "default".
    #[serde(default)]
    pub cube: Option<String>,
    /// When it happened, epoch milliseconds (default: now).
    #[serde(default)]
    pub time: Option<i64>,
    /// Labels for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Time to live, milliseconds (default: until deleted).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// "off" | "exact" | "near": how to treat a text already (nearly) in
    /// the cube (default: the server's configuration).
    #[serde(default)]
    pub dedup: Option<DedupArg>,
}

/// `add`'s dedup mode.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DedupArg {
    /// Always a new memory.
    Off,
    /// The same text about the same event merges.
    Exact,
    /// Also: a near-duplicate becomes the existing memory's new version.
    Near,
}

/// `search`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// The question or keywords.
    pub query: String,
    /// How many hits, 1–100 (default 10).
    #[serde(default)]
    pub k: Option<usize>,
    /// Only these cubes (names of the caller's, or numeric ids).
    #[serde(default)]
    pub cubes: Option<Vec<String>>,
    /// Only memories carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A memory id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    /// The memory id (32 hex digits).
    pub id: String,
}

/// `update`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    /// The memory id.
    pub id: String,
    /// The new text (the old one stays in the history).
    pub text: String,
}

/// `rollback`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackArgs {
    /// The memory id.
    pub id: String,
    /// The version to make current again (1 = the original).
    pub version: u32,
}

/// `list`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// The cube (default: the caller's "default").
    #[serde(default)]
    pub cube: Option<String>,
    /// Most memories (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `chat`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatArgs {
    /// The message.
    pub message: String,
    /// Most tokens to generate, 1–512 (default 256).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Store the message as a memory when it states something (default
    /// true; a question is never stored).
    #[serde(default)]
    pub remember: Option<bool>,
}

/// `cube_create`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CubeCreateArgs {
    /// The new cube's name (unique per owner).
    pub name: String,
}

/// `cube_share`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CubeShareArgs {
    /// The cube (a name of the caller's, or a numeric id).
    pub cube: String,
    /// The user to share with, by name.
    pub with: String,
    /// "read", "read_write" or "none" (revoke).
    pub access: ShareArg,
}

/// `cube_share`'s access.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShareArg {
    /// See memories and search hits.
    Read,
    /// Also add and update.
    ReadWrite,
    /// Revoke.
    None,
}

/// A tool's outcome: JSON on success, a typed error otherwise.
type ToolResult = Result<CallToolResult, ErrorData>;

/// The runtime's answer as structured content (an object: a list comes
/// as `{"result": [...]}`) plus its text.
fn ok(value: Value) -> ToolResult {
    let value = if value.is_object() {
        value
    } else {
        json!({ "result": value })
    };
    let text = value.to_string();
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(value);
    Ok(r)
}

/// A refusal or failure as a tool error carrying the HTTP API's status.
fn refused(e: &ApiError) -> ToolResult {
    let body = json!({ "error": { "status": e.status(), "message": e.message() } });
    let mut r = CallToolResult::error(vec![ContentBlock::text(body.to_string())]);
    r.structured_content = Some(body);
    Ok(r)
}

/// A runtime call's outcome as a tool result.
fn answered<T: serde::Serialize>(r: Result<T, ApiError>) -> ToolResult {
    match r {
        Ok(v) => {
            ok(serde_json::to_value(v)
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?)
        }
        Err(e) => refused(&e),
    }
}

impl MemoryTools {
    /// Tools acting for whoever each HTTP request's key names.
    pub fn for_http(rt: Arc<Runtime>, assistant: Option<Arc<Assistant>>) -> MemoryTools {
        MemoryTools {
            rt,
            assistant,
            fixed: None,
        }
    }

    /// Tools acting as `who` (stdio).
    pub fn acting_as(
        rt: Arc<Runtime>,
        assistant: Option<Arc<Assistant>>,
        who: Principal,
    ) -> MemoryTools {
        MemoryTools {
            fixed: Some(who),
            ..MemoryTools::for_http(rt, assistant)
        }
    }

    /// The caller: the stdio user, or the principal the `/mcp` middleware
    /// authenticated for this request.
    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Principal, ErrorData> {
        if let Some(p) = self.fixed {
            return Ok(p);
        }
        ctx.extensions
            .get::<Parts>()
            .and_then(|p| p.extensions.get::<Principal>())
            .copied()
            .ok_or_else(|| ErrorData::invalid_request("no authenticated caller", None))
    }

    /// Runs `f` with the runtime on the blocking pool and turns its
    /// answer into a tool result.
    async fn run<T, F>(&self, ctx: &RequestContext<RoleServer>, f: F) -> ToolResult
    where
        T: serde::Serialize + Send + 'static,
        F: FnOnce(&Runtime, &Principal) -> Result<T, RuntimeError> + Send + 'static,
    {
        let who = self.caller(ctx)?;
        let rt = self.rt.clone();
        answered(blocking(move || f(&rt, &who)).await)
    }
}

/// Cube `name` (a name of `who`'s, or a numeric id) as a namespace id;
/// `None` is `who`'s cube "default".
fn cube_of(rt: &Runtime, who: &Principal, name: Option<&str>) -> Result<NamespaceId, RuntimeError> {
    let name = name.unwrap_or("default");
    if let Ok(id) = name.parse::<u64>() {
        return Ok(NamespaceId(id));
    }
    Ok(rt.namespace_named(who.user, name)?.id)
}

fn memory_id(s: &str) -> Result<MemoryId, RuntimeError> {
    s.parse()
}

#[tool_router]
impl MemoryTools {
    /// `add`.
    #[tool(
        description = "Store a memory for the caller (secrets redacted). The same text about the same event merges; a near-duplicate in other words becomes the existing memory's new version (answer: action stored|merged|updated)."
    )]
    async fn add(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<AddArgs>,
    ) -> ToolResult {
        self.run(&ctx, move |rt, who| {
            let req = AddRequest {
                namespace: cube_of(rt, who, a.cube.as_deref())?,
                text: a.text,
                time: a.time.map(memkern_core::time::Timestamp),
                tags: a.tags,
                ttl_ms: a.ttl_ms,
                dedup: a.dedup.map(|d| match d {
                    DedupArg::Off => DedupMode::Off,
                    DedupArg::Exact => DedupMode::Exact,
                    DedupArg::Near => DedupMode::Near,
                }),
            };
            rt.add(who, &req)
        })
        .await
    }

    /// `search`.
    #[tool(
        description = "Find the caller's memories (and those shared with them) for a question or keywords: hybrid keyword + embedding + time search, best first."
    )]
    async fn search(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<SearchArgs>,
    ) -> ToolResult {
        self.run(&ctx, move |rt, who| {
            let mut req = SearchRequest::new(a.query, a.k.unwrap_or(10));
            req.tags = a.tags;
            if let Some(cubes) = a.cubes {
                req.namespaces = Some(
                    cubes
                        .iter()
                        .map(|c| cube_of(rt, who, Some(c)))
                        .collect::<Result<_, _>>()?,
                );
            }
            rt.search(who, &req)
        })
        .await
    }

    /// `get`.
    #[tool(description = "One memory's current version.")]
    async fn get(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<IdArgs>,
    ) -> ToolResult {
        self.run(&ctx, move |rt, who| rt.get(who, memory_id(&a.id)?))
            .await
    }

    /// `update`.
    #[tool(
        description = "Replace a memory's text with a new version (the old one stays in its history)."
    )]
    async fn update(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<UpdateArgs>,
    ) -> ToolResult {
        self.run(&ctx, move |rt, who| {
            rt.update(who, memory_id(&a.id)?, &a.text)
        })
        .await
    }

    /// `delete`.
    #[tool(
        description = "Hard-delete a memory: every version, its index entries and the KV blocks and adapters derived from it."
    )]
    async fn delete(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<IdArgs>,
    ) -> ToolResult {
        self.run(&ctx, move |rt, who| rt.delete(who, memory_id(&a.id)?))
            .await
    }

    /// `list`.
    #[tool(description = "The current memories of one cube (default: the caller's \"default\").")]
    async fn list(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ListArgs>,
    ) -> ToolResult {
        self.run(&ctx, move |rt, who| {
            let ns = cube_of(rt, who, a.cube.as_deref())?;
            rt.list(who, ns, a.limit.unwrap_or(100).min(MAX_LIST))
        })
        .await
    }

    /// `history`.
    #[tool(description = "Every version of a memory, oldest first.")]
    async fn history(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<IdArgs>,
    ) -> ToolResult {
        self.run(&ctx, move |rt, who| rt.history(who, memory_id(&a.id)?))
            .await
    }

    /// `rollback`.
    #[tool(description = "Make an earlier version of a memory current again (as a new version).")]
    async fn rollback(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<RollbackArgs>,
    ) -> ToolResult {
        self.run(&ctx, move |rt, who| {
            rt.rollback(who, memory_id(&a.id)?, a.version)
        })
        .await
    }

    /// `chat`.
    #[tool(
        description = "Ask memkern's on-device assistant: it answers from the caller's memories (retrieval, scheduler, KV blocks, LLM)."
    )]
    async fn chat(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ChatArgs>,
    ) -> ToolResult {
        let who = self.caller(&ctx)?;
        let Some(assistant) = self.assistant.clone() else {
            return refused(&ApiError::new(
                503,
                "this server runs without a language model",
            ));
        };
        let mut req = ChatRequest::new(a.message);
        req.max_tokens = a.max_tokens.unwrap_or(256);
        req.remember = a.remember.unwrap_or(true);
        answered(blocking(move || assistant.chat(&who, &req)).await)
    }

    /// `cube_create`.
    #[tool(description = "Create a cube (a namespace of memories) owned by the caller.")]
    async fn cube_create(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<CubeCreateArgs>,
    ) -> ToolResult {
        self.run(&ctx, move |rt, who| {
            rt.create_namespace(who, who.user, &a.name)
        })
        .await
    }

    /// `cube_share`.
    #[tool(
        description = "Share one of the caller's cubes with another user (read, read_write) or revoke (none)."
    )]
    async fn cube_share(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<CubeShareArgs>,
    ) -> ToolResult {
        self.run(&ctx, move |rt, who| {
            let ns = cube_of(rt, who, Some(&a.cube))?;
            let with = rt.user(&a.with)?.id;
            let access = match a.access {
                ShareArg::Read => ShareAccess::Read,
                ShareArg::ReadWrite => ShareAccess::ReadWrite,
                ShareArg::None => ShareAccess::None,
            };
            rt.share(who, ns, with, access)
        })
        .await
    }

    /// `modules`.
    #[tool(
        description = "The memory modules installed for the caller: read-only knowledge from trusted publishers (manifest, memories, who it is mounted for). `search` and `chat` already include their memories."
    )]
    async fn modules(&self, ctx: RequestContext<RoleServer>) -> ToolResult {
        self.run(&ctx, |rt, who| rt.modules(who)).await
    }

    /// `stats`.
    #[tool(
        description = "Vault statistics: memories, versions, KV blocks, adapters, sizes (administrator only)."
    )]
    async fn stats(&self, ctx: RequestContext<RoleServer>) -> ToolResult {
        let who = self.caller(&ctx)?;
        if who.role != Role::Admin {
            return refused(&ApiError::new(403, "statistics are for the administrator"));
        }
        self.run(&ctx, |rt, _| rt.stats()).await
    }
}

#[tool_handler(
    name = "memkern",
    instructions = "memkern: the user's long-term memory on this device. Use `search` before answering questions about the user, `add` to remember facts they state, `update`/`delete` to correct them; `modules` lists the read-only knowledge modules installed for them."
)]
impl ServerHandler for MemoryTools {}

/// Requires a valid bearer key on `/mcp` and hands the caller to the
/// tools through the request's extensions (rmcp passes them on).
async fn authenticate(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    match <Auth as axum::extract::FromRequestParts<ApiState>>::from_request_parts(&mut parts, &s)
        .await
    {
        Ok(Auth(who)) => {
            req = Request::from_parts(parts, body);
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// `/mcp`: streamable HTTP over the state's runtime, bearer keys
/// required. Loopback `Host` headers only unless `allowed_hosts` names
/// more (rmcp's DNS-rebinding guard).
pub(crate) fn routes(state: &ApiState) -> Router<ApiState> {
    let (rt, assistant) = (state.rt.clone(), state.assistant.clone());
    let service = StreamableHttpService::new(
        move || Ok(MemoryTools::for_http(rt.clone(), assistant.clone())),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default()
            .with_max_request_body_bytes(state.max_body_bytes)
            // No idle SSE stream keeps a graceful shutdown waiting.
            .with_sse_keep_alive(None),
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
}

/// Serves the tools over standard input and output as `who` until the
/// client closes the stream (`memkern mcp`). Blocks; runs its own tokio
/// runtime.
pub fn serve_stdio(
    rt: Arc<Runtime>,
    assistant: Option<Arc<Assistant>>,
    who: Principal,
) -> Result<(), std::io::Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let tools = MemoryTools::acting_as(rt, assistant, who);
        let running = tools
            .serve(rmcp::transport::stdio())
            .await
            .map_err(std::io::Error::other)?;
        running.waiting().await.map_err(std::io::Error::other)?;
        Ok(())
    })
}
