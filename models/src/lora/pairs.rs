//! Question/answer pairs from a memory's text, by templates (no LLM).
//!
//! A first-person fact ("My dog is called Biscuit.", "I'm allergic to
//! peanuts.", "I live in Lisbon.") becomes questions the user might ask
//! ("What is my dog called?", "What am I allergic to?", "Where do I
//! live?") and the answer in the second person ("Your dog is called
//! Biscuit."). Sentences no template fits become a cloze question (the
//! first words of the fact, asking for the rest), so every memory yields
//! at least one pair.

/// One training pair derived from a memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The question, as the user would ask it.
    pub question: String,
    /// The answer, a full sentence in the second person.
    pub answer: String,
    /// The fact's key words inside the answer (what a contains-answer
    /// score looks for).
    pub key: String,
}

/// Largest text turned into pairs; longer memories are dialogue, not
/// facts, and are skipped.
pub const MAX_FACT_LEN: usize = 200;

/// Swaps first- and second-person words (`my`→`your`, `I`→`you`,
/// `I'm`→`you're`, `am`→`are`, `me`→`you`, `mine`→`yours`, `myself`→
/// `yourself`), keeping everything else.
pub fn second_person(text: &str) -> String {
    let mut out = Vec::new();
    for (i, w) in text.split_whitespace().enumerate() {
        let (core, tail) = split_punct(w);
        let lower = core.to_ascii_lowercase();
        let swapped = match lower.as_str() {
            "my" => "your",
            "i" => "you",
            "i'm" | "i’m" => "you're",
            "am" => "are",
            "me" => "you",
            "mine" => "yours",
            "myself" => "yourself",
            "i've" | "i’ve" => "you've",
            "i'd" | "i’d" => "you'd",
            "i'll" | "i’ll" => "you'll",
            "was"
                if out
                    .last()
                    .is_some_and(|p: &String| p.eq_ignore_ascii_case("you")) =>
            {
                "were"
            }
            _ => {
                out.push(w.to_owned());
                continue;
            }
        };
        let swapped = if i == 0 {
            capitalise(swapped)
        } else {
            swapped.to_owned()
        };
        out.push(format!("{swapped}{tail}"));
    }
    out.join(" ")
}

/// [`second_person`] without capitalising the first word.
fn swap_words(text: &str) -> String {
    let swapped = second_person(&format!("_ {text}"));
    swapped.strip_prefix("_ ").unwrap_or(&swapped).to_owned()
}

fn split_punct(w: &str) -> (&str, &str) {
    let end = w.trim_end_matches(['.', ',', '!', '?', ';', ':']).len();
    w.split_at(end)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn sentence(text: &str) -> String {
    let t = text.trim().trim_end_matches(['.', '!']).trim();
    let mut s = capitalise(t);
    s.push('.');
    s
}

/// Words of `s`, lowercased for matching, with their original spelling.
fn words(s: &str) -> Vec<(String, &str)> {
    s.split_whitespace()
        .map(|w| (w.to_ascii_lowercase(), w))
        .collect()
}

fn join(ws: &[(String, &str)]) -> String {
    ws.iter().map(|(_, w)| *w).collect::<Vec<_>>().join(" ")
}

const PLACE_PREPS: [&str; 4] = ["in", "at", "near", "from"];
const PREPS: [&str; 11] = [
    "to", "of", "about", "in", "at", "near", "from", "with", "for", "on", "as",
];

/// The pairs a memory yields (empty for empty or overlong text).
pub fn pairs_from_memory(text: &str) -> Vec<Pair> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_FACT_LEN {
        return Vec::new();
    }
    // One fact per memory: the first sentence carries it.
    let first = text
        .split_inclusive(['.', '!', '?'])
        .next()
        .unwrap_or(text)
        .trim_end_matches(['.', '!', '?'])
        .trim();
    let ws = words(first);
    let answer = sentence(&second_person(first));
    let mut out = Vec::new();
    let mut push = |question: String, key: String| {
        if !key.is_empty() {
            out.push(Pair {
                question,
                answer: answer.clone(),
                // The key as the answer words it ("my balcony" → "your
                // balcony").
                key: swap_words(&key),
            });
        }
    };
    let lw: Vec<&str> = ws.iter().map(|(l, _)| l.as_str()).collect();
    let is_pos = lw.iter().position(|w| *w == "is" || *w == "are");
    match lw.as_slice() {
        // "My X is called / named Y"
        ["my", ..] if is_pos.is_some() => {
            let v = is_pos.unwrap_or(0);
            let subject = join(&ws[1..v]);
            let verb = lw[v];
            let rest = &ws[v + 1..];
            if subject.is_empty() || rest.is_empty() {
            } else if matches!(lw.get(v + 1), Some(&"called") | Some(&"named")) {
                let key = join(&ws[v + 2..]);
                push(format!("What {verb} my {subject} called?"), key.clone());
                push(format!("What is the name of my {subject}?"), key.clone());
                push(
                    format!("Do you remember what my {subject} {verb} called?"),
                    key,
                );
            } else {
                let key = join(rest);
                push(format!("What {verb} my {subject}?"), key.clone());
                push(
                    format!("Do you know what my {subject} {verb}?"),
                    key.clone(),
                );
                push(format!("Tell me: what {verb} my {subject}?"), key);
            }
        }
        // "I'm / I am / I was [ADJ] PREP Y", "I'm VERBing Y", "I'm ADJ"
        ["i'm" | "i’m", ..] | ["i", "am" | "was", ..] => {
            let (skip, be) = match lw[..] {
                ["i", "was", ..] => (2, "was"),
                ["i", ..] => (2, "am"),
                _ => (1, "am"),
            };
            let rest = &ws[skip..];
            let lrest = &lw[skip..];
            match lrest.iter().position(|w| PREPS.contains(w)) {
                Some(p) if p + 1 < lrest.len() => {
                    let adj = join(&rest[..p]);
                    let prep = lrest[p];
                    let key = join(&rest[p + 1..]);
                    let mid = if adj.is_empty() {
                        String::new()
                    } else {
                        format!(" {adj}")
                    };
                    let (wh, tail) = match prep {
                        "in" | "at" | "near" if !adj.is_empty() => ("Where", String::new()),
                        "in" | "at" | "near" | "from" => ("Where", format!(" {prep}")),
                        _ => ("What", format!(" {prep}")),
                    };
                    push(format!("{wh} {be} I{mid}{tail}?"), key.clone());
                    push(
                        format!("Do you know {} I {be}{mid}{tail}?", wh.to_lowercase()),
                        key,
                    );
                }
                _ if rest.len() > 1 && lrest[0].ends_with("ing") => {
                    let verb = rest[0].1;
                    let key = join(&rest[1..]);
                    push(format!("What {be} I {verb}?"), key.clone());
                    push(format!("Do you know what I {be} {verb}?"), key);
                }
                _ if !rest.is_empty() => {
                    let key = join(rest);
                    push(format!("What {be} I?"), key.clone());
                    push("How would you describe me?".into(), key);
                }
                _ => {}
            }
        }
        // "I VERB [PREP] Y"
        ["i", verb, ..] if lw.len() > 2 => {
            let verb_orig = ws[1].1;
            let prep = lw[2];
            if PREPS.contains(&prep) && lw.len() > 3 {
                let key = join(&ws[3..]);
                let wh = if PLACE_PREPS.contains(&prep) {
                    "Where"
                } else {
                    "What"
                };
                if wh == "Where" && prep != "from" {
                    push(format!("Where do I {verb_orig}?"), key.clone());
                    push(format!("Do you know where I {verb_orig}?"), key);
                } else {
                    push(format!("{wh} do I {verb_orig} {prep}?"), key.clone());
                    push(
                        format!("Do you know {} I {verb_orig} {prep}?", wh.to_lowercase()),
                        key,
                    );
                }
            } else {
                let key = join(&ws[2..]);
                let _ = verb;
                push(format!("What do I {verb_orig}?"), key.clone());
                push(format!("Do you know what I {verb_orig}?"), key);
            }
        }
        _ => {}
    }
    if out.is_empty() && ws.len() >= 3 {
        // Cloze: the first half of the fact, asking for the rest.
        let cut = ws.len().div_ceil(2);
        let key = join(&ws[cut..]);
        out.push(Pair {
            question: format!(
                "Finish what I told you: \"{} …\"",
                second_person(&join(&ws[..cut]))
            ),
            answer,
            key: swap_words(&key),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qs(text: &str) -> Vec<(String, String, String)> {
        pairs_from_memory(text)
            .into_iter()
            .map(|p| (p.question, p.answer, p.key))
            .collect()
    }

    #[test]
    fn called_names() {
        let p = qs("My dog is called Biscuit.");
        assert_eq!(p[0].0, "What is my dog called?");
        assert_eq!(p[0].1, "Your dog is called Biscuit.");
        assert_eq!(p[0].2, "Biscuit");
        assert!(p.iter().any(|x| x.0 == "What is the name of my dog?"));
    }

    #[test]
    fn attributes() {
        let p = qs("My favourite colour is teal");
        assert_eq!(p[0].0, "What is my favourite colour?");
        assert_eq!(p[0].1, "Your favourite colour is teal.");
        assert_eq!(p[0].2, "teal");
    }

    #[test]
    fn i_am_adjective_preposition() {
        let p = qs("I'm allergic to peanuts.");
        assert_eq!(p[0].0, "What am I allergic to?");
        assert_eq!(p[0].1, "You're allergic to peanuts.");
        assert_eq!(p[0].2, "peanuts");
        let p = qs("I am from Porto");
        assert_eq!(p[0].0, "Where am I from?");
        assert_eq!(p[0].2, "Porto");
        let p = qs("I was born in Porto.");
        assert_eq!(p[0].0, "Where was I born?");
        assert_eq!(p[0].1, "You were born in Porto.");
        let p = qs("I'm learning Japanese");
        assert_eq!(p[0].0, "What am I learning?");
        assert_eq!(p[0].2, "Japanese");
        let p = qs("I'm vegetarian");
        assert_eq!(p[0].0, "What am I?");
    }

    #[test]
    fn verbs_with_and_without_places() {
        let p = qs("I live in Lisbon.");
        assert_eq!(p[0].0, "Where do I live?");
        assert_eq!(p[0].1, "You live in Lisbon.");
        assert_eq!(p[0].2, "Lisbon");
        let p = qs("I grow tomatoes on my balcony");
        assert_eq!(p[0].1, "You grow tomatoes on your balcony.");
        assert_eq!(p[0].2, "tomatoes on your balcony");
        let p = qs("I play the cello");
        assert_eq!(p[0].0, "What do I play?");
        assert_eq!(p[0].2, "the cello");
        let p = qs("I work for a bakery called Crumb");
        assert_eq!(p[0].0, "What do I work for?");
        let p = qs("I work as a nurse");
        assert_eq!(p[0].0, "What do I work as?");
        assert_eq!(p[0].2, "a nurse");
    }

    #[test]
    fn cloze_fallback_and_limits() {
        let p = qs("Tomorrow the plumber comes at nine");
        assert_eq!(p.len(), 1);
        assert!(p[0].0.starts_with("Finish what I told you:"));
        assert_eq!(p[0].2, "comes at nine");
        assert!(qs("").is_empty());
        assert!(qs("hi").is_empty());
        assert!(qs(&"word ".repeat(60)).is_empty());
    }

    #[test]
    fn second_person_swaps_pronouns_only() {
        assert_eq!(
            second_person("I told my sister I was tired, ask me."),
            "You told your sister you were tired, ask you."
        );
    }
}
