//! `GET /openapi.json`: a hand-written OpenAPI 3.1 description of the
//! HTTP API.
//!
//! Exists so clients can be generated and the API explored with standard
//! tools (Swagger UI, openapi-generator) without a dependency that derives
//! it. A unit test checks that every route of the endpoint table in the
//! `server` module docs is described here, and nothing else, so the two
//! cannot drift apart silently.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ApiState;

/// The document route (no authentication).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

async fn openapi_json() -> Json<Value> {
    Json(document())
}

/// `$ref` to a schema of `components.schemas`.
fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON body or answer of `schema`.
fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// A required JSON request body.
fn body(schema: Value) -> Value {
    json!({ "required": true, "content": json_content(schema) })
}

/// A JSON answer with `description`.
fn answer(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": json_content(schema) })
}

/// An operation with the usual error answers added to `responses`.
fn op(summary: &str, tag: &str, mut responses: Value, request: Option<Value>) -> Value {
    let error = |d: &str| json!({ "$ref": format!("#/components/responses/{d}") });
    if let Some(map) = responses.as_object_mut() {
        map.insert("400".to_owned(), error("BadRequest"));
        map.insert("401".to_owned(), error("Unauthorized"));
        map.insert("403".to_owned(), error("Forbidden"));
        map.insert("404".to_owned(), error("NotFound"));
    }
    let mut o = json!({ "summary": summary, "tags": [tag], "responses": responses });
    if let (Some(req), Some(map)) = (request, o.as_object_mut()) {
        map.insert("requestBody".to_owned(), req);
    }
    o
}

fn id_param() -> Value {
    json!([{
        "name": "id", "in": "path", "required": true,
        "description": "A memory id (32 hex digits; stable across versions).",
        "schema": { "type": "string", "pattern": "^[0-9a-f]{32}$" }
    }])
}

fn array_of(name: &str) -> Value {
    json!({ "type": "array", "items": schema(name) })
}

/// The OpenAPI 3.1 document of every route in the `server` module's
/// endpoint table.
pub(crate) fn document() -> Value {
    let ok = |d: &str, s: Value| json!({ "200": answer(d, s) });
    let created = |d: &str, s: Value| json!({ "201": answer(d, s) });
    let memory = json!({
        "parameters": id_param(),
        "get": op("One memory (its head version)", "memories", ok("The memory", schema("MemoryView")), None),
        "put": op(
            "Update a memory's text (a new version)", "memories",
            ok("The new version", schema("MemoryView")),
            Some(body(json!({
                "type": "object", "required": ["text"], "additionalProperties": false,
                "properties": { "text": { "type": "string" } }
            }))),
        ),
        "delete": op(
            "Hard-delete a memory, its versions and what was derived from it", "memories",
            ok("What was removed", schema("DeleteReport")), None,
        ),
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "memkern HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The memory runtime for on-device LLM assistants: memories, search, \
                governance and chat with memory, plus an OpenAI-compatible chat-completions \
                endpoint. Native errors are `{\"error\": \"<message>\"}`; \
                /v1/chat/completions answers OpenAI's error shape.",
        },
        "security": [{ "bearer": [] }],
        "tags": [
            { "name": "health" }, { "name": "accounts" }, { "name": "memories" },
            { "name": "chat" }, { "name": "modules" }, { "name": "admin" }, { "name": "openai" }, { "name": "meta" }
        ],
        "paths": {
            "/v1/health": {
                "get": {
                    "summary": "Liveness", "tags": ["health"], "security": [],
                    "responses": { "200": answer("Alive", json!({
                        "type": "object", "properties": { "status": { "const": "ok" } }
                    })) }
                }
            },
            "/v1/users": {
                "post": op(
                    "Create a user (administrator); answers their API key", "accounts",
                    created("The user and their key (shown once)", json!({
                        "type": "object", "required": ["user", "api_key"],
                        "properties": { "user": schema("UserInfo"), "api_key": { "type": "string" } }
                    })),
                    Some(body(json!({
                        "type": "object", "required": ["name"], "additionalProperties": false,
                        "properties": { "name": { "type": "string", "pattern": "^[A-Za-z0-9._-]+$" } }
                    }))),
                ),
                "get": op("Users the caller may see (a user sees themself)", "accounts",
                    ok("Users", array_of("UserInfo")), None),
            },
            "/v1/cubes": {
                "post": op(
                    "Create a cube (namespace)", "accounts",
                    created("The cube", schema("NamespaceInfo")),
                    Some(body(json!({
                        "type": "object", "required": ["name"], "additionalProperties": false,
                        "properties": {
                            "name": { "type": "string" },
                            "owner": { "oneOf": [{ "type": "integer" }, { "type": "string" }], "description": "User id or name (default: the caller)." }
                        }
                    }))),
                ),
                "get": op("Cubes the caller may read", "accounts",
                    ok("Cubes", array_of("NamespaceInfo")), None),
            },
            "/v1/cubes/{id}/share": {
                "parameters": [{
                    "name": "id", "in": "path", "required": true,
                    "description": "A cube id.", "schema": { "type": "integer", "minimum": 0 }
                }],
                "post": op(
                    "Share a cube with a user (owner)", "accounts",
                    ok("The cube", schema("NamespaceInfo")),
                    Some(body(json!({
                        "type": "object", "required": ["user", "access"], "additionalProperties": false,
                        "properties": {
                            "user": { "oneOf": [{ "type": "integer" }, { "type": "string" }], "description": "User id or name." },
                            "access": { "enum": ["read", "read_write", "none"] }
                        }
                    }))),
                ),
            },
            "/v1/memories": {
                "post": op(
                    "Add a memory (secrets are redacted; the same text merges, a near-duplicate in other words becomes the existing memory's new version)", "memories",
                    json!({
                        "201": answer("Stored as a new memory", schema("AddOutcome")),
                        "200": answer("Merged into or updated an existing memory (see `action`)", schema("AddOutcome")),
                    }),
                    Some(body(schema("AddRequest"))),
                ),
            },
            "/v1/memories/{id}": memory,
            "/v1/memories/{id}/history": {
                "parameters": id_param(),
                "get": op("Every version, oldest first", "memories",
                    ok("Versions", array_of("MemoryView")), None),
            },
            "/v1/memories/{id}/rollback": {
                "parameters": id_param(),
                "post": op(
                    "Make an earlier version the head (as a new version)", "memories",
                    ok("The new version", schema("MemoryView")),
                    Some(body(json!({
                        "type": "object", "required": ["version"], "additionalProperties": false,
                        "properties": { "version": { "type": "integer", "minimum": 1 } }
                    }))),
                ),
            },
            "/v1/memories/{id}/expire": {
                "parameters": id_param(),
                "post": op(
                    "Set a memory's expiry (a past time deletes it now)", "memories",
                    ok("The expiry", json!({
                        "type": "object", "required": ["id", "expires_at", "deleted"],
                        "properties": {
                            "id": { "type": "string" },
                            "expires_at": schema("Timestamp"),
                            "deleted": { "type": "boolean" }
                        }
                    })),
                    Some(body(json!({
                        "type": "object", "additionalProperties": false,
                        "description": "Exactly one of `ttl_ms` or `at`.",
                        "properties": {
                            "ttl_ms": { "type": ["integer", "string"], "description": "Milliseconds from now, or a duration such as \"30d\"." },
                            "at": { "type": ["integer", "string"], "description": "Epoch milliseconds, or a time such as \"2023-05-08T13:56:00Z\"." }
                        }
                    }))),
                ),
            },
            "/v1/search": {
                "post": op(
                    "Search the memories the caller may read", "memories",
                    ok("Hits, best first", array_of("SearchHit")),
                    Some(body(schema("SearchRequest"))),
                ),
            },
            "/v1/audit": {
                "get": {
                    "summary": "The audit log (administrator)", "tags": ["admin"],
                    "parameters": [
                        { "name": "from", "in": "query", "schema": { "type": "integer", "minimum": 0, "default": 0 } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 10000, "default": 100 } }
                    ],
                    "responses": {
                        "200": answer("Entries from `from` on", array_of("AuditEntry")),
                        "400": { "$ref": "#/components/responses/BadRequest" },
                        "401": { "$ref": "#/components/responses/Unauthorized" },
                        "403": { "$ref": "#/components/responses/Forbidden" }
                    }
                }
            },
            "/v1/chat": {
                "post": {
                    "summary": "One assistant turn, with the user's memories in the prompt",
                    "tags": ["chat"],
                    "requestBody": body(schema("ChatRequest")),
                    "responses": {
                        "200": answer("The answer and what it cost", schema("ChatResponse")),
                        "400": { "$ref": "#/components/responses/BadRequest" },
                        "401": { "$ref": "#/components/responses/Unauthorized" },
                        "503": answer("The server runs without a language model", schema("Error"))
                    }
                }
            },
            "/v1/stats": {
                "get": {
                    "summary": "Vault statistics, parametric adapters and snapshot tiers (administrator)",
                    "tags": ["admin"],
                    "responses": {
                        "200": answer("Statistics", json!({
                            "type": "object",
                            "properties": {
                                "vault": { "type": "object", "description": "VaultStats: counts and bytes of users, cubes, memories, versions, snapshots, adapters, audit entries, the database, and chat counters." },
                                "parametric": { "type": "array", "description": "Per user with an adapter: {user, adapter: AdapterInfo (cube, bytes, age_seconds, covers, stale, rank, pairs, steps, loss_first, loss_last)}." },
                                "snapshot_tiers": {
                                    "type": ["object", "null"],
                                    "properties": {
                                        "stored_blocks": { "type": "integer" }, "stored_bytes": { "type": "integer" },
                                        "resident_blocks": { "type": "integer" }, "resident_bytes": { "type": "integer" }
                                    }
                                }
                            }
                        })),
                        "401": { "$ref": "#/components/responses/Unauthorized" },
                        "403": { "$ref": "#/components/responses/Forbidden" }
                    }
                }
            },
            "/v1/chat/completions": {
                "post": {
                    "summary": "OpenAI-compatible chat completions with memory",
                    "description": "The last `user` message is the question; `system`/`developer` messages and the earlier `user`/`assistant` turns go into the prompt after the retrieved memories (within half the model's context, oldest turns dropped first). `temperature`, `top_p`, `seed` and `stop` are honoured, `n` must be 1; tools, logprobs, penalties, logit_bias and non-text response formats are refused with a 400. Other unknown fields are accepted. `stream: true` answers server-sent events of `chat.completion.chunk` objects, then `data: [DONE]`. Errors use OpenAI's shape.",
                    "tags": ["openai"],
                    "requestBody": body(schema("ChatCompletionRequest")),
                    "responses": {
                        "200": {
                            "description": "The completion (JSON), or its chunks (SSE) when `stream` is true",
                            "content": {
                                "application/json": { "schema": schema("ChatCompletion") },
                                "text/event-stream": { "schema": { "type": "string", "description": "`data: <chat.completion.chunk JSON>` events, then `data: [DONE]`." } }
                            }
                        },
                        "400": answer("No user message, or invalid input", schema("OpenAiError")),
                        "401": answer("No or unknown API key", schema("OpenAiError")),
                        "503": answer("The server runs without a language model", schema("OpenAiError"))
                    }
                }
            },
            "/mcp": {
                "post": {
                    "summary": "Model Context Protocol, streamable HTTP transport (JSON-RPC 2.0): the memory tools add, search, get, update, delete, list, history, rollback, chat, cube_create, cube_share, stats, each with its input schema in `tools/list`",
                    "tags": ["mcp"],
                    "requestBody": body(json!({ "type": "object", "description": "A JSON-RPC 2.0 message (initialize, tools/list, tools/call, …)." })),
                    "responses": {
                        "200": { "description": "The JSON-RPC answer, as JSON or as server-sent events", "content": {
                            "application/json": { "schema": { "type": "object" } },
                            "text/event-stream": { "schema": { "type": "string" } }
                        } },
                        "401": { "$ref": "#/components/responses/Unauthorized" }
                    }
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "The language model this server answers with (OpenAI's list shape; empty without one)",
                    "tags": ["openai"],
                    "responses": {
                        "200": answer("The models", json!({ "type": "object", "required": ["object", "data"], "properties": { "object": { "const": "list" }, "data": { "type": "array", "items": schema("Model") } } })),
                        "401": answer("No or unknown API key", schema("OpenAiError"))
                    }
                }
            },
            "/v1/models/{id}": {
                "get": {
                    "summary": "One model",
                    "tags": ["openai"],
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "responses": {
                        "200": answer("The model", schema("Model")),
                        "401": answer("No or unknown API key", schema("OpenAiError")),
                        "404": answer("No such model here", schema("OpenAiError"))
                    }
                }
            },
            "/v1/modules": {
                "get": op("Installed memory modules the caller can see", "modules",
                    ok("Modules", array_of("ModuleInfo")), None),
                "post": {
                    "summary": "Install a module file (a newer version updates it)",
                    "tags": ["modules"],
                    "parameters": [
                        { "name": "for", "in": "query", "description": "A user name to mount it for (repeatable; default: the caller).", "schema": { "type": "string" } },
                        { "name": "global", "in": "query", "description": "Mount it for every user (administrator).", "schema": { "type": "boolean" } }
                    ],
                    "requestBody": { "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "contentMediaType": "application/octet-stream" } } } },
                    "responses": {
                        "201": answer("Installed or updated", schema("InstallReport")),
                        "200": answer("Already installed, or mounted for more users", schema("InstallReport")),
                        "400": { "$ref": "#/components/responses/BadRequest" },
                        "401": { "$ref": "#/components/responses/Unauthorized" },
                        "403": { "$ref": "#/components/responses/Forbidden" },
                        "404": { "$ref": "#/components/responses/NotFound" },
                        "413": answer("Larger than 256 MiB", schema("Error")),
                        "415": answer("Not application/octet-stream", schema("Error"))
                    }
                }
            },
            "/v1/modules/{id}": {
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "get": op("One installed module", "modules", ok("The module", schema("ModuleInfo")), None),
                "delete": op(
                    "Remove a module (administrator), or unmount it for the caller", "modules",
                    ok("What was removed", schema("RemoveReport")), None,
                ),
            },
            "/v1/publishers": {
                "get": op("Trusted publisher keys", "modules", ok("Publishers", json!({
                    "type": "array", "items": { "type": "object", "required": ["key", "name"],
                        "properties": { "key": { "type": "string" }, "name": { "type": "string" } } }
                })), None),
                "post": op("Trust a publisher key (administrator)", "modules",
                    created("Trusted", json!({ "type": "object", "properties": { "key": { "type": "string" }, "name": { "type": "string" } } })),
                    Some(body(json!({
                        "type": "object", "required": ["key", "name"], "additionalProperties": false,
                        "properties": { "key": { "type": "string", "pattern": "^[0-9a-fA-F]{64}$" }, "name": { "type": "string" } }
                    })))),
            },
            "/v1/publishers/{key}": {
                "parameters": [{ "name": "key", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[0-9a-fA-F]{64}$" } }],
                "delete": op("Stop trusting a publisher (administrator)", "modules",
                    ok("Whether it was trusted", json!({ "type": "object", "properties": { "distrusted": { "type": "boolean" } } })), None),
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document", "tags": ["meta"], "security": [],
                    "responses": { "200": answer("OpenAPI 3.1", json!({ "type": "object" })) }
                }
            }
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "The user's API key: `Authorization: Bearer <api key>`." }
            },
            "responses": {
                "BadRequest": answer("Malformed or invalid input (JSON syntax, wrong types, unknown fields, bad ids)", schema("Error")),
                "Unauthorized": answer("No or unknown API key", schema("Error")),
                "Forbidden": answer("Denied on something the caller may see", schema("Error")),
                "NotFound": answer("No such thing, or one the caller may not see", schema("Error"))
            },
            "schemas": schemas(),
        }
    })
}

/// `components.schemas`.
fn schemas() -> Value {
    let id = json!({ "type": "string", "pattern": "^[0-9a-f]{32}$" });
    let entries = [
        (
            "Error",
            json!({
                "type": "object", "required": ["error"],
                "properties": { "error": { "type": "string" } }
            }),
        ),
        (
            "OpenAiError",
            json!({
                "type": "object", "required": ["error"],
                "properties": { "error": {
                    "type": "object", "required": ["message", "type", "code"],
                    "properties": {
                        "message": { "type": "string" },
                        "type": { "type": "string", "examples": ["invalid_request_error", "authentication_error", "server_error"] },
                        "code": { "type": ["string", "null"] }
                    }
                } }
            }),
        ),
        (
            "Timestamp",
            json!({ "type": "integer", "description": "Milliseconds since the Unix epoch." }),
        ),
        (
            "UserInfo",
            json!({
                "type": "object", "required": ["id", "name", "admin"],
                "properties": { "id": { "type": "integer" }, "name": { "type": "string" }, "admin": { "type": "boolean" } }
            }),
        ),
        (
            "NamespaceInfo",
            json!({
                "type": "object", "required": ["id", "owner", "name", "readers", "writers"],
                "properties": {
                    "id": { "type": "integer" }, "owner": { "type": "integer" }, "name": { "type": "string" },
                    "readers": { "type": "array", "items": { "type": "integer" } },
                    "writers": { "type": "array", "items": { "type": "integer" } }
                }
            }),
        ),
        (
            "AddRequest",
            json!({
                "type": "object", "required": ["text"], "additionalProperties": false,
                "properties": {
                    "namespace": { "oneOf": [ { "type": "integer" }, { "type": "string" } ], "description": "The cube to store in: its id, or the name of one of the caller's cubes (default: the caller's cube \"default\")." },
                    "text": { "type": "string" },
                    "time": { "$ref": "#/components/schemas/Timestamp", "description": "When it happened (default: now)." },
                    "tags": { "type": "array", "items": { "type": "string" } },
                    "ttl_ms": { "type": "integer", "minimum": 1, "description": "Time to live, at least 1 ms (default: forever)." },
                    "dedup": { "enum": ["off", "exact", "near", null], "description": "off: always a new memory; exact: the same text about the same event merges; near: also, a near-duplicate in other words becomes the existing memory's new version (default: the server's `[dedup]` mode)." }
                }
            }),
        ),
        (
            "AddOutcome",
            json!({
                "type": "object", "required": ["id", "action", "duplicate", "version", "redacted"],
                "properties": {
                    "id": id,
                    "action": { "enum": ["stored", "merged", "updated"], "description": "stored: a new memory; merged: the same text was there (its usage bumped); updated: the text became the new version of a near-duplicate." },
                    "duplicate": { "type": "boolean", "description": "True when `action` is `merged`." },
                    "version": { "type": "integer", "minimum": 1, "description": "The memory's version after the call." },
                    "supersedes": { "type": ["string", "null"], "description": "For `updated`: the cube id of the replaced version (kept in the history)." },
                    "previous_text": { "type": ["string", "null"], "description": "For `updated`: the replaced text." },
                    "similarity": { "type": ["number", "null"] },
                    "redacted": { "type": "array", "items": { "type": "string" }, "description": "Kinds of secrets removed." }
                }
            }),
        ),
        (
            "MemoryView",
            json!({
                "type": "object",
                "required": ["id", "cube", "version", "namespace", "owner", "text", "time", "recorded_at", "tags", "hits", "lifecycle"],
                "properties": {
                    "id": id, "cube": { "type": "string" }, "version": { "type": "integer", "minimum": 1 },
                    "namespace": { "type": "integer" }, "owner": { "type": "integer" }, "text": { "type": "string" },
                    "time": { "$ref": "#/components/schemas/Timestamp" },
                    "recorded_at": { "$ref": "#/components/schemas/Timestamp" },
                    "tags": { "type": "array", "items": { "type": "string" } },
                    "expires_at": { "type": ["integer", "null"] },
                    "hits": { "type": "integer" },
                    "lifecycle": { "enum": ["generated", "activated", "archived", "merged", "frozen", "deleted"] },
                    "source": { "type": "string", "description": "Where the text came from (a module's file and section)." },
                    "module": { "type": "string", "description": "The installed module it belongs to (read-only)." }
                }
            }),
        ),
        (
            "Manifest",
            json!({
                "type": "object",
                "required": ["id", "name", "version", "publisher", "licence", "description", "language"],
                "properties": {
                    "id": { "type": "string" }, "name": { "type": "string" },
                    "version": { "type": "string", "description": "Semantic version." },
                    "publisher": { "type": "string", "description": "ed25519 public key, 64 hex digits." },
                    "licence": { "type": "string" }, "description": { "type": "string" },
                    "language": { "type": "string" }
                }
            }),
        ),
        (
            "ModuleInfo",
            json!({
                "type": "object",
                "required": ["manifest", "cube", "global", "users", "memories", "sha256", "installed_ms"],
                "properties": {
                    "manifest": schema("Manifest"), "cube": { "type": "integer" },
                    "global": { "type": "boolean" },
                    "users": { "type": "array", "items": { "type": "integer" } },
                    "memories": { "type": "integer" }, "sha256": { "type": "string" },
                    "installed_ms": { "type": "integer" }
                }
            }),
        ),
        (
            "InstallReport",
            json!({
                "type": "object",
                "required": ["action", "id", "version", "memories", "embedded_here", "global", "users", "derived"],
                "properties": {
                    "action": { "enum": ["installed", "updated", "extended", "already_installed"] },
                    "id": { "type": "string" }, "version": { "type": "string" },
                    "previous": { "type": ["string", "null"] },
                    "memories": { "type": "integer" }, "embedded_here": { "type": "integer" },
                    "global": { "type": "boolean" },
                    "users": { "type": "array", "items": { "type": "integer" } },
                    "derived": {
                        "description": "KV blocks and adapters the module ships, per kind and model",
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["kind", "model", "count", "bytes", "this_model"],
                            "properties": {
                                "kind": { "enum": ["kv_block", "adapter"] },
                                "model": { "type": "string", "description": "the model's fingerprint (hex)" },
                                "count": { "type": "integer" }, "bytes": { "type": "integer" },
                                "this_model": { "type": ["boolean", "null"], "description": "whether it is the loaded model's (null: none loaded)" }
                            }
                        }
                    }
                }
            }),
        ),
        (
            "RemoveReport",
            json!({
                "type": "object", "required": ["id", "version", "removed", "memories"],
                "properties": {
                    "id": { "type": "string" }, "version": { "type": "string" },
                    "removed": { "type": "boolean" }, "memories": { "type": "integer" }
                }
            }),
        ),
        (
            "DeleteReport",
            json!({
                "type": "object", "required": ["versions", "derived"],
                "properties": { "versions": { "type": "integer" }, "derived": { "type": "integer" } }
            }),
        ),
        (
            "SearchRequest",
            json!({
                "type": "object", "required": ["query"], "additionalProperties": false,
                "properties": {
                    "query": { "type": "string" },
                    "namespaces": { "type": "array", "items": { "type": "integer" }, "description": "Default: every readable cube." },
                    "since": { "$ref": "#/components/schemas/Timestamp" },
                    "until": { "$ref": "#/components/schemas/Timestamp" },
                    "tags": { "type": "array", "items": { "type": "string" } },
                    "k": { "type": "integer", "minimum": 1, "maximum": 100, "default": 10 }
                }
            }),
        ),
        (
            "SearchHit",
            json!({
                "type": "object", "required": ["memory", "score"],
                "properties": { "memory": { "$ref": "#/components/schemas/MemoryView" }, "score": { "type": "number" } }
            }),
        ),
        (
            "AuditEntry",
            json!({
                "type": "object",
                "properties": {
                    "seq": { "type": "integer" }, "at": { "$ref": "#/components/schemas/Timestamp" },
                    "actor": { "type": "integer" }, "admin": { "type": "boolean" }, "action": { "type": "string" },
                    "target": { "type": ["string", "null"] }, "allowed": { "type": "boolean" }, "detail": { "type": "string" }
                }
            }),
        ),
        (
            "ChatRequest",
            json!({
                "type": "object", "required": ["message"], "additionalProperties": false,
                "properties": {
                    "message": { "type": "string" },
                    "namespaces": { "type": "array", "items": { "type": "integer" } },
                    "memories": { "type": "array", "maxItems": 16, "items": { "type": "string" }, "description": "Answer from exactly these memory ids, in this order, instead of searching; [] answers with none." },
                    "system": { "type": "string", "description": "The caller's instructions, placed after the memories in memkern's system turn." },
                    "history": { "type": "array", "items": { "type": "object", "required": ["role", "text"], "properties": { "role": { "type": "string", "enum": ["user", "assistant"] }, "text": { "type": "string" } } }, "description": "Earlier turns, oldest first; the oldest are left out past half the model's context." },
                    "temperature": { "type": "number", "minimum": 0, "maximum": 2, "default": 0 },
                    "top_p": { "type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1 },
                    "seed": { "type": "integer", "minimum": 0 },
                    "stop": { "type": "array", "maxItems": 4, "items": { "type": "string" } },
                    "remember": { "type": "boolean", "default": true, "description": "Store the message as a memory." },
                    "remember_in": { "type": "integer", "description": "Cube to store it in (default: the caller's `default`)." },
                    "max_tokens": { "type": "integer", "minimum": 1, "maximum": 512, "default": 64 },
                    "snapshots": { "type": "boolean", "default": true, "description": "Use activation memory (KV snapshots)." }
                }
            }),
        ),
        (
            "UsedMemory",
            json!({
                "type": "object", "required": ["id", "text", "used_as"],
                "properties": { "id": id, "text": { "type": "string" }, "used_as": { "enum": ["snapshot", "text"] } }
            }),
        ),
        (
            "ChatResponse",
            json!({
                "type": "object",
                "properties": {
                    "answer": { "type": "string" },
                    "memories": { "type": "array", "items": { "$ref": "#/components/schemas/UsedMemory" } },
                    "stored": { "type": ["string", "null"] },
                    "retrieval_ms": { "type": "number" }, "ttft_ms": { "type": "number" }, "total_ms": { "type": "number" },
                    "prompt_tokens": { "type": "integer" }, "restored_tokens": { "type": "integer" },
                    "promoted": { "type": "integer" }, "evicted": { "type": "integer" },
                    "adapter": { "type": ["string", "null"], "description": "The caller's parametric adapter (Parametric cube id) applied to this turn, if any." }
                }
            }),
        ),
        (
            "ChatCompletionRequest",
            json!({
                "type": "object", "required": ["messages"], "additionalProperties": true,
                "properties": {
                    "model": { "type": "string", "description": "Accepted and ignored." },
                    "messages": { "type": "array", "items": {
                        "type": "object", "required": ["role"],
                        "properties": {
                            "role": { "type": "string" },
                            "content": { "oneOf": [
                                { "type": "string" },
                                { "type": "array", "items": { "type": "object", "properties": { "type": { "type": "string" }, "text": { "type": "string" } } } },
                                { "type": "null" }
                            ] }
                        }
                    } },
                    "max_tokens": { "type": "integer", "default": 256, "description": "Clamped to 1–512." },
                    "temperature": { "type": ["number", "null"], "minimum": 0, "maximum": 2, "default": 0, "description": "0 is greedy decoding." },
                    "top_p": { "type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1, "default": 1 },
                    "seed": { "type": ["integer", "null"] },
                    "stop": { "oneOf": [ { "type": "string" }, { "type": "array", "items": { "type": "string" }, "maxItems": 4 }, { "type": "null" } ] },
                    "n": { "type": ["integer", "null"], "enum": [1, null] },
                    "max_completion_tokens": { "type": "integer", "description": "Takes precedence over max_tokens." },
                    "stream": { "type": "boolean", "default": false },
                    "stream_options": { "type": "object", "properties": { "include_usage": { "type": "boolean" } } },
                    "memkern": {
                        "type": "object", "additionalProperties": false,
                        "description": "memkern options (non-standard).",
                        "properties": {
                            "remember": { "type": "boolean", "default": true },
                            "remember_in": { "type": "integer" },
                            "namespaces": { "type": "array", "items": { "type": "integer" } },
                            "snapshots": { "type": "boolean", "default": true }
                        }
                    }
                }
            }),
        ),
        (
            "Model",
            json!({
                "type": "object", "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": { "type": "string" }, "object": { "const": "model" },
                    "created": { "type": "integer" }, "owned_by": { "type": "string" }
                }
            }),
        ),
        (
            "ChatCompletion",
            json!({
                "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
                "properties": {
                    "id": { "type": "string", "pattern": "^chatcmpl-" },
                    "object": { "const": "chat.completion" },
                    "created": { "type": "integer" },
                    "model": { "type": "string" },
                    "choices": { "type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "index": { "type": "integer" },
                            "message": { "type": "object", "properties": { "role": { "const": "assistant" }, "content": { "type": "string" } } },
                            "finish_reason": { "enum": ["stop", "length"] }
                        }
                    } },
                    "usage": { "type": "object", "properties": {
                        "prompt_tokens": { "type": "integer" }, "completion_tokens": { "type": "integer" }, "total_tokens": { "type": "integer" }
                    } },
                    "memkern": { "type": "object", "description": "Non-standard: the memories in the prompt and timings.",
                        "properties": {
                            "memories": { "type": "array", "items": { "$ref": "#/components/schemas/UsedMemory" } },
                            "stored": { "type": ["string", "null"] },
                            "ttft_ms": { "type": "number" }
                        } }
                }
            }),
        ),
    ];
    Value::Object(
        entries
            .into_iter()
            .map(|(name, schema)| (name.to_owned(), schema))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(method, path)` of every row of the endpoint table in the `server`
    /// module docs (`//! | \`METHOD /path\` | …`), query strings dropped.
    fn documented_routes() -> Vec<(String, String)> {
        include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `"))
            .filter_map(|l| l.split_once('`'))
            .filter_map(|(route, _)| route.split_once(' '))
            .map(|(method, path)| {
                let path = path.split('?').next().unwrap_or(path);
                (method.to_lowercase(), path.to_owned())
            })
            .collect()
    }

    #[test]
    fn every_documented_route_is_described_and_nothing_else() {
        let doc = document();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1"))
        );
        let table = documented_routes();
        assert!(table.len() >= 19, "the table was parsed: {table:?}");
        for (method, path) in &table {
            let op = &doc["paths"][path.as_str()][method.as_str()];
            assert!(
                op.is_object(),
                "{method} {path} is missing from openapi.json"
            );
            assert!(
                op["responses"].is_object(),
                "{method} {path} has no responses"
            );
        }
        let methods = ["get", "post", "put", "delete", "patch"];
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, _) in item.as_object().expect("path item") {
                if methods.contains(&method.as_str()) {
                    assert!(
                        table.iter().any(|(m, p)| m == method && p == path),
                        "{method} {path} is described but not in the server docs' table"
                    );
                }
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "dangling {r}");
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(s)) => out.push(s.clone()),
                        _ => collect_refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
