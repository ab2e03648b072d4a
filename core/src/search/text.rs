//! Text analysis for keyword search: split, lowercase, drop stopwords, stem,
//! hash.
//!
//! It exists so that the index and the query see exactly the same terms, on a
//! microcontroller and on a host, without allocating: a [`Token`] lives in a
//! fixed stack buffer and a [`Term`] is a 32-bit hash of it, so an index
//! stores four bytes per distinct word instead of the word itself.

/// Longest token kept, in UTF-8 bytes; longer words are truncated (at a
/// character boundary) before hashing.
pub const MAX_TOKEN_LEN: usize = 32;

/// A normalised word (lowercase, possibly stemmed) held without a heap.
///
/// It exists so that tokenizing needs no allocator (the MCU build has none).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token {
    buf: [u8; MAX_TOKEN_LEN],
    len: u8,
}

impl Token {
    const EMPTY: Token = Token {
        buf: [0; MAX_TOKEN_LEN],
        len: 0,
    };

    /// The token's text.
    pub fn as_str(&self) -> &str {
        let bytes = self.buf.get(..usize::from(self.len)).unwrap_or(&[]);
        // Only whole UTF-8 encodings of `char`s are ever pushed and stemming
        // removes ASCII bytes only, so the prefix is valid UTF-8.
        core::str::from_utf8(bytes).unwrap_or("")
    }

    /// The 32-bit term hash of this token (FNV-1a).
    pub fn term(&self) -> Term {
        Term::of(self.as_str())
    }

    /// Appends `c`; returns `false` (and keeps the token unchanged) when it
    /// does not fit.
    fn push(&mut self, c: char) -> bool {
        let mut tmp = [0u8; 4];
        let enc = c.encode_utf8(&mut tmp).as_bytes();
        let at = usize::from(self.len);
        match self.buf.get_mut(at..at + enc.len()) {
            Some(dst) => {
                dst.copy_from_slice(enc);
                // at + len <= MAX_TOKEN_LEN = 32, which fits a u8.
                self.len += enc.len() as u8;
                true
            }
            None => false,
        }
    }

    fn ends_with(&self, suffix: &str) -> bool {
        self.as_str().ends_with(suffix)
    }

    /// Drops the last `n` bytes (callers only drop ASCII suffixes).
    fn truncate_by(&mut self, n: usize) {
        self.len = self.len.saturating_sub(u8::try_from(n).unwrap_or(u8::MAX));
    }

    fn replace_suffix(&mut self, old: &str, new: &str) {
        if self.ends_with(old) {
            self.truncate_by(old.len());
            for c in new.chars() {
                let _ = self.push(c);
            }
        }
    }
}

impl core::fmt::Debug for Token {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Token({:?})", self.as_str())
    }
}

/// A hashed term: what the keyword index stores per distinct word.
///
/// Two words colliding on 32 bits merge their postings; with a few thousand
/// distinct words per store the chance is about one in a million.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Term(pub u32);

impl Term {
    /// FNV-1a of the word's UTF-8 bytes; the word should already be
    /// normalised (use [`Analyzer::terms`] for raw text).
    pub fn of(word: &str) -> Term {
        let mut h: u32 = 0x811c_9dc5;
        for &b in word.as_bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        Term(h)
    }
}

/// How words are reduced before indexing.
///
/// It exists so the choice (measured on LoCoMo, see `benches/RESULTS.md`) is
/// one value shared by index and query.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Stemmer {
    /// Keep words as they are (lowercased).
    None,
    /// Plural folding only ("dogs" → "dog", "parties" → "party").
    Plural,
    /// Plurals plus "-ing" / "-ed" / "-ly" stripping ("painting" → "paint").
    Light,
}

/// Tokenizer settings: which stemmer, whether stopwords are dropped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Analyzer {
    /// Suffix stripping applied to every token.
    pub stemmer: Stemmer,
    /// Drop the words of [`STOPWORDS`].
    pub drop_stopwords: bool,
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer::DEFAULT
    }
}

impl Analyzer {
    /// The analyzer memkern indexes with (chosen by measurement on LoCoMo).
    pub const DEFAULT: Analyzer = Analyzer {
        stemmer: Stemmer::Light,
        drop_stopwords: true,
    };

    /// The normalised tokens of `text`.
    pub fn tokens<'a>(&self, text: &'a str) -> Tokens<'a> {
        Tokens {
            rest: text,
            analyzer: *self,
        }
    }

    /// The terms of `text` (tokens hashed).
    pub fn terms<'a>(&self, text: &'a str) -> impl Iterator<Item = Term> + Clone + 'a {
        self.tokens(text).map(|t| t.term())
    }

    /// Normalises one word as the tokenizer would, or `None` when it is a
    /// stopword or has no alphanumeric character.
    pub fn normalize(&self, word: &str) -> Option<Token> {
        self.tokens(word).next()
    }
}

/// Iterator over the tokens of a text; see [`Analyzer::tokens`].
#[derive(Clone)]
pub struct Tokens<'a> {
    rest: &'a str,
    analyzer: Analyzer,
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        loop {
            let (token, rest) = raw_token(self.rest)?;
            self.rest = rest;
            let mut token = token;
            if self.analyzer.drop_stopwords && is_stopword(token.as_str()) {
                continue;
            }
            stem(&mut token, self.analyzer.stemmer);
            return Some(token);
        }
    }
}

/// Cuts the next word from `text`: a run of alphanumerics, with inner
/// apostrophes removed ("don't" → "dont") and a possessive "'s" dropped.
fn raw_token(text: &str) -> Option<(Token, &str)> {
    let start = text.char_indices().find(|(_, c)| c.is_alphanumeric())?.0;
    let s = text.get(start..)?;
    let mut token = Token::EMPTY;
    let mut full = true;
    let mut chars = s.char_indices().peekable();
    let mut end = s.len();
    while let Some((i, c)) = chars.next() {
        if c.is_alphanumeric() {
            for lc in c.to_lowercase() {
                if full && !token.push(lc) {
                    full = false;
                }
            }
        } else if is_apostrophe(c) {
            let next = chars.peek().map(|&(_, n)| n);
            match next {
                Some(n) if n.is_alphanumeric() => {
                    // Possessive: "'s" followed by a non-alphanumeric ends the word.
                    let after = s.get(i + c.len_utf8()..).unwrap_or("");
                    let mut it = after.chars();
                    let is_possessive = matches!(it.next(), Some('s' | 'S'))
                        && !it.next().is_some_and(char::is_alphanumeric);
                    if is_possessive {
                        end = i + c.len_utf8() + 1;
                        break;
                    }
                }
                _ => {
                    end = i;
                    break;
                }
            }
        } else {
            end = i;
            break;
        }
    }
    Some((token, s.get(end..).unwrap_or("")))
}

fn is_vowel(b: u8) -> bool {
    matches!(b, b'a' | b'e' | b'i' | b'o' | b'u' | b'y')
}

fn stem(token: &mut Token, stemmer: Stemmer) {
    if stemmer == Stemmer::None || !token.as_str().is_ascii() {
        return;
    }
    let len = token.as_str().len();
    // Plurals (Harman's S-stemmer, plus "-sses"/"-xes"/"-ches"/"-shes" → drop "es").
    if len > 4 && token.ends_with("ies") && !token.ends_with("eies") && !token.ends_with("aies") {
        token.replace_suffix("ies", "y");
    } else if len > 4
        && (token.ends_with("sses")
            || token.ends_with("xes")
            || token.ends_with("ches")
            || token.ends_with("shes"))
    {
        token.truncate_by(2);
    } else if len > 3 && token.ends_with("s") && !token.ends_with("us") && !token.ends_with("ss") {
        token.truncate_by(1);
    }
    if stemmer != Stemmer::Light {
        return;
    }
    // "-ing" / "-ed" / "-ly" with a vowel left in the stem; undouble a final
    // consonant ("running" → "run"), restore a silent "e" after "at"/"iz"/"bl".
    let s = token.as_str().as_bytes();
    let cut = if s.len() > 5 && s.ends_with(b"ing") {
        3
    } else if (s.len() > 4 && s.ends_with(b"ed") && !s.ends_with(b"eed"))
        || (s.len() > 5 && s.ends_with(b"ly"))
    {
        2
    } else {
        0
    };
    if cut == 0 {
        return;
    }
    let stem_part = &s[..s.len() - cut];
    if !stem_part.iter().any(|&b| is_vowel(b)) {
        return;
    }
    let n = stem_part.len();
    let doubled = n >= 2
        && stem_part[n - 1] == stem_part[n - 2]
        && !matches!(stem_part[n - 1], b'l' | b's' | b'z')
        && !is_vowel(stem_part[n - 1]);
    let add_e =
        stem_part.ends_with(b"at") || stem_part.ends_with(b"iz") || stem_part.ends_with(b"bl");
    token.truncate_by(cut);
    if doubled {
        token.truncate_by(1);
    } else if add_e {
        let _ = token.push('e');
    }
}

/// A small English stopword list (sorted; contractions without apostrophes,
/// as the tokenizer writes them).
pub const STOPWORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "been", "before", "being", "both", "but", "by", "can", "cant", "could", "did", "didnt",
    "do", "does", "doesnt", "doing", "dont", "for", "from", "had", "has", "have", "having", "he",
    "her", "here", "hers", "him", "his", "how", "i", "id", "if", "im", "in", "into", "is", "isnt",
    "it", "its", "ive", "just", "let", "lets", "me", "more", "most", "my", "no", "nor", "not",
    "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own", "she",
    "should", "so", "some", "such", "than", "that", "thats", "the", "their", "them", "then",
    "there", "these", "they", "theyre", "this", "those", "to", "too", "up", "very", "was", "wasnt",
    "we", "were", "weve", "what", "whats", "when", "where", "which", "while", "who", "whom", "why",
    "will", "with", "would", "you", "youd", "youll", "your", "youre", "yours", "youve",
];

/// Whether `word` (lowercase) is in [`STOPWORDS`].
pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.binary_search(&word).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::{String, ToString};
    use std::vec::Vec;

    fn words(a: Analyzer, text: &str) -> Vec<String> {
        a.tokens(text).map(|t| t.as_str().to_string()).collect()
    }

    const RAW: Analyzer = Analyzer {
        stemmer: Stemmer::None,
        drop_stopwords: false,
    };

    #[test]
    fn stopwords_are_sorted() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn splits_lowercases_and_handles_apostrophes() {
        assert_eq!(
            words(
                RAW,
                "Hey Mel! Caroline's dog—Biscuit, 2 yrs; I'm fine; don’t."
            ),
            [
                "hey", "mel", "caroline", "dog", "biscuit", "2", "yrs", "im", "fine", "dont"
            ]
        );
        assert_eq!(words(RAW, "ÉCOLE Straße"), ["école", "straße"]);
        assert_eq!(words(RAW, "  ...  "), Vec::<String>::new());
        assert_eq!(words(RAW, "rock'n'roll it'"), ["rocknroll", "it"]);
    }

    #[test]
    fn long_words_are_truncated_not_dropped() {
        let long = "a".repeat(100);
        let t = words(RAW, &long);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].len(), MAX_TOKEN_LEN);
        // Multi-byte characters are never split.
        let t = words(RAW, &"é".repeat(40));
        assert_eq!(t[0].chars().count(), MAX_TOKEN_LEN / 2);
    }

    #[test]
    fn default_drops_stopwords_and_stems() {
        let a = Analyzer::DEFAULT;
        assert_eq!(
            words(a, "When did Caroline go to the parties with her dogs?"),
            ["caroline", "go", "party", "dog"]
        );
        assert_eq!(
            words(a, "painting running hopped classes boxes churches creates"),
            ["paint", "run", "hop", "class", "box", "church", "create"]
        );
        assert_eq!(words(a, "this is it"), Vec::<String>::new());
        assert_eq!(words(a, "sing bus us red"), ["sing", "bus", "us", "red"]);
    }

    #[test]
    fn terms_are_stable_hashes() {
        // FNV-1a reference values.
        assert_eq!(Term::of("").0, 0x811c_9dc5);
        assert_eq!(Term::of("a").0, 0xe40c_292c);
        let a = Analyzer::DEFAULT;
        let t: Vec<Term> = a.terms("Dogs DOG dog's").collect();
        assert!(t.iter().all(|&x| x == Term::of("dog")));
    }
}
