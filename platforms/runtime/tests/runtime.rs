//! The runtime API end to end on a real redb vault (keyword search; the
//! embedder's part is in `runtime_embed.rs`): users and keys, sharing,
//! versions, dedup, redaction, expiry, hard delete without residue, the
//! audit log, and user B's attempts on user A's memories (0 leaks).

use std::path::{Path, PathBuf};

use memkern_core::governance::{DenyReason, Principal};
use memkern_core::ids::NamespaceId;
use memkern_core::time::Timestamp;
use memkern_runtime::{
    AddRequest, Config, MemoryId, Runtime, RuntimeError, SearchRequest, ShareAccess, now,
};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memkern-rt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn open(dir: &Path) -> Runtime {
    Runtime::open(dir, Config::default(), None)
        .expect("vault opens")
        .0
}

struct Two {
    rt: Runtime,
    a: Principal,
    b: Principal,
    a_ns: NamespaceId,
    b_ns: NamespaceId,
}

fn two_users(dir: &Path) -> Two {
    let rt = open(dir);
    let admin = rt.admin();
    let (ua, ka) = rt.create_user(&admin, "alice").expect("alice");
    let (ub, kb) = rt.create_user(&admin, "bob").expect("bob");
    let a = rt.authenticate(&ka.0).expect("alice's key");
    let b = rt.authenticate(&kb.0).expect("bob's key");
    assert_eq!((a.user, b.user), (ua.id, ub.id));
    let a_ns = rt
        .namespace_named(ua.id, "default")
        .expect("alice's cube")
        .id;
    let b_ns = rt.namespace_named(ub.id, "default").expect("bob's cube").id;
    Two {
        rt,
        a,
        b,
        a_ns,
        b_ns,
    }
}

fn add(rt: &Runtime, who: &Principal, ns: NamespaceId, text: &str) -> MemoryId {
    let req = AddRequest {
        namespace: ns,
        text: text.to_owned(),
        ..AddRequest::default()
    };
    let out = rt.add(who, &req).expect("add");
    assert!(!out.duplicate, "{text} was not new");
    out.id
}

fn texts(rt: &Runtime, who: &Principal, q: &str) -> Vec<String> {
    rt.search(who, &SearchRequest::new(q, 10))
        .expect("search")
        .into_iter()
        .map(|h| h.memory.text)
        .collect()
}

fn is_not_found<T: std::fmt::Debug>(r: Result<T, RuntimeError>) -> bool {
    matches!(r, Err(RuntimeError::NotFound { .. }))
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.extend(std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn keys_authenticate_and_rotate() {
    let dir = temp_dir("keys");
    let rt = open(&dir);
    let admin = rt.admin();
    let (_, key) = rt.create_user(&admin, "carol").expect("carol");
    assert!(rt.authenticate(&key.0).is_ok());
    assert!(matches!(
        rt.authenticate("mk_nope"),
        Err(RuntimeError::BadKey)
    ));
    assert!(matches!(
        rt.create_user(&admin, "carol"),
        Err(RuntimeError::Exists(_))
    ));
    assert!(matches!(
        rt.create_user(&admin, "bad name"),
        Err(RuntimeError::Invalid(_))
    ));
    let carol = rt.authenticate(&key.0).expect("key");
    assert!(matches!(
        rt.create_user(&carol, "mallory"),
        Err(RuntimeError::Denied(DenyReason::NotOwner))
    ));
    let new = rt.rotate_key(&admin, "carol").expect("rotate");
    assert!(matches!(rt.authenticate(&key.0), Err(RuntimeError::BadKey)));
    assert_eq!(rt.authenticate(&new.0).expect("new key").user, carol.user);
    drop(rt);
    // Keys and users survive a restart; the key itself is not on disk.
    let rt = open(&dir);
    assert_eq!(
        rt.authenticate(&new.0).expect("after restart").user,
        carol.user
    );
    assert!(!contains(&all_bytes(&dir), &new.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn add_search_update_history_rollback_survive_restart() {
    let dir = temp_dir("crud");
    let t = two_users(&dir);
    let id = add(&t.rt, &t.a, t.a_ns, "My dog is called Biscuit.");
    add(&t.rt, &t.a, t.a_ns, "I painted a sunrise last week.");
    assert_eq!(
        texts(&t.rt, &t.a, "what is my dog called?")[0],
        "My dog is called Biscuit."
    );
    let v2 =
        t.rt.update(&t.a, id, "My dog is called Pretzel now.")
            .expect("update");
    assert_eq!(v2.version, 2);
    assert_eq!(
        texts(&t.rt, &t.a, "dog")[0],
        "My dog is called Pretzel now."
    );
    assert!(
        texts(&t.rt, &t.a, "Biscuit").is_empty(),
        "old version not searchable"
    );
    let back = t.rt.rollback(&t.a, id, 1).expect("rollback");
    assert_eq!(
        (back.version, back.text.as_str()),
        (3, "My dog is called Biscuit.")
    );
    assert!(matches!(
        t.rt.rollback(&t.a, id, 7),
        Err(RuntimeError::Invalid(_))
    ));
    drop(t);
    let rt = open(&dir);
    let alice = rt.user("alice").expect("alice").id;
    let a = Principal::user(alice);
    let history = rt.history(&a, id).expect("history");
    let versions: Vec<_> = history
        .iter()
        .map(|v| (v.version, v.text.as_str()))
        .collect();
    assert_eq!(
        versions,
        [
            (1, "My dog is called Biscuit."),
            (2, "My dog is called Pretzel now."),
            (3, "My dog is called Biscuit.")
        ]
    );
    assert_eq!(
        texts(&rt, &a, "dog")[0],
        "My dog is called Biscuit.",
        "index rebuilt at open"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stored_question_never_outranks_the_fact() {
    let dir = temp_dir("questions");
    let t = two_users(&dir);
    add(&t.rt, &t.a, t.a_ns, "What is my dog called?");
    add(&t.rt, &t.a, t.a_ns, "My dog is called Biscuit.");
    add(&t.rt, &t.a, t.a_ns, "I painted a sunrise last week.");
    let hits = texts(&t.rt, &t.a, "What is my dog called?");
    assert_eq!(
        hits.first().map(String::as_str),
        Some("My dog is called Biscuit."),
        "{hits:?}"
    );
    // The question is still found, below the statements.
    assert!(
        hits.iter().any(|h| h == "What is my dog called?"),
        "{hits:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn identical_text_bumps_the_existing_memory() {
    let dir = temp_dir("dedup");
    let t = two_users(&dir);
    let id = add(&t.rt, &t.a, t.a_ns, "I'm allergic to peanuts.");
    let again = AddRequest {
        namespace: t.a_ns,
        text: "  i'm ALLERGIC to   peanuts ".to_owned(),
        ..AddRequest::default()
    };
    let out = t.rt.add(&t.a, &again).expect("add");
    assert!(out.duplicate);
    assert_eq!((out.id, out.similarity), (id, Some(1.0)));
    assert_eq!(t.rt.get(&t.a, id).expect("get").hits, 1);
    // Another user's cube is another memory.
    add(&t.rt, &t.b, t.b_ns, "I'm allergic to peanuts.");
    assert_eq!(texts(&t.rt, &t.a, "peanuts").len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn secrets_are_redacted_before_they_reach_disk() {
    let dir = temp_dir("redact");
    let t = two_users(&dir);
    let secret = "sk-proj-Zx81QmN4vB7tR2yLp0Wd5Kc3";
    let req = AddRequest {
        namespace: t.a_ns,
        text: format!("my openai key is {secret} and my card is 4111 1111 1111 1111"),
        ..AddRequest::default()
    };
    let out = t.rt.add(&t.a, &req).expect("add");
    assert!(!out.redacted.is_empty());
    let stored = t.rt.get(&t.a, out.id).expect("get").text;
    assert!(
        !stored.contains(secret) && !stored.contains("4111 1111"),
        "{stored}"
    );
    assert!(stored.contains("my openai key is"), "{stored}");
    drop(t);
    let bytes = all_bytes(&dir);
    assert!(!contains(&bytes, secret) && !contains(&bytes, "4111 1111 1111 1111"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hard_delete_leaves_no_residue() {
    let dir = temp_dir("delete");
    let t = two_users(&dir);
    let keep = add(
        &t.rt,
        &t.a,
        t.a_ns,
        "The garden gate code changes every spring.",
    );
    let text = "Xylophone lessons on Tuesdays with Mrs Quennell";
    let v2 = "Xylophone lessons moved to Thursdays with Mrs Quennell";
    let id = add(&t.rt, &t.a, t.a_ns, text);
    t.rt.update(&t.a, id, v2).expect("update");
    // Bob may not delete it (and learns nothing).
    assert!(is_not_found(t.rt.delete(&t.b, id)));
    let report = t.rt.delete(&t.a, id).expect("delete");
    assert_eq!(report.versions, 2);
    assert!(is_not_found(t.rt.get(&t.a, id)));
    assert!(is_not_found(t.rt.history(&t.a, id)));
    assert!(texts(&t.rt, &t.a, "xylophone Quennell").is_empty());
    assert!(t.rt.get(&t.a, keep).is_ok(), "other memories untouched");
    drop(t);
    let bytes = all_bytes(&dir);
    for needle in ["Quennell", "Xylophone", "Thursdays"] {
        assert!(!contains(&bytes, needle), "{needle} left on disk");
    }
    assert!(
        contains(&bytes, "garden gate"),
        "the scan can find text that is there"
    );
    let rt = open(&dir);
    let a = Principal::user(rt.user("alice").expect("alice").id);
    assert!(texts(&rt, &a, "xylophone").is_empty());
    assert_eq!(texts(&rt, &a, "garden gate").len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn expired_memories_disappear() {
    let dir = temp_dir("expire");
    let t = two_users(&dir);
    let id = add(&t.rt, &t.a, t.a_ns, "The parcel locker code is 4471.");
    let soon = AddRequest {
        namespace: t.a_ns,
        text: "Temporary wifi password for the cabin".to_owned(),
        ttl_ms: Some(1),
        ..AddRequest::default()
    };
    let short = t.rt.add(&t.a, &soon).expect("add").id;
    std::thread::sleep(std::time::Duration::from_millis(5));
    // Expired: invisible at once, deleted by the sweep.
    let found = texts(&t.rt, &t.a, "cabin wifi");
    assert!(found.iter().all(|t| !t.contains("cabin")), "{found:?}");
    assert!(t.rt.get(&t.a, short).is_err());
    assert_eq!(t.rt.sweep_expired().expect("sweep"), 1);
    assert!(is_not_found(t.rt.get(&t.a, short)));
    // Bob cannot set Alice's TTL.
    assert!(is_not_found(t.rt.expire(&t.b, id, Timestamp(0))));
    t.rt.expire(&t.a, id, now().saturating_add_millis(60_000))
        .expect("ttl");
    assert!(
        t.rt.get(&t.a, id)
            .expect("still there")
            .expires_at
            .is_some()
    );
    t.rt.expire(&t.a, id, Timestamp(0)).expect("expire now");
    assert!(is_not_found(t.rt.get(&t.a, id)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn user_b_never_sees_user_a_unless_shared() {
    let dir = temp_dir("leaks");
    let t = two_users(&dir);
    let secret_text = "Alice keeps the spare key under the blue flowerpot";
    let id = add(&t.rt, &t.a, t.a_ns, secret_text);
    add(&t.rt, &t.b, t.b_ns, "Bob likes blue bicycles");
    let b = &t.b;
    let mut leaks = 0;
    // Ids, history, writes, deletes, TTLs, rollbacks.
    leaks += usize::from(!is_not_found(t.rt.get(b, id)));
    leaks += usize::from(!is_not_found(t.rt.history(b, id)));
    leaks += usize::from(!is_not_found(t.rt.update(b, id, "pwned")));
    leaks += usize::from(!is_not_found(t.rt.rollback(b, id, 1)));
    leaks += usize::from(!is_not_found(t.rt.delete(b, id)));
    leaks += usize::from(!is_not_found(t.rt.expire(b, id, Timestamp(0))));
    // Searches, including ones naming Alice's cube.
    for q in ["spare key flowerpot", "blue", "Alice", "key"] {
        let mut req = SearchRequest::new(q, 100);
        let all = t.rt.search(b, &req).expect("search");
        leaks += all.iter().filter(|h| h.memory.owner != b.user).count();
        req.namespaces = Some(vec![t.a_ns]);
        leaks += t.rt.search(b, &req).expect("search").len();
    }
    // Writing into, sharing or listing Alice's cube.
    let into_a = AddRequest {
        namespace: t.a_ns,
        text: "Bob was here".to_owned(),
        ..AddRequest::default()
    };
    leaks += usize::from(!is_not_found(t.rt.add(b, &into_a)));
    leaks += usize::from(!is_not_found(t.rt.share(
        b,
        t.a_ns,
        b.user,
        ShareAccess::ReadWrite,
    )));
    leaks +=
        t.rt.namespaces(b)
            .expect("list")
            .iter()
            .filter(|n| n.owner != b.user)
            .count();
    leaks += usize::from(t.rt.audit_log(b, 0, 1000).is_ok());
    assert_eq!(leaks, 0);
    assert_eq!(
        t.rt.get(&t.a, id).expect("alice's memory intact").text,
        secret_text
    );

    // Shared read-only: Bob reads and finds it, cannot change it.
    t.rt.share(&t.a, t.a_ns, b.user, ShareAccess::Read)
        .expect("share");
    assert_eq!(t.rt.get(b, id).expect("shared").text, secret_text);
    assert!(texts(&t.rt, b, "flowerpot").contains(&secret_text.to_owned()));
    assert!(matches!(
        t.rt.update(b, id, "x"),
        Err(RuntimeError::Denied(DenyReason::NotGranted))
    ));
    assert!(matches!(
        t.rt.delete(b, id),
        Err(RuntimeError::Denied(DenyReason::NotOwner))
    ));
    assert!(matches!(t.rt.add(b, &into_a), Err(RuntimeError::Denied(_))));
    // Read-write: Bob adds into Alice's cube (Alice owns what he adds).
    t.rt.share(&t.a, t.a_ns, b.user, ShareAccess::ReadWrite)
        .expect("share rw");
    let added = t.rt.add(b, &into_a).expect("writer adds");
    assert_eq!(
        t.rt.get(&t.a, added.id).expect("alice sees it").owner,
        t.a.user
    );
    // Revoked: gone again.
    t.rt.share(&t.a, t.a_ns, b.user, ShareAccess::None)
        .expect("revoke");
    assert!(is_not_found(t.rt.get(b, id)));
    assert!(texts(&t.rt, b, "flowerpot").is_empty());

    // The audit log saw the denials and the share, and holds no text.
    let log = t.rt.audit_log(&t.rt.admin(), 0, 10_000).expect("audit");
    assert!(
        log.iter()
            .any(|e| !e.allowed && e.actor == b.user && e.action == "get")
    );
    assert!(log.iter().any(|e| e.allowed && e.action == "share"));
    assert!(
        log.iter()
            .any(|e| e.allowed && e.action == "add" && e.actor == t.a.user)
    );
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_requests_are_clear_errors() {
    let dir = temp_dir("bad");
    let t = two_users(&dir);
    let empty = AddRequest {
        namespace: t.a_ns,
        text: "   ".to_owned(),
        ..AddRequest::default()
    };
    assert!(matches!(
        t.rt.add(&t.a, &empty),
        Err(RuntimeError::Invalid(_))
    ));
    let huge = AddRequest {
        namespace: t.a_ns,
        text: "a".repeat(70_000),
        ..AddRequest::default()
    };
    assert!(matches!(
        t.rt.add(&t.a, &huge),
        Err(RuntimeError::Invalid(_))
    ));
    let tags = AddRequest {
        namespace: t.a_ns,
        text: "tagged".to_owned(),
        tags: (0..20).map(|i| format!("t{i}")).collect(),
        ..AddRequest::default()
    };
    assert!(matches!(
        t.rt.add(&t.a, &tags),
        Err(RuntimeError::Invalid(_))
    ));
    let nowhere = AddRequest {
        namespace: NamespaceId(999),
        text: "lost".to_owned(),
        ..AddRequest::default()
    };
    assert!(is_not_found(t.rt.add(&t.a, &nowhere)));
    assert!(matches!(
        t.rt.search(&t.a, &SearchRequest::new("x", 0)),
        Err(RuntimeError::Invalid(_))
    ));
    assert!("not-an-id".parse::<MemoryId>().is_err());
    drop(t);
    // A vault file that is not a database is an error, not a panic.
    let junk = temp_dir("junk");
    std::fs::create_dir_all(&junk).expect("dir");
    std::fs::write(junk.join("vault.redb"), b"definitely not redb").expect("write");
    let err = Runtime::open(&junk, Config::default(), None)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("vault.redb"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&junk);
}

#[test]
fn search_filters_by_time_tags_and_cube() {
    let dir = temp_dir("filters");
    let t = two_users(&dir);
    let at = |day: i64| Some(Timestamp(1_683_504_000_000 + day * 86_400_000));
    for (text, day, tag) in [
        ("Hiking trip to the lake", 0, "outdoor"),
        ("Hiking boots bought in town", 3, "shopping"),
        ("Hiking club meeting", 10, "outdoor"),
    ] {
        let req = AddRequest {
            namespace: t.a_ns,
            text: text.to_owned(),
            time: at(day),
            tags: vec![tag.to_owned()],
            ..AddRequest::default()
        };
        t.rt.add(&t.a, &req).expect("add");
    }
    let mut req = SearchRequest::new("hiking", 10);
    assert_eq!(t.rt.search(&t.a, &req).expect("all").len(), 3);
    req.tags = vec!["outdoor".to_owned()];
    assert_eq!(t.rt.search(&t.a, &req).expect("tag").len(), 2);
    req.since = at(1);
    let hits = t.rt.search(&t.a, &req).expect("tag+since");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].memory.text, "Hiking club meeting");
    req.tags.clear();
    req.until = at(5);
    assert_eq!(t.rt.search(&t.a, &req).expect("range").len(), 1);
    req.since = None;
    req.until = None;
    req.namespaces = Some(vec![t.b_ns]);
    assert!(t.rt.search(&t.a, &req).expect("other cube").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn packs_move_memories_between_vaults_and_refuse_tampering() {
    use memkern_runtime::pack;
    let src_dir = temp_dir("pack-src");
    let t = two_users(&src_dir);
    let id = add(&t.rt, &t.a, t.a_ns, "The boat is moored at pier 9.");
    t.rt.update(&t.a, id, "The boat is moored at pier 12 now.")
        .expect("update");
    add(&t.rt, &t.a, t.a_ns, "Sailing club dues are paid in March.");
    // Bob cannot export Alice's cube (and learns nothing).
    assert!(is_not_found(t.rt.export(&t.b, t.a_ns, None)));

    let key_file = src_dir.join("pack.key");
    let public = pack::generate_key(&key_file).expect("keygen");
    let key = pack::load_key(&key_file).expect("key");
    let (bytes, report) = t.rt.export(&t.a, t.a_ns, Some(&key)).expect("export");
    assert_eq!(
        (report.memories, report.signed_by.as_deref()),
        (2, Some(public.as_str()))
    );

    let dst_dir = temp_dir("pack-dst");
    let dst = open(&dst_dir);
    let admin = dst.admin();
    let (dana, _) = dst.create_user(&admin, "dana").expect("dana");
    let ns = dst.namespace_named(dana.id, "default").expect("cube").id;
    let d = Principal::user(dana.id);
    // Tampered, truncated, untrusted: refused, nothing stored.
    let mut tampered = bytes.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x40;
    let e = dst.import(&d, ns, &tampered, &[]).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    let e = dst
        .import(&d, ns, &bytes[..bytes.len() - 10], &[])
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, RuntimeError::Invalid(_)), "{e}");
    let other = "00".repeat(32);
    let e = dst
        .import(&d, ns, &bytes, &[other])
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("trusted"), "{e}");
    assert!(
        dst.search(&d, &SearchRequest::new("boat", 10))
            .expect("search")
            .is_empty()
    );
    // Trusted: imported with history; a second import adds nothing.
    let r = dst
        .import(&d, ns, &bytes, std::slice::from_ref(&public))
        .expect("import");
    assert_eq!((r.memories, r.skipped), (2, 0));
    let hits = dst
        .search(&d, &SearchRequest::new("boat pier", 10))
        .expect("search");
    assert_eq!(hits[0].memory.text, "The boat is moored at pier 12 now.");
    assert_eq!(hits[0].memory.owner, dana.id);
    assert_eq!(
        dst.history(&d, hits[0].memory.id).expect("history").len(),
        2
    );
    let r = dst.import(&d, ns, &bytes, &[public]).expect("again");
    assert_eq!((r.memories, r.skipped), (0, 2));
    let _ = std::fs::remove_dir_all(&src_dir);
    let _ = std::fs::remove_dir_all(&dst_dir);
}

#[test]
fn a_pack_imports_into_other_cubes_of_the_same_vault() {
    // The defect: a pack exported here and imported into bob's cube, or
    // into another cube of alice's, said "already present" and stored
    // nothing, because the memories existed in alice's default cube.
    let dir = temp_dir("pack-same");
    let t = two_users(&dir);
    let boat = add(&t.rt, &t.a, t.a_ns, "The boat is moored at pier 9.");
    t.rt.update(&t.a, boat, "The boat is moored at pier 12 now.")
        .expect("update");
    add(&t.rt, &t.a, t.a_ns, "Sailing club dues are paid in March.");
    add(&t.rt, &t.a, t.a_ns, "The spare sail is in the garage loft.");
    let (bytes, report) = t.rt.export(&t.a, t.a_ns, None).expect("export");
    assert_eq!(report.memories, 3);
    let scoped = |q: &str, ns: NamespaceId| {
        let mut req = SearchRequest::new(q, 10);
        req.namespaces = Some(vec![ns]);
        req
    };

    // Into bob's cube: every memory is bob's own copy, history included.
    let r = t.rt.import(&t.b, t.b_ns, &bytes, &[]).expect("import");
    assert_eq!((r.memories, r.skipped), (3, 0));
    let hits =
        t.rt.search(&t.b, &SearchRequest::new("boat pier", 10))
            .expect("search");
    let copy = &hits[0].memory;
    assert_eq!(copy.text, "The boat is moored at pier 12 now.");
    assert_eq!((copy.owner, copy.namespace), (t.b.user, t.b_ns));
    assert_ne!(copy.id, boat, "a copy of its own");
    assert_eq!(t.rt.history(&t.b, copy.id).expect("history").len(), 2);
    assert!(
        texts(&t.rt, &t.b, "garage loft")
            .iter()
            .any(|x| x.contains("spare sail"))
    );
    // Again: nothing new.
    let r = t.rt.import(&t.b, t.b_ns, &bytes, &[]).expect("again");
    assert_eq!((r.memories, r.skipped), (0, 3));

    // Into another cube of alice's.
    let travel =
        t.rt.create_namespace(&t.a, t.a.user, "travel")
            .expect("travel")
            .id;
    let r = t.rt.import(&t.a, travel, &bytes, &[]).expect("import");
    assert_eq!((r.memories, r.skipped), (3, 0));
    let hits =
        t.rt.search(&t.a, &scoped("dues March", travel))
            .expect("search");
    assert_eq!(hits[0].memory.text, "Sailing club dues are paid in March.");
    assert_eq!(hits[0].memory.namespace, travel);
    let r = t.rt.import(&t.a, travel, &bytes, &[]).expect("again");
    assert_eq!((r.memories, r.skipped), (0, 3));
    // Into the cube it came from: all present.
    let r = t.rt.import(&t.a, t.a_ns, &bytes, &[]).expect("home");
    assert_eq!((r.memories, r.skipped), (0, 3));

    // The copies are independent: bob deleting his leaves alice's two.
    t.rt.delete(&t.b, copy.id).expect("bob deletes his copy");
    let home =
        t.rt.search(&t.a, &scoped("boat pier", t.a_ns))
            .expect("search");
    assert_eq!(home[0].memory.id, boat);
    assert_eq!(home[0].memory.text, "The boat is moored at pier 12 now.");
    let away =
        t.rt.search(&t.a, &scoped("boat pier", travel))
            .expect("search");
    assert_eq!(away[0].memory.text, "The boat is moored at pier 12 now.");
    assert!(
        texts(&t.rt, &t.b, "boat pier")
            .iter()
            .all(|x| !x.contains("boat"))
    );
    // And they survive a restart (the index is rebuilt from the rows).
    let b = t.b;
    drop(t.rt);
    let rt = open(&dir);
    assert!(
        texts(&rt, &b, "garage loft")
            .iter()
            .any(|x| x.contains("spare sail"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dialogue_neighbours_survive_a_restart() {
    let dir = temp_dir("order");
    let t = two_users(&dir);
    for i in 0..15 {
        add(
            &t.rt,
            &t.a,
            t.a_ns,
            &format!("Filler note {i} about groceries and errands"),
        );
    }
    add(
        &t.rt,
        &t.a,
        t.a_ns,
        "Caroline: I finally went kayaking on the lake!",
    );
    add(
        &t.rt,
        &t.a,
        t.a_ns,
        "Melanie: Wow, how was it? Tell me everything.",
    );
    for i in 15..30 {
        add(
            &t.rt,
            &t.a,
            t.a_ns,
            &format!("Filler note {i} about groceries and errands"),
        );
    }
    let before = texts(&t.rt, &t.a, "kayaking");
    // The reply shares no word with the query; it ranks as the turn after.
    assert!(
        before.iter().any(|x| x.starts_with("Melanie")),
        "{before:?}"
    );
    drop(t);
    let rt = open(&dir);
    let a = Principal::user(rt.user("alice").expect("alice").id);
    assert_eq!(
        texts(&rt, &a, "kayaking"),
        before,
        "same ranking after the index is rebuilt"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn own_hits_are_found_under_many_better_ranked_foreign_ones() {
    let dir = temp_dir("deep");
    let t = two_users(&dir);
    for i in 0..150 {
        add(
            &t.rt,
            &t.b,
            t.b_ns,
            &format!("apple apple apple orchard note {i}"),
        );
    }
    add(
        &t.rt,
        &t.a,
        t.a_ns,
        "grandma's apple pie recipe uses cinnamon",
    );
    let mine =
        t.rt.search(&t.a, &SearchRequest::new("apple", 5))
            .expect("search");
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert!(mine[0].memory.text.contains("pie"));
    assert_eq!(
        t.rt.search(&t.b, &SearchRequest::new("apple", 5))
            .expect("search")
            .len(),
        5
    );
    let _ = std::fs::remove_dir_all(&dir);
}
