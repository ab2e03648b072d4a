//! `chat` on the real models (all-MiniLM-L6-v2 for retrieval, SmolLM2 for
//! the answer): memories reach the answer, the second ask restores the KV
//! block saved after the first and answers the same, a near-duplicate
//! becomes the memory's new version, and deleting a memory deletes the snapshots derived from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memkern_core::governance::Principal;
use memkern_runtime::chat::UsedAs;
use memkern_runtime::{AddAction, AddRequest, Assistant, ChatRequest, Config, Runtime};

mod common;

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("chat", name)
}

use common::llm;

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

/// A vault with MiniLM that promotes KV blocks from the first use.
fn promoting_vault(dir: &Path) -> Runtime {
    let mut config = Config::default();
    config.scheduler.promote_min_uses = 0.0;
    let embedder = memkern_runtime::embed::load_default().expect("MiniLM loads");
    Runtime::open(dir, config, Some(embedder)).expect("vault").0
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn chat_uses_memories_restores_snapshots_and_forgets_on_delete() {
    let dir = temp_dir("main");
    let rt = promoting_vault(&dir);
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
    // A question is not a fact: it is not stored as a memory…
    assert_eq!(after.stored, None, "a question is not remembered");
    assert_eq!(after.restored_tokens, 0, "no stale block restored");
    // …while by default a turn that states something is.
    let mut tell = ChatRequest::new("My cat's vet is Dr. Moss.");
    tell.max_tokens = 8;
    let told = assistant.chat(&who, &tell).expect("chat");
    let stored = told.stored.expect("the statement was remembered");
    assert_eq!(
        rt.get(&who, stored).expect("stored turn").text,
        "My cat's vet is Dr. Moss."
    );
    drop(assistant);
    drop(rt);
    let db = std::fs::read(dir.join("vault.redb")).expect("db");
    assert!(!contains(&db, "Pixel"), "no residue of the deleted memory");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pack_carries_kv_blocks_into_another_users_cube_of_the_same_vault() {
    let dir = temp_dir("pack");
    let rt = promoting_vault(&dir);
    let admin = rt.admin();
    let (caroline, _) = rt.create_user(&admin, "caroline").expect("caroline");
    let (bob, _) = rt.create_user(&admin, "bob").expect("bob");
    let c = Principal::user(caroline.id);
    let b = Principal::user(bob.id);
    let ns = rt.namespace_named(caroline.id, "default").expect("cube").id;
    let bob_ns = rt.namespace_named(bob.id, "default").expect("cube").id;
    for text in [
        "I adopted a grey cat and named her Pixel.",
        "I work as a nurse at the hospital in Lisbon.",
    ] {
        let req = AddRequest {
            namespace: ns,
            text: text.to_owned(),
            ..AddRequest::default()
        };
        rt.add(&c, &req).expect("add");
    }
    let rt = Arc::new(rt);
    let ask = |assistant: &Assistant, who: &Principal| {
        let mut req = ChatRequest::new("What is the name of my cat?");
        req.remember = false;
        assistant.chat(who, &req).expect("chat")
    };
    let cold = ask(&Assistant::new(rt.clone(), llm()).expect("assistant"), &c);
    assert_eq!(cold.promoted, 1, "caroline's memory prefix was saved");

    let (bytes, report) = rt.export(&c, ns, None).expect("export");
    assert_eq!((report.memories, report.derived), (2, 1));
    let r = rt.import(&b, bob_ns, &bytes, &[]).expect("import");
    assert_eq!((r.memories, r.skipped, r.derived), (2, 0, 1));
    let r = rt.import(&b, bob_ns, &bytes, &[]).expect("again");
    assert_eq!((r.memories, r.skipped, r.derived), (0, 2, 0));

    // Bob's copy answers from his own memories and restores his own block.
    let assistant = Assistant::new(rt.clone(), llm()).expect("assistant");
    let his = ask(&assistant, &b);
    eprintln!("bob: {his:#?}");
    assert_eq!(
        (his.answer.as_str(), his.prompt_tokens),
        (cold.answer.as_str(), cold.prompt_tokens),
        "the same memories, so the same prompt and answer as caroline's"
    );
    assert!(
        his.restored_tokens > 0,
        "bob's copy of the block was restored"
    );
    let cat = his
        .memories
        .iter()
        .find(|m| m.used_as == UsedAs::Snapshot && m.text.contains("Pixel"))
        .expect("the cat, from the block")
        .id;
    assert!(
        rt.get(&b, cat)
            .expect("bob's memory")
            .text
            .contains("Pixel"),
        "the top memory is the cat"
    );
    assert_eq!(rt.get(&b, cat).expect("bob's memory").owner, bob.id);
    assert!(rt.get(&c, cat).is_err(), "the copy is not caroline's");
    // Hers is untouched, and survives bob deleting his copy.
    assert!(ask(&assistant, &c).restored_tokens > 0);
    assert_eq!(rt.delete(&b, cat).expect("delete").derived, 1);
    drop(assistant);
    let assistant = Assistant::new(rt.clone(), llm()).expect("assistant");
    let hers = ask(&assistant, &c);
    assert!(hers.restored_tokens > 0, "caroline's block and blob kept");
    assert_eq!(hers.answer, cold.answer);
    drop(assistant);
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chat_answers_from_a_sealed_module_installed_for_the_user() {
    use memkern_core::time::Timestamp;
    use memkern_runtime::modules::{self, Item, Manifest, Scope, seal};
    let dir = temp_dir("module");
    let rt = promoting_vault(&dir);
    let admin = rt.admin();
    let (caroline, _) = rt.create_user(&admin, "caroline").expect("caroline");
    let c = Principal::user(caroline.id);
    // The publisher: a signed module, sealed to this device.
    let key_path = dir.join("publisher.key");
    let public = memkern_runtime::pack::generate_key(&key_path).expect("keygen");
    let key = memkern_runtime::pack::load_key(&key_path).expect("key");
    let manifest = Manifest {
        id: "harbour".to_owned(),
        name: "Harbour guide".to_owned(),
        version: "1.0.0".to_owned(),
        publisher: public.clone(),
        licence: "CC-BY-4.0".to_owned(),
        description: "The harbour's people and rules".to_owned(),
        language: "en".to_owned(),
    };
    let items: Vec<Item> = [
        "The harbour master is called Ortega.",
        "The fuel dock opens at seven in the morning.",
        "Kayaks must keep out of the ferry lane.",
    ]
    .iter()
    .map(|t| Item {
        text: (*t).to_owned(),
        source: Some("harbour.md".to_owned()),
        tags: Vec::new(),
    })
    .collect();
    let (file, _) = modules::build_module(
        &manifest,
        Timestamp(1_700_000_000_000),
        &items,
        rt.embedder(),
        &modules::Extras::default(),
        &key,
        |_| {},
    )
    .expect("build");
    let sealed =
        seal::seal(&file, &seal::device_recipient(rt.dir()).expect("device")).expect("seal");
    rt.trust_publisher(&admin, &public, "harbour office")
        .expect("trust");
    let r = rt
        .install_module(&c, &sealed, &Scope::Users(vec![caroline.id]))
        .expect("caroline installs it");
    assert_eq!(
        r.embedded_here, 0,
        "the module's vectors are this embedder's"
    );

    let rt = Arc::new(rt);
    let assistant = Assistant::new(rt.clone(), llm()).expect("assistant");
    let ask = || {
        let mut req = ChatRequest::new("What is the harbour master called?");
        req.remember = false;
        assistant.chat(&c, &req).expect("chat over module memories")
    };
    let cold = ask();
    eprintln!("module chat: {cold:#?}");
    assert!(
        cold.memories.iter().any(|m| m.text.contains("Ortega")),
        "the module's memory reached the prompt"
    );
    assert!(cold.answer.contains("Ortega"), "{}", cold.answer);
    let warm = ask();
    assert!(
        warm.restored_tokens > 0,
        "the module's KV block was promoted"
    );
    assert_eq!(warm.answer, cold.answer);
    drop(assistant);
    // Removing the module takes its memories and the block derived from them.
    let removed = rt.remove_module(&admin, "harbour").expect("remove");
    assert_eq!(removed.memories, 3);
    assert_eq!(rt.stats().expect("stats").snapshots, 0, "no block left");
    let assistant = Assistant::new(rt.clone(), llm()).expect("assistant");
    let after = assistant
        .chat(&c, &ChatRequest::new("What is the harbour master called?"))
        .expect("chat");
    assert!(after.memories.iter().all(|m| !m.text.contains("Ortega")));
    drop(assistant);
    drop(rt);
    let db = std::fs::read(dir.join("vault.redb")).expect("db");
    assert!(!contains(&db, "Ortega"), "no residue of the removed module");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy of SmolLM2's GGUF with one letter of `general.name` changed: the
/// same weights under another fingerprint, so derivatives bound to the
/// original are another model's here (a second architecture needs the
/// GGUF issue; this exercises the binding itself).
fn renamed_model(dir: &Path) -> memkern_models::Llm {
    use memkern_models::fetch::{ModelCache, SMOLLM2_135M_Q4_1};
    let files = ModelCache::from_env()
        .and_then(|c| c.ensure(&SMOLLM2_135M_Q4_1))
        .expect("SmolLM2 fetched");
    let mut bytes = std::fs::read(files.gguf().expect("gguf")).expect("read gguf");
    let key = b"general.name";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("general.name in the header");
    let ty = u32::from_le_bytes(
        bytes[at + key.len()..at + key.len() + 4]
            .try_into()
            .expect("4 bytes"),
    );
    assert_eq!(ty, 8, "general.name is a string");
    bytes[at + key.len() + 12] ^= 0x20; // the first letter's case
    let path = dir.join("smollm2-renamed.gguf");
    std::fs::write(&path, bytes).expect("write copy");
    memkern_models::Llm::load(&path, memkern_models::llama::Backend::Cpu).expect("copy loads")
}

#[test]
fn a_module_ships_kv_blocks_and_an_adapter_used_by_its_model_only() {
    use memkern_core::time::Timestamp;
    use memkern_models::lora::{Adapter, LoraConfig};
    use memkern_runtime::modules::{self, DerivedKind, Extras, Item, Manifest, Scope};
    let dir = temp_dir("module-derived");
    let rt = promoting_vault(&dir);
    let admin = rt.admin();
    let (caroline, _) = rt.create_user(&admin, "caroline").expect("caroline");
    let (bob, _) = rt.create_user(&admin, "bob").expect("bob");
    let (c, b) = (Principal::user(caroline.id), Principal::user(bob.id));
    let model = llm();
    let other = renamed_model(&dir);
    assert_ne!(model.fingerprint(), other.fingerprint());

    // The publisher: "harbour" ships a KV block per memory for SmolLM2;
    // "reader" ships an adapter for it.
    let key_path = dir.join("publisher.key");
    let public = memkern_runtime::pack::generate_key(&key_path).expect("keygen");
    let key = memkern_runtime::pack::load_key(&key_path).expect("key");
    let manifest = |id: &str| Manifest {
        id: id.to_owned(),
        name: id.to_owned(),
        version: "1.0.0".to_owned(),
        publisher: public.clone(),
        licence: "CC-BY-4.0".to_owned(),
        description: String::new(),
        language: "en".to_owned(),
    };
    let items = |texts: &[&str]| -> Vec<Item> {
        texts
            .iter()
            .map(|t| Item {
                text: (*t).to_owned(),
                source: None,
                tags: Vec::new(),
            })
            .collect()
    };
    let harbour_items = items(&[
        "The harbour master is called Ortega.",
        "The fuel dock opens at seven in the morning.",
        "Kayaks must keep out of the ferry lane.",
    ]);
    let released = Timestamp(1_700_000_000_000);
    let build = |id: &str, items: &[Item], extras: &Extras<'_>| {
        modules::build_module(
            &manifest(id),
            released,
            items,
            rt.embedder(),
            extras,
            &key,
            |_| {},
        )
        .expect("build")
    };
    let kv = Extras {
        kv_models: vec![&model],
        adapters: Vec::new(),
    };
    let (harbour, report) = build("harbour", &harbour_items, &kv);
    assert_eq!(report.kv_blocks, 3);
    assert_eq!(
        build("harbour", &harbour_items, &kv).0,
        harbour,
        "KV blocks are deterministic: the same inputs give the same file"
    );
    let lora = LoraConfig::new(4, 8.0, memkern_core::cube::TargetModules::Q).expect("lora config");
    let adapter = Adapter::new(lora, model.config(), model.fingerprint(), model.device());
    let adapter_path = dir.join("reader.safetensors");
    adapter.save(&adapter_path, model.config()).expect("save");
    let (reader, report) = build(
        "reader",
        &items(&["Answer questions about the harbour in a few words."]),
        &Extras {
            kv_models: Vec::new(),
            adapters: vec![std::fs::read(&adapter_path).expect("adapter file")],
        },
    );
    assert_eq!(report.adapters, 1);

    // Damaged derivatives are refused before anything is stored, even
    // when the publisher signed them.
    let mut body = modules::decode_module(&harbour).expect("decode");
    body.derived[0].blob.push(0);
    let err = modules::decode_module(&modules::encode_module(&body, &key).expect("encode"))
        .expect_err("a blob that does not match its cube");
    assert!(err.to_string().contains("does not match"), "{err}");
    let mut body = modules::decode_module(&harbour).expect("decode");
    body.memories.remove(0);
    let err = modules::decode_module(&modules::encode_module(&body, &key).expect("encode"))
        .expect_err("a block of a memory the module lacks");
    assert!(err.to_string().contains("not derived from"), "{err}");

    rt.trust_publisher(&admin, &public, "harbour office")
        .expect("trust");
    let r = rt
        .install_module(&admin, &harbour, &Scope::Users(vec![caroline.id, bob.id]))
        .expect("install harbour");
    assert_eq!(r.derived.len(), 1);
    assert_eq!(
        (
            r.derived[0].kind,
            r.derived[0].count,
            r.derived[0].this_model
        ),
        (DerivedKind::KvBlock, 3, None),
        "no model is loaded yet"
    );
    rt.install_module(&admin, &reader, &Scope::Users(vec![caroline.id]))
        .expect("install reader");
    assert_eq!(rt.stats().expect("stats").snapshots, 3);
    assert_eq!(rt.stats().expect("stats").adapters, 1);

    let rt = Arc::new(rt);
    let ask = |a: &Assistant, who: &Principal| {
        let mut req = ChatRequest::new("What is the harbour master called?");
        req.remember = false;
        a.chat(who, &req).expect("chat")
    };
    // Another model: the module's derivatives are reported and ignored;
    // a KV block is derived for it on demand.
    let assistant = Assistant::new(rt.clone(), other).expect("assistant");
    let again = rt
        .install_module(&admin, &harbour, &Scope::Users(vec![caroline.id, bob.id]))
        .expect("reinstall");
    assert_eq!(again.derived[0].this_model, Some(false));
    let first = ask(&assistant, &b);
    assert!(first.memories.iter().any(|m| m.text.contains("Ortega")));
    assert_eq!(
        first.restored_tokens, 0,
        "SmolLM2's blocks are not this model's"
    );
    assert_eq!(first.promoted, 1, "a block is derived for this model");
    assert!(ask(&assistant, &b).restored_tokens > 0);
    assert_eq!(
        ask(&assistant, &c).adapter,
        None,
        "the adapter is SmolLM2's"
    );
    drop(assistant);

    // The module's model: its KV block serves the very first turn, and
    // the reader adapter applies for caroline (for whom it is mounted).
    let assistant = Assistant::new(rt.clone(), model).expect("assistant");
    let again = rt
        .install_module(&admin, &harbour, &Scope::Users(vec![caroline.id, bob.id]))
        .expect("reinstall");
    assert_eq!(again.derived[0].this_model, Some(true));
    let first = ask(&assistant, &b);
    eprintln!("bob, module block: {first:#?}");
    assert!(
        first.restored_tokens > 0,
        "the module's block is restored on the first turn"
    );
    assert!(first.answer.contains("Ortega"), "{}", first.answer);
    assert_eq!(first.adapter, None, "reader is not mounted for bob");
    let with_adapter = ask(&assistant, &c);
    let adapter_cube = with_adapter
        .adapter
        .clone()
        .expect("reader's adapter applies");
    assert_eq!(
        with_adapter.restored_tokens, 0,
        "blocks are the base model's"
    );
    assert!(
        with_adapter.answer.contains("Ortega"),
        "{}",
        with_adapter.answer
    );

    // Removing the modules takes their blocks (shipped and derived here)
    // and the adapter, blobs included; the next turn notices.
    rt.remove_module(&admin, "reader").expect("remove reader");
    assert_eq!(ask(&assistant, &c).adapter, None, "{adapter_cube} is gone");
    rt.remove_module(&admin, "harbour").expect("remove harbour");
    let s = rt.stats().expect("stats");
    assert_eq!((s.snapshots, s.adapters), (0, 0));
    assert!(ask(&assistant, &b).memories.is_empty());
    drop(assistant);
    drop(rt);
    assert_eq!(files_under(&dir.join("blobs")), 0, "no blob left");
    let db = std::fs::read(dir.join("vault.redb")).expect("db");
    assert!(!contains(&db, "Ortega"), "no residue of the removed module");
    let _ = std::fs::remove_dir_all(&dir);
}
