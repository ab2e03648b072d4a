//! Activation memory on the real model (flex backend): snapshot round
//! trips, composition with a query, immutability, the activation-cube
//! identity, the refusals, and the quality effect of f16 and q8 storage.

mod common;

use std::sync::OnceLock;
use std::time::Instant;

use memkern_core::cube::{KvDtype, KvLayout};
use memkern_models::llama::Backend;
use memkern_models::sampling::top_k;
use memkern_models::snapshot::{HEADER_LEN, SnapshotHeader};
use memkern_models::tokenizer::ChatMessage;
use memkern_models::{Llm, LlmError, Sampler, Snapshot, SnapshotError, SnapshotOptions};
use sha2::{Digest, Sha256};

fn llm() -> &'static Llm {
    static LLM: OnceLock<Llm> = OnceLock::new();
    LLM.get_or_init(|| {
        let t = Instant::now();
        let llm = Llm::load(common::smollm2_gguf(), Backend::Cpu).unwrap();
        eprintln!("[snapshot tests] model loaded in {:.2?}", t.elapsed());
        llm
    })
}

/// A memory prefix (system prompt with facts) and a question, as ChatML ids.
fn memory_and_query() -> (Vec<u32>, Vec<u32>) {
    let tok = llm().tokenizer();
    let memory = tok
        .encode_chat(
            &[ChatMessage::system(
                "You are a helpful on-device assistant. Known facts about the user: \
                 Caroline moved to Lisbon in May 2023. She adopted a grey cat called \
                 Pixel. She works as a nurse at a children's hospital and plays the \
                 cello on weekends.",
            )],
            false,
        )
        .unwrap();
    let query = tok
        .encode_chat(
            &[ChatMessage::user("What is the name of Caroline's cat?")],
            true,
        )
        .unwrap();
    (memory, query)
}

fn greedy(session: &mut memkern_models::Session<'_>, n: usize) -> Vec<u32> {
    let mut s = Sampler::greedy();
    (0..n).map(|_| session.step(&mut s).unwrap()).collect()
}

fn temp_file(tag: &str) -> std::path::PathBuf {
    common::temp_dir(tag).join("snap.mkv")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn restore_then_query_equals_cold_prefill() {
    let llm = llm();
    let (memory, query) = memory_and_query();

    // Cold: prefill memory, then the query, then decode.
    let mut cold = llm.session();
    cold.prefill(&memory).unwrap();
    let snap = cold
        .snapshot(0..memory.len(), SnapshotOptions::dtype(KvDtype::F32))
        .unwrap();
    let cold_logits = cold.prefill(&query).unwrap().to_vec();
    let cold_ids = greedy(&mut cold, 12);

    // Warm: restore the memory from a file, prefill the query, decode.
    let path = temp_file("roundtrip");
    snap.write(&path).unwrap();
    let read = Snapshot::read(&path).unwrap();
    assert_eq!(read, snap);
    let mut warm = llm.session();
    warm.restore(&read).unwrap();
    assert_eq!(warm.tokens(), &memory[..]);
    let warm_logits = warm.prefill(&query).unwrap().to_vec();
    assert_eq!(warm_logits, cold_logits, "f32 restore must be bit-exact");
    let warm_ids = greedy(&mut warm, 12);
    assert_eq!(warm_ids, cold_ids);
    println!(
        "memory {} tokens + query {} tokens: warm == cold, greedy {:?}",
        memory.len(),
        query.len(),
        llm.tokenizer().decode(&warm_ids).unwrap()
    );
}

#[test]
fn restore_with_logits_continues_exactly() {
    let llm = llm();
    let (memory, query) = memory_and_query();
    let prompt: Vec<u32> = memory.iter().chain(&query).copied().collect();

    let mut cold = llm.session();
    cold.prefill(&prompt).unwrap();
    for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Q8] {
        let snap = cold
            .snapshot(0..prompt.len(), SnapshotOptions::dtype(dtype))
            .unwrap();
        assert!(snap.header().has_logits);
        let mut warm = llm.session();
        warm.restore(&snap).unwrap();
        assert_eq!(warm.logits(), cold.logits(), "{dtype:?}: stored logits");
        let first = warm.sample(&mut Sampler::greedy()).unwrap();
        assert_eq!(first, cold.sample(&mut Sampler::greedy()).unwrap());
    }
    // f32: the whole continuation is identical to the cold session's.
    let snap = cold
        .snapshot(0..prompt.len(), SnapshotOptions::dtype(KvDtype::F32))
        .unwrap();
    let mut warm = llm.session();
    warm.restore(&snap).unwrap();
    assert_eq!(greedy(&mut warm, 10), greedy(&mut cold, 10));
}

#[test]
fn chained_snapshots_compose_and_check_their_prefix() {
    let llm = llm();
    let (memory, query) = memory_and_query();
    let split = memory.len() / 2;

    let mut cold = llm.session();
    cold.prefill(&memory).unwrap();
    let head = cold
        .snapshot(0..split, SnapshotOptions::dtype(KvDtype::F32))
        .unwrap();
    let tail = cold
        .snapshot(split..memory.len(), SnapshotOptions::dtype(KvDtype::F32))
        .unwrap();
    assert_eq!(tail.first_position() as usize, split);
    assert!(!tail.header().has_logits || tail.header().logits_len > 0);
    let cold_logits = cold.prefill(&query).unwrap().to_vec();

    let mut warm = llm.session();
    // The tail alone starts at `split`, not 0.
    assert!(matches!(
        warm.restore(&tail),
        Err(LlmError::Snapshot(SnapshotError::PositionMismatch { .. }))
    ));
    warm.restore(&head).unwrap();
    warm.restore(&tail).unwrap();
    assert_eq!(warm.prefill(&query).unwrap(), &cold_logits[..]);

    // After other tokens at the same position the tail is refused.
    let mut other = llm.session();
    let mut different = memory[..split].to_vec();
    different[1] = llm.tokenizer().encode("Hello").unwrap()[0];
    other.prefill(&different).unwrap();
    assert!(matches!(
        other.restore(&tail),
        Err(LlmError::Snapshot(SnapshotError::PrefixMismatch { .. }))
    ));
    assert_eq!(
        other.len(),
        split,
        "a refused restore leaves the session unchanged"
    );
}

#[test]
fn snapshots_are_immutable() {
    let llm = llm();
    let (memory, query) = memory_and_query();
    let mut s = llm.session();
    s.prefill(&memory).unwrap();
    let path = temp_file("immutable");
    s.snapshot(0..memory.len(), SnapshotOptions::default())
        .unwrap()
        .write(&path)
        .unwrap();
    let file_before = std::fs::read(&path).unwrap();
    let snap = Snapshot::read(&path).unwrap();
    let digest_before = snap.digest();
    let bytes_before = snap.bytes().to_vec();

    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut warm = llm.session();
        warm.restore(&snap).unwrap();
        warm.prefill(&query).unwrap();
        runs.push(greedy(&mut warm, 16));
        // Generating past the restored prefix must not touch the snapshot.
        assert_eq!(snap.bytes(), &bytes_before[..]);
        assert_eq!(snap.digest(), digest_before);
    }
    assert_eq!(runs[0], runs[1], "a second restore sees the same memory");
    assert_eq!(std::fs::read(&path).unwrap(), file_before, "file unchanged");
    assert_eq!(Snapshot::read(&path).unwrap().digest(), digest_before);
    assert_eq!(digest_before.0[..], Sha256::digest(&file_before)[..]);
}

#[test]
fn activation_payload_describes_the_file() {
    let llm = llm();
    let (memory, _) = memory_and_query();
    let mut s = llm.session();
    s.prefill(&memory).unwrap();
    let n = memory.len() as u64;
    let mut sizes = Vec::new();
    for (dtype, row_bytes) in [
        (KvDtype::F32, 4 * 64),
        (KvDtype::F16, 2 * 64),
        (KvDtype::Q8, 64 + 4),
    ] {
        let snap = s
            .snapshot(
                0..memory.len(),
                SnapshotOptions {
                    dtype,
                    include_logits: false,
                },
            )
            .unwrap();
        let path = temp_file("payload");
        snap.write(&path).unwrap();
        let file = std::fs::read(&path).unwrap();
        let a = snap.activation_payload();
        a.validate().unwrap();
        assert_eq!(a.kv_bytes, n * 30 * 2 * 3 * row_bytes);
        assert_eq!(
            a.layout,
            KvLayout {
                dtype,
                layers: 30,
                kv_heads: 3,
                head_dim: 64
            }
        );
        assert_eq!(a.blob.size, file.len() as u64);
        assert_eq!(a.blob.digest.0[..], Sha256::digest(&file)[..]);
        assert_eq!(a.model.0, llm.fingerprint().0);
        assert_eq!(a.tokenizer.0, llm.tokenizer_fingerprint().0);
        assert_eq!((a.token_count, a.first_position), (memory.len() as u32, 0));
        snap.verify_against(&a).unwrap();
        // The cube can carry the payload (postcard round trip in the core).
        sizes.push((dtype, file.len()));

        let mut warm = llm.session();
        warm.restore_cube(&snap, &a).unwrap();
        let mut wrong = a;
        wrong.layout.dtype = if dtype == KvDtype::F16 {
            KvDtype::Q8
        } else {
            KvDtype::F16
        };
        assert!(matches!(
            llm.session().restore_cube(&snap, &wrong),
            Err(LlmError::Snapshot(SnapshotError::DtypeMismatch { .. }))
        ));
        let mut wrong = a;
        wrong.blob.digest.0[0] ^= 1;
        assert!(matches!(
            llm.session().restore_cube(&snap, &wrong),
            Err(LlmError::Snapshot(SnapshotError::CubeMismatch(_)))
        ));
    }
    println!("{} tokens: file sizes {sizes:?}", memory.len());
}

/// Re-encodes `snap` with its header changed by `edit` and the tensor
/// section cut or zero-extended to the new size, with valid CRC and
/// SHA-256: a well-formed file that differs only in what `edit` changed.
fn reseal(snap: &Snapshot, edit: impl FnOnce(&mut SnapshotHeader)) -> Snapshot {
    let mut h = *snap.header();
    let old = h.sections().unwrap();
    edit(&mut h);
    h.kv_bytes = h.layout.tensor_bytes(h.token_count).unwrap();
    let new = h.sections().unwrap();
    let mut bytes = h.encode().to_vec();
    let ids = &snap.bytes()[HEADER_LEN..HEADER_LEN + 4 * h.token_count as usize];
    bytes.extend_from_slice(ids);
    bytes.resize(new.tensors, 0);
    let mut tensors = snap.bytes()[old.tensors..old.logits].to_vec();
    tensors.resize(h.kv_bytes as usize, 0);
    bytes.extend_from_slice(&tensors);
    bytes.extend_from_slice(&snap.bytes()[old.logits..old.checksum]);
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    Snapshot::from_bytes(bytes).unwrap()
}

fn refusal(snap: &Snapshot) -> SnapshotError {
    match llm().session().restore(snap) {
        Err(LlmError::Snapshot(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn foreign_or_misfitting_snapshots_are_refused() {
    let llm = llm();
    let tokens = llm.tokenizer().encode("The capital of France is").unwrap();
    let mut s = llm.session();
    s.prefill(&tokens).unwrap();
    let snap = s
        .snapshot(0..tokens.len(), SnapshotOptions::dtype(KvDtype::Q8))
        .unwrap();
    llm.session().restore(&snap).unwrap();

    let e = refusal(&reseal(&snap, |h| h.model.0[3] ^= 0x40));
    assert!(matches!(e, SnapshotError::ModelMismatch { .. }), "{e}");
    let e = refusal(&reseal(&snap, |h| h.tokenizer.0[0] ^= 1));
    assert!(matches!(e, SnapshotError::TokenizerMismatch { .. }), "{e}");
    let e = refusal(&reseal(&snap, |h| h.layout.layers = 29));
    assert!(matches!(e, SnapshotError::LayoutMismatch { .. }), "{e}");
    let e = refusal(&reseal(&snap, |h| h.layout.kv_heads = 9));
    assert!(matches!(e, SnapshotError::LayoutMismatch { .. }), "{e}");
    let e = refusal(&reseal(&snap, |h| h.layout.head_dim = 32));
    assert!(matches!(e, SnapshotError::LayoutMismatch { .. }), "{e}");
    let e = refusal(&reseal(&snap, |h| h.first_position = 8190));
    assert!(
        matches!(e, SnapshotError::PositionOutOfContext { .. }),
        "{e}"
    );
    let e = refusal(&reseal(&snap, |h| h.first_position = u32::MAX - 10));
    assert!(
        matches!(e, SnapshotError::PositionOutOfContext { .. }),
        "{e}"
    );

    // A session that is not at the snapshot's first position.
    let mut busy = llm.session();
    busy.prefill(&tokens[..2]).unwrap();
    assert!(matches!(
        busy.restore(&snap),
        Err(LlmError::Snapshot(SnapshotError::PositionMismatch {
            first: 0,
            session: 2
        }))
    ));
    assert_eq!(busy.len(), 2);
}

#[test]
fn damaged_files_are_refused() {
    let llm = llm();
    let tokens = llm.tokenizer().encode("Hello world").unwrap();
    let mut s = llm.session();
    s.prefill(&tokens).unwrap();
    let snap = s
        .snapshot(0..tokens.len(), SnapshotOptions::dtype(KvDtype::F16))
        .unwrap();
    let good = snap.bytes().to_vec();
    let sec = snap.header().sections().unwrap();
    let total = good.len();

    // Truncation at every boundary class and a sweep through the file.
    let mut cuts: Vec<usize> = vec![0, 1, 7, 8, 9, 50, 91, 95, 96, 97, sec.tokens + 4];
    cuts.extend([
        sec.tensors - 1,
        sec.tensors,
        sec.tensors + 1,
        sec.logits - 1,
        sec.logits,
    ]);
    cuts.extend([
        sec.logits + 3,
        sec.checksum - 1,
        sec.checksum,
        sec.checksum + 16,
        total - 1,
    ]);
    cuts.extend((0..total).step_by(997));
    for cut in cuts {
        let e = Snapshot::from_bytes(good[..cut].to_vec()).unwrap_err();
        assert!(
            matches!(e, SnapshotError::Truncated { .. }),
            "cut at {cut}: {e}"
        );
    }
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        Snapshot::from_bytes(long),
        Err(SnapshotError::TrailingBytes { extra: 1 })
    ));

    // Bit flips in every section (every header bit, sampled elsewhere).
    let mut flips: Vec<usize> = (0..HEADER_LEN * 8).collect();
    flips.extend((HEADER_LEN * 8..total * 8).step_by(4099));
    flips.extend([
        sec.tensors * 8,
        sec.logits * 8 + 5,
        sec.checksum * 8 + 7,
        total * 8 - 1,
    ]);
    for bit in flips {
        let mut b = good.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(
            Snapshot::from_bytes(b).is_err(),
            "flip of bit {bit} accepted"
        );
    }
    // Header damage is named as such; body damage by the SHA-256.
    let mut b = good.clone();
    b[21] ^= 1;
    assert!(matches!(
        Snapshot::from_bytes(b),
        Err(SnapshotError::HeaderCorrupt { .. })
    ));
    let mut b = good.clone();
    b[sec.tensors + 100] ^= 4;
    assert!(matches!(
        Snapshot::from_bytes(b),
        Err(SnapshotError::Corrupt)
    ));
    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(
        Snapshot::from_bytes(b),
        Err(SnapshotError::BadMagic { .. })
    ));

    // Unknown version and dtype, with otherwise valid checksums.
    let mut h = *snap.header();
    h.version = 2;
    let mut b = good.clone();
    b[..HEADER_LEN].copy_from_slice(&h.encode());
    assert!(matches!(
        Snapshot::from_bytes(b),
        Err(SnapshotError::UnsupportedVersion(2))
    ));
    let mut b = good.clone();
    b[10] = 9;
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&b[..92]);
    b[92..96].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        Snapshot::from_bytes(b),
        Err(SnapshotError::Malformed(_))
    ));

    // A missing file is an I/O error, not a panic.
    assert!(matches!(
        Snapshot::read(common::temp_dir("missing").join("nope")),
        Err(SnapshotError::Io { .. })
    ));
}

/// Quality effect of f16 and q8 KV storage against the exact f32 cache:
/// greedy-token agreement over 32 tokens after a ~100-token memory and a
/// question, and the largest difference of the first answer logits.
#[test]
fn q8_and_f16_quality_effect() {
    let llm = llm();
    let (memory, query) = memory_and_query();
    let n = 32;
    let mut cold = llm.session();
    cold.prefill(&memory).unwrap();
    let reference_logits = cold.prefill(&query).unwrap().to_vec();
    let reference = greedy(&mut cold, n);
    cold.truncate(memory.len());

    for (dtype, max_logit_diff_bound) in [
        (KvDtype::F32, 0.0),
        (KvDtype::F16, 0.25),
        (KvDtype::Q8, 1.5),
    ] {
        let snap = cold
            .snapshot(
                0..memory.len(),
                SnapshotOptions {
                    dtype,
                    include_logits: false,
                },
            )
            .unwrap();
        let mut warm = llm.session();
        warm.restore(&snap).unwrap();
        let logits = warm.prefill(&query).unwrap().to_vec();
        let diff = max_diff(&logits, &reference_logits);
        let ids = greedy(&mut warm, n);
        let agree = ids
            .iter()
            .zip(&reference)
            .take_while(|(a, b)| a == b)
            .count();
        let top = top_k(&logits, 1)[0].0;
        println!(
            "KV {dtype:?}: {} bytes, first-answer max |Δlogit| {diff:.4}, greedy agreement {agree}/{n}",
            snap.bytes().len()
        );
        assert!(diff <= max_logit_diff_bound, "{dtype:?}: {diff}");
        assert_eq!(top, reference[0], "{dtype:?}: first answer token changed");
    }
}
