//! MCP over streamable HTTP (`/mcp` on a real server over loopback) with
//! the official MCP Python SDK as the client (`tests/clients/mcp_sdk.py`,
//! installed by `.ci/run`): the tools are listed with schemas, an add /
//! search / get / update / history / delete round trip works, and user
//! B's client sees none of user A's memories. Also: no key → 401.

use std::path::PathBuf;
use std::sync::Arc;

use memkern_runtime::{Config, Runtime};
use memkern_server::Server;

mod clients;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memkern-mcp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn mcp_over_streamable_http_with_the_python_sdk() {
    let dir = temp_dir("http");
    let (rt, _) = Runtime::open(&dir, Config::default(), None).expect("vault");
    let (_, alice) = rt.create_user(&rt.admin(), "alice").expect("alice");
    let (_, bob) = rt.create_user(&rt.admin(), "bob").expect("bob");
    let server = Server::start(Arc::new(rt), "127.0.0.1:0", 65536).expect("server");
    let url = format!("http://{}/mcp", server.addr());

    // Without a key: 401 before the MCP layer.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);

    if clients::installed("mcp", "mcp") {
        let seen = clients::run("mcp_sdk.py", &["http", &url, &alice.0, &bob.0]);
        assert_eq!(seen["bob_hits"], 0, "{seen}");
    }
    server.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
