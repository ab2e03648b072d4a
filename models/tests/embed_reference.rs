//! The MiniLM embedder against the independent NumPy reference
//! (`shared/fixtures/minilm_reference.json`), plus batching, truncation,
//! odd inputs and int8 storage.
#![cfg(feature = "embed")]

use std::sync::OnceLock;
use std::time::Instant;

use memkern_models::embed::{Embedder, EmbedderOptions, MAX_TOKENS, dequantize_i8, quantize_i8};
use memkern_models::fetch::{MINILM_L6_V2, ModelCache};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    text: String,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn fixture() -> Vec<Reference> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/minilm_reference.json"
    );
    let bytes = std::fs::read(path).expect("fixture");
    serde_json::from_slice(&bytes).expect("fixture JSON")
}

fn embedder() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| {
        let files = ModelCache::from_env()
            .unwrap()
            .ensure(&MINILM_L6_V2)
            .unwrap();
        Embedder::load(&files).unwrap()
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn token_ids_and_embeddings_match_the_reference() {
    let e = embedder();
    let refs = fixture();
    assert_eq!(refs.len(), 20);
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let vectors = e.embed(&texts).unwrap();
    let mut min_cos = f32::INFINITY;
    for (r, v) in refs.iter().zip(&vectors) {
        assert_eq!(e.tokenize(&r.text).unwrap(), r.token_ids, "{:?}", r.text);
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        let c = cosine(v, &r.embedding);
        assert!(c >= 0.9999, "cosine {c} for {:?}", r.text);
        min_cos = min_cos.min(c);
    }
    eprintln!("min cosine over the fixture: {min_cos:.7}");
    let c = cosine(&vectors[0], &vectors[1]);
    assert!((c - 0.755).abs() < 0.002, "eating food vs bread: {c}");
}

#[test]
fn batched_equals_one_by_one() {
    let e = embedder();
    let refs = fixture();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let batched = e.embed(&texts).unwrap();
    let mut max_diff = 0.0f32;
    for (t, b) in texts.iter().zip(&batched) {
        let single = e.embed_one(t).unwrap();
        for (x, y) in single.iter().zip(b) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    eprintln!("max |batched − single|: {max_diff:e}");
    assert!(max_diff <= 1e-5, "{max_diff}");
    assert!(e.embed(&[]).unwrap().is_empty());
}

#[test]
fn thread_count_changes_no_bit() {
    // Threads split the matmuls' output tiles, never a sum: one thread and
    // a pool of three give the same vectors, alone and batched.
    let files = ModelCache::from_env()
        .unwrap()
        .ensure(&MINILM_L6_V2)
        .unwrap();
    let load = |threads| {
        Embedder::load_with(
            &files,
            EmbedderOptions {
                threads: Some(threads),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (one, three) = (load(1), load(3));
    let refs = fixture();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(one.embed(&texts).unwrap(), three.embed(&texts).unwrap());
    for t in &texts[..4] {
        assert_eq!(
            one.embed_one(t).unwrap(),
            three.embed_one(t).unwrap(),
            "{t:?}"
        );
    }
    assert!(
        Embedder::load_with(
            &files,
            EmbedderOptions {
                threads: Some(0),
                ..Default::default()
            }
        )
        .is_err()
    );
}

#[test]
fn long_text_is_truncated_at_256_tokens() {
    let e = embedder();
    let sentence = "The quick brown fox jumps over the lazy dog. ";
    let long = sentence.repeat(100);
    let ids = e.tokenize(&long).unwrap();
    assert_eq!(ids.len(), MAX_TOKENS);
    assert_eq!((ids[0], ids[MAX_TOKENS - 1]), (101, 102));
    let reference = fixture();
    let fixture_long = reference.iter().find(|r| r.token_ids.len() == 256).unwrap();
    assert_eq!(
        e.tokenize(&fixture_long.text).unwrap(),
        fixture_long.token_ids
    );

    // Megabytes of text: tokenized from a prefix, same ids, quickly.
    let huge = sentence.repeat(40_000);
    let started = Instant::now();
    let huge_ids = e.tokenize(&huge).unwrap();
    assert!(started.elapsed().as_secs_f64() < 2.0);
    assert_eq!(huge_ids, ids);
    // Text whose prefix is mostly whitespace still reaches the real words.
    let spaced = format!("{}{}", " ".repeat(100_000), sentence.repeat(60));
    assert_eq!(e.tokenize(&spaced).unwrap(), ids);
    // One enormous "word" (no whitespace) is a single [UNK].
    let word = "x".repeat(300_000);
    assert_eq!(e.tokenize(&word).unwrap(), vec![101, 100, 102]);

    let v = e.embed(&[&huge, "short"]).unwrap();
    assert_eq!(v.len(), 2);
    assert!(cosine(&v[0], &e.embed_one(&long).unwrap()) > 0.99999);
}

#[test]
fn odd_inputs_do_not_fail() {
    let e = embedder();
    for text in [
        "",
        " ",
        "\0\u{7f}\u{200b}",
        "🚀🚀🚀",
        "日本語のテキスト",
        "a\u{301}\u{301}\u{301}",
        "\n\t\r",
    ] {
        let ids = e.tokenize(text).unwrap();
        assert!(ids.len() >= 2 && ids.len() <= MAX_TOKENS, "{text:?}");
        let v = e.embed_one(text).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{text:?}");
    }
    assert!(e.embed_token_ids(&[&[]]).is_err());
    assert!(e.embed_token_ids(&[&[101, 999_999, 102]]).is_err());
    assert!(e.embed_token_ids(&[&[101; MAX_TOKENS + 1]]).is_err());
}

#[test]
fn int8_round_trip_keeps_the_direction() {
    let e = embedder();
    let refs = fixture();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let mut min_cos = f32::INFINITY;
    for v in e.embed(&texts).unwrap() {
        let (scale, q) = quantize_i8(&v);
        assert!((scale - v.iter().fold(0.0f32, |m, x| m.max(x.abs())) / 127.0).abs() < 1e-9);
        min_cos = min_cos.min(cosine(&v, &dequantize_i8(scale, &q)));
        let cube = e.to_cube_embedding(&v);
        assert_eq!(cube.embedder, e.fingerprint());
        assert_eq!(cube.values.as_i8(), q.as_slice());
        assert_eq!(cube.scale, scale);
    }
    eprintln!("min int8 round-trip cosine: {min_cos:.6}");
    assert!(min_cos >= 0.999, "{min_cos}");
}

#[test]
fn fingerprint_is_stable_and_names_the_model() {
    let e = embedder();
    let files = ModelCache::from_env()
        .unwrap()
        .ensure(&MINILM_L6_V2)
        .unwrap();
    let again = Embedder::from_dir(files.dir(), Default::default()).unwrap();
    assert_eq!(e.fingerprint(), again.fingerprint());
    assert_eq!(e.dim(), 384);
    assert!(e.onnx_path().is_file());
}

#[test]
fn embedder_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Embedder>();
    let e = embedder();
    let v = std::thread::scope(|s| {
        let a = s.spawn(|| e.embed_one("A man is riding a horse.").unwrap());
        let b = s.spawn(|| e.embed_one("A man is riding a horse.").unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(v.0, v.1);
}
