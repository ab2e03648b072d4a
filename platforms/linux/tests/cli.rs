//! The `memkern` binary end to end: argument errors and bad data give one
//! `error: …` line and exit status 1, never a panic.

use std::path::PathBuf;
use std::process::{Command, Output};

fn memkern(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memkern"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("binary runs")
}

/// Bad input: exit status 1 and exactly one line on stderr.
fn refused(args: &[&str]) -> String {
    let out = memkern(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    err
}

/// A fresh temporary directory (removed by the caller's `remove_dir_all`).
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memkern-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn missing_data_directory() {
    let err = refused(&["eval", "locomo", "--data", "/nonexistent/memkern/locomo"]);
    assert!(err.contains("/nonexistent/memkern/locomo"), "{err}");
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn empty_data_directory() {
    let dir = temp_dir("empty");
    let err = refused(&["eval", "locomo", "--data", dir.to_str().expect("utf-8")]);
    assert!(err.contains("no LoCoMo conversation"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_json() {
    let dir = temp_dir("malformed");
    std::fs::write(dir.join("99.json"), b"{\"speaker_a\": \"A\", ").expect("write");
    let err = refused(&["eval", "locomo", "--data", dir.to_str().expect("utf-8")]);
    assert!(
        err.contains("99.json is not a LoCoMo conversation"),
        "{err}"
    );
    assert!(
        err.contains("line 1"),
        "the parser's position is kept: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn valid_json_of_the_wrong_shape() {
    let dir = temp_dir("shape");
    let conv = r#"{"speaker_a": "A", "speaker_b": "B", "qa": [],
        "session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "hi"}],
        "session_1_date_time": "sometime"}"#;
    std::fs::write(dir.join("7.json"), conv).expect("write");
    let err = refused(&["eval", "locomo", "--data", dir.to_str().expect("utf-8")]);
    assert!(err.contains("session_1_date_time"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_conversation() {
    let dir = temp_dir("unknown");
    let err = refused(&[
        "eval",
        "locomo",
        "--data",
        dir.to_str().expect("utf-8"),
        "--conversations",
        "12345",
    ]);
    assert!(err.contains("\"12345\""), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tiny_conversation_runs_and_prints_json() {
    let dir = temp_dir("tiny");
    let conv = r#"{"speaker_a": "Ann", "speaker_b": "Bob",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ann", "dia_id": "D1:1", "text": "I adopted a puppy yesterday!"},
            {"speaker": "Bob", "dia_id": "D1:2", "text": "Wow, what is its name?"},
            {"speaker": "Ann", "dia_id": "D1:3", "text": "Biscuit.", "blip_caption": "a photo of a small dog"}
        ],
        "qa": [
            {"question": "When did Ann adopt a puppy?", "answer": "7 May 2023", "evidence": ["D1:1"], "category": 2},
            {"question": "What is the name of Ann's dog?", "answer": "Biscuit", "evidence": ["D1:3"], "category": 4},
            {"question": "What did Bob adopt?", "adversarial_answer": "a puppy", "evidence": [], "category": 5}
        ]}"#;
    std::fs::write(dir.join("1.json"), conv).expect("write");
    let out = memkern(&[
        "eval",
        "locomo",
        "--data",
        dir.to_str().expect("utf-8"),
        "--json",
        "--k",
        "1,2",
        "--dense",
        "off",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["questions"], 2);
    assert_eq!(v["ingest"]["memories"], 3);
    assert_eq!(v["ks"], serde_json::json!([1, 2]));
    let bm25 = &v["methods"][0];
    assert_eq!(bm25["name"], "bm25");
    let overall = bm25["recall"]
        .as_array()
        .expect("rows")
        .last()
        .expect("overall")
        .clone();
    assert_eq!(overall["category"], "overall");
    assert_eq!(overall["recall_at"]["2"], 1.0);
    assert_eq!(v["dense_unavailable"], "disabled with --dense off");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_k_is_a_usage_error() {
    let out = memkern(&["eval", "locomo", "--data", ".", "--k", "0"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage errors exit 2");
}

/// Argument errors keep the promise of `--help`: one `error:` line.
#[test]
fn argument_errors_are_one_line() {
    for (args, says) in [
        (&["eval", "locomo", "--data", ".", "--k", "0"][..], "--k"),
        (&["add", "--jsn", "text"][..], "did you mean --json"),
        (&["frobnicate"][..], "frobnicate"),
        (&["search"][..], "QUERY"),
    ] {
        let out = memkern(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let help = memkern(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("serve.sock"));
}

/// The runtime subcommands through the real binary (keyword-only vault).
#[test]
fn runtime_commands_round_trip_and_refuse_bad_input() {
    let dir = temp_dir("runtime");
    let d = dir.to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", &d, "--no-embed"]);
        memkern(&all)
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let user = ok(&["user", "add", "alice", "--json"]);
    assert!(user.contains("\"api_key\": \"mk_"), "{user}");
    let added = ok(&[
        "add",
        "--user",
        "alice",
        "--tag",
        "pets",
        "My dog is called Biscuit.",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&added).expect("json");
    let id = v["id"].as_str().expect("id").to_owned();
    let hits = ok(&["search", "dog", "--json"]);
    assert!(hits.contains("Biscuit"), "{hits}");
    ok(&["update", &id, "My dog is called Pretzel."]);
    let history = ok(&["history", &id]);
    assert!(
        history.contains("Biscuit") && history.contains("Pretzel"),
        "{history}"
    );
    ok(&["user", "add", "bob"]);
    // Bob sees nothing of Alice's; the audit log recorded his attempt.
    let bob = run(&["get", &id, "--as", "bob"]);
    assert_eq!(bob.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bob.stderr).contains("not found"));
    assert!(ok(&["search", "dog", "--as", "bob"]).contains("no memories found"));
    assert!(ok(&["audit"]).contains("DENIED"));
    ok(&["delete", &id]);
    for bad in [
        vec!["get", "not-an-id"],
        vec!["add", "--user", "nobody", "text"],
        vec!["add", "--user", "alice", "--time", "yesterday-ish", "text"],
        vec!["expire", &id, "--ttl", "5y"],
        vec!["chat", "hello"],
    ] {
        let mut args = bad.clone();
        args.extend(["--data-dir", &d, "--no-embed"]);
        refused(&args);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `memkern distill` as a process: a short run on the real SmolLM2 makes
/// an adapter that `stats` reports and that exports to GGUF; bad input
/// is one error line.
#[test]
fn distill_from_the_shell() {
    let dir = temp_dir("distill");
    let d = dir.to_string_lossy().into_owned();
    let gguf = dir.join("ana.gguf");
    let g = gguf.to_string_lossy().into_owned();
    let with_dir = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend(["--data-dir".into(), d.clone(), "--no-embed".into()]);
        all
    };
    let ok = |args: &[&str]| {
        let all = with_dir(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = memkern(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A configuration the run reads (a wrong key would be an error).
    std::fs::write(dir.join("memkern.toml"), "[parametric]\nrank = 4\n").expect("config");
    ok(&["user", "add", "ana"]);
    ok(&["user", "add", "ben"]);
    ok(&["add", "--user", "ana", "My dog is called Biscuit."]);
    ok(&["add", "--user", "ana", "I live in Lisbon."]);
    let report = ok(&[
        "distill",
        "--user",
        "ana",
        "--steps",
        "2",
        "--json",
        "--export-gguf",
        &g,
    ]);
    let v: serde_json::Value = serde_json::from_str(&report).expect("json");
    assert_eq!(v["memories"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["steps"], 2);
    // The KL anchors ran (default [parametric] anchor_weight).
    assert_eq!(v["anchors"], 12, "{v}");
    assert!(
        v["anchor_kl_last"].as_f64().is_some_and(f64::is_finite),
        "{v}"
    );
    let bytes = std::fs::read(&gguf).expect("gguf written");
    assert_eq!(&bytes[..4], b"GGUF");
    let stats = ok(&["stats", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&stats).expect("json");
    assert_eq!(s["parametric"][0]["user"], "ana", "{s}");
    assert_eq!(
        s["parametric"][0]["adapter"]["covers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(ok(&["stats", "--as", "ana"]).contains("adapter of ana"));
    assert!(!ok(&["stats", "--as", "ben"]).contains("adapter of"));
    for bad in [
        vec!["distill"],
        vec!["distill", "--user", "nobody"],
        vec!["distill", "--user", "ana", "--cube", "nope"],
        vec!["distill", "--user", "ana", "--as", "ben"],
    ] {
        let all = with_dir(&bad);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        refused(&all);
    }
    let zero = with_dir(&["distill", "--user", "ana", "--steps", "0"]);
    let zero: Vec<&str> = zero.iter().map(String::as_str).collect();
    assert_eq!(memkern(&zero).status.code(), Some(2), "clap's usage error");
    let err = refused(
        &with_dir(&["distill", "--user", "ben", "--steps", "1"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(err.contains("no memory is eligible"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `memkern serve --no-embed` on `dir` and a free loopback port with
/// `extra` arguments; returns the process and its address from the first
/// line it prints.
fn start_serve(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_memkern"))
        .args(["serve", "--no-embed", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("first line");
    // Keep draining serve's standard error so that it never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, addr)
}

/// Stops a serve with SIGTERM and expects a graceful exit.
fn stop_serve(mut child: std::process::Child) {
    // The shell's builtin `kill`: no procps package needed.
    let st = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .expect("kill");
    assert!(st.success());
    let status = child.wait().expect("exit");
    assert_eq!(status.code(), Some(0), "graceful exit");
}

/// `memkern chat` beside a serve with the real SmolLM2 answers with serve's
/// model, one message or an interactive session over standard input.
#[test]
fn chat_goes_through_a_running_serve() {
    let dir = temp_dir("serve-chat");
    let d = dir.to_str().expect("utf-8");
    let (child, _) = start_serve(&dir, &[]);
    let run = |args: &[&str], stdin: &[u8]| {
        use std::io::Write;
        let mut p = Command::new(env!("CARGO_BIN_EXE_memkern"))
            .args(args)
            .args(["--no-embed", "--data-dir", d])
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut input = p.stdin.take().expect("stdin");
        input.write_all(stdin).expect("stdin");
        drop(input);
        let out = p.wait_with_output().expect("output");
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{args:?}: {e}");
        (o, e)
    };
    run(&["user", "add", "cat"], b"");
    run(&["add", "--user", "cat", "My cat is called Miso."], b"");
    let (answer, _) = run(
        &[
            "chat",
            "--as",
            "cat",
            "--json",
            "--forget",
            "What is my cat called?",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(&answer).expect("one JSON answer");
    assert!(
        v["memories"].to_string().contains("Miso"),
        "the memory is in the prompt: {v}"
    );
    // Interactive: two lines in, two answers (JSON lines) out, the
    // prompts on standard error.
    let (answers, prompts) = run(
        &["chat", "--as", "cat", "--json", "--forget"],
        b"What is my cat called?\nThank you.\n",
    );
    assert_eq!(answers.lines().count(), 2, "{answers}");
    for l in answers.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("json line");
        assert!(v["answer"].is_string(), "{v}");
    }
    assert!(prompts.contains("one message per line"), "{prompts}");
    stop_serve(child);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `memkern serve --no-llm` as a real process: it says where it listens,
/// answers on loopback, and a SIGTERM stops it with status 0.
#[test]
fn serve_answers_and_stops_on_sigterm() {
    use std::io::{Read, Write};
    let dir = temp_dir("serve");
    let (child, addr) = start_serve(&dir, &["--no-llm"]);
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    conn.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("reply");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"ok\""), "{reply}");
    // The CLI beside the running server goes through it (the vault is
    // serve's): what it writes is what HTTP clients read.
    let d = dir.to_str().expect("utf-8");
    let beside = |args: &[&str], stdin: Option<&[u8]>, cwd: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_memkern"));
        cmd.args(args)
            .args(["--no-embed", "--data-dir", d])
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let mut p = cmd.spawn().expect("spawn");
        let mut input = p.stdin.take().expect("stdin");
        input.write_all(stdin.unwrap_or_default()).expect("stdin");
        drop(input);
        p.wait_with_output().expect("output")
    };
    let ok = |args: &[&str], stdin: Option<&[u8]>, cwd: Option<&std::path::Path>| {
        let out = beside(args, stdin, cwd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let made: serde_json::Value =
        serde_json::from_str(&ok(&["user", "add", "bob", "--json"], None, None)).expect("json");
    let key = made["api_key"].as_str().expect("key").to_owned();
    let added: serde_json::Value = serde_json::from_str(&ok(
        &[
            "add",
            "--user",
            "bob",
            "I keep bees in the garden.",
            "--json",
        ],
        None,
        None,
    ))
    .expect("json");
    let id = added["id"].as_str().expect("id").to_owned();
    assert_eq!(added["action"], "stored", "{added}");
    // Standard input and a path relative to the client's directory.
    let acks = ok(
        &["ingest", "--user", "bob", "-", "--json"],
        Some(b"My sister lives in Lyon.\nMy bike is red.\n"),
        None,
    );
    assert_eq!(acks.lines().count(), 3, "two acks and the counts: {acks}");
    assert!(acks.contains("\"stored\":2"), "{acks}");
    std::fs::write(dir.join("notes.txt"), "The boiler was serviced in May.\n").expect("write");
    let ack = ok(&["ingest", "--user", "bob", "notes.txt"], None, Some(&dir));
    assert!(ack.starts_with("ack 1 "), "{ack}");
    let hits = ok(&["search", "--as", "bob", "bees", "--json"], None, None);
    assert!(hits.contains(&id), "{hits}");
    // The same memory over HTTP with bob's key: one vault, serve's.
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        conn,
        "GET /v1/memories/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("reply");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("I keep bees"), "{reply}");
    // Errors come back as the same one line; bob sees none of the admin's.
    let out = beside(&["get", "--as", "bob", "not-an-id"], None, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    let out = beside(&["chat", "--as", "bob", "hello"], None, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-llm"), "{err}");
    // A command that needs the vault to itself still gets one line that
    // says what to do.
    let err = refused(&["distill", "--as", "bob", "--no-embed", "--data-dir", d]);
    assert!(err.contains("in use by another memkern process"), "{err}");
    assert!(dir.join("serve.sock").exists());
    stop_serve(child);
    assert!(
        !dir.join("serve.sock").exists(),
        "the socket goes with serve"
    );
    // Without serve the same commands open the vault themselves.
    let hits = ok(&["search", "--as", "bob", "boiler"], None, None);
    assert!(hits.contains("serviced in May"), "{hits}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `memkern ingest` reports a line that is not UTF-8 and goes on; empty
/// lines are counted, not stored.
#[test]
fn ingest_skips_and_reports_lines_that_are_not_utf8() {
    let dir = temp_dir("ingest-utf8");
    let d = dir.to_str().expect("utf-8");
    let made = memkern(&["user", "add", "ann", "--no-embed", "--data-dir", d]);
    assert!(made.status.success(), "{made:?}");
    let file = dir.join("lines.txt");
    std::fs::write(
        &file,
        b"My dog is called Biscuit.\n\n\xff\xfe broken\r\nI live in Porto.\r\n",
    )
    .expect("write");
    let out = memkern(&[
        "ingest",
        "--user",
        "ann",
        file.to_str().expect("utf-8"),
        "--no-embed",
        "--data-dir",
        d,
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let acked: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(acked, ["1", "4"], "{stdout}");
    assert!(
        stderr.contains("line 3: not valid UTF-8, skipped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped 1 empty and 1 non-UTF-8 lines"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
