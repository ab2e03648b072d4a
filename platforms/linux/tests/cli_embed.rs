//! `memkern embed` end to end: token ids and vectors agree with the
//! independent reference; bad input is one error line.
#![cfg(feature = "embed")]

use std::process::{Command, Output};

fn memkern(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memkern"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("binary runs")
}

fn reference() -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/minilm_reference.json"
    );
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("fixture JSON")
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn json_output_matches_the_reference() {
    let refs = reference();
    let picked: Vec<&serde_json::Value> = refs
        .iter()
        .filter(|r| {
            let t = r["text"].as_str().unwrap_or("");
            t.is_empty() || t.starts_with("naïve") || t.starts_with("A man is eating food")
        })
        .collect();
    assert_eq!(picked.len(), 3);
    let texts: Vec<&str> = picked.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let mut args = vec!["embed", "--json"];
    args.extend(&texts);
    let out = memkern(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(doc["dim"], 384);
    assert_eq!(doc["fingerprint"].as_str().map(str::len), Some(32));
    let results = doc["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    for (r, got) in picked.iter().zip(results) {
        assert_eq!(got["text"], r["text"]);
        assert_eq!(got["token_ids"], r["token_ids"], "{}", r["text"]);
        let (a, b) = (floats(&got["embedding"]), floats(&r["embedding"]));
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let norms = a.iter().map(|x| x * x).sum::<f64>().sqrt()
            * b.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(dot / norms >= 0.9999, "{}: {}", r["text"], dot / norms);
    }
}

#[test]
fn plain_output_lists_ids_and_vector() {
    let out = memkern(&["embed", "A man is eating food."]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "text: \"A man is eating food.\"");
    assert_eq!(
        lines[1],
        "token_ids (8): 101 1037 2158 2003 5983 2833 1012 102"
    );
    assert!(lines[2].starts_with("embedding (384): "), "{}", lines[2]);
    assert_eq!(lines[2].split(' ').count(), 2 + 384);
}

#[test]
fn bad_input_is_refused() {
    let out = memkern(&["embed"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage errors exit 2");
    let out = memkern(&["embed", "--model-dir", "/nonexistent/memkern/minilm", "hi"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(out.stdout.is_empty());
}
