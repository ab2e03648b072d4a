//! `memkern keys` and `memkern modules` from the shell: a publisher builds
//! and signs, a device trusts, installs, updates and removes; install and
//! update are killed with SIGKILL mid-way and leave the module whole or
//! absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use memkern_runtime::{Config, Runtime, SearchRequest};

fn memkern(args: &[&str]) -> Command {
    let exe = env!("CARGO_BIN_EXE_memkern");
    let runner = std::env::var("MEMKERN_EXEC_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut c = match words.next() {
        Some(emulator) => {
            let mut c = Command::new(emulator);
            c.args(words).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    c.args(args).env_remove("RUST_LOG");
    c
}

fn ok(args: &[&str]) -> String {
    let out: Output = memkern(args).output().expect("memkern runs");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(args: &[&str]) -> String {
    let out = memkern(args).output().expect("memkern runs");
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memkern-modcli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn build(src: &[&str], key: &Path, version: &str, out: &Path) -> String {
    let mut args = vec!["modules", "build"];
    args.extend_from_slice(src);
    args.extend_from_slice(&[
        "--id",
        "sailing",
        "--module-version",
        version,
        "--licence",
        "CC-BY-4.0",
        "--key",
        s(key),
        "--out",
        s(out),
        "--no-vectors",
    ]);
    ok(&args)
}

#[test]
fn a_publisher_builds_and_a_device_installs_updates_and_removes() {
    let dir = temp_dir("flow");
    let vault = dir.join("vault");
    let v = ["--data-dir", s(&vault), "--no-embed"];
    let key = dir.join("publisher.key");
    let public = ok(&["keys", "new", s(&key)]);
    let public = public.trim().trim_start_matches("public key: ").to_owned();
    assert_eq!(
        ok(&["keys", "show", s(&key)]).trim(),
        format!("public key: {public}")
    );
    let docs = dir.join("docs");
    std::fs::create_dir_all(docs.join("knots")).expect("docs");
    std::fs::write(
        docs.join("lights.md"),
        "# Lights\n\nThe red navigation light is on the port side.\n\n## Anchoring\n\nAn anchored boat shows one white all-round light.\n",
    )
    .expect("write");
    std::fs::write(
        docs.join("knots/bowline.txt"),
        "A bowline makes a fixed loop that does not slip.\n",
    )
    .expect("write");
    let m1 = dir.join("sailing-1.mkmod");
    let out = build(&["--from-dir", s(&docs)], &key, "1.0.0", &m1);
    assert!(out.contains("3 memories"), "{out}");
    let first = std::fs::read(&m1).expect("module");
    build(&["--from-dir", s(&docs)], &key, "1.0.0", &m1);
    assert_eq!(
        first,
        std::fs::read(&m1).expect("module"),
        "deterministic build"
    );

    ok(&[&["user", "add", "alice"][..], &v].concat());
    ok(&[&["user", "add", "bob"][..], &v].concat());
    let e = refused(&[&["modules", "install", s(&m1), "--for", "alice"][..], &v].concat());
    assert!(e.contains("does not trust") && e.contains(&public), "{e}");
    ok(&[&["modules", "trust", &public, "--name", "school"][..], &v].concat());
    let e = refused(&[&["modules", "install", s(&m1)][..], &v].concat());
    assert!(e.contains("--for USER") && e.contains("--global"), "{e}");
    // Sealed to alice (not to the device): installs for her alone.
    let alice_key = dir.join("alice.agekey");
    let out = ok(&[
        &["modules", "user-key", "alice", "--export", s(&alice_key)][..],
        &v,
    ]
    .concat());
    let recipient = out
        .trim()
        .strip_prefix("alice's key: ")
        .expect("alice's key")
        .to_owned();
    assert!(recipient.starts_with("age1pq1"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&alice_key)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the exported identity is private");
    let e = refused(&[&["modules", "user-key", "alice", "--as", "bob"][..], &v].concat());
    assert!(
        e.contains("not found"),
        "alice's key is not said to exist: {e}"
    );
    let sealed = dir.join("sailing-1.alice");
    ok(&[
        "modules",
        "seal",
        s(&m1),
        "--to",
        &recipient,
        "--out",
        s(&sealed),
    ]);
    let e = refused(&[&["modules", "install", s(&sealed), "--for", "bob"][..], &v].concat());
    assert!(e.contains("sealed for another device or user"), "{e}");
    let out = ok(&[
        &[
            "modules",
            "install",
            s(&sealed),
            "--for",
            "alice",
            "--as",
            "alice",
        ][..],
        &v,
    ]
    .concat());
    assert!(
        out.contains("installed sailing 1.0.0 (3 memories)"),
        "{out}"
    );

    let hits = ok(&[&["search", "red light port side", "--as", "alice"][..], &v].concat());
    assert!(
        hits.contains("module sailing (lights.md › Lights)") && hits.contains("port side"),
        "{hits}"
    );
    let id = hits.split_whitespace().nth(1).expect("an id").to_owned();
    let none = ok(&[&["search", "red light port side", "--as", "bob"][..], &v].concat());
    assert!(!none.contains("port side"), "not mounted for bob: {none}");
    let e = refused(&[&["delete", &id, "--as", "alice"][..], &v].concat());
    assert!(e.contains("read-only") && e.contains("sailing"), "{e}");
    let e = refused(
        &[
            &["modules", "install", s(&m1), "--global", "--as", "alice"][..],
            &v,
        ]
        .concat(),
    );
    assert!(e.contains("not allowed"), "{e}");

    std::fs::write(
        docs.join("lights.md"),
        "# Lights\n\nThe red navigation light is on the port side; port wine is red.\n",
    )
    .expect("write");
    // 1.1.0 ships a KV block of each memory for SmolLM2.
    let model = memkern_models::fetch::ModelCache::from_env()
        .and_then(|c| c.ensure(&memkern_models::fetch::SMOLLM2_135M_Q4_1))
        .expect("SmolLM2 fetched");
    let gguf = model.gguf().expect("gguf").to_path_buf();
    let m2 = dir.join("sailing-2.mkmod");
    let out = build(
        &["--from-dir", s(&docs), "--kv-model", s(&gguf)],
        &key,
        "1.1.0",
        &m2,
    );
    assert!(out.contains("2 memories, 2 KV blocks"), "{out}");
    let again = ok(&[&["modules", "install", s(&m1), "--for", "alice"][..], &v].concat());
    assert!(again.contains("already installed"), "{again}");
    let out = ok(&[&["modules", "install", s(&m2), "--for", "bob"][..], &v].concat());
    assert!(out.contains("updated from 1.0.0 to sailing 1.1.0"), "{out}");
    assert!(
        out.contains("2 KV blocks (") && out.contains("no model loaded here"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(vault.join("blobs"))
            .expect("blobs")
            .count(),
        2
    );
    let e = refused(&[&["modules", "install", s(&m1), "--for", "bob"][..], &v].concat());
    assert!(e.contains("older"), "{e}");
    for user in ["alice", "bob"] {
        let hits = ok(&[&["search", "red light port", "--as", user][..], &v].concat());
        assert!(hits.contains("port wine"), "{user}: {hits}");
        assert!(
            !hits.contains("all-round"),
            "{user}: the old version is gone: {hits}"
        );
    }
    let list = ok(&[&["modules", "list", "--json"][..], &v].concat());
    let list: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    assert_eq!(list[0]["manifest"]["version"], "1.1.0");
    assert_eq!(list[0]["memories"], 2);
    // A publisher's curated cube becomes a module through its pack.
    ok(&[
        &["add", "--user", "bob", "--cube", "default", "--tag", "club"][..],
        &["The club's boathouse opens at nine."],
        &v,
    ]
    .concat());
    let pack_file = dir.join("club.pack");
    ok(&[&["export", "--user", "bob", "--out", s(&pack_file)][..], &v].concat());
    let club = dir.join("club.mkmod");
    let out = ok(&[
        "modules",
        "build",
        "--from-pack",
        s(&pack_file),
        "--id",
        "club",
        "--module-version",
        "1.0.0",
        "--licence",
        "CC0-1.0",
        "--key",
        s(&key),
        "--out",
        s(&club),
        "--no-vectors",
    ]);
    assert!(out.contains("built club 1.0.0: 1 memories"), "{out}");
    let body = memkern_runtime::modules::decode_module(&std::fs::read(&club).expect("club"))
        .expect("decode");
    assert_eq!(body.memories.len(), 1);

    let out = ok(&[&["modules", "remove", "sailing"][..], &v].concat());
    assert!(out.contains("removed sailing 1.1.0 (2 memories)"), "{out}");
    assert!(ok(&[&["modules", "list"][..], &v].concat()).contains("no modules installed"));
    let db = std::fs::read(vault.join("vault.redb")).expect("db");
    assert!(!db.windows(9).any(|w| w == b"port wine"), "no residue");
    assert_eq!(
        std::fs::read_dir(vault.join("blobs"))
            .expect("blobs")
            .count(),
        0,
        "the KV blocks' blobs went with the module"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a killed install left: the installed version, its memory count,
/// and whether the administrator's search finds text of version 1
/// ("alpha") and of version 2 ("omega").
fn state(vault: &Path) -> (Option<String>, u64, bool, bool) {
    let (rt, _) =
        Runtime::open(vault, Config::default(), None).expect("the vault opens after a kill");
    let admin = rt.admin();
    let modules = rt.modules(&admin).expect("list");
    assert!(modules.len() <= 1);
    let seen = |probe: &str| {
        rt.search(&admin, &SearchRequest::new(format!("fact {probe} buoy"), 5))
            .expect("search")
            .iter()
            .any(|h| h.memory.text.contains(probe))
    };
    let m = modules.first();
    (
        m.map(|m| m.manifest.version.clone()),
        m.map_or(0, |m| m.memories),
        seen("alpha"),
        seen("omega"),
    )
}

#[test]
fn sigkill_during_install_and_update_leaves_the_module_whole_or_absent() {
    let dir = temp_dir("kill");
    let vault = dir.join("vault");
    let key = dir.join("publisher.key");
    let public = ok(&["keys", "new", s(&key)]);
    let public = public.trim().trim_start_matches("public key: ").to_owned();
    let list = |tag: &str| {
        let texts: Vec<String> = (0..4000)
            .map(|i| format!("Fact {i} of {tag}: buoy {i} marks shoal number {}.", i * 7))
            .collect();
        serde_json::to_vec(&texts).expect("JSON")
    };
    let (j1, j2) = (dir.join("v1.json"), dir.join("v2.json"));
    std::fs::write(&j1, list("alpha")).expect("write");
    std::fs::write(&j2, list("omega")).expect("write");
    let (m1, m2) = (dir.join("m1.mkmod"), dir.join("m2.mkmod"));
    build(&["--from-json", s(&j1)], &key, "1.0.0", &m1);
    build(&["--from-json", s(&j2)], &key, "2.0.0", &m2);
    let v = ["--data-dir", s(&vault), "--no-embed"];
    ok(&[&["modules", "trust", &public][..], &v].concat());

    let mut kills = 0;
    let mut outcomes = (0, 0);
    for (file, want) in [(&m1, "1.0.0"), (&m2, "2.0.0")] {
        for round in 0..12u64 {
            let mut child =
                memkern(&[&["modules", "install", s(file), "--global"][..], &v].concat())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn");
            std::thread::sleep(Duration::from_millis(20 + round * 40));
            if child.try_wait().expect("wait").is_none() {
                child.kill().expect("SIGKILL");
                kills += 1;
            }
            let _ = child.wait();
            let now = state(&vault);
            match (now.0.as_deref(), want) {
                (None, "1.0.0") => {
                    assert!(!now.2 && !now.3, "nothing half-installed: {now:?}");
                    outcomes.0 += 1;
                }
                (Some("1.0.0"), "2.0.0") => {
                    assert_eq!((now.1, now.2, now.3), (4000, true, false), "old one whole");
                    outcomes.0 += 1;
                }
                (Some("1.0.0"), "1.0.0") => {
                    assert_eq!((now.1, now.2, now.3), (4000, true, false), "whole");
                    outcomes.1 += 1;
                    break;
                }
                (Some("2.0.0"), "2.0.0") => {
                    assert_eq!(
                        (now.1, now.2, now.3),
                        (4000, false, true),
                        "whole, old gone"
                    );
                    outcomes.1 += 1;
                    break;
                }
                other => panic!("after a kill: {other:?} ({now:?})"),
            }
        }
        assert_eq!(
            state(&vault).0.as_deref(),
            Some(want),
            "installed in the end"
        );
    }
    eprintln!(
        "{kills} kills; {} interrupted, {} completed",
        outcomes.0, outcomes.1
    );
    assert!(
        kills > 0,
        "no install was interrupted: the test proved nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A static file server on 127.0.0.1 (a real HTTP/1.1 server, one
/// connection at a time): serves `dir` until the test ends.
fn serve_dir(dir: PathBuf) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                    break;
                }
            }
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let mut out = stream;
            let _ = match std::fs::read(dir.join(path)) {
                Ok(body) => out
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| out.write_all(&body)),
                Err(_) => out.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    format!("http://{addr}")
}

#[test]
fn modules_are_found_installed_and_updated_from_a_signed_index_over_http() {
    let dir = temp_dir("index");
    let vault = dir.join("vault");
    let site = dir.join("site");
    std::fs::create_dir_all(&site).expect("site");
    let v = ["--data-dir", s(&vault), "--no-embed"];
    let key = dir.join("publisher.key");
    let public = ok(&["keys", "new", s(&key)]);
    let public = public.trim().trim_start_matches("public key: ").to_owned();
    let j = dir.join("texts.json");
    std::fs::write(
        &j,
        br#"["A bowline makes a fixed loop.", "Reef early when the wind rises."]"#,
    )
    .expect("write");
    let (m1, m2) = (
        site.join("sailing-1.0.0.mkmod"),
        site.join("sailing-1.1.0.mkmod"),
    );
    build(&["--from-json", s(&j)], &key, "1.0.0", &m1);
    std::fs::write(
        &j,
        br#"["A bowline makes a fixed loop that does not slip.", "Reef early."]"#,
    )
    .expect("write");
    build(&["--from-json", s(&j)], &key, "1.1.0", &m2);
    let index = site.join("index.json");
    ok(&[
        "modules",
        "index",
        s(&m1),
        "--key",
        s(&key),
        "--out",
        s(&index),
    ]);
    let url = format!("{}/index.json", serve_dir(site.clone()));

    ok(&[&["user", "add", "alice"][..], &v].concat());
    let e = refused(&[&["modules", "search", "--index", &url][..], &v].concat());
    assert!(e.contains("does not trust"), "{e}");
    ok(&[&["modules", "trust", &public][..], &v].concat());
    let found = ok(&[&["modules", "search", "sail", "--index", &url][..], &v].concat());
    assert!(found.contains("sailing 1.0.0"), "{found}");
    let e = refused(&[&["modules", "install", "sailing", "--for", "alice"][..], &v].concat());
    assert!(e.contains("--index"), "no index configured: {e}");
    let out = ok(&[
        &[
            "modules", "install", "sailing", "--index", &url, "--for", "alice",
        ][..],
        &v,
    ]
    .concat());
    assert!(
        out.contains("installed sailing 1.0.0 (2 memories)"),
        "{out}"
    );
    let hits = ok(&[&["search", "bowline loop", "--as", "alice"][..], &v].concat());
    assert!(hits.contains("module sailing"), "{hits}");
    // Straight from a URL (no index): the signature still decides.
    let direct = url.replace("index.json", "sailing-1.0.0.mkmod");
    let again = ok(&[&["modules", "install", &direct, "--for", "alice"][..], &v].concat());
    assert!(again.contains("already installed"), "{again}");
    let missing = url.replace("index.json", "nothing.mkmod");
    let e = refused(&[&["modules", "install", &missing, "--for", "alice"][..], &v].concat());
    assert!(e.contains("cannot fetch"), "{e}");
    let same = ok(&[&["modules", "update", "--index", &url][..], &v].concat());
    assert!(same.contains("up to date"), "{same}");

    // The publisher releases 1.1.0; the device updates from the index.
    ok(&[
        "modules",
        "index",
        s(&m1),
        s(&m2),
        "--key",
        s(&key),
        "--out",
        s(&index),
    ]);
    let out = ok(&[&["modules", "update", "sailing", "--index", &url][..], &v].concat());
    assert!(out.contains("updated sailing from 1.0.0 to 1.1.0"), "{out}");
    let hits = ok(&[&["search", "bowline loop", "--as", "alice"][..], &v].concat());
    assert!(hits.contains("does not slip"), "{hits}");

    // A changed index, and a file that is not what the index promised.
    let json = std::fs::read_to_string(&index).expect("index");
    std::fs::write(&index, json.replacen("\"sailing\"", "\"sailinG\"", 1)).expect("changed");
    let e = refused(&[&["modules", "search", "--index", &url][..], &v].concat());
    assert!(e.contains("signature does not verify"), "{e}");
    ok(&[
        "modules",
        "index",
        s(&m1),
        s(&m2),
        "--key",
        s(&key),
        "--out",
        s(&index),
    ]);
    std::fs::copy(&m1, &m2).expect("swap the file");
    ok(&[&["modules", "remove", "sailing"][..], &v].concat());
    let e = refused(
        &[
            &[
                "modules", "install", "sailing", "--index", &url, "--for", "alice",
            ][..],
            &v,
        ]
        .concat(),
    );
    assert!(e.contains("does not match the index"), "{e}");
    assert!(ok(&[&["modules", "list"][..], &v].concat()).contains("no modules installed"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn memkerns_own_manual_is_a_module_that_answers_how_to_share_a_cube() {
    let dir = temp_dir("manual");
    let vault = dir.join("vault");
    let v = ["--data-dir", s(&vault), "--no-embed"];
    let key = dir.join("publisher.key");
    let public = ok(&["keys", "new", s(&key)]);
    let public = public.trim().trim_start_matches("public key: ").to_owned();
    let manual = dir.join("manual.mkmod");
    let out = ok(&[
        "modules",
        "manual",
        "--key",
        s(&key),
        "--out",
        s(&manual),
        "--no-vectors",
    ]);
    assert!(out.contains("built memkern-manual"), "{out}");
    ok(&[&["modules", "trust", &public][..], &v].concat());
    ok(&[&["user", "add", "bob"][..], &v].concat());
    ok(&[&["modules", "install", s(&manual), "--global"][..], &v].concat());
    let hits = ok(&[
        &[
            "search",
            "how do I share a cube with bob",
            "-k",
            "3",
            "--as",
            "bob",
        ][..],
        &v,
    ]
    .concat());
    assert!(hits.contains("module memkern-manual"), "{hits}");
    assert!(
        hits.contains("cube share"),
        "the answer is in the top 3: {hits}"
    );
    let help = ok(&[
        &[
            "search",
            "modules seal recipient device",
            "-k",
            "5",
            "--as",
            "bob",
        ][..],
        &v,
    ]
    .concat());
    assert!(
        help.contains("--help"),
        "the --help texts are in it: {help}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
