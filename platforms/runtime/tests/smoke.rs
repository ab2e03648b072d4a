//! End-to-end smoke test with the real LLM, small enough for emulation
//! (it is the test `scripts/aarch64.sh` runs under qemu-aarch64, besides
//! the vault and crash tests): add memories, restart, search, then one
//! short chat whose second ask restores the KV block saved by the first.
//! Keyword retrieval only (no embedder), so it builds without tract.

use std::sync::Arc;

use memkern_core::governance::Principal;
use memkern_runtime::{AddRequest, Assistant, ChatRequest, Config, Runtime, SearchRequest};

mod common;

#[test]
fn add_restart_search_and_chat_with_a_restored_snapshot() {
    let dir = common::temp_dir("smoke", "main");
    let mut config = Config::default();
    config.scheduler.promote_min_uses = 0.0;
    let (who, ns) = {
        let (rt, _) = Runtime::open(&dir, config.clone(), None).expect("vault");
        let (info, _) = rt.create_user(&rt.admin(), "dana").expect("user");
        let ns = rt.namespace_named(info.id, "default").expect("cube").id;
        let who = Principal::user(info.id);
        for text in [
            "My cat is called Pixel.",
            "I work as a nurse in Lisbon.",
            "My favourite food is grilled sardines.",
        ] {
            let req = AddRequest {
                namespace: ns,
                text: text.to_owned(),
                ..AddRequest::default()
            };
            rt.add(&who, &req).expect("add");
        }
        (who, ns)
    };

    // Restart: everything acknowledged is there and searchable.
    let (rt, _) = Runtime::open(&dir, config, None).expect("vault reopens");
    let hits = rt
        .search(
            &who,
            &SearchRequest {
                query: "what is my cat called".into(),
                namespaces: Some(vec![ns]),
                since: None,
                until: None,
                tags: Vec::new(),
                k: 3,
            },
        )
        .expect("search");
    assert_eq!(hits[0].memory.text, "My cat is called Pixel.", "{hits:?}");

    let rt = Arc::new(rt);
    let assistant = Assistant::new(rt.clone(), common::llm()).expect("assistant");
    let ask = || {
        let mut req = ChatRequest::new("What is my cat called?");
        req.remember = false;
        req.max_tokens = 12;
        assistant.chat(&who, &req).expect("chat")
    };
    let cold = ask();
    eprintln!(
        "cold: {:?} ({} ms to first token)",
        cold.answer, cold.ttft_ms
    );
    assert_eq!(cold.restored_tokens, 0);
    assert_eq!(
        cold.promoted, 1,
        "the memory prefix was saved as a KV block"
    );
    let warm = ask();
    eprintln!(
        "warm: {:?} ({} ms to first token)",
        warm.answer, warm.ttft_ms
    );
    assert!(warm.restored_tokens > 0, "the block was restored");
    assert_eq!(warm.answer, cold.answer, "restored = cold prefill");
    assert!(cold.answer.contains("Pixel"), "{}", cold.answer);
    drop(assistant);
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}
