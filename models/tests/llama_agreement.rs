//! Agreement with llama.cpp on SmolLM2-135M-Instruct Q4_1.
//!
//! For every prompt of `shared/fixtures/smollm2_reference.jsonl` (llama.cpp,
//! CPU, one thread, batch prefill; an AVX-512 build with flash attention):
//! - our tokenizer reproduces `prompt_ids`;
//! - greedy decoding reproduces `greedy_ids`; a divergence is accepted only
//!   at a near-tie — our own top-2 logits within [`NEAR_TIE`] = 0.1 (the
//!   issue's rule) — with llama.cpp's token as our second choice, and is
//!   printed. Decoding is teacher-forced with llama.cpp's tokens, which is
//!   free-running greedy decoding up to the first divergence and checks
//!   every later position by the same rule (stricter than stopping there);
//! - the first position's top-5 ids equal `first_top5` in order, except
//!   that candidates closer than the backend's top-5 tolerance may trade
//!   places; each such swap is printed.
//!
//! The CPU runs the native ggml-exact path (`llama::native`), which
//! computes what llama.cpp computes to the bit, so on flex the test is
//! exact: all 32 greedy tokens of every prompt with no divergence at all,
//! and the top-5 logits equal to the fixture's four printed decimals. A
//! second flex test reproduces llama.cpp's AVX2 build instead (its f16 dot
//! product and SiLU round differently): measured against an AVX2
//! llama.cpp it matches every logit bit for bit, and against the AVX-512
//! fixture it diverges only at near-ties (largest gap 0.097), which is the
//! issue's rule applied to llama.cpp itself.
//!
//! wgpu runs burn's dense path (f32 matmuls over dequantised weights, GPU
//! `exp`): 2 prompts × 8 tokens on the default adapter (Mesa lavapipe in
//! CI), skipping, saying so, only if no adapter exists and
//! `MEMKERN_REQUIRE_WGPU=1` (set by CI) is not set.

mod common;

use std::time::Instant;

use memkern_models::Llm;
use memkern_models::llama::Backend;
use memkern_models::llama::native::GgmlIsa;
use memkern_models::sampling::top_k;
use serde::Deserialize;

/// Largest gap between our top-2 logits that counts as a near-tie in
/// greedy decoding (the rule).
const NEAR_TIE: f32 = 0.1;
/// How close the flex path's first-position top-5 logits must be to the
/// fixture's, which prints four decimals.
const EXACT: f32 = 6e-5;
/// Largest logit gap within which two first-position candidates may trade
/// places on wgpu: GPU `exp`, division and square root are not correctly
/// rounded (Vulkan allows a few ulp) and the dense f32 matmuls sum in
/// another order than ggml, which moves 8-bit rounding decisions and
/// first-position logits by up to ≈ 0.3.
const TOP5_NEAR_TIE_WGPU: f32 = 0.35;

/// What a run demands.
#[derive(Clone, Copy)]
enum Rule {
    /// Every token and the top-5 logits exactly as the fixture.
    Exact,
    /// The near-tie rule for tokens; top-5 candidates within the
    /// given gap may trade places.
    NearTie(f32),
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    prompt_ids: Vec<u32>,
    first_top5: Vec<(u32, f32)>,
    greedy_ids: Vec<u32>,
}

fn cases() -> Vec<Case> {
    cases_from(&common::fixture("smollm2_reference.jsonl"))
}

fn cases_from(path: &std::path::Path) -> Vec<Case> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect()
}

struct Outcome {
    near_ties: usize,
    max_top5_diff: f32,
}

/// Checks one case on `llm` for `n_tokens` greedy tokens; panics with a
/// description on disagreement.
fn check_case(llm: &Llm, i: usize, case: &Case, n_tokens: usize, rule: Rule) -> Outcome {
    let top5_tie = match rule {
        Rule::Exact => 0.0,
        Rule::NearTie(t) => t,
    };
    let label = format!(
        "prompt {i} {:?}",
        &case.prompt.chars().take(40).collect::<String>()
    );
    let tok = llm.tokenizer();
    // llama.cpp adds BOS where the file asks for it (Gemma).
    let mut ids: Vec<u32> = tok.bos_id().filter(|_| tok.add_bos()).into_iter().collect();
    ids.extend(tok.encode(&case.prompt).unwrap());
    assert_eq!(
        ids, case.prompt_ids,
        "{label}: tokenization differs from llama.cpp"
    );

    let mut session = llm.session();
    let mut logits = session.prefill(&case.prompt_ids).unwrap().to_vec();

    // First-position top-5: same ids in the same order, up to swaps of
    // candidates that are near-tied in our logits or in llama.cpp's.
    let ours = top_k(&logits, 6);
    let reference = |id: u32| case.first_top5.iter().find(|p| p.0 == id).map(|p| p.1);
    let want: Vec<u32> = case.first_top5.iter().map(|p| p.0).collect();
    let ours_ids: Vec<u32> = ours.iter().take(5).map(|p| p.0).collect();
    for (rank, (&o, &w)) in ours_ids.iter().zip(&want).enumerate() {
        if o == w {
            continue;
        }
        let our_gap = (logits[o as usize] - logits[w as usize]).abs();
        let ref_gap = match (reference(o), reference(w)) {
            (Some(a), Some(b)) => (a - b).abs(),
            _ => f32::INFINITY,
        };
        assert!(
            our_gap < top5_tie || ref_gap < top5_tie,
            "{label}: top-5 rank {rank}: ours {o}, llama.cpp {w} (our gap {our_gap:.4}, \
             llama.cpp gap {ref_gap:.4}); ours {ours:?} vs llama.cpp {:?}",
            case.first_top5
        );
        println!(
            "  {label}: top-5 rank {rank}: ours {o}, llama.cpp {w} — near-tie \
             (our gap {our_gap:.4}, llama.cpp gap {ref_gap:.4})"
        );
    }
    let max_top5_diff = case
        .first_top5
        .iter()
        .map(|&(id, l)| (logits[id as usize] - l).abs())
        .fold(0f32, f32::max);
    if matches!(rule, Rule::Exact) {
        assert!(
            max_top5_diff <= EXACT,
            "{label}: top-5 logits differ from llama.cpp's by {max_top5_diff:.5}: ours {ours:?} vs {:?}",
            case.first_top5
        );
    }

    let n = n_tokens.min(case.greedy_ids.len());
    let mut near_ties = 0;
    for (step, &want) in case.greedy_ids[..n].iter().enumerate() {
        let top2 = top_k(&logits, 2);
        if top2[0].0 != want {
            let gap = top2[0].1 - top2[1].1;
            assert!(
                matches!(rule, Rule::NearTie(_)) && gap < NEAR_TIE && top2[1].0 == want,
                "{label}: greedy token {step} is {} (logit {:.4}), llama.cpp chose {want} \
                 (our logit {:.4}); not a near-tie",
                top2[0].0,
                top2[0].1,
                logits[want as usize]
            );
            println!(
                "  {label}: NEAR-TIE at token {step}: ours {} ({:.4}) vs llama.cpp {want} ({:.4}), gap {gap:.4}",
                top2[0].0, top2[0].1, top2[1].1
            );
            near_ties += 1;
        }
        if step + 1 < n {
            logits = session.feed(want).unwrap().to_vec();
        }
    }
    println!(
        "  {label}: {n} greedy tokens agree ({near_ties} near-ties), top-5 max |Δlogit| {max_top5_diff:.4}"
    );
    Outcome {
        near_ties,
        max_top5_diff,
    }
}

fn run(backend: Backend, isa: GgmlIsa, prompts: usize, n_tokens: usize, rule: Rule) {
    run_on(
        common::smollm2_gguf(),
        &cases(),
        backend,
        isa,
        prompts,
        n_tokens,
        rule,
    );
}

fn run_on(
    model: &std::path::Path,
    cases: &[Case],
    backend: Backend,
    isa: GgmlIsa,
    prompts: usize,
    n_tokens: usize,
    rule: Rule,
) {
    let t = Instant::now();
    let mut llm = Llm::load(model, backend).unwrap();
    llm.set_ggml_isa(isa);
    // `MEMKERN_NUMERICS=f32` and `MEMKERN_DENSE=1` measure how far plain
    // f32 arithmetic and the dense burn path are from llama.cpp (both
    // fail the exact rule; see models/README.md).
    if std::env::var("MEMKERN_NUMERICS").is_ok_and(|n| n == "f32") {
        llm.set_numerics(memkern_models::llama::Numerics::F32);
    }
    if std::env::var_os("MEMKERN_DENSE").is_some() {
        llm.set_native_kernels(false);
    }
    println!("[{backend}] model loaded in {:.2?}", t.elapsed());
    let t = Instant::now();
    let mut near_ties = 0;
    let mut max_diff = 0f32;
    if backend == Backend::Cpu && matches!(rule, Rule::Exact) {
        assert!(
            llm.runs_native(),
            "{}: not on the native path",
            model.display()
        );
    }
    for (i, case) in cases.iter().enumerate().take(prompts) {
        let o = check_case(&llm, i, case, n_tokens, rule);
        near_ties += o.near_ties;
        max_diff = max_diff.max(o.max_top5_diff);
    }
    println!(
        "[{backend}, {isa:?}] {prompts} prompts × {n_tokens} tokens agree with llama.cpp \
         ({near_ties} near-ties, top-5 max |Δlogit| {max_diff:.4}) in {:.2?}",
        t.elapsed()
    );
}

#[test]
fn flex_reproduces_llama_cpp_exactly() {
    run(Backend::Cpu, GgmlIsa::Avx512, 8, 32, Rule::Exact);
}

/// SmolLM2 quantised by `memkern models quantize` (byte for byte
/// llama-quantize's file: tests/quantize.rs) to each file type whose
/// matrices all have native kernels, against llama.cpp run on that file
/// (`tests/fixtures/smollm2-<TYPE>.jsonl`, tools/llama-fixtures/reference.sh).
#[test]
fn quantised_variants_reproduce_llama_cpp_exactly() {
    use memkern_models::quantize::{self, FileType};
    let dir = common::temp_dir("agreement-variants");
    // Q4_K_M (the file type people use) on every prompt; the others on
    // the first four (2 to 19 prompt tokens: vec_dot, repacked gemm and
    // tiled rules all run) to keep the suite's time down.
    for (ftype, prompts, tokens) in [
        (FileType::Q4KM, 8, 32),
        (FileType::Q8_0, 4, 16),
        (FileType::Q4_0, 4, 16),
        (FileType::Q5_0, 4, 16),
        (FileType::Q5_1, 4, 16),
        (FileType::Q6K, 4, 16),
        (FileType::Q4KS, 4, 16),
        (FileType::Q5KM, 4, 16),
        (FileType::Q5KS, 4, 16),
    ] {
        let path = dir.join(format!("smollm2-{ftype}.gguf"));
        quantize::quantize_file(common::smollm2_gguf(), &path, ftype, true, &mut |_, _| {})
            .unwrap();
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/smollm2-{ftype}.jsonl"));
        println!("{ftype}:");
        run_on(
            &path,
            &cases_from(&fixture),
            Backend::Cpu,
            GgmlIsa::Avx512,
            prompts,
            tokens,
            Rule::Exact,
        );
        std::fs::remove_file(&path).unwrap();
    }
}

/// Gemma 3's SentencePiece vocabulary (262 144 tokens with scores, byte
/// fallback, user-defined whitespace tokens, no space prefix) gives
/// llama.cpp's ids, BOS included, on every fixture prompt
/// (`tests/fixtures/gemma3-270m-q4_k_m.jsonl`, tools/llama-fixtures/gemma.sh).
#[test]
fn gemma3_tokenizer_matches_llama_cpp() {
    use memkern_models::gguf::GgufFile;
    use memkern_models::tokenizer::Tokenizer;
    let gguf = GgufFile::open(common::gemma3_gguf()).unwrap();
    let tok = Tokenizer::from_gguf(gguf.gguf()).unwrap();
    assert!(tok.add_bos());
    // The file has no chat template: the built-in Gemma one (chosen by
    // its <start_of_turn> token) folds the system text into the first
    // user turn and calls the assistant "model".
    let f = tok.chat_format();
    assert_eq!(
        f.source,
        memkern_models::tokenizer::TemplateSource::Builtin("gemma")
    );
    assert_eq!(f.system_prefix, "<start_of_turn>user\n");
    assert_eq!(f.generation_prompt, "<end_of_turn>\n<start_of_turn>model\n");
    assert!(tok.is_eog(tok.token_id(f.turn_end()).unwrap()));
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gemma3-270m-q4_k_m.jsonl");
    for (i, case) in cases_from(&fixture).iter().enumerate() {
        let mut ids = vec![tok.bos_id().unwrap()];
        ids.extend(tok.encode(&case.prompt).unwrap());
        assert_eq!(ids, case.prompt_ids, "prompt {i} {:?}", case.prompt);
        // And back: the ids decode to the prompt (BOS aside).
        assert_eq!(tok.decode(&ids[1..]).unwrap(), case.prompt, "prompt {i}");
    }
}

/// Gemma 3 270M Q4_K_M (architecture `gemma3`: scaled embeddings, Q/K
/// norms, split-half RoPE with a local base on five layers in six,
/// sliding-window attention, post-norms, GEGLU through ggml's f16 GELU
/// table, tied embeddings) against llama.cpp on the same file: ids,
/// first-position top-5 and all 32 greedy tokens, exactly. Prompt 5 has 79
/// tokens, so llama.cpp's tiled flash attention (64+ query rows) runs too.
#[test]
fn gemma3_reproduces_llama_cpp_exactly() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gemma3-270m-q4_k_m.jsonl");
    let cases = cases_from(&fixture);
    run_on(
        common::gemma3_gguf(),
        &cases,
        Backend::Cpu,
        GgmlIsa::Avx512,
        cases.len(),
        32,
        Rule::Exact,
    );
}

#[test]
fn flex_as_llama_cpp_avx2_build_keeps_the_near_tie_rule() {
    run(Backend::Cpu, GgmlIsa::Avx2, 8, 16, Rule::NearTie(0.25));
}

/// Gemma 3 on burn's dense path (what wgpu and LoRA training run: f32
/// matmuls over dequantised weights), on the CPU: the architecture's
/// dense implementation keeps the near-tie rule against llama.cpp.
#[test]
fn gemma3_dense_path_keeps_the_near_tie_rule() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gemma3-270m-q4_k_m.jsonl");
    let mut llm = Llm::load(common::gemma3_gguf(), Backend::Cpu).unwrap();
    llm.set_native_kernels(false);
    assert!(!llm.runs_native());
    for (i, case) in cases_from(&fixture).iter().enumerate().take(3) {
        check_case(&llm, i, case, 8, Rule::NearTie(TOP5_NEAR_TIE_WGPU));
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_llama_cpp_on_two_prompts() {
    if !common::wgpu_present("wgpu agreement test") {
        return;
    }
    run(
        Backend::Wgpu,
        GgmlIsa::default(),
        2,
        8,
        Rule::NearTie(TOP5_NEAR_TIE_WGPU),
    );
}
