//! The HTTP API of the memory runtime (`memkern serve`): JSON over
//! HTTP/1.1, one bearer API key per user, an OpenAI-compatible chat
//! endpoint and the OpenAPI document.
//!
//! Exists so that assistants and tools on the device (or, deliberately,
//! on the network) use the same [`Runtime`] API the CLI uses — every rule
//! (governance, redaction, audit) stays in `memkern-runtime`; this crate
//! only maps HTTP to runtime calls and runtime errors to status codes. It
//! depends on the runtime, never the other way, so a change to a route
//! rebuilds this crate and the `memkern` binary, not the runtime.
//!
//! # Endpoints
//!
//! | method and path | who | body → answer |
//! |---|---|---|
//! | `GET /v1/health` | anyone | → `{"status":"ok"}` |
//! | `POST /v1/users` | admin | `{"name"}` → 201 `{"user","api_key"}` |
//! | `GET /v1/users` | user | → `[UserInfo]` (a user sees themself) |
//! | `POST /v1/cubes` | user | `{"name","owner"?}` → 201 `NamespaceInfo` |
//! | `GET /v1/cubes` | user | → `[NamespaceInfo]` readable by the caller |
//! | `POST /v1/cubes/{id}/share` | owner | `{"user","access":"read"\|"read_write"\|"none"}` → `NamespaceInfo` |
//! | `POST /v1/memories` | user | `AddRequest` → 201 `AddOutcome` (200 when `merged` or `updated`) |
//! | `GET /v1/memories/{id}` | user | → `MemoryView` |
//! | `PUT /v1/memories/{id}` | user | `{"text"}` → `MemoryView` (the new version) |
//! | `DELETE /v1/memories/{id}` | user | → `DeleteReport` |
//! | `GET /v1/memories/{id}/history` | user | → `[MemoryView]`, oldest first |
//! | `POST /v1/memories/{id}/rollback` | user | `{"version"}` → `MemoryView` |
//! | `POST /v1/memories/{id}/expire` | user | `{"ttl_ms"}` or `{"at"}` → `{"id","expires_at","deleted"}` |
//! | `POST /v1/search` | user | `SearchRequest` → `[SearchHit]` |
//! | `GET /v1/audit?from=N&limit=N` | admin | → `[AuditEntry]` |
//! | `POST /v1/chat` | user | `ChatRequest` → `ChatResponse` (503 without a model) |
//! | `GET /v1/stats` | admin | → `{"vault": VaultStats, "snapshot_tiers"}` |
//! | `GET /v1/modules` | user | → `[ModuleInfo]` the caller can see |
//! | `POST /v1/modules?for=USER&global=true` | user (global: admin) | module file (`application/octet-stream`, ≤ 256 MiB) → 201 `InstallReport` (200 when already installed or mounted for more users) |
//! | `GET /v1/modules/{id}` | user | → `ModuleInfo` |
//! | `DELETE /v1/modules/{id}` | admin (a user: unmount for themself) | → `RemoveReport` |
//! | `GET /v1/publishers` | user | → `[{"key","name"}]` trusted publisher keys |
//! | `POST /v1/publishers` | admin | `{"key","name"}` → 201 `{"key","name"}` |
//! | `DELETE /v1/publishers/{key}` | admin | → `{"distrusted"}` |
//! | `POST /v1/chat/completions` | user | OpenAI chat-completions body → `chat.completion` (or SSE chunks with `"stream": true`; 503 without a model) |
//! | `GET /v1/models` | user | → OpenAI's model list (the served model; empty without one) |
//! | `GET /v1/models/{id}` | user | → one model (404 in OpenAI's shape if unknown) |
//! | `POST /mcp` | user | MCP streamable HTTP (JSON-RPC; tools in [`mcp`]) |
//! | `GET /openapi.json` | anyone | → the OpenAPI 3.1 document of these routes |
//!
//! Every route but health and `/openapi.json` needs
//! `Authorization: Bearer <api key>`. Errors are always
//! `{"error": "<message>"}` (on `/v1/chat/completions` and `/v1/models`: OpenAI's
//! `{"error": {"message","type","code"}}`): 400 malformed or invalid
//! input (JSON syntax, wrong types, unknown fields, bad ids), 401 no or
//! unknown key, 403 denied (on something the caller may see), 404 unknown
//! route or a thing that does not exist or that the caller may not see,
//! 405 wrong method, 409 name taken, 413 body over the limit, 415 body
//! without `Content-Type: application/json`, 500 storage or embedder
//! failure only.
//!
//! # Adding routes
//!
//! A module with more endpoints (e.g. chat) writes
//! `pub(crate) fn routes() -> Router<ApiState>` with handlers that take
//! [`Auth`], [`JsonBody`] and call the runtime through [`blocking`],
//! returning `Result<_, ApiError>`; one `.merge(…)` line in
//! [`api_routes`] adds them (auth, logging, the body limit and JSON 404 /
//! 405 answers then apply to them too).

#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::panic)]

mod chat;
mod extract;
pub mod mcp;
mod modules;
mod openai;
mod openapi;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::sync::oneshot;

use memkern_runtime::{Assistant, Runtime};

pub use extract::{ApiError, Auth, JsonBody, MemoryPath, blocking};

/// What every handler shares: the runtime, the assistant (if a language
/// model is loaded) and the body limit.
///
/// Exists as the axum state of [`api_routes`] so route modules outside
/// this one can reach the runtime. A module with a state of its own can
/// still use [`Auth`] and [`JsonBody`] by implementing
/// `axum::extract::FromRef<TheirState> for ApiState`.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The runtime every request is served by.
    pub rt: Arc<Runtime>,
    /// The chat assistant; `None` when the server runs without an LLM.
    pub assistant: Option<Arc<Assistant>>,
    /// Largest request body accepted, bytes (larger → 413).
    pub max_body_bytes: usize,
}

/// Every `/v1` route, without state, fallback or middleware.
///
/// Exists as the one place where route groups are merged: add a module's
/// routes here.
pub fn api_routes() -> Router<ApiState> {
    Router::new()
        .merge(routes::health())
        .merge(routes::accounts())
        .merge(routes::memories())
        .merge(routes::audit())
        .merge(modules::routes())
        .merge(chat::routes())
        .merge(openai::routes())
        .merge(openapi::routes())
}

/// The complete HTTP application over `rt`: [`api_routes`] plus a JSON
/// 404 for unknown routes, JSON 405 for wrong methods, the body limit
/// and a debug log line per request.
///
/// Exists apart from [`Server`] so tests and embedders can serve it on a
/// listener of their own.
pub fn router(rt: Arc<Runtime>, max_body_bytes: usize) -> Router {
    router_with(rt, None, max_body_bytes)
}

/// [`router`] with a chat assistant in the state ([`ApiState::assistant`]).
///
/// Exists so `memkern serve` can offer chat when a model is loaded and
/// the memory API alone when not (`--no-llm`).
pub fn router_with(
    rt: Arc<Runtime>,
    assistant: Option<Arc<Assistant>>,
    max_body_bytes: usize,
) -> Router {
    let state = ApiState {
        rt,
        assistant,
        max_body_bytes,
    };
    api_routes()
        .merge(mcp::routes(&state))
        .fallback(extract::not_found)
        .layer(axum::middleware::from_fn(extract::log_and_finish))
        // For axum's own body extractors in route modules; `JsonBody`
        // enforces `max_body_bytes` itself (and drains what it refuses).
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Why the server could not start or stopped badly.
///
/// Exists so `memkern serve` can tell a taken port from a crash.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound (taken, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The async runtime or the server thread could not be set up, or the
    /// listener failed.
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
    /// The server thread panicked.
    #[error("the HTTP server thread panicked")]
    Panicked,
    /// Signal handlers could not be installed.
    #[error("cannot listen for SIGINT/SIGTERM: {0}")]
    Signals(std::io::Error),
}

/// A running HTTP server: its own multi-thread tokio runtime on a
/// background thread, serving [`router`].
///
/// Exists so synchronous code (the CLI, tests) can start, address and
/// stop the server without an async runtime of its own. Dropping it
/// without [`Server::shutdown`] or [`Server::wait`] stops the server
/// gracefully in the background, without waiting.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    handle: tokio::runtime::Handle,
    thread: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `bind` (e.g. `127.0.0.1:7077`; port 0 picks a free port) and
    /// starts serving `rt` with bodies limited to `max_body_bytes`.
    ///
    /// Binding happens before this returns, so a taken port is an error
    /// here, not a log line later.
    pub fn start(
        rt: Arc<Runtime>,
        bind: &str,
        max_body_bytes: usize,
    ) -> Result<Server, ServerError> {
        Server::start_router(router(rt, max_body_bytes), bind)
    }

    /// [`Server::start`] with a chat assistant ([`router_with`]).
    pub fn start_with(
        rt: Arc<Runtime>,
        assistant: Option<Arc<Assistant>>,
        bind: &str,
        max_body_bytes: usize,
    ) -> Result<Server, ServerError> {
        Server::start_router(router_with(rt, assistant, max_body_bytes), bind)
    }

    /// Binds `bind` and serves `app` (any router, e.g. [`router`] with
    /// extra routes or layers), as [`Server::start`] does.
    pub fn start_router(app: Router, bind: &str) -> Result<Server, ServerError> {
        let listener = std::net::TcpListener::bind(bind).map_err(|source| ServerError::Bind {
            addr: bind.to_owned(),
            source,
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("memkern-http")
            .build()?;
        let listener = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("memkern-server".to_owned())
            .spawn(move || {
                let served = runtime.block_on(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            // A send or a dropped sender both mean stop.
                            let _ = stopped.await;
                        })
                        .await
                });
                // Dropping the runtime waits for running blocking tasks
                // (runtime calls) to return.
                drop(runtime);
                served
            })?;
        tracing::info!("HTTP API listening on http://{addr}");
        Ok(Server {
            addr,
            stop,
            handle,
            thread,
        })
    }

    /// The address actually bound (the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops gracefully: no new connections, in-flight requests finish,
    /// then the server thread is joined.
    pub fn shutdown(self) -> Result<(), ServerError> {
        // Err only if the server already ended; joining tells how.
        let _ = self.stop.send(());
        join(self.thread)
    }

    /// Serves until SIGINT (ctrl-c) or SIGTERM, then stops gracefully as
    /// [`Server::shutdown`] does (what `memkern serve` calls after
    /// [`Server::start`]).
    ///
    /// The signal handlers are installed by this call, not by `start`, so
    /// a process that never calls it keeps the default signal behaviour.
    pub fn wait(self) -> Result<(), ServerError> {
        let Server {
            stop,
            handle,
            thread,
            ..
        } = self;
        let signals = {
            let _in_runtime = handle.enter();
            Signals::install().map_err(ServerError::Signals)?
        };
        handle.spawn(async move {
            let name = signals.recv().await;
            tracing::info!("{name} received: shutting down the HTTP API");
            let _ = stop.send(());
        });
        join(thread)
    }
}

/// Starts a server on `bind` and serves `rt` until SIGINT or SIGTERM
/// ([`Server::start`] then [`Server::wait`]).
///
/// Exists as the one call `memkern serve` needs.
pub fn serve_until_signal(
    rt: Arc<Runtime>,
    bind: &str,
    max_body_bytes: usize,
) -> Result<(), ServerError> {
    Server::start(rt, bind, max_body_bytes)?.wait()
}

fn join(thread: JoinHandle<std::io::Result<()>>) -> Result<(), ServerError> {
    match thread.join() {
        Ok(served) => Ok(served?),
        Err(_) => Err(ServerError::Panicked),
    }
}

/// SIGINT and SIGTERM, registered at once (so a signal sent right after
/// registration is not lost).
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must run inside the tokio runtime's context.
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the first signal; returns its name.
    async fn recv(mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}
