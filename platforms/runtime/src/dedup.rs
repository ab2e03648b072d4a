//! Dedup: what `add` does with a text that is already (nearly) in the cube.
//!
//! Exists because an acknowledged write must never vanish. The rule:
//! - the same normalised text about the same event **merges**: the
//!   existing memory counts one more use, keeps the union of the tags and
//!   the later expiry — nothing the request carried is lost;
//! - a near-duplicate (embedding cosine at or above
//!   `[dedup] similarity`) with other words is an **update**: it becomes
//!   the memory's new version, so search answers with the newest fact and
//!   the history keeps the old one ("Monday at 3pm" → "Tuesday at 3pm");
//! - a request with an explicit event time other than the existing
//!   memory's is another event and is **stored** as its own memory, as is
//!   everything else.
//!
//! The mode is chosen per request (`dedup: off | exact | near`), with the
//! configuration's as the default. This module holds the rule; the
//! lookup runs in `memories` (`Runtime::find_match`).

use std::fmt;
use std::str::FromStr;

use memkern_core::cube::MAX_TAGS;
use memkern_core::ids::{Fingerprint, NamespaceId};
use memkern_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// How `add` treats a text that is already (nearly) in the cube.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupMode {
    /// Always store a new memory.
    Off,
    /// Merge only the same normalised text about the same event.
    Exact,
    /// As `Exact`; a near-duplicate with other words becomes the existing
    /// memory's new version.
    #[default]
    Near,
}

impl DedupMode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [DedupMode; 3] = [DedupMode::Off, DedupMode::Exact, DedupMode::Near];

    /// The mode's name, as requests spell it.
    pub fn name(self) -> &'static str {
        match self {
            DedupMode::Off => "off",
            DedupMode::Exact => "exact",
            DedupMode::Near => "near",
        }
    }
}

impl fmt::Display for DedupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DedupMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<DedupMode, String> {
        DedupMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "dedup must be off, exact or near, got {}",
                    crate::input::shown(s)
                )
            })
    }
}

/// What `add` did with the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddAction {
    /// A new memory.
    Stored,
    /// The same text was there: its usage was bumped (tags united, the
    /// later expiry kept).
    Merged,
    /// A near-duplicate was there: the text became its new version; the
    /// old text stays in the history.
    Updated,
}

/// What `add` knows of the new memory when it looks for a match.
pub(crate) struct Candidate<'a> {
    /// The mode in force.
    pub mode: DedupMode,
    /// The cube.
    pub namespace: NamespaceId,
    /// The (redacted) text.
    pub text: &'a str,
    /// Its exact-dedup key.
    pub key: &'a [u8],
    /// The explicit event time, if the request gave one.
    pub time: Option<Timestamp>,
    /// The request's tags.
    pub tags: &'a [String],
    /// The int8 embedding, if there is an embedder.
    pub vector: Option<&'a (Vec<i8>, f32, Fingerprint)>,
}

/// Whether a request with event time `requested` is about the same event
/// as a memory that happened at `existing` (no explicit time: a current
/// fact, which may replace or merge with any).
pub(crate) fn same_event(requested: Option<Timestamp>, existing: Timestamp) -> bool {
    requested.is_none_or(|t| t == existing)
}

/// `have` with every tag of `extra` added (None: more than [`MAX_TAGS`]).
pub(crate) fn union_tags(
    have: &heapless::Vec<String, MAX_TAGS>,
    extra: &[String],
) -> Option<heapless::Vec<String, MAX_TAGS>> {
    let mut out = have.clone();
    for t in extra {
        if !out.contains(t) {
            out.push(t.clone()).ok()?;
        }
    }
    Some(out)
}

/// The later of two expiries (`None` is never, the latest of all).
pub(crate) fn later_expiry(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    Some(a?.max(b?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in DedupMode::ALL {
            assert_eq!(m.name().parse::<DedupMode>(), Ok(m));
            assert_eq!(
                serde_json::to_string(&m).ok(),
                Some(format!("\"{}\"", m.name()))
            );
        }
        assert!("fuzzy".parse::<DedupMode>().is_err());
        assert_eq!(DedupMode::default(), DedupMode::Near);
    }

    #[test]
    fn an_explicit_other_time_is_another_event() {
        let t = Timestamp(1_000);
        assert!(same_event(None, t));
        assert!(same_event(Some(t), t));
        assert!(!same_event(Some(Timestamp(2_000)), t));
    }

    #[test]
    fn tags_unite_within_the_limit() {
        let mut have = heapless::Vec::<String, MAX_TAGS>::new();
        let _ = have.push("trip".to_owned());
        let united = union_tags(&have, &["trip".to_owned(), "food".to_owned()]);
        assert_eq!(
            united.map(|v| v.to_vec()),
            Some(vec!["trip".to_owned(), "food".to_owned()])
        );
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert!(union_tags(&have, &many).is_none());
    }

    #[test]
    fn never_expiring_wins() {
        let (a, b) = (Some(Timestamp(5)), Some(Timestamp(9)));
        assert_eq!(later_expiry(a, b), b);
        assert_eq!(later_expiry(a, None), None);
        assert_eq!(later_expiry(None, b), None);
    }
}
