//! `memkern mcp` over stdio, started by the official MCP Python SDK as an
//! MCP client would start it (`--as alice`, `--as bob`): tools listed,
//! an add / search / get / update / history / delete round trip, and bob's
//! client sees none of alice's memories. The client script is shared
//! with the HTTP test (`platforms/server/tests/clients/mcp_sdk.py`).

use std::process::Command;

#[path = "../../server/tests/clients/mod.rs"]
mod clients;

#[test]
fn mcp_over_stdio_with_the_python_sdk() {
    if !clients::installed("mcp", "mcp") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("memkern-mcp-stdio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.to_str().expect("utf-8 path");
    let exe = env!("CARGO_BIN_EXE_memkern");
    for user in ["alice", "bob"] {
        let out = Command::new(exe)
            .args(["user", "add", user, "--data-dir", data, "--no-embed"])
            .output()
            .expect("memkern runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Without a user the command refuses to guess.
    let out = Command::new(exe)
        .args(["mcp", "--data-dir", data, "--no-embed", "--no-llm"])
        .output()
        .expect("memkern runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--as USER or --key KEY"));

    let seen = clients::run("mcp_sdk.py", &["stdio", exe, data]);
    assert_eq!(seen["bob_hits"], 0, "{seen}");
    let _ = std::fs::remove_dir_all(&dir);
}
