//! Memory modules on a real vault: build, sign, trust, install for some
//! users or all, read-only everywhere, update, remove without residue, and
//! every refusal of a bad or untrusted file.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use memkern_core::governance::Principal;
use memkern_core::time::Timestamp;
use memkern_runtime::modules::{self, InstallAction, Item, Manifest, Scope};
use memkern_runtime::{AddRequest, Config, Runtime, RuntimeError, SearchRequest};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memkern-mod-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn open(dir: &Path) -> Runtime {
    Runtime::open(dir, Config::default(), None)
        .expect("vault")
        .0
}

fn key(dir: &Path, name: &str) -> (SigningKey, String) {
    let path = dir.join(name);
    let public = memkern_runtime::pack::generate_key(&path).expect("keygen");
    (memkern_runtime::pack::load_key(&path).expect("key"), public)
}

fn manifest(publisher: &str, version: &str) -> Manifest {
    Manifest {
        id: "sailing-basics".to_owned(),
        name: "Sailing basics".to_owned(),
        version: version.to_owned(),
        publisher: publisher.to_owned(),
        licence: "CC-BY-4.0".to_owned(),
        description: "What a new sailor asks first.".to_owned(),
        language: "en".to_owned(),
    }
}

fn items(texts: &[&str]) -> Vec<Item> {
    texts
        .iter()
        .map(|t| Item {
            text: (*t).to_owned(),
            source: Some("sailing.md".to_owned()),
            tags: vec!["sailing".to_owned()],
        })
        .collect()
}

fn build(m: &Manifest, texts: &[&str], k: &SigningKey) -> Vec<u8> {
    modules::build_module(
        m,
        Timestamp(1_700_000_000_000),
        &items(texts),
        None,
        &modules::Extras::default(),
        k,
        |_| {},
    )
    .expect("build")
    .0
}

fn texts(rt: &Runtime, who: &Principal, q: &str) -> Vec<String> {
    rt.search(who, &SearchRequest::new(q, 10))
        .expect("search")
        .into_iter()
        .map(|h| h.memory.text)
        .collect()
}

fn invalid(r: Result<impl std::fmt::Debug, RuntimeError>, needle: &str) {
    match r {
        Err(RuntimeError::Invalid(m)) if m.contains(needle) => {}
        other => panic!("expected an invalid-request error with {needle:?}, got {other:?}"),
    }
}

const V1: &[&str] = &[
    "A bowline makes a fixed loop at the end of a line that does not slip.",
    "Reef the mainsail before the wind exceeds about 18 knots.",
    "Red navigation light is on the port side, green on starboard.",
];

#[test]
fn modules_install_read_only_update_and_remove_without_residue() {
    let dir = temp_dir("main");
    let rt = open(&dir.join("vault"));
    let admin = rt.admin();
    let (alice, _) = rt.create_user(&admin, "alice").expect("alice");
    let (bob, _) = rt.create_user(&admin, "bob").expect("bob");
    let (a, b) = (Principal::user(alice.id), Principal::user(bob.id));
    let (k, public) = key(&dir, "publisher.key");
    let file = build(&manifest(&public, "1.0.0"), V1, &k);
    assert_eq!(
        file,
        build(&manifest(&public, "1.0.0"), V1, &k),
        "the same inputs give the same file"
    );

    // Refusals before anything is stored.
    invalid(
        rt.install_module(&admin, &file, &Scope::Users(vec![alice.id])),
        "does not trust",
    );
    assert!(matches!(
        rt.trust_publisher(&a, &public, "Sailing school"),
        Err(RuntimeError::Denied(_))
    ));
    rt.trust_publisher(&admin, &public, "Sailing school")
        .expect("trust");
    let mut flipped = file.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    invalid(
        rt.install_module(&admin, &flipped, &Scope::Global),
        "checksum",
    );
    invalid(
        rt.install_module(&admin, &file[..file.len() - 7], &Scope::Global),
        "module",
    );
    let mut unsigned = file[..file.len() - 97].to_vec();
    unsigned.push(0);
    invalid(
        rt.install_module(&admin, &unsigned, &Scope::Global),
        "unsigned",
    );
    invalid(
        rt.install_module(&admin, b"MKPACK01 not a module", &Scope::Global),
        "bad magic",
    );
    // Signed by a key other than the manifest's publisher: the builder
    // refuses to make it.
    let (other, other_public) = key(&dir, "other.key");
    invalid(
        modules::build_module(
            &manifest(&public, "1.0.0"),
            Timestamp(0),
            &items(V1),
            None,
            &modules::Extras::default(),
            &other,
            |_| {},
        ),
        "the key is",
    );
    // A user may not install for someone else, nor globally.
    assert!(matches!(
        rt.install_module(&a, &file, &Scope::Users(vec![bob.id])),
        Err(RuntimeError::Denied(_))
    ));
    assert!(matches!(
        rt.install_module(&a, &file, &Scope::Global),
        Err(RuntimeError::Denied(_))
    ));
    assert!(rt.modules(&admin).expect("list").is_empty());

    // Alice installs it for herself: hers to read, nobody's to write.
    let r = rt
        .install_module(&a, &file, &Scope::Users(vec![alice.id]))
        .expect("install");
    assert_eq!((r.action, r.memories), (InstallAction::Installed, 3));
    let hits = rt
        .search(&a, &SearchRequest::new("which side is the red light", 5))
        .expect("search");
    let hit = &hits[0].memory;
    assert!(hit.text.starts_with("Red navigation light"), "{hits:?}");
    assert_eq!(hit.module.as_deref(), Some("sailing-basics"));
    assert_eq!(hit.source.as_deref(), Some("sailing.md"));
    assert!(
        texts(&rt, &b, "red navigation light port").is_empty(),
        "not bob's"
    );
    assert!(matches!(
        rt.get(&b, hit.id),
        Err(RuntimeError::NotFound { .. })
    ));
    for who in [&a, &admin] {
        assert!(matches!(
            rt.update(who, hit.id, "Red is starboard."),
            Err(RuntimeError::ReadOnly(_))
        ));
        assert!(matches!(
            rt.delete(who, hit.id),
            Err(RuntimeError::ReadOnly(_))
        ));
        let add = AddRequest {
            namespace: hit.namespace,
            text: "My own note.".to_owned(),
            ..AddRequest::default()
        };
        assert!(matches!(rt.add(who, &add), Err(RuntimeError::ReadOnly(_))));
    }
    // Alice's own memories are untouched by the module's: a near-identical
    // note of hers is stored in her cube, not merged into the module.
    let own = rt
        .namespace_named(alice.id, "default")
        .expect("alice's cube")
        .id;
    let mine = rt
        .add(
            &a,
            &AddRequest {
                namespace: own,
                text: V1[0].to_owned(),
                ..AddRequest::default()
            },
        )
        .expect("alice's add");
    assert!(!mine.duplicate);

    // Same file again: nothing to do; for bob too: mounted for both.
    let again = rt
        .install_module(&admin, &file, &Scope::Users(vec![alice.id]))
        .expect("again");
    assert_eq!(again.action, InstallAction::AlreadyInstalled);
    let more = rt
        .install_module(&admin, &file, &Scope::Users(vec![bob.id]))
        .expect("for bob");
    assert_eq!(more.action, InstallAction::Extended);
    assert_eq!(more.users, vec![alice.id, bob.id]);
    assert!(!texts(&rt, &b, "reef the mainsail wind knots").is_empty());

    // Another file claiming the same version, and an older version: refused.
    let forged = build(&manifest(&public, "1.0.0"), &V1[..2], &k);
    invalid(
        rt.install_module(&admin, &forged, &Scope::Global),
        "new version",
    );
    let older = build(&manifest(&public, "0.9.0"), V1, &k);
    invalid(rt.install_module(&admin, &older, &Scope::Global), "older");
    let _ = other_public;

    // Update: the new text replaces the old for both users at once.
    let old_cube = hit.namespace;
    let v2 = build(
        &manifest(&public, "1.1.0"),
        &[
            V1[0],
            V1[1],
            "Red navigation light is on the port side; remember: port wine is red.",
        ],
        &k,
    );
    let r = rt
        .install_module(&admin, &v2, &Scope::Users(vec![alice.id]))
        .expect("update");
    assert_eq!(
        (r.action, r.previous.as_deref(), r.version.as_str()),
        (InstallAction::Updated, Some("1.0.0"), "1.1.0")
    );
    assert_eq!(r.users, vec![alice.id, bob.id], "the scope carries over");
    assert!(
        rt.namespace_is_empty(old_cube).expect("scan"),
        "old version gone"
    );
    for who in [&a, &b] {
        let t = texts(&rt, who, "red navigation light port");
        assert!(t.iter().any(|x| x.contains("port wine")), "{t:?}");
    }
    let info = rt.module(&b, "sailing-basics").expect("bob sees it");
    assert_eq!(
        (info.manifest.version.as_str(), info.memories),
        ("1.1.0", 3)
    );

    // Modules stay installed across a restart.
    drop(rt);
    let rt = open(&dir.join("vault"));
    assert_eq!(rt.modules(&admin).expect("list").len(), 1);
    assert!(!texts(&rt, &b, "bowline loop").is_empty());

    // Bob unmounts it for himself: alice keeps it.
    let r = rt
        .remove_module(&b, "sailing-basics")
        .expect("bob's remove");
    assert!(!r.removed);
    assert!(
        texts(&rt, &b, "bowline loop")
            .iter()
            .all(|t| !t.contains("bowline"))
    );
    assert!(!texts(&rt, &a, "bowline loop").is_empty());
    // The administrator removes it from the device: no memory, no residue.
    let r = rt.remove_module(&admin, "sailing-basics").expect("remove");
    assert_eq!((r.removed, r.memories), (true, 3));
    assert!(rt.modules(&admin).expect("list").is_empty());
    assert!(matches!(
        rt.remove_module(&admin, "sailing-basics"),
        Err(RuntimeError::NotFound { .. })
    ));
    let a_texts = texts(&rt, &a, "bowline loop");
    assert_eq!(
        a_texts,
        vec![V1[0].to_owned()],
        "only alice's own note is left"
    );
    drop(rt);
    let db = std::fs::read(dir.join("vault/vault.redb")).expect("db");
    let needle = b"port wine";
    assert!(
        !db.windows(needle.len()).any(|w| w == needle),
        "no residue of the module's text"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_global_module_is_everyones_and_only_the_administrators_to_install() {
    let dir = temp_dir("global");
    let rt = open(&dir.join("vault"));
    let admin = rt.admin();
    let (carol, _) = rt.create_user(&admin, "carol").expect("carol");
    let c = Principal::user(carol.id);
    let (k, public) = key(&dir, "publisher.key");
    rt.trust_publisher(&admin, &public, "Sailing school")
        .expect("trust");
    let file = build(&manifest(&public, "2.0.0"), V1, &k);
    let r = rt
        .install_module(&admin, &file, &Scope::Global)
        .expect("install");
    assert!(r.global);
    // A user created after the install sees it too.
    let (dave, _) = rt.create_user(&admin, "dave").expect("dave");
    for who in [&c, &Principal::user(dave.id)] {
        assert!(!texts(&rt, who, "bowline loop").is_empty());
        assert!(matches!(
            rt.remove_module(who, "sailing-basics"),
            Err(RuntimeError::Denied(_))
        ));
    }
    // Distrusting the publisher keeps what is installed, refuses new ones.
    assert!(rt.distrust_publisher(&admin, &public).expect("distrust"));
    assert_eq!(rt.modules(&c).expect("list").len(), 1);
    let v2 = build(&manifest(&public, "2.1.0"), V1, &k);
    invalid(
        rt.install_module(&admin, &v2, &Scope::Global),
        "does not trust",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sealed_module_installs_only_on_the_device_it_was_sealed_for() {
    use memkern_runtime::modules::seal;
    let dir = temp_dir("sealed");
    let (mine, theirs) = (open(&dir.join("mine")), open(&dir.join("theirs")));
    let (k, public) = key(&dir, "publisher.key");
    let file = build(&manifest(&public, "1.0.0"), V1, &k);
    let recipient = seal::device_recipient(mine.dir()).expect("device key");
    assert!(recipient.starts_with("age1pq1"), "{recipient}");
    assert_eq!(
        seal::device_recipient(mine.dir()).expect("again"),
        recipient,
        "stable"
    );
    let sealed = seal::seal(&file, &recipient).expect("seal");
    assert!(seal::is_sealed(&sealed));
    assert!(
        !sealed.windows(7).any(|w| w == b"bowline"),
        "the text is encrypted"
    );
    invalid(seal::seal(b"not a module", &recipient), "module");
    invalid(
        seal::seal(&file, "age1notarecipient"),
        "not an age recipient",
    );
    for rt in [&mine, &theirs] {
        rt.trust_publisher(&rt.admin(), &public, "school")
            .expect("trust");
    }
    invalid(
        theirs.install_module(&theirs.admin(), &sealed, &Scope::Global),
        "another device",
    );
    let mut damaged = sealed.clone();
    let at = damaged.len() - 20;
    damaged[at] ^= 1;
    invalid(
        mine.install_module(&mine.admin(), &damaged, &Scope::Global),
        "sealed module",
    );
    let r = mine
        .install_module(&mine.admin(), &sealed, &Scope::Global)
        .expect("install on the buyer's device");
    assert_eq!(r.memories, 3);
    // The unsealed file and the sealed one are the same module.
    let again = mine
        .install_module(&mine.admin(), &file, &Scope::Global)
        .expect("again");
    assert_eq!(again.action, InstallAction::AlreadyInstalled);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_module_sealed_to_a_user_installs_for_that_user_on_each_of_their_devices() {
    use memkern_runtime::modules::seal;
    let dir = temp_dir("user-key");
    let (k, public) = key(&dir, "publisher.key");
    let file = build(&manifest(&public, "1.0.0"), V1, &k);
    let kitchen = open(&dir.join("kitchen"));
    let admin = kitchen.admin();
    let (alice, _) = kitchen.create_user(&admin, "alice").expect("alice");
    let (bob, _) = kitchen.create_user(&admin, "bob").expect("bob");
    let (a, b) = (Principal::user(alice.id), Principal::user(bob.id));
    let recipient = kitchen.user_key(&a, alice.id).expect("alice's key");
    assert_eq!(
        kitchen.user_key(&admin, alice.id).expect("again"),
        recipient,
        "made once"
    );
    assert!(
        kitchen.user_key(&b, alice.id).is_err(),
        "bob cannot see alice's key"
    );
    let sealed = seal::seal(&file, &recipient).expect("seal to alice");
    kitchen
        .trust_publisher(&admin, &public, "school")
        .expect("trust");
    invalid(
        kitchen.install_module(&b, &sealed, &Scope::Users(vec![bob.id])),
        "sealed for another device or user",
    );
    invalid(
        kitchen.install_module(&admin, &sealed, &Scope::Global),
        "sealed for another device or user",
    );
    invalid(
        kitchen.install_module(&admin, &sealed, &Scope::Users(vec![alice.id, bob.id])),
        "for alice alone",
    );
    kitchen
        .install_module(&a, &sealed, &Scope::Users(vec![alice.id]))
        .expect("alice installs what she bought");
    assert!(
        texts(&kitchen, &a, "bowline loop")
            .iter()
            .any(|t| t.contains("bowline"))
    );
    assert!(texts(&kitchen, &b, "bowline loop").is_empty());

    // Her phone: the identity travels, the purchase with it.
    let exported = kitchen.export_user_key(&a, alice.id).expect("export");
    assert!(kitchen.export_user_key(&b, alice.id).is_err());
    let phone = open(&dir.join("phone"));
    let (alice2, _) = phone.create_user(&phone.admin(), "alice").expect("alice");
    let a2 = Principal::user(alice2.id);
    phone
        .trust_publisher(&phone.admin(), &public, "school")
        .expect("trust");
    invalid(
        phone.install_module(&a2, &sealed, &Scope::Users(vec![alice2.id])),
        "sealed for another device or user",
    );
    assert_eq!(
        phone
            .import_user_key(&a2, alice2.id, &exported)
            .expect("import"),
        recipient
    );
    phone
        .install_module(&a2, &sealed, &Scope::Users(vec![alice2.id]))
        .expect("installs on her phone too");
    // A user keeps the key they have; garbage is refused.
    let (bob2, _) = phone.create_user(&phone.admin(), "bob").expect("bob");
    phone.user_key(&phone.admin(), bob2.id).expect("bob's key");
    invalid(
        phone.import_user_key(&phone.admin(), bob2.id, &exported),
        "already has another key",
    );
    invalid(
        phone.import_user_key(&phone.admin(), bob2.id, "not a key"),
        "no age identity",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
