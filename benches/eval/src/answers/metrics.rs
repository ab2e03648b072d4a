//! Answer scores as the mem0 evaluation harness computes them
//! (`evaluation/metrics/utils.py` in mem0ai/mem0): token F1 over
//! `simple_tokenize` sets, BLEU-1 over NLTK's word tokens with smoothing
//! method 1, and exact match; plus "contains the gold answer".
//!
//! It exists so that memkern's answer scores sit beside the published ones
//! (the mem0 paper's F1 and BLEU-1 per LoCoMo category) on the same
//! arithmetic. NLTK's `word_tokenize` is ported rule for rule (its
//! `NLTKWordTokenizer` regular expressions, on `fancy-regex` for the two
//! look-aheads); its Punkt sentence splitter, which needs a trained model,
//! is approximated by splitting after `.`, `!` or `?` followed by white
//! space unless the word is a one-letter initial or a common abbreviation.
//! The unit tests check hand-worked cases and NLTK's own outputs.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use fancy_regex::Regex;

/// mem0's `simple_tokenize`: lower case, `. , ! ?` become spaces, split on
/// white space.
pub fn simple_tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['.', ',', '!', '?'], " ")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// mem0's token F1: over the *sets* of `simple_tokenize` tokens; 0 when
/// either side is empty.
pub fn f1(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (prediction.trim(), reference.trim());
    if p.is_empty() || r.is_empty() {
        return 0.0;
    }
    let p: HashSet<String> = simple_tokenize(p).into_iter().collect();
    let r: HashSet<String> = simple_tokenize(r).into_iter().collect();
    if p.is_empty() || r.is_empty() {
        return 0.0;
    }
    let common = p.intersection(&r).count() as f64;
    let (precision, recall) = (common / p.len() as f64, common / r.len() as f64);
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// mem0's exact match: equal after trimming, ignoring case.
pub fn exact_match(prediction: &str, reference: &str) -> bool {
    let (p, r) = (prediction.trim(), reference.trim());
    !p.is_empty() && !r.is_empty() && p.to_lowercase() == r.to_lowercase()
}

/// Whether the gold answer's `simple_tokenize` tokens occur, in order and
/// contiguous, in the prediction's.
pub fn contains(prediction: &str, reference: &str) -> bool {
    let (p, r) = (simple_tokenize(prediction), simple_tokenize(reference));
    !r.is_empty() && p.windows(r.len()).any(|w| w == r.as_slice())
}

/// NLTK's `sentence_bleu` with weights (1, 0, 0, 0) and smoothing method
/// 1 on `word_tokenize` of the lower-cased texts: the brevity penalty
/// times the clipped unigram precision; 0 without a unigram match.
pub fn bleu1(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (prediction.trim(), reference.trim());
    if p.is_empty() || r.is_empty() {
        return 0.0;
    }
    let hyp = word_tokenize(&p.to_lowercase());
    let reference = word_tokenize(&r.to_lowercase());
    let mut ref_counts: HashMap<&str, usize> = HashMap::new();
    for t in &reference {
        *ref_counts.entry(t).or_default() += 1;
    }
    let mut hyp_counts: HashMap<&str, usize> = HashMap::new();
    for t in &hyp {
        *hyp_counts.entry(t).or_default() += 1;
    }
    let clipped: usize = hyp_counts
        .iter()
        .map(|(t, &n)| n.min(ref_counts.get(t).copied().unwrap_or(0)))
        .sum();
    if clipped == 0 {
        return 0.0;
    }
    let (c, r) = (hyp.len() as f64, reference.len() as f64);
    let bp = if c > r { 1.0 } else { (1.0 - r / c).exp() };
    // exp(1 · ln p1), as NLTK sums weighted logarithms.
    bp * (clipped as f64 / c).ln().exp()
}

/// Common abbreviations that end a word with a period without ending the
/// sentence (a stand-in for Punkt's learnt list).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no", "jan",
    "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "approx",
];

/// Sentences as `word_tokenize` would get them from Punkt (approximated,
/// see the module documentation).
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if matches!(b, b'.' | b'!' | b'?') {
            // The end of the run of terminators and closing quotes/brackets.
            let mut j = i + 1;
            while j < bytes.len()
                && matches!(bytes[j], b'.' | b'!' | b'?' | b'"' | b'\'' | b')' | b']')
            {
                j += 1;
            }
            if j < bytes.len() && bytes[j].is_ascii_whitespace() {
                let word = text[start..i]
                    .rsplit(char::is_whitespace)
                    .next()
                    .unwrap_or_default()
                    .to_lowercase();
                let initial = word.chars().count() == 1 && word.chars().all(char::is_alphabetic);
                let abbreviation = b == b'.' && (initial || ABBREVIATIONS.contains(&word.as_str()));
                if !abbreviation {
                    out.push(&text[start..j]);
                    start = j;
                }
            }
            i = j;
        } else {
            i += 1;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

/// One substitution of NLTK's tokenizer: a pattern and its replacement
/// (Python's `\1` written `${1}`).
struct Rule(Regex, &'static str);

/// NLTK's `NLTKWordTokenizer` rules, in its order: starting quotes,
/// punctuation, brackets, double dashes, ending quotes, contractions.
fn rules() -> &'static [Vec<Rule>; 2] {
    static RULES: OnceLock<[Vec<Rule>; 2]> = OnceLock::new();
    RULES.get_or_init(|| {
        let r = |pattern: &str, with: &'static str| -> Option<Rule> {
            Regex::new(pattern).ok().map(|re| Rule(re, with))
        };
        // Before the padding with spaces.
        let first = [
            r("([«“‘„]|[`]+)", " ${1} "),
            r("^\"", "``"),
            r("(``)", " ${1} "),
            r("([ \\(\\[{<])(\"|'{2})", "${1} `` "),
            r("(?i)(')(?!re|ve|ll|m|t|s|d|n)(\\w)\\b", "${1} ${2}"),
            r("([^\\.])(\\.)([\\]\\)}>\"'»”’ ]*)\\s*$", "${1} ${2} ${3} "),
            r("([:,])([^\\d])", " ${1} ${2}"),
            r("([:,])$", " ${1} "),
            r("\\.{2,}", " ${0} "),
            r("[;@#$%&]", " ${0} "),
            r("([^\\.])(\\.)([\\]\\)}>\"']*)\\s*$", "${1} ${2}${3} "),
            r("[?!]", " ${0} "),
            r("([^'])' ", "${1} ' "),
            r("[*]", " ${0} "),
            r("[\\]\\[\\(\\)\\{\\}\\<\\>]", " ${0} "),
            r("--", " -- "),
        ];
        // After it.
        let second = [
            r("([»”’])", " ${1} "),
            r("''", " '' "),
            r("\"", " '' "),
            r("\\s+", " "),
            r("([^' ])('[sS]|'[mM]|'[dD]|') ", "${1} ${2} "),
            r("([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", "${1} ${2} "),
            r("(?i)\\b(can)(not)\\b", " ${1} ${2} "),
            r("(?i)\\b(d)('ye)\\b", " ${1} ${2} "),
            r("(?i)\\b(gim)(me)\\b", " ${1} ${2} "),
            r("(?i)\\b(gon)(na)\\b", " ${1} ${2} "),
            r("(?i)\\b(got)(ta)\\b", " ${1} ${2} "),
            r("(?i)\\b(lem)(me)\\b", " ${1} ${2} "),
            r("(?i)\\b(more)('n)\\b", " ${1} ${2} "),
            r("(?i)\\b(wan)(na)(?=\\s)", " ${1} ${2} "),
            r("(?i) ('t)(is)\\b", " ${1} ${2} "),
            r("(?i) ('t)(was)\\b", " ${1} ${2} "),
        ];
        // The patterns are constants; one that did not compile would
        // show up in the unit tests as a wrong token list.
        [
            first.into_iter().flatten().collect(),
            second.into_iter().flatten().collect(),
        ]
    })
}

fn apply(rules: &[Rule], mut text: String) -> String {
    for Rule(re, with) in rules {
        // fancy-regex fails only on pathological backtracking; the text is
        // then left as it is for this rule.
        if let Ok(t) = re.try_replacen(&text, 0, *with) {
            text = t.into_owned();
        }
    }
    text
}

/// NLTK's `word_tokenize` (English): sentences, then the word rules on
/// each.
pub fn word_tokenize(text: &str) -> Vec<String> {
    let [first, second] = rules();
    sentences(text)
        .into_iter()
        .flat_map(|s| {
            let t = apply(first, s.to_owned());
            let t = apply(second, format!(" {t} "));
            t.split_whitespace().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn f1_is_over_token_sets() {
        // Worked by hand: {7, may, 2023} vs {caroline, went, on, 7, may,
        // 2023}: P = 3/6, R = 3/3, F1 = 2·0.5·1/1.5 = 2/3.
        assert!(close(
            f1("Caroline went on 7 May, 2023.", "7 May 2023"),
            2.0 / 3.0
        ));
        assert!(close(f1("Paris", "paris!"), 1.0));
        // Sets: repeats count once. {the, cat} vs {the, dog}: 1/2, 1/2.
        assert!(close(f1("the the cat", "the dog"), 0.5));
        assert_eq!(f1("", "x"), 0.0);
        assert_eq!(f1("...", "x"), 0.0);
        assert_eq!(f1("blue", "red"), 0.0);
    }

    #[test]
    fn exact_match_and_contains() {
        assert!(exact_match(" Paris ", "paris"));
        assert!(!exact_match("Paris.", "paris"));
        assert!(contains("She went on 7 May, 2023.", "7 May 2023"));
        assert!(!contains("May 7 2023", "7 May 2023"));
    }

    #[test]
    fn word_tokenize_matches_nltk() {
        // Outputs of nltk 3.9.1 `NLTKWordTokenizer().tokenize` (one
        // sentence each, as after Punkt).
        let cases: &[(&str, &[&str])] = &[
            (
                "caroline didn't go to the lgbtq support group.",
                &[
                    "caroline", "did", "n't", "go", "to", "the", "lgbtq", "support", "group", ".",
                ],
            ),
            (
                "she said \"yes\", then (quietly) left...",
                &[
                    "she", "said", "``", "yes", "''", ",", "then", "(", "quietly", ")", "left",
                    "...",
                ],
            ),
            (
                "it costs $3.88, or 3,36 euros; i'm sure!",
                &[
                    "it", "costs", "$", "3.88", ",", "or", "3,36", "euros", ";", "i", "'m", "sure",
                    "!",
                ],
            ),
            (
                "i cannot wait: gonna see mel's dog 'rex' at 10:30",
                &[
                    "i", "can", "not", "wait", ":", "gon", "na", "see", "mel", "'s", "dog", "'rex",
                    "'", "at", "10:30",
                ],
            ),
            ("7 may 2023", &["7", "may", "2023"]),
        ];
        for (text, want) in cases {
            assert_eq!(word_tokenize(text), *want, "{text}");
        }
        // Two sentences: each keeps its final period apart.
        assert_eq!(
            word_tokenize("she went home. mr. smith stayed."),
            ["she", "went", "home", ".", "mr.", "smith", "stayed", "."]
        );
    }

    #[test]
    fn bleu1_is_nltk_sentence_bleu() {
        // Hand-worked: hyp [on, 7, may, 2023] (4), ref [7, may, 2023] (3):
        // c > r so BP = 1; clipped unigram matches 3 → 3/4.
        assert!(close(bleu1("On 7 May 2023", "7 May 2023"), 0.75));
        // hyp [paris] (1) vs ref [in, paris] (2): BP = e^(1 − 2/1) = e^−1;
        // p1 = 1 → 0.36788.
        assert!(close(bleu1("Paris", "in Paris"), (-1.0f64).exp()));
        // Clipping: [the, the, the] vs [the, cat]: 1/3, BP = 1.
        assert!(close(bleu1("the the the", "the cat"), 1.0 / 3.0));
        assert_eq!(bleu1("blue", "red"), 0.0);
        assert_eq!(bleu1("", "red"), 0.0);
    }
}
