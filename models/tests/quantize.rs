//! `memkern_models::quantize` against llama.cpp's `llama-quantize`, byte for
//! byte: the SHA-256 and size of every file type's output for
//! SmolLM2-135M-Instruct Q4_1 (`fixtures/llama_quantize.json`, made by
//! `tools/llama-fixtures/quantize.sh` with `--allow-requantize`).
//! All ten file types take ≈ 10 s together in the test profile. The same
//! for five types of Gemma 3 270M (`llama_quantize_gemma3.json`): its
//! requantised Q4_K_M is the published file.

mod common;

use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use memkern_models::gguf::GgufFile;
use memkern_models::quantize::{self, FileType, QuantizeError};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
struct Fixture {
    input_sha256: String,
    outputs: Vec<Output>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(rename = "type")]
    ty: String,
    sha256: String,
    bytes: u64,
}

fn fixture(name: &str) -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A writer that only hashes and counts.
#[derive(Default)]
struct HashWriter {
    hash: Sha256,
    len: u64,
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hash.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check(fixture_name: &str, path: &Path, types: &[&str]) {
    let fx = fixture(fixture_name);
    let input = GgufFile::open(path).unwrap();
    assert_eq!(
        hex(&Sha256::digest(input.bytes())),
        fx.input_sha256,
        "the fixture was made from another input file"
    );
    for want in fx.outputs.iter().filter(|o| types.contains(&o.ty.as_str())) {
        let ftype: FileType = want.ty.parse().unwrap();
        let t = Instant::now();
        let mut w = HashWriter::default();
        let report = quantize::quantize(&input, ftype, true, &mut w, &mut |_, _| {}).unwrap();
        let got = hex(&w.hash.finalize());
        eprintln!(
            "{}: {} tensors ({} quantised) {:?}, {} bytes in {:.1?}",
            want.ty,
            report.tensors,
            report.quantized,
            report.types,
            w.len,
            t.elapsed()
        );
        assert_eq!(w.len, want.bytes, "{}: size", want.ty);
        assert_eq!(report.bytes_out, want.bytes, "{}: reported size", want.ty);
        assert_eq!(
            got, want.sha256,
            "{}: SHA-256 differs from llama-quantize's",
            want.ty
        );
    }
}

#[test]
fn every_file_type_is_llama_quantize_byte_for_byte() {
    check(
        "llama_quantize.json",
        common::smollm2_gguf(),
        &[
            "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
        ],
    );
}

/// Another architecture (gemma3: 18 layers, tied 640-wide embeddings):
/// requantising the published Q4_K_M gives the published file back, and
/// four other types equal llama-quantize's.
#[test]
fn gemma3_requantised_is_llama_quantize_byte_for_byte() {
    let published = common::gemma3_gguf();
    check(
        "llama_quantize_gemma3.json",
        published,
        &["Q4_K_M", "Q6_K", "Q8_0", "Q5_K_S", "Q4_0"],
    );
}

#[test]
fn requantising_needs_consent_and_a_written_file_reads_back() {
    let input = GgufFile::open(common::smollm2_gguf()).unwrap();
    let err = quantize::quantize(
        &input,
        FileType::Q8_0,
        false,
        &mut io::sink(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, QuantizeError::Requantize { .. }), "{err}");
    assert!(err.to_string().contains("--allow-requantize"), "{err}");

    let dir = common::temp_dir("quantize");
    let out = dir.join("smol-q8_0.gguf");
    let mut calls = 0;
    let report = quantize::quantize_file(
        common::smollm2_gguf(),
        &out,
        FileType::Q8_0,
        true,
        &mut |done, total| {
            calls += 1;
            assert!(done <= total);
        },
    )
    .unwrap();
    assert_eq!(calls, report.tensors);
    let back = GgufFile::open(&out).unwrap();
    assert_eq!(back.gguf().get_u32("general.file_type").unwrap(), 7);
    assert_eq!(back.tensors().len(), input.tensors().len());
    let q = back.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ty(), memkern_models::gguf::GgmlType::Q8_0);

    // A failed run leaves no file behind (and never a torn one).
    let bad = dir.join("never.gguf");
    assert!(
        quantize::quantize_file(
            common::smollm2_gguf(),
            &bad,
            FileType::Q8_0,
            false,
            &mut |_, _| {}
        )
        .is_err()
    );
    assert!(!bad.exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "no temporary file left"
    );
    assert!("q4_k_m".parse::<FileType>().is_ok());
    assert!(
        "Q3_K_L"
            .parse::<FileType>()
            .unwrap_err()
            .to_string()
            .contains("Q4_K_M")
    );
}
