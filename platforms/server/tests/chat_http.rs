//! `POST /v1/chat` on a real server over loopback with the real SmolLM2:
//! memories reach the answer, the turn is remembered, 503 without a model.

use std::path::PathBuf;
use std::sync::Arc;

use memkern_runtime::{Assistant, Config, Runtime};
use memkern_server::Server;

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod erin;

use common::llm;

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("chat-http", name)
}

/// `POST /v1/chat` on a real server over loopback; 503 without a model.
#[test]
fn chat_over_http() {
    let dir = temp_dir("http");
    let (rt, _) = Runtime::open(&dir, Config::default(), None).expect("vault");
    let (_, key, _) = erin::erin(&rt);
    let rt = Arc::new(rt);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |addr: std::net::SocketAddr, body: &str| {
        let mut r = agent
            .post(format!("http://{addr}/v1/chat"))
            .header("Authorization", format!("Bearer {}", key.0))
            .header("Content-Type", "application/json")
            .send(body)
            .expect("request");
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().expect("body");
        (status, text)
    };
    let bare = Server::start_with(rt.clone(), None, "127.0.0.1:0", 65536).expect("server");
    let (status, text) = post(bare.addr(), r#"{"message": "Where does my sister live?"}"#);
    assert_eq!(status, 503, "{text}");
    bare.shutdown().expect("shutdown");

    let assistant = Arc::new(Assistant::new(rt.clone(), llm()).expect("assistant"));
    let server =
        Server::start_with(rt.clone(), Some(assistant), "127.0.0.1:0", 65536).expect("server");
    let (status, text) = post(
        server.addr(),
        r#"{"message": "Where does my sister live?", "max_tokens": 24}"#,
    );
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    eprintln!("{v:#}");
    assert!(
        v["answer"].as_str().is_some_and(|a| a.contains("Porto")),
        "{v}"
    );
    assert!(v["stored"].is_null(), "a question is not remembered: {v}");
    let (status, text) = post(server.addr(), r#"{"message": "hi", "max_tokens": 0}"#);
    assert_eq!(status, 400, "{text}");
    server.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
