//! The cube CLI end to end: real binary, real files and pipes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn cli(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_memkern-cube"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut input = child.stdin.take().expect("stdin");
    // The child may exit before reading everything (that is fine).
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("waits")
}

fn ok(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = cli(args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Bad input: exit status 1 and exactly one line on stderr (never a panic).
fn refused(args: &[&str], stdin: &[u8]) -> String {
    let out = cli(args, stdin);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn every_kind_round_trips_json_binary_json() {
    for kind in ["plaintext", "activation", "parametric"] {
        let json = ok(&["example", kind], b"");
        let bin = ok(&["encode"], &json);
        assert_eq!(&bin[..4], b"MKCB");
        let back = ok(&["decode", "-"], &bin);
        assert_eq!(back, json, "{kind}");
        let summary = String::from_utf8(ok(&["verify"], &bin)).expect("utf8");
        assert!(summary.starts_with("ok: "), "{summary}");
    }
}

#[test]
fn files_in_and_out() {
    let dir = std::env::temp_dir().join(format!("memkern-cube-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let json_path = dir.join("c.json");
    let bin_path = dir.join("c.bin");
    std::fs::write(&json_path, ok(&["example"], b"")).expect("write");
    ok(
        &[
            "encode",
            json_path.to_str().expect("utf8"),
            "--out",
            bin_path.to_str().expect("utf8"),
        ],
        b"",
    );
    ok(&["verify", bin_path.to_str().expect("utf8")], b"");
    let err = refused(
        &["verify", dir.join("missing").to_str().expect("utf8")],
        b"",
    );
    assert!(err.contains("cannot open"), "{err}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn every_corruption_is_refused_cleanly() {
    let bin = ok(&["encode"], &ok(&["example"], b""));
    // Every single-byte corruption and every truncation, through both readers.
    for i in 0..bin.len() {
        let mut bad = bin.clone();
        bad[i] ^= 0x5a;
        refused(&["verify"], &bad);
        refused(&["decode"], &bad);
        refused(&["verify"], &bin[..i]);
    }
    let err = refused(&["decode"], b"not a cube at all, just some text");
    assert!(err.contains("magic"), "{err}");
    let mut future = bin.clone();
    future[4] = 9;
    let err = refused(&["verify"], &future);
    assert!(err.contains("version 9"), "{err}");
}

#[test]
fn bad_json_is_refused_cleanly() {
    refused(&["encode"], b"");
    refused(&["encode"], b"{");
    refused(&["encode"], b"[1,2,3]");
    refused(&["encode"], &[0xff, 0xfe, 0x00]);
    // Valid JSON that breaks a format rule: an embedding scale of zero.
    let json = String::from_utf8(ok(&["example"], b"")).expect("utf8");
    let bad = json.replace("\"scale\": 0.01", "\"scale\": 0.0");
    assert_ne!(bad, json);
    let err = refused(&["encode"], bad.as_bytes());
    assert!(err.contains("scale"), "{err}");
    // An int8 value out of range.
    let bad = json.replace("100,", "300,");
    assert_ne!(bad, json);
    refused(&["encode"], bad.as_bytes());
}

#[test]
fn help_explains_each_command() {
    let help = String::from_utf8(ok(&["--help"], b"")).expect("utf8");
    for cmd in ["encode", "decode", "verify", "example"] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
    let help = String::from_utf8(ok(&["encode", "--help"], b"")).expect("utf8");
    assert!(help.contains("JSON") && help.contains("binary"), "{help}");
}
