//! `POST /v1/chat/completions` (OpenAI-compatible, with memory) and
//! `GET /openapi.json` on a real server over loopback, with the real
//! models (all-MiniLM-L6-v2 for retrieval, SmolLM2 for the answer): an
//! OpenAI-shaped request with fields memkern does not know is answered
//! from the user's memories, the streamed deltas concatenate to the same
//! answer, and errors come in OpenAI's shape.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use memkern_runtime::{Assistant, Config, Runtime};
use memkern_server::Server;
use serde_json::{Value, json};

mod clients;
#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod erin;

use erin::erin;

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("openai", name)
}

use common::llm;

/// A response: status, content type and body text.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Asserts an OpenAI-style error with `status` and `type`.
    fn assert_openai_error(&self, status: u16, ty: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert_eq!(e["type"], ty, "{v}");
        assert!(e.get("code").is_some(), "{v}");
    }
}

struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn new(server: &Server) -> Client {
        Client {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(300)))
                .build()
                .into(),
            base: format!("http://{}", server.addr()),
        }
    }

    fn send(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Reply {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let resp = match body {
            Some(b) => self.agent.run(
                req.header("Content-Type", "application/json")
                    .body(b.to_string().into_bytes())
                    .expect("request"),
            ),
            None => self.agent.run(req.body(()).expect("request")),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.into_body().read_to_string().expect("body");
        Reply {
            status,
            content_type,
            text,
        }
    }

    fn complete(&self, key: Option<&str>, body: &Value) -> Reply {
        self.send("POST", "/v1/chat/completions", key, Some(body))
    }
}

/// The `data:` payloads of a server-sent-events body, in order.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                .to_owned()
        })
        .collect()
}

#[test]
fn openai_chat_completions_with_memory() {
    let dir = temp_dir("main");
    let embedder = memkern_runtime::embed::load_default().expect("MiniLM loads");
    let (rt, _) = Runtime::open(&dir, Config::default(), Some(embedder)).expect("vault");
    let (who, key, dana) = erin(&rt);
    let key = key.0;
    let rt = Arc::new(rt);
    let question = |extra: Value| {
        let mut body = json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"},
                {"role": "assistant", "content": "Hi! How can I help?"},
                {"role": "user", "content": [{"type": "text", "text": "Where does my sister live?"}]}
            ],
            "max_tokens": 24,
            "temperature": 0,
            "top_p": 1,
            "n": 1,
            "presence_penalty": 0,
            "logit_bias": {},
            "user": "someone",
            // Neither stored nor snapshotted: both asks see the same
            // memories and prefill the same prompt.
            "memkern": {"remember": false, "snapshots": false}
        });
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        body
    };

    // Without a model: 503 in OpenAI's shape; the OpenAPI document is open.
    let bare = Server::start_with(rt.clone(), None, "127.0.0.1:0", 65536).expect("server");
    let client = Client::new(&bare);
    client
        .complete(Some(&key), &question(json!({})))
        .assert_openai_error(503, "server_error");
    let doc = client.send("GET", "/openapi.json", None, None);
    assert_eq!(doc.status, 200, "{doc:?}");
    assert!(doc.content_type.starts_with("application/json"), "{doc:?}");
    let doc = doc.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    for path in [
        "/v1/health",
        "/v1/memories",
        "/v1/memories/{id}",
        "/v1/search",
        "/v1/chat",
        "/v1/stats",
        "/v1/chat/completions",
        "/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    bare.shutdown().expect("shutdown");

    let assistant = Arc::new(Assistant::new(rt.clone(), llm()).expect("assistant"));
    let server =
        Server::start_with(rt.clone(), Some(assistant), "127.0.0.1:0", 65536).expect("server");
    let client = Client::new(&server);

    // Errors, in OpenAI's shape.
    client
        .complete(None, &question(json!({})))
        .assert_openai_error(401, "authentication_error");
    client
        .complete(Some("not-a-key"), &question(json!({})))
        .assert_openai_error(401, "authentication_error");
    client
        .complete(
            Some(&key),
            &json!({"model": "x", "messages": [{"role": "system", "content": "hi"}]}),
        )
        .assert_openai_error(400, "invalid_request_error");
    client
        .complete(Some(&key), &json!({"model": "x"}))
        .assert_openai_error(400, "invalid_request_error");
    client
        .complete(
            Some(&key),
            &question(json!({"memkern": {"remembr": false}})),
        )
        .assert_openai_error(400, "invalid_request_error");

    // Non-streaming.
    let reply = client.complete(Some(&key), &question(json!({})));
    assert_eq!(reply.status, 200, "{reply:?}");
    let v = reply.json();
    eprintln!("{v:#}");
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert!(v["created"].as_u64().is_some_and(|t| t > 1_600_000_000));
    assert_eq!(v["model"], "smollm2-135m-instruct");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let content = choice["message"]["content"]
        .as_str()
        .expect("content")
        .to_owned();
    assert!(content.contains("Porto"), "{content}");
    assert!(
        matches!(choice["finish_reason"].as_str(), Some("stop" | "length")),
        "{v}"
    );
    let usage = &v["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_u64().expect("prompt_tokens"),
        usage["completion_tokens"]
            .as_u64()
            .expect("completion_tokens"),
    );
    assert!(p > 0 && (1..=24).contains(&c), "{usage}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(p + c));
    let memories = v["memkern"]["memories"].as_array().expect("memories");
    assert!(
        memories.iter().any(|m| m["id"] == dana.to_string()
            && m["text"] == "My sister Dana lives in Porto."
            && m["used_as"] == "text"),
        "{v}"
    );
    assert!(v["memkern"]["stored"].is_null(), "remember: false: {v}");
    assert!(v["memkern"]["ttft_ms"].as_f64().is_some_and(|t| t > 0.0));

    // Streaming: the same answer, as deltas.
    let reply = client.complete(
        Some(&key),
        &question(json!({"stream": true, "stream_options": {"include_usage": true}})),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.content_type.starts_with("text/event-stream"),
        "{reply:?}"
    );
    let events = sse_data(&reply.text);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect();
    assert!(chunks.len() >= 3, "{chunks:?}");
    let id = &chunks[0]["id"];
    assert!(id.as_str().is_some_and(|id| id.starts_with("chatcmpl-")));
    assert!(chunks.iter().all(|c| c["id"] == *id
        && c["object"] == "chat.completion.chunk"
        && c["model"] == "smollm2-135m-instruct"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content, "deltas concatenate to the answer");
    let finished: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finished.len(), 1, "{chunks:?}");
    assert_eq!(
        finished[0]["choices"][0]["finish_reason"],
        choice["finish_reason"]
    );
    let last = chunks.last().expect("usage chunk");
    assert_eq!(last["choices"], json!([]), "include_usage: {last}");
    assert_eq!(last["usage"]["completion_tokens"].as_u64(), Some(c));

    // By default the user's turn is remembered; max_completion_tokens
    // overrides max_tokens, and a cut answer finishes with "length".
    let reply = client.complete(
        Some(&key),
        &json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "My brother Tom plays the cello."}],
            "max_tokens": 24,
            "max_completion_tokens": 2
        }),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let v = reply.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 2, "{v}");
    let stored = v["memkern"]["stored"].as_str().expect("stored turn");
    let stored = rt
        .get(&who, stored.parse().expect("memory id"))
        .expect("stored memory");
    assert_eq!(stored.text, "My brother Tom plays the cello.");

    server.shutdown().expect("shutdown");
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The stock `openai` Python SDK (installed by `.ci/run`) against a real
/// server: `models.list()`, a completion plain and streamed, a multi-turn
/// conversation that needs an earlier message, a stop sequence and a
/// refused parameter (`tests/clients/openai_sdk.py`). Skipped when the SDK
/// is missing, unless `MEMKERN_REQUIRE_CLIENTS=1` (CI).
#[test]
fn the_openai_python_sdk_works_unchanged() {
    if !clients::installed("openai", "openai") {
        return;
    }
    let dir = temp_dir("sdk");
    let embedder = memkern_runtime::embed::load_default().expect("MiniLM loads");
    let (rt, _) = Runtime::open(&dir, Config::default(), Some(embedder)).expect("vault");
    let (_, key, _) = erin(&rt);
    let rt = Arc::new(rt);
    let assistant = Arc::new(Assistant::new(rt.clone(), llm()).expect("assistant"));
    let server = Server::start_with(rt, Some(assistant), "127.0.0.1:0", 65536).expect("server");
    let base = format!("http://{}", server.addr());
    let seen = clients::run("openai_sdk.py", &[&base, &key.0]);
    assert_eq!(
        (seen["unknown_model"].as_u64(), seen["refused"].as_u64()),
        (Some(404), Some(400))
    );
    server.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
