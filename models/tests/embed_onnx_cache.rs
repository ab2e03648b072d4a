//! The ONNX export cache: created on first use, reused, regenerated when
//! deleted or damaged; the converter's bytes are deterministic.
#![cfg(feature = "embed")]

use std::fs;
use std::path::{Path, PathBuf};

use memkern_models::embed::{Embedder, EmbedderOptions, export_onnx_files};
use memkern_models::fetch::{MINILM_L6_V2, ModelCache};
use sha2::{Digest, Sha256};

/// A private copy of the model files, so this test owns its ONNX cache.
fn model_copy(tag: &str) -> PathBuf {
    let files = ModelCache::from_env()
        .unwrap()
        .ensure(&MINILM_L6_V2)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("memkern-embed-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for name in ["model.safetensors", "config.json", "tokenizer.json"] {
        fs::copy(files.path(name).unwrap(), dir.join(name)).unwrap();
    }
    dir
}

fn sha(path: &Path) -> String {
    Sha256::digest(fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sidecar_sha(onnx: &Path) -> String {
    let side: serde_json::Value =
        serde_json::from_slice(&fs::read(format!("{}.json", onnx.display())).unwrap()).unwrap();
    side["onnx_sha256"].as_str().unwrap().to_owned()
}

#[test]
fn onnx_cache_is_created_reused_and_regenerated() {
    let dir = model_copy("cache");
    let probe = ["Remind me to water the tomatoes every Tuesday evening."];

    let first = Embedder::from_dir(&dir, EmbedderOptions::default()).unwrap();
    let onnx = first.onnx_path().to_path_buf();
    assert!(onnx.starts_with(&dir) && onnx.is_file());
    let good_sha = sha(&onnx);
    assert_eq!(sidecar_sha(&onnx), good_sha);
    let expected = first.embed(&probe).unwrap();
    // The cached file is what the converter writes.
    let exported =
        export_onnx_files(&dir.join("model.safetensors"), &dir.join("config.json")).unwrap();
    assert_eq!(
        Sha256::digest(&exported)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        good_sha
    );
    drop(first);

    // Reused: same file, untouched.
    let modified = fs::metadata(&onnx).unwrap().modified().unwrap();
    let again = Embedder::from_dir(&dir, EmbedderOptions::default()).unwrap();
    assert_eq!(fs::metadata(&onnx).unwrap().modified().unwrap(), modified);
    assert_eq!(again.embed(&probe).unwrap(), expected);
    drop(again);

    // Corrupted (one flipped byte in the middle): regenerated, same bytes.
    let mut bytes = fs::read(&onnx).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&onnx, &bytes).unwrap();
    let repaired = Embedder::from_dir(&dir, EmbedderOptions::default()).unwrap();
    assert_eq!(sha(&onnx), good_sha);
    assert_eq!(repaired.embed(&probe).unwrap(), expected);
    drop(repaired);

    // Truncated, then deleted: regenerated each time.
    fs::write(&onnx, &bytes[..1000]).unwrap();
    Embedder::from_dir(&dir, EmbedderOptions::default()).unwrap();
    assert_eq!(sha(&onnx), good_sha);
    fs::remove_file(&onnx).unwrap();
    Embedder::from_dir(&dir, EmbedderOptions::default()).unwrap();
    assert_eq!(sha(&onnx), good_sha);

    // A sidecar for other weights forces a new export too.
    let side_path = format!("{}.json", onnx.display());
    let side = fs::read_to_string(&side_path).unwrap();
    let changed = side.replacen(
        "\"safetensors_sha256\": \"",
        "\"safetensors_sha256\": \"0",
        1,
    );
    assert_ne!(side, changed);
    fs::write(&side_path, changed).unwrap();
    Embedder::from_dir(&dir, EmbedderOptions::default()).unwrap();
    assert_eq!(fs::read_to_string(&side_path).unwrap(), side);

    // A stale export for other weights is cleaned up.
    let stale = dir.join("minilm-0000000000000000.x1.onnx");
    fs::write(&stale, b"old").unwrap();
    fs::remove_file(&onnx).unwrap();
    Embedder::from_dir(&dir, EmbedderOptions::default()).unwrap();
    assert!(!stale.exists());

    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn missing_or_broken_model_files_are_errors() {
    let dir = model_copy("broken");
    fs::write(dir.join("config.json"), b"{\"model_type\": \"llama\"}").unwrap();
    assert!(Embedder::from_dir(&dir, EmbedderOptions::default()).is_err());
    fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert!(Embedder::from_dir(&dir, EmbedderOptions::default()).is_err());
    fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
    assert!(export_onnx_files(&dir.join("model.safetensors"), &dir.join("config.json")).is_err());
    let _ = fs::remove_dir_all(&dir);
}
