//! Helpers shared by the integration tests that run the real models.

use std::path::PathBuf;

use memkern_models::Llm;
use memkern_models::fetch::{ModelCache, SMOLLM2_135M_Q4_1};
use memkern_models::llama::Backend;

/// A fresh (removed) temporary directory named after the test file and case.
pub fn temp_dir(file: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memkern-{file}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// SmolLM2-135M-Instruct on the CPU, fetched into the model cache first.
pub fn llm() -> Llm {
    let files = ModelCache::from_env()
        .and_then(|c| c.ensure(&SMOLLM2_135M_Q4_1))
        .expect("SmolLM2 fetched");
    Llm::load(files.gguf().expect("gguf"), Backend::Cpu).expect("SmolLM2 loads")
}
