//! Incremental decoding of generated ids into whole UTF-8 characters.

use super::{TokenKind, Tokenizer, TokenizerError};

/// Turns ids arriving one at a time into text, holding back the bytes of a
/// character that is split across tokens (an emoji is often 2–4 tokens).
///
/// Exists so a streaming UI never shows a half character or a spurious
/// U+FFFD. Bytes that can never become valid UTF-8 are emitted as U+FFFD.
#[derive(Debug)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    skip_control: bool,
    pending: Vec<u8>,
}

impl<'t> StreamDecoder<'t> {
    pub(crate) fn new(tokenizer: &'t Tokenizer, skip_control: bool) -> Self {
        Self {
            tokenizer,
            skip_control,
            pending: Vec::new(),
        }
    }

    /// Adds one id; returns the text completed by it (often empty while a
    /// multi-byte character is incomplete).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        let t = self.tokenizer;
        let bytes = t.token_bytes(id).ok_or(TokenizerError::UnknownTokenId {
            id,
            vocab_size: t.vocab_size(),
        })?;
        if self.skip_control && t.token_kind(id) == Some(TokenKind::Control) {
            return Ok(String::new());
        }
        self.pending.extend_from_slice(bytes);
        Ok(self.drain(false))
    }

    /// Ends the stream: any held-back bytes of an unfinished character are
    /// emitted as U+FFFD.
    pub fn finish(mut self) -> String {
        self.drain(true)
    }

    /// Whether bytes of an unfinished character are being held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn drain(&mut self, at_end: bool) -> String {
        let mut out = String::new();
        let mut consumed = 0;
        loop {
            let rest = &self.pending[consumed..];
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix up to `valid_up_to` is valid UTF-8 by definition.
                    out.push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            consumed += valid + bad;
                        }
                        None if at_end => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            consumed = self.pending.len();
                            break;
                        }
                        None => {
                            consumed += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        out
    }
}
