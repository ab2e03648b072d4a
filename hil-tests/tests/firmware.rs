//! The firmware in QEMU: protocol, persistence, governance, bad input,
//! crash reporting and RAM budget.

use std::time::Duration;

use memkern_core::governance::DenyReason;
use memkern_core::ids::{CubeId, Fingerprint, UserId};
use memkern_core::protocol::{MAX_TEXT, Query, Refusal, Request, Response, Vector};
use memkern_core::time::Timestamp;
use memkern_hil::{Board, Session, qemu_or_skip};

const ALICE: UserId = UserId(1);
const BOB: UserId = UserId(2);
const NOW: Timestamp = Timestamp(1_750_000_000_000);
const EMBEDDER: Fingerprint = Fingerprint([7; 16]);

fn add(s: &mut Session, user: UserId, text: &str, public: bool) -> CubeId {
    let reply = s
        .call(&Request::Add {
            user,
            text,
            public,
            at: NOW,
            vector: None,
        })
        .unwrap();
    match reply.response().unwrap() {
        Response::Added { id } => id,
        other => panic!("add {text:?}: {other:?}"),
    }
}

fn query(user: UserId, text: &str, k: u8) -> Query<'_> {
    Query {
        user,
        text,
        vector: None,
        k,
        now: NOW,
    }
}

/// Texts of a search's hits, best first.
fn search(s: &mut Session, user: UserId, text: &str, k: u8) -> Vec<String> {
    let reply = s.call(&Request::Search(query(user, text, k))).unwrap();
    match reply.response().unwrap() {
        Response::Hits { hits, .. } => hits.iter().map(|h| h.text.to_string()).collect(),
        other => panic!("search {text:?}: {other:?}"),
    }
}

fn refusal(s: &mut Session, req: &Request<'_>) -> Refusal {
    match s.call(req).unwrap().response().unwrap() {
        Response::Refused(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A blank board of `flash` bytes, booted; `None` when QEMU is missing
/// (the test skips).
fn fresh(flash: usize) -> Option<(Board, Session)> {
    if !qemu_or_skip() {
        return None;
    }
    let board = Board::new(flash).unwrap();
    let session = board.boot(&[]).unwrap();
    Some((board, session))
}

fn finish_ok(s: Session) {
    let exit = s.finish(Duration::from_secs(20)).unwrap();
    assert!(
        exit.status.success(),
        "firmware exit {:?}: {}",
        exit.status,
        exit.stderr
    );
}

const FACTS: [&str; 6] = [
    "My dog is called Biscuit and he loves the beach",
    "I am allergic to peanuts",
    "My sister Ana lives in Lisbon",
    "I work as a nurse at the city hospital",
    "My favourite band is Radiohead",
    "The wifi password at home is on the fridge",
];

#[test]
fn memories_survive_reboot_and_are_found() {
    let Some((board, mut s)) = fresh(64 * 1024) else {
        return;
    };
    let ids: Vec<CubeId> = FACTS.iter().map(|f| add(&mut s, ALICE, f, false)).collect();
    assert_eq!(
        search(&mut s, ALICE, "what is my dog called?", 3)[0],
        FACTS[0]
    );
    finish_ok(s);

    // Power off and on: everything acknowledged is still there.
    let mut s = board.boot(&[]).unwrap();
    assert_eq!(search(&mut s, ALICE, "peanuts allergy", 3)[0], FACTS[1]);
    assert_eq!(
        search(&mut s, ALICE, "Where does my sister live?", 2)[0],
        FACTS[2]
    );
    for (id, fact) in ids.iter().zip(FACTS) {
        match s
            .call(&Request::Get {
                user: ALICE,
                id: *id,
                now: NOW,
            })
            .unwrap()
            .response()
            .unwrap()
        {
            Response::Memory(hit) => assert_eq!(hit.text, fact),
            other => panic!("get {fact:?}: {other:?}"),
        }
    }
    match s.call(&Request::Stats).unwrap().response().unwrap() {
        Response::Stats(st) => {
            assert_eq!(st.memories, FACTS.len() as u32);
            assert!(st.flash_used > 0 && st.flash_used < st.flash_capacity);
        }
        other => panic!("{other:?}"),
    }
    // Delete is durable too.
    let reply = s
        .call(&Request::Delete {
            user: ALICE,
            id: ids[1],
        })
        .unwrap();
    assert_eq!(reply.response().unwrap(), Response::Deleted);
    finish_ok(s);
    let mut s = board.boot(&[]).unwrap();
    assert!(
        !search(&mut s, ALICE, "peanuts", 8)
            .iter()
            .any(|t| t == FACTS[1])
    );
    let reply = s
        .call(&Request::Get {
            user: ALICE,
            id: ids[1],
            now: NOW,
        })
        .unwrap();
    assert_eq!(reply.response().unwrap(), Response::NotFound);
    finish_ok(s);
}

#[test]
fn vectors_from_the_host_rank_memories_without_shared_words() {
    let Some((_board, mut s)) = fresh(64 * 1024) else {
        return;
    };
    // Two memories with orthogonal-ish vectors; the query shares no word
    // with either, so only the vector can rank them.
    let mut a = [0u8; 384];
    let mut b = [0u8; 384];
    for i in 0..384 {
        a[i] = if i % 2 == 0 { 100 } else { 0 };
        b[i] = if i % 2 == 1 { 100 } else { 0 };
    }
    for (text, v) in [
        ("The cat sleeps on the sofa", &a),
        ("Rain is expected tomorrow", &b),
    ] {
        let reply = s
            .call(&Request::Add {
                user: ALICE,
                text,
                public: false,
                at: NOW,
                vector: Some(Vector {
                    embedder: EMBEDDER,
                    scale: 0.01,
                    values: v,
                }),
            })
            .unwrap();
        assert!(matches!(reply.response().unwrap(), Response::Added { .. }));
    }
    let q = Query {
        vector: Some(Vector {
            embedder: EMBEDDER,
            scale: 0.02,
            values: &b,
        }),
        ..query(ALICE, "weather forecast", 2)
    };
    match s.call(&Request::Search(q)).unwrap().response().unwrap() {
        Response::Hits { hits, scanned } => {
            assert_eq!(scanned, 2);
            assert_eq!(hits[0].text, "Rain is expected tomorrow");
        }
        other => panic!("{other:?}"),
    }
    // A vector of another dimension is refused, not silently compared.
    let short = [1u8; 16];
    let bad = Query {
        vector: Some(Vector {
            embedder: EMBEDDER,
            scale: 0.01,
            values: &short,
        }),
        ..query(ALICE, "weather", 2)
    };
    assert_eq!(
        refusal(&mut s, &Request::Search(bad)),
        Refusal::BadVector { dim: 16, max: 384 }
    );
    finish_ok(s);
}

#[test]
fn plan_fits_the_context_budget() {
    let Some((_board, mut s)) = fresh(64 * 1024) else {
        return;
    };
    for fact in FACTS {
        add(&mut s, ALICE, fact, false);
    }
    add(
        &mut s,
        ALICE,
        "My dog Biscuit is a beagle and my other dog is a poodle",
        false,
    );
    let plan = |s: &mut Session, budget: u32, items: u32| {
        let req = Request::Plan {
            query: query(ALICE, "tell me about my dog", 8),
            context_tokens: budget,
            max_items: items,
        };
        match s.call(&req).unwrap().response().unwrap() {
            Response::Plan { items, tokens, .. } => {
                let sum: u32 = items.iter().map(|h| h.tokens).sum();
                assert_eq!(sum, tokens);
                assert!(tokens <= budget, "{tokens} > {budget}");
                items.iter().map(|h| h.text.to_string()).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        }
    };
    let wide = plan(&mut s, 1000, 8);
    assert_eq!(wide.len(), 2, "{wide:?}");
    let one = plan(&mut s, 1000, 1);
    assert_eq!(one.len(), 1);
    // 14 tokens fit only the shorter dog memory.
    let tight = plan(&mut s, 14, 8);
    assert_eq!(tight, vec![FACTS[0].to_string()]);
    assert!(plan(&mut s, 3, 8).is_empty());
    finish_ok(s);
}

#[test]
fn governance_keeps_users_apart() {
    let Some((_board, mut s)) = fresh(64 * 1024) else {
        return;
    };
    let secret = add(&mut s, ALICE, "My bank PIN is 4321", false);
    let public = add(
        &mut s,
        ALICE,
        "Our shared PIN for the garage door is 9999",
        true,
    );
    add(&mut s, BOB, "Bob's gym PIN is 1111", false);

    let bob_sees = search(&mut s, BOB, "PIN", 8);
    assert!(bob_sees.iter().all(|t| !t.contains("bank")), "{bob_sees:?}");
    assert!(bob_sees.iter().any(|t| t.contains("garage")));
    assert!(bob_sees.iter().any(|t| t.contains("gym")));
    let alice_sees = search(&mut s, ALICE, "PIN", 8);
    assert!(
        alice_sees.iter().all(|t| !t.contains("gym")),
        "{alice_sees:?}"
    );

    let get = s
        .call(&Request::Get {
            user: BOB,
            id: secret,
            now: NOW,
        })
        .unwrap();
    assert_eq!(
        get.response().unwrap(),
        Response::Denied(DenyReason::NotGranted)
    );
    let del = s
        .call(&Request::Delete {
            user: BOB,
            id: public,
        })
        .unwrap();
    assert_eq!(
        del.response().unwrap(),
        Response::Denied(DenyReason::NotOwner)
    );
    // The plan obeys the same rules.
    let req = Request::Plan {
        query: query(BOB, "bank PIN", 8),
        context_tokens: 1000,
        max_items: 8,
    };
    match s.call(&req).unwrap().response().unwrap() {
        Response::Plan { items, .. } => {
            assert!(
                items.iter().all(|h| h.owner == BOB || h.id == public),
                "{items:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    finish_ok(s);
}

#[test]
fn bad_input_gets_a_clear_refusal_and_the_link_survives() {
    let Some((_board, mut s)) = fresh(64 * 1024) else {
        return;
    };
    // Garbage frame.
    s.send_raw(&[0x05, 0xff, 0xee, 0x13, 0x77, 0x00]).unwrap();
    assert_eq!(
        s.recv().unwrap().response().unwrap(),
        Response::Refused(Refusal::Malformed)
    );
    // A frame longer than the device's receive buffer.
    let mut long = vec![0x41u8; 5000];
    long.push(0);
    s.send_raw(&long).unwrap();
    assert_eq!(
        s.recv().unwrap().response().unwrap(),
        Response::Refused(Refusal::Malformed)
    );
    // Text limits.
    let too_long = "x".repeat(MAX_TEXT + 1);
    let add = |text| Request::Add {
        user: ALICE,
        text,
        public: false,
        at: NOW,
        vector: None,
    };
    assert_eq!(
        refusal(&mut s, &add(&too_long)),
        Refusal::TextTooLong {
            len: MAX_TEXT as u32 + 1,
            max: MAX_TEXT as u32
        }
    );
    assert_eq!(refusal(&mut s, &add("   ")), Refusal::EmptyText);
    assert_eq!(
        refusal(&mut s, &Request::Search(query(ALICE, "dog", 0))),
        Refusal::BadCount
    );
    assert_eq!(
        refusal(&mut s, &Request::Search(query(ALICE, "dog", 200))),
        Refusal::BadCount
    );
    let nan = [1u8; 8];
    let bad_vec = Request::Add {
        user: ALICE,
        text: "fine text",
        public: false,
        at: NOW,
        vector: Some(Vector {
            embedder: EMBEDDER,
            scale: f32::NAN,
            values: &nan,
        }),
    };
    assert!(matches!(
        refusal(&mut s, &bad_vec),
        Refusal::BadVector { .. }
    ));
    // Unknown id.
    let reply = s
        .call(&Request::Delete {
            user: ALICE,
            id: CubeId([9; 16]),
        })
        .unwrap();
    assert_eq!(reply.response().unwrap(), Response::NotFound);
    // Still fully working.
    let id = {
        let reply = s.call(&add("still alive")).unwrap();
        match reply.response().unwrap() {
            Response::Added { id } => id,
            other => panic!("{other:?}"),
        }
    };
    let reply = s
        .call(&Request::Get {
            user: ALICE,
            id,
            now: NOW,
        })
        .unwrap();
    assert!(matches!(reply.response().unwrap(), Response::Memory(h) if h.text == "still alive"));
    finish_ok(s);
}

#[test]
fn a_full_flash_refuses_and_keeps_what_it_has() {
    if !qemu_or_skip() {
        return;
    }
    // Two 4 KiB sectors: the smallest store; fills after a few memories.
    let board = Board::new(8 * 1024).unwrap();
    let mut s = board.boot(&[]).unwrap();
    let text = "a memory long enough to fill two small flash sectors quickly ".repeat(4);
    let mut kept = Vec::new();
    loop {
        let reply = s
            .call(&Request::Add {
                user: ALICE,
                text: &text,
                public: false,
                at: NOW,
                vector: None,
            })
            .unwrap();
        match reply.response().unwrap() {
            Response::Added { id } => kept.push(id),
            Response::Refused(Refusal::Full) => break,
            other => panic!("{other:?}"),
        }
        assert!(kept.len() < 100, "never full");
    }
    assert!(!kept.is_empty());
    for id in &kept {
        let reply = s
            .call(&Request::Get {
                user: ALICE,
                id: *id,
                now: NOW,
            })
            .unwrap();
        assert!(matches!(reply.response().unwrap(), Response::Memory(h) if h.text == text));
    }
    // Deleting makes room again.
    let reply = s
        .call(&Request::Delete {
            user: ALICE,
            id: kept[0],
        })
        .unwrap();
    assert_eq!(reply.response().unwrap(), Response::Deleted);
    let reply = s
        .call(&Request::Add {
            user: ALICE,
            text: &text,
            public: false,
            at: NOW,
            vector: None,
        })
        .unwrap();
    assert!(matches!(reply.response().unwrap(), Response::Added { .. }));
    finish_ok(s);
}

#[test]
fn panic_and_hardfault_exit_non_zero_with_a_message() {
    if !qemu_or_skip() {
        return;
    }
    let board = Board::new(8 * 1024).unwrap();
    for (arg, code, word) in [
        ("crash=panic", 101, "panic"),
        ("crash=hardfault", 102, "HardFault"),
    ] {
        let s = board.boot(&[arg]).unwrap();
        let exit = s.finish(Duration::from_secs(20)).unwrap();
        assert_eq!(exit.status.code(), Some(code), "{arg}: {}", exit.stderr);
        assert!(exit.stderr.contains(word), "{arg}: {}", exit.stderr);
    }
}

#[test]
fn ram_fits_the_64_kib_budget() {
    let Some((_board, mut s)) = fresh(64 * 1024) else {
        return;
    };
    for fact in FACTS {
        add(&mut s, ALICE, fact, false);
    }
    search(&mut s, ALICE, "dog beach peanuts sister nurse band", 8);
    let req = Request::Plan {
        query: query(ALICE, "dog", 8),
        context_tokens: 500,
        max_items: 8,
    };
    s.call(&req).unwrap();
    match s.call(&Request::Stats).unwrap().response().unwrap() {
        Response::Stats(st) => {
            eprintln!(
                "firmware RAM: {} B static + {} B peak stack of {} B",
                st.ram_static, st.stack_peak, st.ram_total
            );
            assert_eq!(st.ram_total, 64 * 1024);
            assert!(st.stack_peak > 0);
            // Leave a margin below the linked size: stack painting sees the
            // deepest use so far, not a proof of the worst case.
            assert!(
                st.ram_static + st.stack_peak + 4096 <= st.ram_total,
                "{} + {} too close to {}",
                st.ram_static,
                st.stack_peak,
                st.ram_total
            );
        }
        other => panic!("{other:?}"),
    }
    finish_ok(s);
}
