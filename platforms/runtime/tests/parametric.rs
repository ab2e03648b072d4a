//! Parametric memory in the runtime with the real SmolLM2 (keyword search,
//! redb on disk): distil a user's facts into an adapter, answer closed-book
//! with it, resume an interrupted run, keep users apart, and let deletion
//! win — deleting a covered memory drops the adapter at once and the
//! re-distilled one no longer answers the fact.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};

use memkern_core::governance::Principal;
use memkern_core::lifecycle::LifecycleState;
use memkern_models::lora::{Adapter, chat_prompt};
use memkern_models::{Llm, Sampler, Session};
use memkern_runtime::{
    AddRequest, Assistant, ChatRequest, Config, DistillRequest, MemoryId, Runtime, RuntimeError,
};

mod common;

fn llm() -> &'static Llm {
    static LLM: OnceLock<Llm> = OnceLock::new();
    LLM.get_or_init(common::llm)
}

/// Small, fast settings: a few facts learnt in a few dozen steps.
fn config() -> Config {
    let mut c = Config::default();
    c.parametric.steps = 16;
    c.parametric.batch = 4;
    c.parametric.rank = 8;
    c.parametric.learning_rate = 5e-3;
    // The anchor term stays on (it is what users run), one anchor a step.
    c.parametric.anchors_per_step = 1;
    c
}

/// Greedy closed-book answer (no memories in the prompt).
fn closed_book(adapter: Option<&Adapter>, question: &str) -> String {
    let llm = llm();
    let mut s = match adapter {
        Some(a) => Session::with_adapter(llm, a).expect("adapter fits"),
        None => llm.session(),
    };
    s.prefill(&chat_prompt(llm.tokenizer(), question).expect("prompt"))
        .expect("prefill");
    let g = s
        .generate_with(Sampler::greedy(), 16, |_| true)
        .expect("generate");
    g.text.trim().to_owned()
}

fn add(rt: &Runtime, who: &Principal, ns: memkern_core::ids::NamespaceId, text: &str) -> MemoryId {
    rt.add(
        who,
        &AddRequest {
            namespace: ns,
            text: text.to_owned(),
            ..AddRequest::default()
        },
    )
    .expect("add")
    .id
}

#[test]
fn distil_answer_closed_book_and_let_deletion_win() {
    let dir = common::temp_dir("parametric", "main");
    let (rt, _) = Runtime::open(&dir, config(), None).expect("vault");
    let (ana, _) = rt.create_user(&rt.admin(), "ana").expect("user");
    let (ben, _) = rt.create_user(&rt.admin(), "ben").expect("user");
    let who = Principal::user(ana.id);
    let ben_p = Principal::user(ben.id);
    let ns = rt.namespace_named(ana.id, "default").expect("cube").id;
    let dog = add(&rt, &who, ns, "My dog is called Biscuit.");
    let city = add(&rt, &who, ns, "I live in Lisbon.");
    let allergy = add(&rt, &who, ns, "I'm allergic to peanuts.");

    let base = closed_book(None, "What is my dog called?");
    eprintln!("base model: {base:?}");
    assert!(
        !base.contains("Biscuit"),
        "the base model cannot know it: {base}"
    );

    // Ben may neither distil nor see Ana's adapter.
    assert!(matches!(
        rt.distill(&ben_p, ana.id, llm(), &DistillRequest::default(), |_| {}),
        Err(RuntimeError::NotFound { .. })
    ));
    // Ben has no memories: nothing to distil, a clear error.
    let err = rt
        .distill(&ben_p, ben.id, llm(), &DistillRequest::default(), |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("no memory is eligible"), "{err}");

    // An interrupted run resumes from its checkpoint (step 10).
    let interrupted = catch_unwind(AssertUnwindSafe(|| {
        rt.distill(&who, ana.id, llm(), &DistillRequest::default(), |p| {
            assert!(p.step < 11, "power cut at step 11");
        })
    }));
    assert!(interrupted.is_err());
    let mut losses = Vec::new();
    let report = rt
        .distill(
            &who,
            ana.id,
            llm(),
            &DistillRequest {
                resume: true,
                ..DistillRequest::default()
            },
            |p| losses.push(p.loss),
        )
        .expect("distill");
    eprintln!("{report:#?}");
    assert!(report.resumed);
    assert_eq!(report.steps_run, 6, "10 steps were checkpointed");
    assert_eq!(report.memories.len(), 3);
    assert!(report.loss_last < 0.3, "{losses:?}");

    // The adapter answers closed-book; the memories are Merged.
    let (_, adapter) = rt
        .user_adapter(ana.id, llm())
        .expect("read")
        .expect("live adapter");
    let answer = closed_book(Some(&adapter), "What is my dog called?");
    eprintln!("with adapter: {answer:?}");
    assert!(answer.contains("Biscuit"), "{answer}");
    for m in [dog, city, allergy] {
        assert_eq!(
            rt.get(&who, m).expect("get").lifecycle,
            LifecycleState::Merged
        );
    }
    let info = rt
        .adapter_info(&who, ana.id)
        .expect("info")
        .expect("adapter");
    assert_eq!(info.covers.len(), 3);
    assert!(info.cube.is_some() && info.stale.is_none() && info.bytes > 0);
    assert!(matches!(
        rt.adapter_info(&ben_p, ana.id),
        Err(RuntimeError::NotFound { .. })
    ));

    // chat applies Ana's adapter, never Ben's turn.
    let rt = Arc::new(rt);
    let assistant = Assistant::new(rt.clone(), common::llm()).expect("assistant");
    let mut req = ChatRequest::new("What is my dog called?");
    req.remember = false;
    let r = assistant.chat(&who, &req).expect("chat");
    assert_eq!(r.adapter, info.cube);
    let r = assistant.chat(&ben_p, &req).expect("chat");
    assert_eq!(r.adapter, None);
    assert!(!r.answer.contains("Biscuit"), "{}", r.answer);

    // Deletion wins: the adapter is dropped in the same commit, its blob
    // is gone, the other memories are Activated again.
    let blobs = dir.join("blobs");
    let blob_count = || std::fs::read_dir(&blobs).map_or(0, |d| d.flatten().count());
    let before = blob_count();
    rt.delete(&who, dog).expect("delete");
    assert_eq!(blob_count(), before - 1, "the adapter blob is removed");
    assert!(rt.user_adapter(ana.id, llm()).expect("read").is_none());
    let info = rt.adapter_info(&who, ana.id).expect("info").expect("row");
    assert!(info.cube.is_none() && info.stale.is_some(), "{info:?}");
    assert_eq!(
        rt.get(&who, city).expect("get").lifecycle,
        LifecycleState::Activated
    );
    let r = assistant.chat(&who, &req).expect("chat");
    assert_eq!(r.adapter, None, "a dropped adapter is never applied");

    // Re-distil (a few steps: it is the deleted fact's absence that is
    // checked): the fact is no longer answered closed-book.
    let report = rt
        .distill(
            &who,
            ana.id,
            llm(),
            &DistillRequest {
                steps: Some(4),
                ..DistillRequest::default()
            },
            |_| {},
        )
        .expect("re-distill");
    assert_eq!(report.memories.len(), 2);
    assert!(!report.resumed);
    let (_, adapter) = rt
        .user_adapter(ana.id, llm())
        .expect("read")
        .expect("adapter");
    let answer = closed_book(Some(&adapter), "What is my dog called?");
    eprintln!("after delete + re-distil: {answer:?}");
    assert!(!answer.contains("Biscuit"), "{answer}");

    // Changing a covered memory drops the adapter too (it knows the old
    // text); the new version is Activated, not Merged.
    let updated = rt.update(&who, city, "I live in Porto.").expect("update");
    assert_eq!(updated.lifecycle, LifecycleState::Activated);
    let info = rt.adapter_info(&who, ana.id).expect("info").expect("row");
    assert!(info.cube.is_none(), "{info:?}");
    assert!(info.stale.as_deref().is_some_and(|s| s.contains("changed")));
}

#[test]
fn a_damaged_adapter_blob_is_refused_and_chat_goes_on() {
    let dir = common::temp_dir("parametric", "damaged");
    let mut c = config();
    c.parametric.steps = 2;
    let (rt, _) = Runtime::open(&dir, c, None).expect("vault");
    let (eve, _) = rt.create_user(&rt.admin(), "eve").expect("user");
    let who = Principal::user(eve.id);
    let ns = rt.namespace_named(eve.id, "default").expect("cube").id;
    add(&rt, &who, ns, "My cat is called Pixel.");
    rt.distill(&who, eve.id, llm(), &DistillRequest::default(), |_| {})
        .expect("distill");
    assert!(rt.user_adapter(eve.id, llm()).expect("read").is_some());
    // Flip a byte of the blob on disk.
    let blob = std::fs::read_dir(dir.join("blobs"))
        .expect("blobs")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("one blob");
    let mut bytes = std::fs::read(&blob).expect("read");
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&blob, bytes).expect("write");
    let err = rt.user_adapter(eve.id, llm()).unwrap_err();
    eprintln!("damaged: {err}");
    // Bad requests: zero steps, an unknown cube of the user.
    let zero = DistillRequest {
        steps: Some(0),
        ..DistillRequest::default()
    };
    assert!(matches!(
        rt.distill(&who, eve.id, llm(), &zero, |_| {}),
        Err(RuntimeError::Invalid(_))
    ));
    let rt = Arc::new(rt);
    let assistant = Assistant::new(rt, common::llm()).expect("assistant");
    let mut req = ChatRequest::new("What is my cat called?");
    req.remember = false;
    let r = assistant
        .chat(&who, &req)
        .expect("chat answers without the adapter");
    assert_eq!(r.adapter, None);
}
