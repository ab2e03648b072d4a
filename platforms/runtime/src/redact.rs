//! Secret redaction: API keys, tokens, private keys, card numbers and
//! passwords in memory text are replaced by `[REDACTED:<label>]` markers.
//!
//! Exists so that a secret a user pastes into a conversation never reaches
//! disk: the runtime redacts text before it is embedded or stored, with
//! rules that are on by default and configurable (`[redaction]` in the
//! config).
//!
//! The rules aim at few false positives on ordinary chat: card numbers must
//! pass the Luhn check, token values must look random (contain a digit, or
//! mixed case), and "password is X" ignores common words ("is wrong", "is
//! too short"). Redaction is idempotent: markers are never redacted again.

use std::borrow::Cow;

use regex::Regex;

/// Which kind of secret a rule finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// Provider API keys (OpenAI, Anthropic, AWS, GitHub, Slack, Google,
    /// Stripe) and `api_key = …`-style assignments.
    ApiKey,
    /// The token of an HTTP `Bearer` authorisation.
    BearerToken,
    /// A JSON Web Token (three base64url segments starting `eyJ`).
    Jwt,
    /// A PEM or PGP private key block.
    PrivateKey,
    /// A payment card number (13–19 digits passing the Luhn check).
    CardNumber,
    /// A password, passcode or PIN given after its name.
    Password,
    /// A match of a user pattern (`extra_patterns`).
    Custom,
}

impl SecretKind {
    /// The label used in `[REDACTED:<label>]` markers (and in the config).
    pub fn label(self) -> &'static str {
        match self {
            SecretKind::ApiKey => "api_key",
            SecretKind::BearerToken => "bearer_token",
            SecretKind::Jwt => "jwt",
            SecretKind::PrivateKey => "private_key",
            SecretKind::CardNumber => "card_number",
            SecretKind::Password => "password",
            SecretKind::Custom => "custom",
        }
    }

    /// Which label wins when matches of two kinds overlap (lower wins):
    /// the more specific kind names the merged marker.
    fn rank(self) -> u8 {
        match self {
            SecretKind::PrivateKey => 0,
            SecretKind::Jwt => 1,
            SecretKind::ApiKey => 2,
            SecretKind::BearerToken => 3,
            SecretKind::CardNumber => 4,
            SecretKind::Password => 5,
            SecretKind::Custom => 6,
        }
    }
}

/// Configuration (deserialised from the `[redaction]` table of memkern's
/// TOML config).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionConfig {
    /// Redact at all (default `true`).
    pub enabled: bool,
    /// Built-in kinds switched off (default none). Listing `custom`
    /// switches `extra_patterns` off (they are still checked for errors).
    pub disabled: Vec<SecretKind>,
    /// User regexes (Rust `regex` syntax), reported as
    /// [`SecretKind::Custom`]. A pattern with a capture group named
    /// `secret` redacts that group only (keeping the rest of the match);
    /// otherwise the whole match is redacted. Case-insensitive matching
    /// needs ASCII mode, `(?i-u)`.
    pub extra_patterns: Vec<String>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            enabled: true,
            disabled: Vec::new(),
            extra_patterns: Vec::new(),
        }
    }
}

/// Why a redaction configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// A pattern does not compile.
    #[error("redaction pattern {pattern:?} is not a valid regex: {message}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// The regex compiler's message.
        message: String,
    },
}

/// What part of a match is the secret, and what it must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// The span is a secret as matched.
    Any,
    /// The value must look random: a digit, or at least two upper- and
    /// two lower-case letters (rules out "Bearer certificates").
    Random,
    /// A password after "is"/"was": an unquoted value must not be a
    /// common word ("password is wrong").
    NotCommonWord,
    /// Digit runs: the secret is each card-shaped, Luhn-valid sub-run.
    Luhn,
}

/// One compiled rule.
#[derive(Clone, Debug)]
struct Rule {
    kind: SecretKind,
    regex: Regex,
    check: Check,
}

/// Compiled rules.
///
/// Built once from a [`RedactionConfig`] and shared; [`Redactor::redact`]
/// takes `&self`.
#[derive(Clone, Debug)]
pub struct Redactor {
    rules: Vec<Rule>,
}

/// The result: text with each secret replaced by `[REDACTED:<label>]`, and
/// what was found.
#[derive(Clone, Debug, PartialEq)]
pub struct Redacted<'a> {
    /// The redacted text (borrowed when nothing was found).
    pub text: Cow<'a, str>,
    /// One entry per marker in `text`, in order: the kind it names.
    /// Overlapping matches are merged into one marker.
    pub found: Vec<SecretKind>,
}

/// The value after a name and `:`/`=`/"is": a quoted string (group `q1`
/// or `q2`, kept whole) or the next whitespace-delimited token (group
/// `bare`, trailing sentence punctuation excluded by the code).
const VALUE: &str = r#"(?:"(?P<q1>[^"\r\n]{1,200})"|'(?P<q2>[^'\r\n]{1,200})'|(?P<bare>\S+))"#;

/// Names of key-like settings: `api_key`, `apikey`, `secret_key`,
/// `access_token`, `client_secret`, … with an optional prefix
/// (`OPENAI_API_KEY`).
const KEY_NAME: &str = r"\b(?i-u:(?:[a-z0-9]+[_-])*(?:api|access|auth|client|refresh|secret|private|session)[_-]?(?:key|token|secret))";

/// Names of passwords: `password`, `passwd`, `passcode`, `passphrase`,
/// `pwd`, with an optional prefix (`DB_PASSWORD`).
const PASSWORD_NAME: &str = r"\b(?i-u:(?:[a-z0-9]+[_-])*(?:pass(?:word|wd|code|phrase)|pwd))";

/// The built-in rules: kind, pattern (no look-around), check. For rules
/// with capture groups the secret is the first group that took part.
fn builtin_patterns() -> Vec<(SecretKind, String, Check)> {
    use SecretKind::*;
    let s = |p: &str| p.to_string();
    vec![
        // PEM / PGP private key blocks; a block cut off before its END
        // line is redacted to the end of the text.
        (
            PrivateKey,
            s(
                r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
            ),
            Check::Any,
        ),
        // JWT: header.payload.signature, base64url, header `{"` = `eyJ`.
        (
            Jwt,
            s(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
            Check::Any,
        ),
        // OpenAI (`sk-`, `sk-proj-`) and Anthropic (`sk-ant-`).
        (ApiKey, s(r"\bsk-[A-Za-z0-9_-]{20,}"), Check::Random),
        // AWS access key ids (long-term and temporary).
        (ApiKey, s(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), Check::Any),
        // GitHub tokens.
        (ApiKey, s(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), Check::Any),
        (ApiKey, s(r"\bgithub_pat_[A-Za-z0-9_]{22,}"), Check::Any),
        // Slack tokens.
        (ApiKey, s(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), Check::Any),
        // Google API keys.
        (ApiKey, s(r"\bAIza[0-9A-Za-z_-]{35}"), Check::Any),
        // Stripe secret and restricted keys.
        (
            ApiKey,
            s(r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}"),
            Check::Any,
        ),
        // `api_key = …`, `"access_token": "…"`: the value only.
        (
            ApiKey,
            format!(r#"{KEY_NAME}["']?[ \t]*[:=][ \t]*{VALUE}"#),
            Check::Random,
        ),
        // `Authorization: Bearer <token>`: the token only.
        (
            BearerToken,
            s(r"\b(?i-u:bearer)[ \t]+(?P<bare>[A-Za-z0-9._~+/=-]+)"),
            Check::Random,
        ),
        // Card numbers: digit runs, checked by `card_spans`.
        (CardNumber, s(r"[0-9]+(?:[ -][0-9]+)*"), Check::Luhn),
        // `password: X`, `password=X`, `"password": "X"`.
        (
            Password,
            format!(r#"{PASSWORD_NAME}["']?[ \t]*[:=][ \t]*{VALUE}"#),
            Check::Any,
        ),
        // `password is X`, `my passcode was: X`.
        (
            Password,
            format!(r"{PASSWORD_NAME}[ \t]+(?i-u:is|was)(?:[ \t]*:)?[ \t]+{VALUE}"),
            Check::NotCommonWord,
        ),
        // `PIN is 1234`, `pin code: 1234`: digits only.
        (
            Password,
            s(
                r"\b(?i-u:pin)(?:[ \t]*(?i-u:code|number))?(?:[ \t]*[:=][ \t]*|[ \t]+(?i-u:is|was)(?:[ \t]*:)?[ \t]+)(?P<bare>[0-9]{3,12})\b",
            ),
            Check::Any,
        ),
    ]
}

/// Words that follow "password is" in ordinary talk, not passwords.
const COMMON_WORDS: &str = "\
    a about actually all already also always an and at bad being blank but case changed \
    compromised correct definitely different easy empty encrypted enough expired fine \
    for forgotten generated good great hard her here hidden his how in incorrect invalid \
    it its just known leaked less like literally long lost mandatory missing more my \
    needed never no not nothing now of ok okay on one only optional or our probably \
    protected really required reset right safe same saved secure sent set short shown \
    simple so something somewhere still stolen stored strong taken that the their there \
    these this those to too unknown usually valid very visible weak weird what where \
    which who why written wrong your";

/// Whether `value` is one of [`COMMON_WORDS`] (ASCII case ignored).
fn is_common_word(value: &str) -> bool {
    COMMON_WORDS
        .split_whitespace()
        .any(|w| w.eq_ignore_ascii_case(value))
}

/// A bare value without trailing sentence punctuation (`. , ; ! ?`).
fn trim_value(value: &str) -> &str {
    value.trim_end_matches(['.', ',', ';', '!', '?'])
}

/// Whether a token value looks like a generated secret rather than a word.
fn looks_random(value: &str) -> bool {
    let digits = value.bytes().filter(u8::is_ascii_digit).count();
    let upper = value.bytes().filter(u8::is_ascii_uppercase).count();
    let lower = value.bytes().filter(u8::is_ascii_lowercase).count();
    value.len() >= 8 && (digits > 0 || (upper >= 2 && lower >= 2))
}

/// Whether the digits (ASCII) pass the Luhn checksum; all zeros do not.
fn luhn(digits: &[u8]) -> bool {
    if digits.iter().all(|&d| d == b'0') {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether a digit run at `start..end` stands alone on the given side:
/// not glued to a word (`x123`), a decimal (`3.14159…`) or a phone
/// number's `+`.
fn run_edge_ok(text: &str, start: usize, end: usize, left: bool) -> bool {
    let (near, far) = if left {
        let mut it = text[..start].chars().rev();
        (it.next(), it.next())
    } else {
        let mut it = text[end..].chars();
        (it.next(), it.next())
    };
    match near {
        None => true,
        Some(c) if c.is_alphanumeric() || c == '_' => false,
        Some('+') if left => false,
        Some('.' | ',') => !far.is_some_and(|f| f.is_ascii_digit()),
        Some(_) => true,
    }
}

/// Card numbers inside one digit run `start..end` (digits separated by
/// single spaces or dashes): every sub-run of whole groups holding 13–19
/// digits that passes Luhn. A sub-run of several groups needs groups of
/// 3–6 digits (card layouts 4-4-4-4, 4-6-5, …), so lists of small
/// numbers are not cards.
fn card_spans(text: &str, start: usize, end: usize, out: &mut Vec<(usize, usize, SecretKind)>) {
    let run = &text[start..end];
    if run.bytes().filter(u8::is_ascii_digit).count() < 13 {
        return;
    }
    // Byte ranges (absolute) of the digit groups.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut group_start = None;
    for (i, b) in run.bytes().enumerate() {
        match (b.is_ascii_digit(), group_start) {
            (true, None) => group_start = Some(i),
            (false, Some(g)) => {
                groups.push((start + g, start + i));
                group_start = None;
            }
            _ => {}
        }
    }
    if let Some(g) = group_start {
        groups.push((start + g, end));
    }
    let left_ok = run_edge_ok(text, start, end, true);
    let right_ok = run_edge_ok(text, start, end, false);
    let n = groups.len();
    for i in 0..n {
        if i == 0 && !left_ok {
            continue;
        }
        for j in i + 1..=n.min(i + 7) {
            if j == n && !right_ok {
                continue;
            }
            let span = &groups[i..j];
            let len = |&(a, b): &(usize, usize)| b - a;
            let total: usize = span.iter().map(len).sum();
            if !(13..=19).contains(&total) {
                continue;
            }
            if span.len() > 1 && !span.iter().all(|g| (3..=6).contains(&len(g))) {
                continue;
            }
            let (a, b) = (span[0].0, span[span.len() - 1].1);
            let digits: Vec<u8> = text[a..b].bytes().filter(u8::is_ascii_digit).collect();
            if luhn(&digits) {
                out.push((a, b, SecretKind::CardNumber));
            }
        }
    }
}

/// Byte ranges of `[REDACTED:<label>]` markers already in `text`.
fn marker_spans(text: &str) -> Vec<(usize, usize)> {
    const OPEN: &str = "[REDACTED:";
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(OPEN) {
        let start = from + pos;
        let label_start = start + OPEN.len();
        let label_len = text[label_start..]
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        let close = label_start + label_len;
        if label_len > 0 && text.as_bytes().get(close) == Some(&b']') {
            spans.push((start, close + 1));
            from = close + 1;
        } else {
            from = label_start;
        }
    }
    spans
}

impl Rule {
    /// Adds the secret spans this rule finds in `text` to `out`.
    fn find(&self, text: &str, out: &mut Vec<(usize, usize, SecretKind)>) {
        if self.check == Check::Luhn {
            for m in self.regex.find_iter(text) {
                card_spans(text, m.start(), m.end(), out);
            }
            return;
        }
        let names: Vec<Option<&str>> = self.regex.capture_names().collect();
        let custom = self.kind == SecretKind::Custom;
        let secret_group = names.iter().position(|n| *n == Some("secret"));
        for caps in self.regex.captures_iter(text) {
            // The secret: for a user pattern its `secret` group if it has
            // one, else the whole match; for a built-in the first group
            // that took part, else the whole match.
            let chosen = match (custom, secret_group) {
                (true, Some(i)) => caps.get(i).map(|m| (i, m)),
                (true, None) => caps.get(0).map(|m| (0, m)),
                (false, _) => caps
                    .iter()
                    .enumerate()
                    .skip(1)
                    .find_map(|(i, m)| Some((i, m?)))
                    .or_else(|| caps.get(0).map(|m| (0, m))),
            };
            let Some((index, m)) = chosen else { continue };
            let bare = names.get(index).copied().flatten() == Some("bare");
            let value = if bare {
                trim_value(m.as_str())
            } else {
                m.as_str()
            };
            if value.is_empty() {
                continue;
            }
            let keep = match self.check {
                Check::Any | Check::Luhn => true,
                Check::Random => looks_random(value),
                Check::NotCommonWord => !bare || !is_common_word(value),
            };
            if keep {
                out.push((m.start(), m.start() + value.len(), self.kind));
            }
        }
    }
}

impl Redactor {
    /// Compiles the rules of `config`: the built-in rules not listed in
    /// `disabled`, then `extra_patterns`. With `enabled = false` the
    /// redactor has no rules and returns text unchanged.
    ///
    /// # Errors
    ///
    /// [`RedactError::BadPattern`] for the first extra pattern that is
    /// not a valid regex (checked even when `custom` is disabled).
    pub fn new(config: &RedactionConfig) -> Result<Redactor, RedactError> {
        let mut custom = Vec::with_capacity(config.extra_patterns.len());
        for pattern in &config.extra_patterns {
            let regex = Regex::new(pattern).map_err(|e| RedactError::BadPattern {
                pattern: pattern.clone(),
                message: e.to_string(),
            })?;
            custom.push(Rule {
                kind: SecretKind::Custom,
                regex,
                check: Check::Any,
            });
        }
        if !config.enabled {
            return Ok(Redactor { rules: Vec::new() });
        }
        let mut rules = builtin_rules(&config.disabled);
        if !config.disabled.contains(&SecretKind::Custom) {
            rules.extend(custom);
        }
        Ok(Redactor { rules })
    }

    /// The default rules (infallible: built-in patterns are tested).
    pub fn default_rules() -> Redactor {
        Redactor {
            rules: builtin_rules(&[]),
        }
    }

    /// Redacts `text`: every secret found is replaced by
    /// `[REDACTED:<label>]` (for name/value rules, the value only).
    /// Matches are collected over the original text and overlapping ones
    /// merged, so markers never garble each other; existing markers are
    /// left alone, so redacting twice changes nothing.
    pub fn redact<'a>(&self, text: &'a str) -> Redacted<'a> {
        let mut spans: Vec<(usize, usize, SecretKind)> = Vec::new();
        for rule in &self.rules {
            rule.find(text, &mut spans);
        }
        if spans.is_empty() {
            return Redacted {
                text: Cow::Borrowed(text),
                found: Vec::new(),
            };
        }
        let markers = marker_spans(text);
        spans.retain(|&(s, e, _)| s < e && !markers.iter().any(|&(ms, me)| s < me && ms < e));
        spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut merged: Vec<(usize, usize, SecretKind)> = Vec::with_capacity(spans.len());
        for (s, e, kind) in spans {
            match merged.last_mut() {
                Some(last) if s < last.1 => {
                    last.1 = last.1.max(e);
                    if kind.rank() < last.2.rank() {
                        last.2 = kind;
                    }
                }
                _ => merged.push((s, e, kind)),
            }
        }
        if merged.is_empty() {
            return Redacted {
                text: Cow::Borrowed(text),
                found: Vec::new(),
            };
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut found = Vec::with_capacity(merged.len());
        for (s, e, kind) in merged {
            out.push_str(&text[at..s]);
            out.push_str("[REDACTED:");
            out.push_str(kind.label());
            out.push(']');
            found.push(kind);
            at = e;
        }
        out.push_str(&text[at..]);
        Redacted {
            text: Cow::Owned(out),
            found,
        }
    }
}

/// Compiles the built-in rules not in `disabled`. A pattern that failed
/// to compile would be skipped rather than panic;
/// `tests::every_builtin_pattern_compiles` proves none does.
fn builtin_rules(disabled: &[SecretKind]) -> Vec<Rule> {
    builtin_patterns()
        .into_iter()
        .filter(|(kind, _, _)| !disabled.contains(kind))
        .filter_map(|(kind, pattern, check)| {
            Some(Rule {
                kind,
                regex: Regex::new(&pattern).ok()?,
                check,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn redact(text: &str) -> Redacted<'_> {
        Redactor::default_rules().redact(text)
    }

    /// Asserts `secret` is gone, every `keep` survives, and `kind` found.
    fn assert_redacted(text: &str, secret: &str, keep: &[&str], kind: SecretKind) {
        let r = redact(text);
        assert!(
            !r.text.contains(secret),
            "{secret:?} survived in {:?}",
            r.text
        );
        for k in keep {
            assert!(r.text.contains(k), "{k:?} lost from {:?}", r.text);
        }
        let marker = format!("[REDACTED:{}]", kind.label());
        assert!(r.text.contains(&marker), "no {marker} in {:?}", r.text);
        assert!(r.found.contains(&kind), "{kind:?} not in {:?}", r.found);
    }

    #[test]
    fn every_builtin_pattern_compiles() {
        for (_, pattern, _) in builtin_patterns() {
            let compiled = Regex::new(&pattern);
            assert!(compiled.is_ok(), "{pattern:?}: {compiled:?}");
        }
        assert_eq!(
            Redactor::default_rules().rules.len(),
            builtin_patterns().len()
        );
        assert_eq!(
            Redactor::new(&RedactionConfig::default())
                .map(|r| r.rules.len())
                .ok(),
            Some(builtin_patterns().len())
        );
    }

    #[test]
    fn labels_match_serde_names() -> TestResult {
        for kind in [
            SecretKind::ApiKey,
            SecretKind::BearerToken,
            SecretKind::Jwt,
            SecretKind::PrivateKey,
            SecretKind::CardNumber,
            SecretKind::Password,
            SecretKind::Custom,
        ] {
            let json = serde_json::to_string(&kind)?;
            assert_eq!(json, format!("\"{}\"", kind.label()));
        }
        Ok(())
    }

    #[test]
    fn provider_api_keys() {
        let cases = [
            "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL",
            "sk-proj-Ab3dEfGhIjKlMnOpQrStUvWxYz0123456789_abc-def",
            "sk-ant-api03-AbCdEf0123456789AbCdEf0123456789AbCdEf0123456789-XyZ",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_0123456789abcdefghijklmnopqrstuvwxyZ",
            "gho_0123456789abcdefghijklmnopqrstuvwxyZ",
            "ghs_0123456789abcdefghijklmnopqrstuvwxyZ",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "xoxp-123456789012-abcdefghij",
            "AIzaSyA1234567890abcdefghijklmnopqrstuv",
            "sk_live_51HxYzAbCdEfGhIjKlMnOp",
            "rk_live_51HxYzAbCdEfGhIjKlMnOp",
        ];
        for key in cases {
            let text = format!("here is my key {key} for the project");
            assert_redacted(
                &text,
                key,
                &["here is my key ", " for the project"],
                SecretKind::ApiKey,
            );
        }
    }

    #[test]
    fn generic_assignments_keep_the_name() {
        let cases = [
            ("api_key=a1b2c3d4e5f6g7h8", "a1b2c3d4e5f6g7h8", "api_key="),
            ("apikey: Zx9Yw8Vu7Ts6", "Zx9Yw8Vu7Ts6", "apikey: "),
            (
                "secret_key = 9f8e7d6c5b4a3210",
                "9f8e7d6c5b4a3210",
                "secret_key = ",
            ),
            (
                "access_token: ya29.A0ARrdaM-xyz123",
                "ya29.A0ARrdaM-xyz123",
                "access_token: ",
            ),
            (
                "OPENAI_API_KEY=abc123def456ghi789",
                "abc123def456ghi789",
                "OPENAI_API_KEY=",
            ),
            (
                r#"{"client_secret": "s3cr3t-v4lue-here"}"#,
                "s3cr3t-v4lue-here",
                r#"{"client_secret": ""#,
            ),
        ];
        for (text, secret, name) in cases {
            assert_redacted(text, secret, &[name], SecretKind::ApiKey);
        }
        // The trailing full stop is the sentence's, not the key's.
        let r = redact("set api_key=a1b2c3d4e5f6g7h8. Then restart.");
        assert_eq!(r.text, "set api_key=[REDACTED:api_key]. Then restart.");
    }

    #[test]
    fn bearer_tokens_keep_the_word() {
        let r = redact("curl -H 'Authorization: Bearer abc123DEF456ghi789' https://x");
        assert_eq!(
            r.text,
            "curl -H 'Authorization: Bearer [REDACTED:bearer_token]' https://x"
        );
        assert_eq!(r.found, vec![SecretKind::BearerToken]);
        // Not a token: ordinary words after "bearer".
        for text in [
            "he was the bearer of bad news",
            "Bearer certificates are old",
        ] {
            assert_eq!(redact(text).text, text);
        }
    }

    #[test]
    fn jwts() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        assert_redacted(
            &format!("my session is {jwt}, keep it safe"),
            jwt,
            &["my session is ", ", keep it safe"],
            SecretKind::Jwt,
        );
        // Inside a Bearer header the JWT label wins; one marker only.
        let header = format!("Authorization: Bearer {jwt}");
        let r = redact(&header);
        assert_eq!(r.text, "Authorization: Bearer [REDACTED:jwt]");
        assert_eq!(r.found, vec![SecretKind::Jwt]);
    }

    #[test]
    fn private_key_blocks() {
        let text = "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234\nabcdEFGH\n-----END RSA PRIVATE KEY-----\nthanks";
        let r = redact(text);
        assert_eq!(r.text, "key:\n[REDACTED:private_key]\nthanks");
        assert_eq!(r.found, vec![SecretKind::PrivateKey]);
        assert_redacted(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY----- done",
            "b3BlbnNzaC1rZXktdjEAAAAA",
            &[" done"],
            SecretKind::PrivateKey,
        );
        // A truncated paste is redacted to the end.
        let r = redact("oops -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B");
        assert_eq!(r.text, "oops [REDACTED:private_key]");
    }

    #[test]
    fn card_numbers_need_luhn() {
        for card in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111111111111111",
            "5500 0000 0000 0004",
            "3782 822463 10005",
        ] {
            assert_redacted(
                &format!("my card is {card}, expires soon"),
                card,
                &["my card is ", ", expires soon"],
                SecretKind::CardNumber,
            );
        }
        // Same shape, fails Luhn: left alone.
        for text in [
            "my card is 4111 1111 1111 1112",
            "tracking number 1234567812345678",
        ] {
            let r = redact(text);
            assert_eq!(r.text, text);
            assert!(r.found.is_empty());
        }
        // A card followed by more digits is still found.
        let r = redact("card 4111 1111 1111 1111 2025");
        assert!(!r.text.contains("4111"), "{:?}", r.text);
        assert_eq!(r.found, vec![SecretKind::CardNumber]);
    }

    #[test]
    fn luhn_checksum() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"79927398710"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"0000000000000000"));
    }

    #[test]
    fn passwords_keep_the_words() {
        let cases = [
            ("my password: hunter2", "hunter2", "my password: "),
            (
                "the password is Tr0ub4dor&3.",
                "Tr0ub4dor&3",
                "the password is ",
            ),
            ("Password=s3cret!", "s3cret", "Password="),
            ("passwd: letmein", "letmein", "passwd: "),
            ("pwd=qwerty123", "qwerty123", "pwd="),
            ("my PASSCODE is 8812", "8812", "my PASSCODE is "),
            ("DB_PASSWORD=correcthorse", "correcthorse", "DB_PASSWORD="),
            (
                "password is 'open sesame' ok",
                "open sesame",
                "password is '",
            ),
            ("my PIN is 1234.", "1234", "my PIN is "),
            ("pin: 98765", "98765", "pin: "),
        ];
        for (text, secret, keep) in cases {
            assert_redacted(text, secret, &[keep], SecretKind::Password);
        }
        let r = redact("My password is hunter2, don't tell.");
        assert_eq!(r.text, "My password is [REDACTED:password], don't tell.");
        let r = redact("my PIN is 1234!");
        assert_eq!(r.text, "my PIN is [REDACTED:password]!");
    }

    #[test]
    fn ordinary_text_untouched() {
        for text in [
            "I was born in 1987",
            "call me at 555-123-4567",
            "or +1 555 123 4567, or +44 20 7946 0958",
            "my order 12345678 shipped",
            "we met on 2024-01-15 at 10:30, and again 15/01/2024",
            "upgrade from v1.2.3 to 2.10.14-beta",
            "pi is 3.14159265358979323846",
            "my password is wrong",
            "the password is too short",
            "your passcode is incorrect",
            "pin the tweet",
            "the pin is bent",
            "scikit-learn and sk-learn are the same",
            "my api key is in the vault",
            "numbers 1 2 3 4 5 6 7 8 9 10 11 12 13 14",
            "",
        ] {
            let r = redact(text);
            assert_eq!(r.text, text, "changed {text:?}");
            assert!(matches!(r.text, Cow::Borrowed(_)), "{text:?} not borrowed");
            assert!(r.found.is_empty(), "{text:?}: {:?}", r.found);
        }
    }

    #[test]
    fn several_kinds_at_once_in_order() {
        let text = "password: hunter2 and card 4111 1111 1111 1111 and key AKIAIOSFODNN7EXAMPLE";
        let r = redact(text);
        assert_eq!(
            r.text,
            "password: [REDACTED:password] and card [REDACTED:card_number] and key [REDACTED:api_key]"
        );
        assert_eq!(
            r.found,
            vec![
                SecretKind::Password,
                SecretKind::CardNumber,
                SecretKind::ApiKey
            ]
        );
    }

    #[test]
    fn overlapping_matches_merge() {
        // The password value is also an OpenAI key: one marker, no garbling.
        let key = "sk-abcdefghijklmnopqrstuvwxyz0123456789";
        let text = format!("password: {key} ok");
        let r = redact(&text);
        assert_eq!(r.text, "password: [REDACTED:api_key] ok");
        assert_eq!(r.found, vec![SecretKind::ApiKey]);
    }

    #[test]
    fn idempotent() {
        let text = "api_key=a1b2c3d4e5f6g7h8 password is hunter2. Bearer abc123DEF456ghi789 \
                    card 4111111111111111 -----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----";
        let once = redact(text);
        assert_eq!(once.found.len(), 5, "{:?}", once.text);
        let twice = redact(&once.text);
        assert_eq!(twice.text, once.text);
        assert!(twice.found.is_empty(), "{:?}", twice.found);
        assert!(matches!(twice.text, Cow::Borrowed(_)));
    }

    #[test]
    fn disabled_kinds_are_honoured() -> TestResult {
        let config = RedactionConfig {
            disabled: vec![SecretKind::CardNumber, SecretKind::Password],
            ..RedactionConfig::default()
        };
        let redactor = Redactor::new(&config)?;
        let text = "card 4111 1111 1111 1111 password: hunter2";
        let r = redactor.redact(text);
        assert_eq!(r.text, text);
        assert!(r.found.is_empty());
        // Other kinds still on.
        let r = redactor.redact("key AKIAIOSFODNN7EXAMPLE");
        assert_eq!(r.text, "key [REDACTED:api_key]");
        Ok(())
    }

    #[test]
    fn disabled_entirely() -> TestResult {
        let config = RedactionConfig {
            enabled: false,
            extra_patterns: vec!["secret".into()],
            ..RedactionConfig::default()
        };
        let redactor = Redactor::new(&config)?;
        let text = "password: hunter2 card 4111111111111111 secret";
        let r = redactor.redact(text);
        assert_eq!(r.text, text);
        assert!(matches!(r.text, Cow::Borrowed(_)));
        assert!(r.found.is_empty());
        Ok(())
    }

    #[test]
    fn custom_patterns() -> TestResult {
        let config = RedactionConfig {
            extra_patterns: vec![
                r"\bEMP-[0-9]{6}\b".into(),
                r"(?i-u:door code )(?P<secret>[0-9]+)".into(),
            ],
            ..RedactionConfig::default()
        };
        let redactor = Redactor::new(&config)?;
        let r = redactor.redact("badge EMP-123456, Door code 4455 please");
        assert_eq!(
            r.text,
            "badge [REDACTED:custom], Door code [REDACTED:custom] please"
        );
        assert_eq!(r.found, vec![SecretKind::Custom, SecretKind::Custom]);
        // `custom` in `disabled` switches them off.
        let off = RedactionConfig {
            disabled: vec![SecretKind::Custom],
            ..config
        };
        let r = Redactor::new(&off)?.redact("badge EMP-123456");
        assert_eq!(r.text, "badge EMP-123456");
        Ok(())
    }

    #[test]
    fn bad_custom_pattern_is_an_error() {
        let config = RedactionConfig {
            extra_patterns: vec!["ok".into(), "(unclosed".into()],
            ..RedactionConfig::default()
        };
        let result = Redactor::new(&config);
        assert!(
            matches!(
                &result,
                Err(RedactError::BadPattern { pattern, message })
                    if pattern == "(unclosed" && !message.is_empty()
            ),
            "{result:?}"
        );
        let shown = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            shown.starts_with("redaction pattern \"(unclosed\" is not a valid regex: "),
            "{shown}"
        );
    }

    #[test]
    fn config_serde() -> TestResult {
        let config: RedactionConfig = serde_json::from_str("{}")?;
        assert_eq!(config, RedactionConfig::default());
        assert!(config.enabled);
        let config: RedactionConfig = serde_json::from_str(
            r#"{"enabled": true, "disabled": ["card_number", "bearer_token"], "extra_patterns": ["x+"]}"#,
        )?;
        assert_eq!(
            config.disabled,
            vec![SecretKind::CardNumber, SecretKind::BearerToken]
        );
        assert_eq!(config.extra_patterns, vec!["x+".to_string()]);
        let back: RedactionConfig = serde_json::from_str(&serde_json::to_string(&config)?)?;
        assert_eq!(back, config);
        assert!(serde_json::from_str::<RedactionConfig>(r#"{"enabeld": false}"#).is_err());
        assert!(serde_json::from_str::<RedactionConfig>(r#"{"disabled": ["nope"]}"#).is_err());
        Ok(())
    }

    #[test]
    fn non_ascii_text_is_safe() {
        let text = "mot de passe — password: pässwörd1 — ünïcödé 4111 1111 1111 1111 ✓";
        let r = redact(text);
        assert_eq!(
            r.text,
            "mot de passe — password: [REDACTED:password] — ünïcödé [REDACTED:card_number] ✓"
        );
    }
}
