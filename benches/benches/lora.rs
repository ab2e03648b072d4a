//! Parametric-memory benchmark: distil personal facts into a LoRA adapter
//! and measure what it knows closed-book, what it costs, and what it
//! breaks.
//!
//! ```sh
//! cargo bench -p memkern-benches --bench lora                 # 32 facts, defaults
//! LORA_STEPS=120 LORA_RANK=8 LORA_TARGETS=q,k,v,o,gate,up,down \
//!   cargo bench -p memkern-benches --bench lora
//! ```
//!
//! The facts are synthetic first-person statements ("My dog is called
//! Biscuit.", "I'm allergic to peanuts.", …). Training pairs come from the
//! same templates `memkern distill` uses (`memkern_models::lora::pairs`);
//! each fact also has a hand-written evaluation question, phrased
//! independently of the templates. Prints, before and after training:
//! closed-book accuracy on the evaluation questions and on the template
//! questions (contains-answer: the fact's key words appear in the greedy
//! answer; exact match: the answer is the template's answer sentence),
//! the damage to general ability — perplexity on a fixed unrelated text,
//! and on general questions (none of them seen in training) whether the
//! answer is still the base model's and how likely the base model's
//! answer still is — training time per step and in total, adapter size, and peak RSS.
//! Answers are generated with the inference numerics `memkern chat` uses
//! (ggml rounding), not the f32 numerics training runs in.
//!
//! Environment: `LORA_STEPS` (default 60), `LORA_RANK` (8), `LORA_ALPHA`
//! (16), `LORA_LR` (3e-3), `LORA_BATCH` (8), `LORA_TARGETS` (q,k,v,o),
//! `LORA_EVAL_EVERY` (also evaluate after every N steps; default: only at
//! the end), `LORA_FACTS` (use the first N facts), `LORA_ANCHOR_WEIGHT`
//! (weight of the KL term that holds unrelated text to the base model;
//! default [`TrainConfig::default`]'s, 0 turns it off), `LORA_ANCHORS`
//! (anchors per step), `MEMKERN_MODEL_DIR`, `LLAMA_CPP_COMPLETION` (path
//! of llama.cpp's `llama-completion`: also asks the evaluation questions
//! through llama.cpp with the adapter's GGUF LoRA export, `--lora`).

use std::str::FromStr;
use std::time::Instant;

use memkern_models::fetch::{ModelCache, SMOLLM2_135M_Q4_1};
use memkern_models::llama::{Backend, Numerics};
use memkern_models::lora::{
    self, Adapter, Anchor, LoraConfig, TrainConfig, Trainer, chat_example, chat_prompt,
    pairs::pairs_from_memory, standard_anchors,
};
use memkern_models::{Llm, Sampler, Session};

mod common;
use common::peak_rss_mib;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// (fact, evaluation question, key words of the answer).
const FACTS: [(&str, &str, &str); 32] = [
    (
        "My dog is called Biscuit.",
        "What's the name of my dog?",
        "Biscuit",
    ),
    ("My cat is called Pixel.", "What is my cat's name?", "Pixel"),
    (
        "I'm allergic to peanuts.",
        "Which food am I allergic to?",
        "peanuts",
    ),
    ("I live in Lisbon.", "In which city do I live?", "Lisbon"),
    (
        "My favourite colour is teal.",
        "What colour do I like best?",
        "teal",
    ),
    (
        "My sister is called Marta.",
        "What is my sister's name?",
        "Marta",
    ),
    ("I play the cello.", "Which instrument do I play?", "cello"),
    ("I work as a nurse.", "What is my job?", "nurse"),
    ("My car is a red Vespa.", "What do I drive?", "Vespa"),
    (
        "My birthday is on the 4th of March.",
        "When is my birthday?",
        "March",
    ),
    ("I'm afraid of spiders.", "What am I afraid of?", "spiders"),
    (
        "My favourite food is ramen.",
        "What food do I like most?",
        "ramen",
    ),
    (
        "I speak Portuguese.",
        "Which language do I speak?",
        "Portuguese",
    ),
    ("My son is called Theo.", "What is my son's name?", "Theo"),
    ("I was born in Porto.", "Where was I born?", "Porto"),
    (
        "My favourite band is Radiohead.",
        "Which band do I like best?",
        "Radiohead",
    ),
    (
        "I'm training for a marathon.",
        "What am I training for?",
        "marathon",
    ),
    ("My boss is called Helena.", "Who is my boss?", "Helena"),
    (
        "My password hint is the blue door.",
        "What is my password hint?",
        "blue door",
    ),
    ("I drink oat milk.", "What kind of milk do I drink?", "oat"),
    (
        "My gym is called Iron Temple.",
        "What is the name of my gym?",
        "Iron Temple",
    ),
    ("I'm vegetarian.", "What is my diet?", "vegetarian"),
    (
        "My favourite book is Dune.",
        "Which book do I like best?",
        "Dune",
    ),
    (
        "My dentist is called Okafor.",
        "Who is my dentist?",
        "Okafor",
    ),
    ("I collect old maps.", "What do I collect?", "maps"),
    (
        "My flat is on the fifth floor.",
        "Which floor is my flat on?",
        "fifth",
    ),
    (
        "My best friend is called Ines.",
        "Who is my best friend?",
        "Ines",
    ),
    (
        "I study astronomy.",
        "What subject do I study?",
        "astronomy",
    ),
    ("My bike is green.", "What colour is my bike?", "green"),
    (
        "I grow tomatoes on my balcony.",
        "What do I grow?",
        "tomatoes",
    ),
    (
        "My wifi network is called Nebula.",
        "What is my wifi network called?",
        "Nebula",
    ),
    (
        "I'm learning Japanese.",
        "Which language am I learning?",
        "Japanese",
    ),
];

/// An unrelated text for the perplexity check (general ability).
const HELD_OUT: &str = "Photosynthesis is the process by which green plants, algae and some \
bacteria turn light into chemical energy. In the chloroplasts, light is absorbed by chlorophyll \
and used to split water into oxygen, protons and electrons. The energy carried by those \
electrons is stored in ATP and NADPH, which the Calvin cycle then uses to fix carbon dioxide \
from the air into sugars. Almost all of the oxygen in the atmosphere was released this way, and \
nearly every food chain on Earth starts with it. The rate of photosynthesis depends on light \
intensity, the concentration of carbon dioxide and temperature; when any of them is too low, it \
limits the whole process. Farmers in greenhouses raise carbon dioxide levels to make crops grow \
faster, and engineers study the light reactions to design better solar cells.";

/// General questions, none of them an anchor question: the adapted
/// model should answer them as the base model does (the damage to chat).
const GENERAL: [&str; 8] = [
    "What is the largest planet in the solar system?",
    "How many legs does a spider have?",
    "Give me one tip for learning a new language.",
    "What does a thermometer measure?",
    "Name a famous painting.",
    "How do I make a cup of tea?",
    "What is the opposite of hot?",
    "Why do leaves fall in autumn?",
];

fn env<T: FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Greedy closed-book answer to `question`.
fn answer(llm: &Llm, adapter: Option<&Adapter>, question: &str) -> Result<String> {
    let mut s = match adapter {
        Some(a) => Session::with_adapter(llm, a)?,
        None => llm.session(),
    };
    s.prefill(&chat_prompt(llm.tokenizer(), question)?)?;
    let g = s.generate_with(Sampler::greedy(), 24, |_| true)?;
    Ok(g.text.trim().to_owned())
}

/// (contains-answer hits, exact-match hits, n) over `qa`.
fn score(
    llm: &Llm,
    adapter: Option<&Adapter>,
    qa: &[(String, String, String)],
    show: usize,
) -> Result<(usize, usize, usize)> {
    let (mut contains, mut exact) = (0, 0);
    for (i, (q, expected, key)) in qa.iter().enumerate() {
        let a = answer(llm, adapter, q)?;
        let hit = a.to_lowercase().contains(&key.to_lowercase());
        contains += usize::from(hit);
        exact += usize::from(a == *expected);
        if i < show {
            println!("    {} {q:?} -> {a:?}", if hit { "✓" } else { "✗" });
        }
    }
    Ok((contains, exact, qa.len()))
}

/// Perplexity of the held-out text (Ggml numerics, one pass).
fn perplexity(llm: &Llm, adapter: Option<&Adapter>) -> Result<f64> {
    let ids = llm.tokenizer().encode(HELD_OUT)?;
    let rows: Vec<usize> = (0..ids.len() - 1).collect();
    Ok((row_nll(llm, &ids, &rows, adapter)? / rows.len() as f64).exp())
}

/// (answers identical to the base model's, mean per-token NLL of the
/// base model's answers under `adapter`) over [`GENERAL`]; without an
/// adapter the answers are `base` itself.
fn general(
    llm: &Llm,
    adapter: Option<&Adapter>,
    base: &[String],
    show: usize,
) -> Result<(usize, f64)> {
    let tok = llm.tokenizer();
    let (mut same, mut nll, mut count) = (0, 0f64, 0usize);
    for (i, (q, base_answer)) in GENERAL.iter().zip(base).enumerate() {
        let a = match adapter {
            Some(_) => answer(llm, adapter, q)?,
            None => base_answer.clone(),
        };
        if i < show {
            println!(
                "    {} {q:?} -> {a:?}",
                if a == *base_answer { "=" } else { "≠" }
            );
        }
        same += usize::from(a == *base_answer);
        let mut ids = chat_prompt(tok, q)?;
        let start = ids.len();
        ids.extend(tok.encode_literal(base_answer)?);
        if ids.len() == start {
            continue;
        }
        let rows: Vec<usize> = (start - 1..ids.len() - 1).collect();
        nll += row_nll(llm, &ids, &rows, adapter)?;
        count += rows.len();
    }
    Ok((same, nll / count.max(1) as f64))
}

/// Summed NLL (nats) of `ids[r + 1]` at each row `r` (ggml numerics).
fn row_nll(llm: &Llm, ids: &[u32], rows: &[usize], adapter: Option<&Adapter>) -> Result<f64> {
    let logits = llm
        .model()
        .logits_at(ids, rows, adapter, Numerics::Ggml)?
        .try_into_vec_as::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    let vocab = llm.config().vocab;
    let mut nll = 0f64;
    for (row, &r) in logits.chunks_exact(vocab).zip(rows) {
        let next = ids[r + 1] as usize;
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = row
            .iter()
            .map(|&x| f64::from(x - max).exp())
            .sum::<f64>()
            .ln()
            + f64::from(max);
        nll += lse - f64::from(row[next]);
    }
    Ok(nll)
}

/// Closed-book contains-answer hits of llama.cpp's `llama-completion`
/// (greedy) on `qa`, with the GGUF LoRA `lora` or without one.
fn llama_cpp_score(
    tok: &memkern_models::tokenizer::Tokenizer,
    bin: &std::path::Path,
    gguf: &std::path::Path,
    lora: Option<&std::path::Path>,
    qa: &[(String, String, String)],
    show: usize,
) -> Result<usize> {
    let mut hits = 0;
    for (i, (q, _, key)) in qa.iter().enumerate() {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("-m").arg(gguf);
        if let Some(l) = lora {
            cmd.arg("--lora").arg(l);
        }
        let out = cmd
            .args(["-n", "24", "--temp", "0", "-no-cnv", "--no-display-prompt"])
            .args(["-t", "2", "--simple-io", "-p"])
            .arg(lora::chat_prompt_text(tok, q))
            .stdin(std::process::Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
            .into());
        }
        let a = String::from_utf8_lossy(&out.stdout);
        let a = a
            .trim()
            .trim_end_matches("[end of text]")
            .trim_end()
            .to_owned();
        let hit = a.to_lowercase().contains(&key.to_lowercase());
        hits += usize::from(hit);
        if i < show {
            println!("    {} {q:?} -> {a:?}", if hit { "✓" } else { "✗" });
        }
    }
    Ok(hits)
}

fn pct(hits: usize, n: usize) -> String {
    format!(
        "{hits}/{n} ({:.0} %)",
        100.0 * hits as f64 / n.max(1) as f64
    )
}

fn main() -> Result<()> {
    let n_facts = env("LORA_FACTS", FACTS.len()).clamp(1, FACTS.len());
    let steps = env("LORA_STEPS", 60usize);
    let rank = env("LORA_RANK", 8usize);
    let alpha = env("LORA_ALPHA", 16f32);
    let lr = env("LORA_LR", 3e-3f64);
    let batch = env("LORA_BATCH", 8usize);
    let target_names = std::env::var("LORA_TARGETS").unwrap_or_else(|_| "q,k,v,o".into());
    let eval_every = env("LORA_EVAL_EVERY", 0usize);
    let defaults = TrainConfig::default();
    let anchor_weight = env("LORA_ANCHOR_WEIGHT", defaults.anchor_weight);
    let anchors_per_step = env("LORA_ANCHORS", defaults.anchors_per_step);
    let config = LoraConfig::new(rank, alpha, lora::parse_targets(&target_names)?)?;

    let cache = ModelCache::from_env()?;
    let files = cache.ensure(&SMOLLM2_135M_Q4_1)?;
    let gguf = files.gguf().ok_or("no gguf in the model spec")?;
    let llm = Llm::load(gguf, Backend::Cpu)?;
    let tok = llm.tokenizer();
    let facts = &FACTS[..n_facts];

    // Training pairs (templates) and the two question sets.
    let mut examples = Vec::new();
    let mut template_qa = Vec::new();
    for (fact, _, _) in facts {
        let pairs = pairs_from_memory(fact);
        if pairs.is_empty() {
            return Err(format!("no template fits {fact:?}").into());
        }
        for p in &pairs {
            examples.push(chat_example(tok, p)?);
        }
        let p = &pairs[0];
        template_qa.push((p.question.clone(), p.answer.clone(), p.key.clone()));
    }
    let eval_qa: Vec<(String, String, String)> = facts
        .iter()
        .map(|(fact, q, key)| {
            let expected = pairs_from_memory(fact)
                .first()
                .map(|p| p.answer.clone())
                .unwrap_or_default();
            ((*q).to_owned(), expected, (*key).to_owned())
        })
        .collect();
    println!(
        "parametric memory: {n_facts} facts, {} training pairs, rank {rank}, alpha {alpha}, \
         targets {target_names}, {steps} steps × batch {batch}, lr {lr}, \
         anchor weight {anchor_weight} × {anchors_per_step} per step",
        examples.len()
    );

    println!("\nbefore (base model, closed book):");
    let ppl_before = perplexity(&llm, None)?;
    let eval_before = score(&llm, None, &eval_qa, 4)?;
    let tmpl_before = score(&llm, None, &template_qa, 0)?;
    let base_general: Vec<String> = GENERAL
        .iter()
        .map(|q| answer(&llm, None, q))
        .collect::<Result<_>>()?;
    let general_before = general(&llm, None, &base_general, 8)?;

    let adapter = Adapter::new(config, llm.config(), llm.fingerprint(), llm.device());
    let params = adapter.parameter_count(llm.config());
    let cfg = TrainConfig {
        steps,
        learning_rate: lr,
        batch,
        seed: 42,
        anchor_weight,
        anchors_per_step,
    };
    let t = Instant::now();
    let anchors = if cfg.uses_anchors() {
        standard_anchors(&llm)?
    } else {
        Vec::new()
    };
    println!(
        "\nanchors: {} ({} positions) in {:.1} s",
        anchors.len(),
        anchors.iter().map(Anchor::len).sum::<usize>(),
        t.elapsed().as_secs_f64()
    );
    let mut trainer = Trainer::new(llm.model(), adapter, examples, cfg)?.with_anchors(anchors);
    let t = Instant::now();
    let mut window = Vec::new();
    let mut kl_window = Vec::new();
    let mut eval_s = 0.0;
    while !trainer.finished() {
        let loss = trainer.step()?;
        window.push(loss.answer);
        kl_window.extend(loss.anchor);
        let s = trainer.steps_done();
        if s % 10 == 0 || s == steps {
            let mean = window.iter().sum::<f32>() / window.len() as f32;
            let kl = kl_window.iter().sum::<f32>() / kl_window.len().max(1) as f32;
            println!(
                "  step {s:>4}: answer loss {mean:.3}, anchor KL {kl:.4} ({:.1} s/step)",
                (t.elapsed().as_secs_f64() - eval_s) / s as f64
            );
            window.clear();
            kl_window.clear();
        }
        if eval_every > 0 && s % eval_every == 0 && s < steps {
            let e = Instant::now();
            let a = trainer.adapter()?;
            let (c, _, n) = score(&llm, Some(&a), &eval_qa, 0)?;
            println!(
                "  after {s} steps: evaluation contains-answer {}, perplexity {:.2}",
                pct(c, n),
                perplexity(&llm, Some(&a))?
            );
            eval_s += e.elapsed().as_secs_f64();
        }
    }
    let train_s = t.elapsed().as_secs_f64() - eval_s;
    let adapter = trainer.adapter()?;
    let file = adapter.to_safetensors(llm.config())?;

    println!("\nafter (base + adapter, closed book):");
    let ppl_after = perplexity(&llm, Some(&adapter))?;
    let eval_after = score(&llm, Some(&adapter), &eval_qa, 6)?;
    let tmpl_after = score(&llm, Some(&adapter), &template_qa, 0)?;
    println!("  general questions (= the base model's answer, ≠ another):");
    let general_after = general(&llm, Some(&adapter), &base_general, 8)?;

    println!("\n| measure | before | after |");
    println!("|---|---|---|");
    println!(
        "| closed-book, evaluation questions, contains-answer | {} | {} |",
        pct(eval_before.0, eval_before.2),
        pct(eval_after.0, eval_after.2)
    );
    println!(
        "| closed-book, evaluation questions, exact match | {} | {} |",
        pct(eval_before.1, eval_before.2),
        pct(eval_after.1, eval_after.2)
    );
    println!(
        "| closed-book, template questions, contains-answer | {} | {} |",
        pct(tmpl_before.0, tmpl_before.2),
        pct(tmpl_after.0, tmpl_after.2)
    );
    println!(
        "| closed-book, template questions, exact match | {} | {} |",
        pct(tmpl_before.1, tmpl_before.2),
        pct(tmpl_after.1, tmpl_after.2)
    );
    println!(
        "| perplexity, held-out text | {ppl_before:.2} | {ppl_after:.2} ({:+.1} %) |",
        100.0 * (ppl_after / ppl_before - 1.0)
    );
    println!(
        "| general questions: answer identical to the base model's | {}/{n} | {}/{n} |",
        general_before.0,
        general_after.0,
        n = GENERAL.len()
    );
    println!(
        "| general questions: perplexity of the base model's answers | {:.3} | {:.3} ({:+.1} %) |",
        general_before.1.exp(),
        general_after.1.exp(),
        100.0 * ((general_after.1 - general_before.1).exp() - 1.0)
    );
    println!(
        "\ntraining: {steps} steps in {train_s:.0} s ({:.2} s/step); adapter {params} parameters, \
         {} KiB safetensors; peak RSS {:.0} MiB",
        train_s / steps.max(1) as f64,
        file.len() / 1024,
        peak_rss_mib().unwrap_or(f64::NAN)
    );

    // The same adapter in llama.cpp, through the GGUF LoRA export.
    if let Some(bin) = std::env::var_os("LLAMA_CPP_COMPLETION") {
        let bin = std::path::PathBuf::from(bin);
        let path = std::env::temp_dir().join(format!("memkern-lora-{}.gguf", std::process::id()));
        std::fs::write(&path, adapter.to_gguf(llm.config(), "llama")?)?;
        println!("\nllama.cpp ({}) with the GGUF export:", bin.display());
        let tok = llm.tokenizer();
        let base = llama_cpp_score(tok, &bin, gguf, None, &eval_qa, 0)?;
        let with = llama_cpp_score(tok, &bin, gguf, Some(&path), &eval_qa, 4)?;
        let _ = std::fs::remove_file(&path);
        println!(
            "| llama.cpp closed-book, evaluation questions, contains-answer | {} | {} |",
            pct(base, eval_qa.len()),
            pct(with, eval_qa.len())
        );
    }
    Ok(())
}
