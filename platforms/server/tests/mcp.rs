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

/// Builds, trusts and installs a one-memory module `sailing` for `user`.
fn install_module_for(rt: &Runtime, dir: &std::path::Path, user: memkern_core::ids::UserId) {
    use memkern_runtime::modules::{self, Item, Manifest, Scope};
    let path = dir.join("publisher.key");
    let public = memkern_runtime::pack::generate_key(&path).expect("keygen");
    let key = memkern_runtime::pack::load_key(&path).expect("key");
    let manifest = Manifest {
        id: "sailing".to_owned(),
        name: "Sailing basics".to_owned(),
        version: "1.0.0".to_owned(),
        publisher: public.clone(),
        licence: "CC-BY-4.0".to_owned(),
        description: String::new(),
        language: "en".to_owned(),
    };
    let items = [Item {
        text: "A bowline makes a fixed loop that does not slip.".to_owned(),
        source: None,
        tags: Vec::new(),
    }];
    let (file, _) = modules::build_module(
        &manifest,
        memkern_core::time::Timestamp(0),
        &items,
        None,
        &modules::Extras::default(),
        &key,
        |_| {},
    )
    .expect("build");
    rt.trust_publisher(&rt.admin(), &public, "school")
        .expect("trust");
    rt.install_module(&rt.admin(), &file, &Scope::Users(vec![user]))
        .expect("install");
}

#[test]
fn mcp_over_streamable_http_with_the_python_sdk() {
    let dir = temp_dir("http");
    let (rt, _) = Runtime::open(&dir, Config::default(), None).expect("vault");
    let (alice_info, alice) = rt.create_user(&rt.admin(), "alice").expect("alice");
    let (_, bob) = rt.create_user(&rt.admin(), "bob").expect("bob");
    install_module_for(&rt, &dir, alice_info.id);
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
        assert_eq!(
            seen["alice_modules"],
            serde_json::json!(["sailing"]),
            "{seen}"
        );
        assert_eq!(seen["bob_modules"], serde_json::json!([]), "{seen}");
    }
    server.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
