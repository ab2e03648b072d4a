//! SentencePiece-style BPE by token scores (`tokenizer.ggml.model =
//! "llama"`: Llama 2, TinyLlama, Gemma), as llama.cpp's
//! `llm_tokenizer_spm` runs it.
//!
//! The text (spaces already written as `▁`) is split into UTF-8
//! characters; every adjacent pair whose concatenation is a vocabulary
//! token enters a priority queue by that token's score (ties: leftmost
//! first); the best pair is merged and its new neighbours queued, until
//! no pair is left. Only pairs that form a vocabulary token are ever
//! merged, so each remaining symbol is a token or a single character; a
//! character without a token is emitted as its UTF-8 bytes' `<0xNN>`
//! tokens (byte fallback). (llama.cpp also keeps a reverse-merge table
//! for symbols that are not tokens; by the rule above it is never used.)
//!
//! Exists because Gemma and Llama-2-family GGUFs carry scores, not merges:
//! the byte-level BPE of [`super::Tokenizer`]'s GPT-2 path does not apply.

use std::collections::{BinaryHeap, HashMap};

/// One symbol of the text being merged: a byte range and its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of symbols `left` and `right`.
#[derive(PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    /// Highest score first; on equal scores the leftmost pair
    /// (llama.cpp's `llm_bigram_spm::comparator`).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// The vocabulary side of SentencePiece BPE.
#[derive(Debug)]
pub(super) struct Spm {
    ids: HashMap<String, u32>,
    scores: Vec<f32>,
    byte_ids: Vec<Option<u32>>,
    unknown: Option<u32>,
}

impl Spm {
    /// Builds the tables: token texts (first id wins on duplicates, as
    /// llama.cpp's map), scores, and the `<0xNN>` byte tokens.
    pub(super) fn new(tokens: &[String], scores: Vec<f32>, unknown: Option<u32>) -> Self {
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // Fits: the caller checked the vocabulary fits u32 ids.
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let byte_ids = (0..=255u8)
            .map(|b| ids.get(&format!("<0x{b:02X}>")).copied())
            .collect();
        Self {
            ids,
            scores,
            byte_ids,
            unknown,
        }
    }

    /// The id of the token whose text is `text`.
    pub(super) fn id_of(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// Appends the ids of `text` (whitespace already escaped to `▁`).
    pub(super) fn tokenize(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (k, (start, c)) in text.char_indices().enumerate() {
            let len = c.len_utf8();
            symbols.push(Symbol {
                start,
                len,
                prev: k.checked_sub(1),
                next: (start + len < text.len()).then_some(k + 1),
            });
        }
        let mut queue = BinaryHeap::new();
        let try_add = |left: Option<usize>,
                       right: Option<usize>,
                       symbols: &[Symbol],
                       queue: &mut BinaryHeap<Bigram>| {
            let (Some(l), Some(r)) = (left, right) else {
                return;
            };
            let (a, b) = (symbols[l], symbols[r]);
            let piece = &text[a.start..a.start + a.len + b.len];
            if let Some(&id) = self.ids.get(piece) {
                queue.push(Bigram {
                    score: self.scores.get(id as usize).copied().unwrap_or(0.0),
                    left: l,
                    right: r,
                    size: piece.len(),
                });
            }
        };
        for i in 1..symbols.len() {
            try_add(Some(i - 1), Some(i), &symbols, &mut queue);
        }
        while let Some(bg) = queue.pop() {
            let (l, r) = (symbols[bg.left], symbols[bg.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
                continue;
            }
            symbols[bg.left].len += r.len;
            symbols[bg.right].len = 0;
            symbols[bg.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(bg.left);
            }
            let (prev, next) = (symbols[bg.left].prev, symbols[bg.left].next);
            try_add(prev, Some(bg.left), &symbols, &mut queue);
            try_add(Some(bg.left), next, &symbols, &mut queue);
        }
        let mut i = Some(0);
        while let Some(k) = i {
            let s = symbols[k];
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        if let Some(id) = self.byte_ids[usize::from(b)].or(self.unknown) {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }
}

/// llama.cpp's `llama_escape_whitespace`: spaces become `▁` (U+2581).
pub(super) fn escape_whitespace(text: &str) -> String {
    text.replace(' ', "\u{2581}")
}

/// The bytes a token stands for: `<0xNN>` byte tokens their byte, others
/// their text with `▁` turned back into spaces.
pub(super) fn piece_bytes(token: &str, is_byte: bool, out: &mut Vec<u8>) {
    if is_byte
        && let Some(hex) = token.strip_prefix("<0x").and_then(|t| t.strip_suffix('>'))
        && let Ok(b) = u8::from_str_radix(hex, 16)
    {
        out.push(b);
        return;
    }
    out.extend_from_slice(token.replace('\u{2581}', " ").as_bytes());
}
