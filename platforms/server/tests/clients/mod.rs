//! Running the real Python clients (the OpenAI and MCP SDKs) from Rust
//! tests: whether a client is installed, and one run of a client script.
//! Shared by the server's tests and the binary's (`#[path]`).

use std::process::Command;

use serde_json::Value;

/// Whether Python module `module` imports. When it does not, the test is
/// skipped — unless `MEMKERN_REQUIRE_CLIENTS=1` (CI), where that fails.
pub fn installed(module: &str, pip: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("MEMKERN_REQUIRE_CLIENTS").as_deref() != Ok("1"),
            "the Python client `{module}` is missing (pip install {pip})"
        );
        eprintln!("SKIP: pip install {pip} to run this test");
    }
    ok
}

/// Runs `tests/clients/SCRIPT` (in the server crate) with `args`; asserts
/// it succeeded and returns the one JSON line it printed.
pub fn run(script: &str, args: &[&str]) -> Value {
    let path = format!(
        "{}/../server/tests/clients/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed");
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}
