//! `chat` on the real models (all-MiniLM-L6-v2 for retrieval, SmolLM2 for
//! the answer): memories reach the answer, the second ask restores the KV
//! block saved after the first and answers the same, a near-duplicate is
//! merged, and deleting a memory deletes the snapshots derived from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memkern_core::governance::Principal;
use memkern_linux::runtime::chat::UsedAs;
use memkern_linux::runtime::{AddAction, AddRequest, Assistant, ChatRequest, Config, Runtime};

mod common;

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("chat", name)
}

use common::llm;

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn chat_uses_memories_restores_snapshots_and_forgets_on_delete() {
    let dir = temp_dir("main");
    let mut config = Config::default();
    config.scheduler.promote_min_uses = 0.0;
    let embedder = memkern_linux::embed::load_default().expect("MiniLM loads");
    let (rt, _) = Runtime::open(&dir, config, Some(embedder)).expect("vault");
    let (info, _) = rt.create_user(&rt.admin(), "caroline").expect("user");
    let ns = rt.namespace_named(info.id, "default").expect("cube").id;
    let who = Principal::user(info.id);
    let add = |text: &str| {
        rt.add(
            &who,
            &AddRequest {
                namespace: ns,
                text: text.to_owned(),
                ..AddRequest::default()
            },
        )
        .expect("add")
    };
    let cat = add("I adopted a grey cat and named her Pixel.");
    add("I work as a nurse at the hospital in Lisbon.");
    add("My favourite food is grilled sardines.");
    // A paraphrase becomes the memory's new version, not a second memory.
    let again = add("I adopted a gray cat and I named her Pixel.");
    eprintln!(
        "paraphrase: action={:?} similarity={:?}",
        again.action, again.similarity
    );
    assert!(
        again.action == AddAction::Updated && again.id == cat.id && again.version == 2,
        "{again:?}"
    );
    let unrelated = add("The cat next door is called Tiger.");
    assert!(
        unrelated.action == AddAction::Stored,
        "a different fact is kept: {unrelated:?}"
    );

    let rt = Arc::new(rt);
    let assistant = Assistant::new(rt.clone(), llm()).expect("assistant");
    // Not stored, so both asks see the same memories.
    let ask = || {
        let mut req = ChatRequest::new("What is the name of my cat?");
        req.remember = false;
        assistant.chat(&who, &req).expect("chat")
    };
    let cold = ask();
    eprintln!("cold: {cold:#?}");
    assert!(cold.answer.contains("Pixel"), "{}", cold.answer);
    assert!(
        cold.memories
            .iter()
            .any(|m| m.id == cat.id && m.used_as == UsedAs::Text)
    );
    assert_eq!(cold.restored_tokens, 0);
    assert_eq!(cold.promoted, 1, "the turn's memory prefix was saved");
    let warm = ask();
    eprintln!("warm: {warm:#?}");
    assert!(warm.restored_tokens > 0, "the block was restored");
    assert!(
        warm.memories
            .iter()
            .any(|m| m.id == cat.id && m.used_as == UsedAs::Snapshot)
    );
    assert_eq!(
        warm.answer, cold.answer,
        "restoring the f16 block answers as the cold prefill did"
    );
    assert!(warm.prompt_tokens == cold.prompt_tokens);
    let (blocks, bytes, _, _) = assistant.tiers();
    assert_eq!(blocks, 1);
    assert!(bytes > 0);
    let stats = rt.stats().expect("stats");
    assert_eq!(
        (stats.snapshots, stats.chat.snapshot_hits, stats.chat.turns),
        (1, 1, 2)
    );

    // Another user's chat never sees Caroline's memories or restores her
    // KV block, though the block is the only one stored.
    let (bob, _) = rt.create_user(&rt.admin(), "bob").expect("bob");
    let mut req = ChatRequest::new("What is the name of my cat?");
    req.remember = false;
    let theirs = assistant
        .chat(&Principal::user(bob.id), &req)
        .expect("bob's chat");
    assert!(theirs.memories.is_empty(), "{theirs:?}");
    assert_eq!(theirs.restored_tokens, 0);
    assert!(!theirs.answer.contains("Pixel"), "{}", theirs.answer);

    // Hard delete: the memory, its snapshot block and the block's blob.
    let report = rt.delete(&who, cat.id).expect("delete");
    assert_eq!(report.derived, 1);
    assert_eq!(files_under(&dir.join("blobs")), 0, "snapshot blob deleted");
    // Housekeeping forgets the deleted block (nothing else to do).
    assert_eq!(assistant.housekeeping().expect("housekeeping"), (0, 0));
    assert_eq!(assistant.tiers().0, 0, "no stale block left in the tiers");
    let after = assistant
        .chat(&who, &ChatRequest::new("What is the name of my cat?"))
        .expect("chat");
    assert!(after.memories.iter().all(|m| m.id != cat.id));
    // By default the user's turn is itself stored as a memory.
    let stored = after.stored.expect("the question was remembered");
    assert_eq!(
        rt.get(&who, stored).expect("stored turn").text,
        "What is the name of my cat?"
    );
    assert_eq!(after.restored_tokens, 0, "no stale block restored");
    drop(assistant);
    drop(rt);
    let db = std::fs::read(dir.join("vault.redb")).expect("db");
    assert!(!contains(&db, "Pixel"), "no residue of the deleted memory");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `POST /v1/chat` on a real server over loopback; 503 without a model.
#[test]
fn chat_over_http() {
    use memkern_linux::server::Server;
    let dir = temp_dir("http");
    let (rt, _) = Runtime::open(&dir, Config::default(), None).expect("vault");
    let admin = rt.admin();
    let (info, key) = rt.create_user(&admin, "erin").expect("user");
    let ns = rt.namespace_named(info.id, "default").expect("cube").id;
    rt.add(
        &Principal::user(info.id),
        &AddRequest {
            namespace: ns,
            text: "My sister Dana lives in Porto.".to_owned(),
            ..AddRequest::default()
        },
    )
    .expect("add");
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
    assert!(v["stored"].is_string(), "the turn was remembered: {v}");
    let (status, text) = post(server.addr(), r#"{"message": "hi", "max_tokens": 0}"#);
    assert_eq!(status, 400, "{text}");
    server.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
