//! `memkern-convert` end to end: the real binary writes the embedder's ONNX
//! graph; bad input is one error line and status 1.

use std::fs;
use std::process::{Command, Output};

use memkern_models::embed::export_onnx_files;
use memkern_models::fetch::{MINILM_L6_V2, ModelCache};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memkern-convert"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("memkern-convert-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn minilm_writes_the_same_graph_as_the_library() {
    let files = ModelCache::from_env()
        .unwrap()
        .ensure(&MINILM_L6_V2)
        .unwrap();
    let dir = temp_dir("ok");
    let out = dir.join("model.onnx");
    let run = cli(&["minilm", "--out", out.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let written = fs::read(&out).unwrap();
    let expected = export_onnx_files(
        files.path("model.safetensors").unwrap(),
        files.path("config.json").unwrap(),
    )
    .unwrap();
    assert!(written == expected, "the CLI and the library disagree");

    // --model-dir gives the same bytes.
    let out2 = dir.join("again.onnx");
    let run = cli(&[
        "minilm",
        "--out",
        out2.to_str().unwrap(),
        "--model-dir",
        files.dir().to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(fs::read(&out2).unwrap() == expected);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_model_dir_is_one_error_line() {
    let dir = temp_dir("bad");
    fs::write(dir.join("model.safetensors"), b"not safetensors").unwrap();
    fs::write(dir.join("config.json"), b"{}").unwrap();
    let out = dir.join("model.onnx");
    for model_dir in [dir.clone(), dir.join("missing")] {
        let run = cli(&[
            "minilm",
            "--out",
            out.to_str().unwrap(),
            "--model-dir",
            model_dir.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&run.stderr).into_owned();
        assert_eq!(run.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!out.exists());
    }
    let _ = fs::remove_dir_all(&dir);
}
