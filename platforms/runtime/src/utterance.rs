//! Whether a turn states something or only asks.
//!
//! Exists because questions are not facts: a chat turn such as "What is my
//! dog called?" is not remembered (it would then outrank the fact "My dog
//! is called Biscuit." in retrieval, since it repeats the next question
//! word for word), and a question stored by other means ranks below the
//! statements that answer it.

/// Words that open a question when a sentence has no end mark
/// ("what is my dog called").
const QUESTION_OPENERS: &[&str] = &[
    "what", "when", "where", "who", "whom", "whose", "which", "why", "how", "is", "are", "was",
    "were", "do", "does", "did", "can", "could", "would", "should", "will", "shall", "may",
    "might", "have", "has", "had", "am",
];

/// True when every sentence of `text` is a question: it ends with `?`, or
/// it has no end mark and opens with a question word or an auxiliary
/// verb. A turn that also states something ("My dog is Biscuit. What is
/// yours?") is not a question; empty text is not one either.
pub fn is_question(text: &str) -> bool {
    let mut sentences = 0;
    for s in sentences_of(text) {
        sentences += 1;
        if !sentence_asks(s) {
            return false;
        }
    }
    sentences > 0
}

/// The sentences of `text`, each with its end mark (`.`, `!`, `?`, `…`)
/// if it has one.
fn sentences_of(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(['.', '!', '?', '…'])
        .map(str::trim)
        .filter(|s| s.chars().any(char::is_alphanumeric))
}

fn sentence_asks(s: &str) -> bool {
    let s = s.trim_end_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ')');
    if s.ends_with('?') {
        return true;
    }
    if s.ends_with(['.', '!', '…']) {
        return false;
    }
    let first = s
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .find(|w| !w.is_empty())
        .unwrap_or_default()
        .to_lowercase();
    QUESTION_OPENERS.contains(&first.as_str())
}

#[cfg(test)]
mod tests {
    use super::is_question;

    #[test]
    fn questions_are_told_from_statements() {
        for q in [
            "What is my dog called?",
            "what is my dog called",
            "Where does my sister live ?",
            "Is my dog called Biscuit",
            "Do you remember my cat? What was her name?",
            "\"When is the dentist?\"",
        ] {
            assert!(is_question(q), "{q}");
        }
        for s in [
            "My dog is called Biscuit.",
            "My dog is called Biscuit",
            "How I met my wife is a long story.",
            "My dog is Biscuit. What is yours?",
            "Remember that the gate code changes weekly",
            "",
            "?!",
        ] {
            assert!(!is_question(s), "{s}");
        }
    }
}
