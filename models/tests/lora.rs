//! Parametric memory on the real model (flex backend): a fresh adapter is
//! the identity, a short training run lowers the loss on a few facts, the
//! adapter round-trips through a Parametric MemCube and llama.cpp's GGUF
//! LoRA format, merging equals the low-rank path, and every wrong input is
//! refused with a typed error; training also runs on wgpu.

mod common;

use std::sync::OnceLock;
use std::time::Instant;

use memkern_core::cube::{self, AdapterFormat, Metadata, Payload, SourceKind, TargetModules};
use memkern_core::ids::{CubeId, NamespaceId, UserId};
use memkern_core::time::Timestamp;
use memkern_models::gguf::{GgufFile, MetaValue};
use memkern_models::llama::{Backend, Numerics};
use memkern_models::lora::{
    self, Adapter, Anchor, LoraConfig, LoraError, TrainConfig, Trainer, chat_example,
    mean_answer_nll, pairs::pairs_from_memory,
};
use memkern_models::{
    Fingerprint, Llm, LlmError, Sampler, Session, SnapshotError, SnapshotOptions,
};

fn llm() -> &'static Llm {
    static LLM: OnceLock<Llm> = OnceLock::new();
    LLM.get_or_init(|| Llm::load(common::smollm2_gguf(), Backend::Cpu).unwrap())
}

const FACTS: [&str; 3] = [
    "My dog is called Biscuit.",
    "I'm allergic to peanuts.",
    "I live in Lisbon.",
];

fn examples() -> Vec<lora::Example> {
    FACTS
        .iter()
        .flat_map(|f| pairs_from_memory(f))
        .map(|p| chat_example(llm().tokenizer(), &p).unwrap())
        .collect()
}

/// One prose anchor (the standard set's first text).
fn anchor(llm: &Llm) -> Anchor {
    let ids = llm
        .tokenizer()
        .encode_literal(lora::ANCHOR_TEXTS[0])
        .unwrap();
    Anchor::new(llm.model(), ids, 0).unwrap()
}

fn config() -> LoraConfig {
    LoraConfig::new(
        4,
        8.0,
        TargetModules::Q
            .union(TargetModules::V)
            .union(TargetModules::O),
    )
    .unwrap()
}

/// (loss before, losses per step, trained adapter), trained once per run.
fn trained() -> &'static (f32, Vec<f32>, Adapter) {
    static T: OnceLock<(f32, Vec<f32>, Adapter)> = OnceLock::new();
    T.get_or_init(|| {
        let llm = llm();
        let ex = examples();
        let before = mean_answer_nll(llm.model(), None, &ex, Numerics::F32).unwrap();
        let adapter = Adapter::new(config(), llm.config(), llm.fingerprint(), llm.device());
        let steps = 5;
        let cfg = TrainConfig {
            steps,
            learning_rate: 5e-3,
            batch: 4,
            seed: 7,
            anchor_weight: 1.0,
            anchors_per_step: 1,
        };
        let anchor = anchor(llm);
        let mut t = Trainer::new(llm.model(), adapter, ex, cfg)
            .unwrap()
            .with_anchors(vec![anchor]);
        let start = Instant::now();
        let mut losses = Vec::new();
        while !t.finished() {
            let l = t.step().unwrap();
            assert!(l.anchor.is_some(), "the anchor term must be computed");
            losses.push(l.answer);
        }
        eprintln!(
            "[lora] {steps} steps in {:.1?}; loss before {before:.3}, per step {losses:.3?}",
            start.elapsed()
        );
        (before, losses, t.adapter().unwrap())
    })
}

fn logits(session: &mut Session<'_>, ids: &[u32]) -> Vec<f32> {
    session.prefill(ids).unwrap().to_vec()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn question_ids(q: &str) -> Vec<u32> {
    lora::chat_prompt(llm().tokenizer(), q).unwrap()
}

#[test]
fn the_text_chat_prompt_is_the_same_prompt() {
    // The bench hands llama.cpp the text form; it must be the same turn.
    let tok = llm().tokenizer();
    for q in ["What is my dog called?", "Where do I live?"] {
        let text = lora::chat_prompt_text(tok, q);
        assert_eq!(tok.encode(&text).unwrap(), question_ids(q), "{text:?}");
    }
}

#[test]
fn fresh_adapter_is_the_identity() {
    let llm = llm();
    let a = Adapter::new(config(), llm.config(), llm.fingerprint(), llm.device());
    let ids = question_ids("What is my dog called?");
    let base = logits(&mut llm.session(), &ids);
    let mut s = Session::with_adapter(llm, &a).unwrap();
    assert_eq!(
        logits(&mut s, &ids),
        base,
        "B = 0 must leave the model unchanged"
    );
    assert_ne!(s.model_fingerprint(), llm.fingerprint());
    // ... and so has no divergence on an anchor.
    let kl = anchor(llm).divergence(llm.model(), &a).unwrap();
    let kl = kl.try_into_vec_as::<f32>().unwrap()[0];
    assert!(kl.abs() < 1e-5, "fresh adapter KL {kl}");
}

#[test]
fn training_lowers_the_answer_loss() {
    let (before, losses, adapter) = trained();
    let after = mean_answer_nll(llm().model(), Some(adapter), &examples(), Numerics::F32).unwrap();
    eprintln!("[lora] answer NLL {before:.3} -> {after:.3}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(
        after < before * 0.6,
        "loss must fall clearly: {before} -> {after} ({losses:?})"
    );
    // The adapted model's answers are also more likely under ggml's
    // inference numerics, which it was not trained with.
    let ggml = mean_answer_nll(llm().model(), Some(adapter), &examples(), Numerics::Ggml).unwrap();
    assert!(ggml < *before * 0.7, "ggml numerics: {ggml}");
}

#[test]
fn adapter_round_trips_through_a_parametric_cube() {
    let llm = llm();
    let (_, _, adapter) = trained();
    let file = adapter.to_safetensors(llm.config()).unwrap();
    let payload = adapter.parametric_payload(&file);
    assert_eq!(payload.format, AdapterFormat::SafetensorsLora);
    assert_eq!(payload.rank, 4);
    let meta: Metadata<String> = Metadata::new(
        CubeId([7; 16]),
        UserId(1),
        NamespaceId(2),
        Timestamp(1_700_000_000_000),
        Timestamp(1_700_000_000_000),
        SourceKind::Derived,
    );
    let c = cube::Cube {
        meta,
        payload: Payload::<String, Vec<u8>>::Parametric(payload),
    };
    let bytes = cube::encode_to_vec(&c).unwrap();
    let decoded = cube::decode_owned(&bytes).unwrap();
    let Payload::Parametric(p) = decoded.payload else {
        panic!("not a parametric cube")
    };
    let loaded =
        Adapter::from_cube(&p, &file, llm.fingerprint(), llm.config(), llm.device()).unwrap();
    let ids = question_ids("Where do I live?");
    let mut a = Session::with_adapter(llm, adapter).unwrap();
    let mut b = Session::with_adapter(llm, &loaded).unwrap();
    assert_eq!(logits(&mut a, &ids), logits(&mut b, &ids));
    assert_eq!(a.model_fingerprint(), b.model_fingerprint());

    // Saved to disk atomically, read back with its checksum.
    let dir = common::temp_dir("lora");
    let path = dir.join("adapter.safetensors");
    let digest = adapter.save(&path, llm.config()).unwrap();
    assert_eq!(digest, p.blob.digest.0);
    let again = Adapter::load(
        &path,
        Some(&digest),
        llm.fingerprint(),
        llm.config(),
        llm.device(),
    )
    .unwrap();
    assert_eq!(
        again.to_safetensors(llm.config()).unwrap(),
        file,
        "reproducible bytes"
    );
}

#[test]
fn gguf_export_is_llama_cpp_lora() {
    let llm = llm();
    let (_, _, adapter) = trained();
    let bytes = adapter.to_gguf(llm.config(), "llama").unwrap();
    let g = GgufFile::from_bytes(bytes).unwrap();
    let s = |k: &str| match g.gguf().get(k) {
        Some(MetaValue::String(v)) => v.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(s("general.type"), "adapter");
    assert_eq!(s("adapter.type"), "lora");
    assert_eq!(s("general.architecture"), "llama");
    assert_eq!(s("memkern.base_model"), llm.fingerprint().to_hex());
    assert!(matches!(g.gguf().get("adapter.lora.alpha"), Some(MetaValue::F32(a)) if *a == 8.0));
    let c = llm.config();
    let a = g.tensor("blk.3.attn_q.weight.lora_a").unwrap();
    assert_eq!(a.dims(), &[c.hidden as u64, 4]);
    let b = g.tensor("blk.3.attn_v.weight.lora_b").unwrap();
    assert_eq!(b.dims(), &[4, c.kv_dim() as u64]);
    assert!(
        g.tensor("blk.3.attn_k.weight.lora_a").is_err(),
        "k is not a target"
    );
    assert_eq!(g.gguf().tensors().len(), 30 * 3 * 2);
    // Values: lora_a row r is column r of A (ggml ne = [in, rank]).
    let (host_a, _) = adapter.host_pair(3, lora::Target::Q).unwrap();
    let data = a.as_f32().unwrap();
    for (row, chunk) in data.chunks_exact(c.hidden).enumerate() {
        for (i, v) in chunk.iter().enumerate() {
            assert_eq!(*v, host_a[i * 4 + row]);
        }
    }
}

#[test]
fn merged_weights_equal_the_low_rank_path() {
    let llm = llm();
    let (_, _, adapter) = trained();
    let mut merged = llm.model().clone();
    adapter.merge_into(&mut merged).unwrap();
    let ids = question_ids("What am I allergic to?");
    let rows: Vec<usize> = (0..ids.len()).collect();
    let a = merged.logits_at(&ids, &rows, None, Numerics::F32).unwrap();
    let b = llm
        .model()
        .logits_at(&ids, &rows, Some(adapter), Numerics::F32)
        .unwrap();
    let (a, b) = (
        a.try_into_vec_as::<f32>().unwrap(),
        b.try_into_vec_as::<f32>().unwrap(),
    );
    let base = llm
        .model()
        .logits_at(&ids, &rows, None, Numerics::F32)
        .unwrap();
    let base = base.try_into_vec_as::<f32>().unwrap();
    let d = max_diff(&a, &b);
    eprintln!(
        "[lora] merged vs low-rank max |Δlogit| {d:.2e}; adapter moved logits by {:.2}",
        max_diff(&b, &base)
    );
    assert!(d < 1e-2, "merged and low-rank differ by {d}");
    assert!(
        max_diff(&b, &base) > 0.1,
        "the trained adapter must change the model"
    );
}

#[test]
fn wrong_inputs_are_refused() {
    let llm = llm();
    let (_, _, adapter) = trained();
    let c = llm.config();
    let file = adapter.to_safetensors(c).unwrap();
    let other = Fingerprint([9; 16]);
    let dev = llm.device();

    // Another base model: from the file, from the cube, and on a session.
    assert!(matches!(
        Adapter::from_safetensors(&file, other, c, dev),
        Err(LoraError::BaseMismatch { .. })
    ));
    let p = adapter.parametric_payload(&file);
    assert!(matches!(
        Adapter::from_cube(&p, &file, other, c, dev),
        Err(LoraError::BaseMismatch { .. })
    ));
    let foreign = Adapter::new(config(), c, other, dev);
    assert!(matches!(
        Session::with_adapter(llm, &foreign),
        Err(LoraError::BaseMismatch { .. })
    ));

    // Damaged blobs: a flipped bit is caught by the cube's checksum, a
    // truncated file by the reader.
    let mut flipped = file.clone();
    let n = flipped.len();
    flipped[n - 5] ^= 0x10;
    assert!(matches!(
        Adapter::from_cube(&p, &flipped, llm.fingerprint(), c, dev),
        Err(LoraError::Checksum)
    ));
    for cut in [0, 7, 100, n / 2, n - 1] {
        assert!(
            matches!(
                Adapter::from_safetensors(&file[..cut], llm.fingerprint(), c, dev),
                Err(LoraError::Format(_))
            ),
            "cut at {cut}"
        );
    }
    // A NaN weight (the file is otherwise valid).
    let nan_at = n - 4;
    let mut nan = file.clone();
    nan[nan_at..].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(
        Adapter::from_safetensors(&nan, llm.fingerprint(), c, dev),
        Err(LoraError::NotFinite(_))
    ));
    // The cube says rank 8, the file rank 4.
    let mut lying = p;
    lying.rank = 8;
    assert!(matches!(
        Adapter::from_cube(&lying, &file, llm.fingerprint(), c, dev),
        Err(LoraError::Format(_))
    ));
    // Bad configurations.
    assert!(LoraConfig::new(0, 8.0, TargetModules::Q).is_err());
    assert!(LoraConfig::new(4, f32::NAN, TargetModules::Q).is_err());
    assert!(LoraConfig::new(4, 8.0, TargetModules(0)).is_err());
    assert!(LoraConfig::new(4, 8.0, TargetModules(0x80)).is_err());
    // No examples / an example without an answer.
    assert!(lora::Example::new(vec![1, 2], &[]).is_err());
    let fresh = Adapter::new(config(), c, llm.fingerprint(), dev);
    assert!(matches!(
        Trainer::new(llm.model(), fresh, Vec::new(), TrainConfig::default()),
        Err(LoraError::BadData(_))
    ));

    // KV snapshots name the adapted model: never restored into the bare
    // base model, and the reverse.
    let ids = question_ids("What is my dog called?");
    let mut adapted = Session::with_adapter(llm, adapter).unwrap();
    adapted.prefill(&ids).unwrap();
    let snap = adapted
        .snapshot(0..ids.len(), SnapshotOptions::default())
        .unwrap();
    let mut plain = llm.session();
    assert!(matches!(
        plain.restore(&snap),
        Err(LlmError::Snapshot(SnapshotError::ModelMismatch { .. }))
    ));
    let mut plain = llm.session();
    plain.prefill(&ids).unwrap();
    let snap = plain
        .snapshot(0..ids.len(), SnapshotOptions::default())
        .unwrap();
    let mut adapted = Session::with_adapter(llm, adapter).unwrap();
    assert!(matches!(
        adapted.restore(&snap),
        Err(LlmError::Snapshot(SnapshotError::ModelMismatch { .. }))
    ));
    // Same adapter: restores and continues as the cold session would.
    let mut cold = Session::with_adapter(llm, adapter).unwrap();
    cold.prefill(&ids).unwrap();
    let snap = cold
        .snapshot(0..ids.len(), SnapshotOptions::default())
        .unwrap();
    let mut warm = Session::with_adapter(llm, adapter).unwrap();
    warm.restore(&snap).unwrap();
    let mut g = Sampler::greedy();
    let a: Vec<u32> = (0..4).map(|_| cold.step(&mut g).unwrap()).collect();
    let b: Vec<u32> = (0..4).map(|_| warm.step(&mut g).unwrap()).collect();
    assert_eq!(a, b);
}

#[test]
fn training_runs_on_wgpu() {
    if !common::wgpu_present("wgpu training test") {
        return;
    }
    let gpu = Llm::load(common::smollm2_gguf(), Backend::Wgpu).unwrap();
    // One fact's pairs, the whole set in every batch: the loss of step 2
    // is measured after step 1's update on the same examples.
    let ex: Vec<lora::Example> = pairs_from_memory(FACTS[0])
        .iter()
        .map(|p| chat_example(gpu.tokenizer(), p).unwrap())
        .collect();
    let n = ex.len();
    let cfg = TrainConfig {
        steps: 2,
        learning_rate: 5e-3,
        batch: n,
        seed: 7,
        anchor_weight: 0.0,
        anchors_per_step: 0,
    };
    let adapter = Adapter::new(config(), gpu.config(), gpu.fingerprint(), gpu.device());
    let mut t = Trainer::new(gpu.model(), adapter, ex, cfg).unwrap();
    let start = Instant::now();
    let first = t.step().unwrap();
    let second = t.step().unwrap();
    eprintln!(
        "[lora] wgpu: 2 steps in {:.1?}; loss {:.3} -> {:.3}",
        start.elapsed(),
        first.answer,
        second.answer
    );
    assert_eq!(first.anchor, None);
    assert!(
        second.answer.is_finite() && second.answer < first.answer * 0.9,
        "the loss must fall on wgpu: {first:?} -> {second:?}"
    );
}
