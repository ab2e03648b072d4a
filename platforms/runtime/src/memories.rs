//! Memories: add, get, search, update, history, rollback, delete, expire.
//!
//! Exists as the runtime's main API. A memory is a chain of plaintext
//! MemCube versions in the vault; its id is its first version's cube id.
//! Every call checks access with the core's governance rule against the
//! memory's namespace sharing, writes the audit log, and — for changes —
//! commits cube, records and audit entry in one redb transaction.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use memkern_core::cube::{
    self, Embedding, Int8Vec, MAX_TAG_LEN, MAX_TAGS, MAX_TEXT_LEN, Metadata, OwnedCube, Payload,
    Plaintext, SourceKind,
};
use memkern_core::governance::{self, Operation, Principal};
use memkern_core::heat::HalfLife;
use memkern_core::ids::{CubeId, Fingerprint, NamespaceId, UserId};
use memkern_core::lifecycle::LifecycleState;
use memkern_core::search::hybrid::{HybridParams, MemoryQuery};
use memkern_core::search::temporal::{Day, QueryTime};
use memkern_core::time::Timestamp;
use memkern_core::version;
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::audit::{Event, append};
use super::dedup::{AddAction, Candidate, DedupMode, later_expiry, same_event, union_tags};
use super::index::quantize;
use super::input::shown;
use super::redact::SecretKind;
use super::tables::{
    MEMORIES, MemoryRow, NamespaceRow, TEXT_HASHES, copy_all, decode, encode, next,
};
use super::utterance::is_question;
use super::{Result, Runtime, RuntimeError, corrupt, now, random_id};
use crate::vault::{CUBES, cube_key};

/// How fast a memory's heat fades without use.
pub const HEAT_HALF_LIFE: HalfLife = HalfLife::WEEK;
/// Most hits one search returns.
pub const MAX_K: usize = 100;

/// A memory's id: its first version's cube id, stable across updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemoryId(pub CubeId);

impl fmt::Display for MemoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MemoryId {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<MemoryId> {
        CubeId::from_hex(s).map(MemoryId).ok_or_else(|| {
            RuntimeError::Invalid(format!("{} is not a memory id (32 hex digits)", shown(s)))
        })
    }
}

impl Serialize for MemoryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemoryId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl MemoryId {
    /// The memory's key in the `memories` table.
    pub(crate) fn key(&self) -> u128 {
        cube_key(&self.0)
    }
}

/// What `add` stores.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    /// The namespace (cube).
    pub namespace: NamespaceId,
    /// The memory text.
    pub text: String,
    /// When it happened (default: now).
    #[serde(default)]
    pub time: Option<Timestamp>,
    /// Labels for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Time to live, milliseconds (default: forever).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// How to treat a text already (nearly) in the cube (default: the
    /// configuration's `[dedup]` mode).
    #[serde(default)]
    pub dedup: Option<DedupMode>,
}

/// What `add` did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AddOutcome {
    /// The memory stored, merged into or updated.
    pub id: MemoryId,
    /// What happened to the text (see [`DedupMode`]).
    pub action: AddAction,
    /// True when the same text was already there (`action` is `merged`):
    /// no copy was added and the existing memory's usage was bumped.
    pub duplicate: bool,
    /// The memory's version after the call (1 for a new memory).
    pub version: u32,
    /// For `updated`: the cube id of the version the text replaced (still
    /// in the history).
    pub supersedes: Option<String>,
    /// For `updated`: the text the new version replaced.
    pub previous_text: Option<String>,
    /// Embedding cosine similarity to the matched memory (1.0 for the
    /// same normalised text; none for a new memory).
    pub similarity: Option<f32>,
    /// Secrets removed before storage.
    pub redacted: Vec<SecretKind>,
}

/// A memory as callers see it (one version).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryView {
    /// The memory.
    pub id: MemoryId,
    /// This version's cube id.
    pub cube: String,
    /// Version number (1 = original).
    pub version: u32,
    /// Namespace.
    pub namespace: NamespaceId,
    /// Owner.
    pub owner: UserId,
    /// The (redacted) text.
    pub text: String,
    /// When it happened.
    pub time: Timestamp,
    /// When this version was recorded.
    pub recorded_at: Timestamp,
    /// Labels.
    pub tags: Vec<String>,
    /// Expiry, if any.
    pub expires_at: Option<Timestamp>,
    /// Times retrieved or re-added.
    pub hits: u32,
    /// Lifecycle state.
    pub lifecycle: LifecycleState,
    /// Where the text came from (a module's file and section), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The installed module it belongs to (read-only), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// A search.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The question or keywords.
    pub query: String,
    /// Only these namespaces (default: every one the caller may read).
    #[serde(default)]
    pub namespaces: Option<Vec<NamespaceId>>,
    /// Only memories that happened at or after this time.
    #[serde(default)]
    pub since: Option<Timestamp>,
    /// Only memories that happened before this time.
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// Only memories carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// How many hits (1–100).
    #[serde(default = "default_k")]
    pub k: usize,
}

fn default_k() -> usize {
    10
}

impl SearchRequest {
    /// A plain query over everything visible, top `k`.
    pub fn new(query: impl Into<String>, k: usize) -> SearchRequest {
        SearchRequest {
            query: query.into(),
            namespaces: None,
            since: None,
            until: None,
            tags: Vec::new(),
            k,
        }
    }
}

/// One search result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchHit {
    /// The memory's head version.
    pub memory: MemoryView,
    /// Fused relevance (higher is better; comparable within one search).
    pub score: f32,
}

/// What a hard delete removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeleteReport {
    /// Versions removed.
    pub versions: usize,
    /// Snapshot and adapter cubes derived from them, removed with their
    /// blobs.
    pub derived: usize,
}

/// Lowercase, whitespace collapsed, trailing punctuation dropped: two
/// texts equal after this are the same memory.
pub fn normalise(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    joined
        .trim_end_matches(|c: char| c.is_ascii_punctuation())
        .to_lowercase()
}

pub(crate) fn text_key(ns: NamespaceId, text: &str) -> Vec<u8> {
    let mut k = ns.0.to_be_bytes().to_vec();
    k.extend_from_slice(&Sha256::digest(normalise(text).as_bytes()));
    k
}

fn view(memory: MemoryId, cube: &OwnedCube, ns: &NamespaceRow) -> MemoryView {
    let m = &cube.meta;
    MemoryView {
        id: memory,
        cube: m.id.to_string(),
        version: m.version,
        namespace: m.namespace,
        owner: m.owner,
        text: match &cube.payload {
            Payload::Plaintext(p) => p.text.clone(),
            _ => String::new(),
        },
        time: m.time.event_time,
        recorded_at: m.time.recorded_at,
        tags: m.tags.iter().cloned().collect(),
        expires_at: m.expires_at,
        hits: m.usage.hits,
        lifecycle: m.lifecycle,
        source: m.provenance.source_ref.clone(),
        module: ns.mount.as_ref().map(|m| m.module.clone()),
    }
}

fn check_tags(tags: &[String]) -> Result<heapless::Vec<String, MAX_TAGS>> {
    let mut out = heapless::Vec::new();
    for t in tags {
        if t.is_empty() || t.len() > MAX_TAG_LEN {
            return Err(RuntimeError::Invalid(format!(
                "tag {}: 1–{MAX_TAG_LEN} bytes",
                shown(t)
            )));
        }
        out.push(t.clone())
            .map_err(|_| RuntimeError::Invalid(format!("at most {MAX_TAGS} tags")))?;
    }
    Ok(out)
}

fn check_text(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(RuntimeError::Invalid("the memory text is empty".to_owned()));
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(RuntimeError::Invalid(format!(
            "the memory text is {} bytes; at most {MAX_TEXT_LEN}",
            text.len()
        )));
    }
    Ok(())
}

/// A memory's row and head cube, loaded together.
pub(crate) struct Loaded {
    pub(crate) id: MemoryId,
    pub(crate) row: MemoryRow,
    pub(crate) head: OwnedCube,
    pub(crate) ns: NamespaceRow,
}

impl Loaded {
    /// The head's metadata with the namespace's sharing (what governance
    /// decides on).
    pub(crate) fn policy(&self) -> Metadata<String> {
        let mut m = self.head.meta.clone();
        m.access = self.ns.access();
        if self.ns.mount.is_some() {
            m.lifecycle = LifecycleState::Frozen;
        }
        m
    }
}

/// An existing memory the new text matches, and what to do with it.
pub(crate) enum Match {
    /// Same text, same event: count a use.
    Merge {
        /// The existing memory.
        memory: Box<Loaded>,
        /// 1.0 for the same normalised text.
        similarity: f32,
    },
    /// A near-duplicate in other words: the new text is its new version.
    Update {
        /// The existing memory.
        memory: Box<Loaded>,
        /// Embedding cosine.
        similarity: f32,
    },
}

impl Runtime {
    fn embed_one(&self, text: &str) -> Result<Option<(Vec<i8>, f32, Fingerprint)>> {
        let Some(e) = self.embedder() else {
            return Ok(None);
        };
        let v = e
            .embed(&[text])
            .map_err(|err| RuntimeError::Embed(err.to_string()))?;
        let v = v.into_iter().next().unwrap_or_default();
        let fp = e.fingerprint().unwrap_or(Fingerprint([0; 16]));
        Ok(quantize(&v).map(|(q, s)| (q, s, fp)))
    }

    pub(crate) fn load(&self, id: MemoryId) -> Result<Option<Loaded>> {
        let vault = self.vault();
        let txn = vault
            .database()
            .begin_read()
            .map_err(|e| vault.db_error(e))?;
        let row = match txn.open_table(MEMORIES) {
            Ok(t) => t
                .get(id.key())
                .map_err(|e| vault.db_error(e))?
                .map(|v| v.value().to_vec()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(vault.db_error(e).into()),
        };
        drop(txn);
        let Some(row) = row else {
            return Ok(None);
        };
        let row: MemoryRow = decode(&row).map_err(|e| corrupt("memory", e))?;
        let head_id = row.head().ok_or_else(|| corrupt("memory", "no versions"))?;
        let bytes = vault
            .get(&head_id)?
            .ok_or_else(|| corrupt("memory", format!("head version {head_id} missing")))?;
        drop(vault);
        let head = cube::decode_owned(&bytes).map_err(|e| corrupt("memory cube", e))?;
        let ns = self.namespace_row(NamespaceId(row.namespace))?;
        Ok(Some(Loaded { id, row, head, ns }))
    }

    /// Loads memory `id` and checks `op` for `who`. A caller who may not
    /// even read it gets `NotFound`, as if it did not exist.
    fn authorise(
        &self,
        who: &Principal,
        id: MemoryId,
        op: Operation,
        action: &str,
    ) -> Result<Loaded> {
        let not_found = || RuntimeError::NotFound {
            what: "memory",
            id: id.to_string(),
        };
        let Some(m) = self.load(id)? else {
            return Err(not_found());
        };
        let policy = m.policy();
        let now = now();
        let readable = governance::check(who, &policy, Operation::Read, now).is_allowed();
        if let Some(mount) = m.ns.mount.as_ref().filter(|_| op != Operation::Read) {
            return Err(if readable {
                self.refuse_module_write(who, action, Some(id.0), mount)
            } else {
                not_found()
            });
        }
        if let Err(why) = governance::check(who, &policy, op, now).into_result() {
            let err = self.deny(who, action, Some(id.0), why);
            return Err(if readable { err } else { not_found() });
        }
        Ok(m)
    }

    pub(crate) fn namespace_for_write(
        &self,
        who: &Principal,
        ns: NamespaceId,
    ) -> Result<NamespaceRow> {
        self.authorise_namespace(who, ns, Operation::Write, "add")
    }

    /// Namespace `ns`'s row if `who` may do `op` on it. A caller who may
    /// not even read it gets `NotFound`, as if it did not exist.
    pub(crate) fn authorise_namespace(
        &self,
        who: &Principal,
        ns: NamespaceId,
        op: Operation,
        action: &str,
    ) -> Result<NamespaceRow> {
        let row = self.namespace_row(ns)?;
        let meta = row.policy_meta(ns.0);
        let now = now();
        if let Some(mount) = row.mount.as_ref().filter(|_| op != Operation::Read) {
            return Err(
                if governance::check(who, &meta, Operation::Read, now).is_allowed() {
                    self.refuse_module_write(who, action, None, mount)
                } else {
                    RuntimeError::NotFound {
                        what: "cube",
                        id: ns.to_string(),
                    }
                },
            );
        }
        if let Err(why) = governance::check(who, &meta, op, now).into_result() {
            let visible = governance::check(who, &meta, Operation::Read, now).is_allowed();
            let err = self.deny(who, action, None, why);
            return Err(if visible {
                err
            } else {
                RuntimeError::NotFound {
                    what: "cube",
                    id: ns.to_string(),
                }
            });
        }
        Ok(row)
    }

    /// Stores a memory. Secrets are redacted first; the original text
    /// never reaches the disk. Under the request's dedup mode (default:
    /// the configuration's) the same text about the same event merges
    /// into the existing memory and a near-duplicate in other words
    /// becomes its new version — see [`super::dedup`]: an acknowledged
    /// text is always retrievable afterwards.
    pub fn add(&self, who: &Principal, req: &AddRequest) -> Result<AddOutcome> {
        check_text(&req.text)?;
        if req.ttl_ms == Some(0) {
            // Acknowledged and gone at once would be a write that vanishes.
            return Err(RuntimeError::Invalid(
                "ttl_ms must be at least 1 (leave it out to keep the memory until deleted)"
                    .to_owned(),
            ));
        }
        if let Some(t) = req.time
            && t.0 < 0
        {
            return Err(RuntimeError::Invalid(format!(
                "time must be epoch milliseconds from 1970-01-01, got {}",
                t.0
            )));
        }
        let tags = check_tags(&req.tags)?;
        let ns = self.namespace_for_write(who, req.namespace)?;
        let redacted = self.redactor.redact(&req.text);
        let text = redacted.text.into_owned();
        let found = redacted.found;
        let key = text_key(req.namespace, &text);
        let vector = self.embed_one(&text)?;
        let now = now();
        let expires_at = req
            .ttl_ms
            .map(|t| now.saturating_add_millis(i64::try_from(t).unwrap_or(i64::MAX)));
        let embedding = |v: Option<(Vec<i8>, f32, Fingerprint)>| {
            v.map(|(q, scale, embedder)| Embedding {
                embedder,
                scale,
                values: Int8Vec(q.into_iter().map(|x| x as u8).collect()),
            })
        };
        let redaction = if found.is_empty() {
            String::new()
        } else {
            format!(
                "; redacted {}",
                found
                    .iter()
                    .map(|k| k.label())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };

        let _w = self.write_lock();
        let candidate = Candidate {
            mode: req.dedup.unwrap_or(self.config().dedup.default_mode()),
            namespace: req.namespace,
            text: &text,
            key: &key,
            time: req.time,
            tags: &req.tags,
            vector: vector.as_ref(),
        };
        match self.find_match(who, &candidate, now)? {
            Some(Match::Merge { memory, similarity }) => {
                let mut m = *memory;
                let meta = &mut m.head.meta;
                // Nothing the request carried is lost: its tags join the
                // memory's, and the later expiry wins.
                let united = union_tags(&meta.tags, &req.tags).unwrap_or_else(|| meta.tags.clone());
                let retag = united != meta.tags;
                meta.tags = united;
                meta.expires_at = later_expiry(meta.expires_at, expires_at);
                use_once(meta, now);
                let detail = format!("duplicate (similarity {similarity:.3}){redaction}");
                self.commit_version(
                    &m.head,
                    m.id,
                    &m.row,
                    retag,
                    &[Event::ok(who, "add", Some(m.id.0)).with(detail)],
                )?;
                return Ok(AddOutcome {
                    id: m.id,
                    action: AddAction::Merged,
                    duplicate: true,
                    version: m.head.meta.version,
                    supersedes: None,
                    previous_text: None,
                    similarity: Some(similarity),
                    redacted: found,
                });
            }
            Some(Match::Update { memory, similarity }) => {
                let m = *memory;
                let mut meta = version::next_version(&m.head.meta, random_id()?, now)?;
                meta.time.event_time = req.time.unwrap_or(now);
                meta.tags = union_tags(&meta.tags, &req.tags).unwrap_or(tags);
                meta.expires_at = expires_at;
                use_once(&mut meta, now);
                let supersedes = m.head.meta.id.to_string();
                let previous_text = match &m.head.payload {
                    Payload::Plaintext(p) => p.text.clone(),
                    _ => String::new(),
                };
                let cube = cube::Cube {
                    meta,
                    payload: Payload::Plaintext(Plaintext {
                        text,
                        embedding: embedding(vector),
                    }),
                };
                let detail =
                    format!("near-duplicate (similarity {similarity:.3}) updated{redaction}");
                let v = self.commit_new_head(who, m, cube, "add", &detail)?;
                return Ok(AddOutcome {
                    id: v.id,
                    action: AddAction::Updated,
                    duplicate: false,
                    version: v.version,
                    supersedes: Some(supersedes),
                    previous_text: Some(previous_text),
                    similarity: Some(similarity),
                    redacted: found,
                });
            }
            None => {}
        }
        let id = random_id()?;
        let mut meta = Metadata::new(
            id,
            UserId(ns.owner),
            req.namespace,
            req.time.unwrap_or(now),
            now,
            SourceKind::DialogueTurn,
        );
        meta.tags = tags;
        // Indexed and served from this commit on.
        meta.lifecycle = LifecycleState::Activated;
        meta.expires_at = expires_at;
        let cube = cube::Cube {
            meta,
            payload: Payload::Plaintext(Plaintext {
                text,
                embedding: embedding(vector),
            }),
        };
        let memory = MemoryId(id);
        let row = MemoryRow {
            seq: 0,
            namespace: req.namespace.0,
            versions: vec![id.0],
            text_key: key,
        };
        let detail = redaction.trim_start_matches("; ").to_owned();
        self.commit_version(
            &cube,
            memory,
            &row,
            true,
            &[Event::ok(who, "add", Some(id)).with(detail)],
        )?;
        Ok(AddOutcome {
            id: memory,
            action: AddAction::Stored,
            duplicate: false,
            version: 1,
            supersedes: None,
            previous_text: None,
            similarity: None,
            redacted: found,
        })
    }

    /// Adds one use to `memory`'s usage statistics (hits, last access,
    /// heat), in place — usage is not a new version.
    fn record_use(
        &self,
        who: &Principal,
        memory: MemoryId,
        now: Timestamp,
        action: &str,
        detail: String,
    ) -> Result<()> {
        let Some(mut m) = self.load(memory)? else {
            return Ok(());
        };
        use_once(&mut m.head.meta, now);
        self.commit_version(
            &m.head,
            memory,
            &m.row,
            false,
            &[Event::ok(who, action, Some(memory.0)).with(detail)],
        )
    }

    /// Records that a chat used `memories` (heat drives snapshot
    /// promotion).
    pub(crate) fn touch(
        &self,
        who: &Principal,
        memories: impl Iterator<Item = MemoryId>,
        now: Timestamp,
    ) -> Result<()> {
        let _w = self.write_lock();
        for m in memories {
            self.record_use(who, m, now, "use", String::new())?;
        }
        Ok(())
    }

    /// `memory`'s heat at `now` (None if it is gone).
    pub(crate) fn heat_of(&self, memory: MemoryId, now: Timestamp) -> Option<u32> {
        let m = self.load(memory).ok().flatten()?;
        Some(m.head.meta.usage.heat.value_at(now, HEAT_HALF_LIFE))
    }

    /// `memory`'s head metadata (None if it is gone).
    pub(crate) fn load_head(&self, memory: MemoryId) -> Result<Option<Metadata<String>>> {
        Ok(self.load(memory)?.map(|m| m.head.meta))
    }

    /// Commits `cube` (a new head, or the current head changed in place)
    /// with `row` and the audit events, then updates the index.
    fn commit_version(
        &self,
        cube: &OwnedCube,
        memory: MemoryId,
        row: &MemoryRow,
        reindex: bool,
        events: &[Event<'_>],
    ) -> Result<()> {
        let bytes = cube::encode_to_vec(cube)
            .map_err(|e| RuntimeError::Invalid(format!("cannot encode the memory: {e}")))?;
        let vault = self.vault();
        let txn = vault
            .database()
            .begin_write()
            .map_err(|e| vault.db_error(e))?;
        vault.put_in(&txn, &bytes)?;
        (|| {
            let mut row = row.clone();
            if row.seq == 0 {
                row.seq = next(&txn, "memory", 1)?;
            }
            txn.open_table(MEMORIES)?
                .insert(memory.key(), encode(&row).unwrap_or_default().as_slice())?;
            let mut hashes = txn.open_table(TEXT_HASHES)?;
            if hashes.get(row.text_key.as_slice())?.is_none() {
                hashes.insert(row.text_key.as_slice(), memory.key())?;
            }
            drop(hashes);
            append(&txn, events)
        })()
        .map_err(|e| vault.db_error(e))?;
        txn.commit().map_err(|e| vault.db_error(e))?;
        drop(vault);
        if reindex {
            self.index_mut().upsert(memory.key(), cube);
        }
        Ok(())
    }

    /// Memory `id`'s current version.
    pub fn get(&self, who: &Principal, id: MemoryId) -> Result<MemoryView> {
        let m = self.authorise(who, id, Operation::Read, "get")?;
        self.log(&[Event::ok(who, "get", Some(id.0))])?;
        Ok(view(id, &m.head, &m.ns))
    }

    /// Replaces memory `id`'s text with a new version (the old one stays
    /// in the history).
    pub fn update(&self, who: &Principal, id: MemoryId, text: &str) -> Result<MemoryView> {
        check_text(text)?;
        let redacted = self.redactor.redact(text);
        let text = redacted.text.into_owned();
        let vector = self.embed_one(&text)?;
        let _w = self.write_lock();
        let m = self.authorise(who, id, Operation::Write, "update")?;
        let now = now();
        let meta = version::next_version(&m.head.meta, random_id()?, now)?;
        let cube = cube::Cube {
            meta,
            payload: Payload::Plaintext(Plaintext {
                text,
                embedding: vector.map(|(q, scale, embedder)| Embedding {
                    embedder,
                    scale,
                    values: Int8Vec(q.into_iter().map(|x| x as u8).collect()),
                }),
            }),
        };
        self.commit_new_head(who, m, cube, "update", "")
    }

    /// Commits `cube` as memory `m`'s new head: the old head's snapshots
    /// and any adapter covering the memory go, the text key moves.
    fn commit_new_head(
        &self,
        who: &Principal,
        m: Loaded,
        cube: OwnedCube,
        action: &str,
        why: &str,
    ) -> Result<MemoryView> {
        let old_head: HashSet<CubeId> = m.row.head().into_iter().collect();
        let mut row = m.row;
        let old_key = std::mem::take(&mut row.text_key);
        row.versions.push(cube.meta.id.0);
        let text = match &cube.payload {
            Payload::Plaintext(p) => p.text.as_str(),
            _ => "",
        };
        row.text_key = text_key(NamespaceId(row.namespace), text);
        {
            // The old head's snapshots describe text that is no longer
            // current: drop them with the old text key.
            let vault = self.vault();
            let stale = derived_from(&vault, &old_head)?;
            let txn = vault
                .database()
                .begin_write()
                .map_err(|e| vault.db_error(e))?;
            let dropped = (|| {
                remove_text_key(&txn, &old_key, m.id)?;
                let mut cubes = txn.open_table(CUBES)?;
                for (c, _) in &stale {
                    cubes.remove(cube_key(c))?;
                }
                drop(cubes);
                // An adapter that learnt the old text would keep answering
                // it: it is dropped like the old version's snapshots.
                let keys = HashSet::from([m.id.key()]);
                super::coverage::drop_covering(&txn, &keys, "a covered memory changed")
            })()
            .map_err(|e| vault.db_error(e))?;
            txn.commit().map_err(|e| vault.db_error(e))?;
            for b in stale.iter().filter_map(|(_, b)| b.as_ref()).chain(&dropped) {
                vault.remove_blob_if_unreferenced(b)?;
            }
        }
        let detail = if why.is_empty() {
            format!("version {}", cube.meta.version)
        } else {
            format!("version {}: {why}", cube.meta.version)
        };
        self.commit_version(
            &cube,
            m.id,
            &row,
            true,
            &[Event::ok(who, action, Some(m.id.0)).with(detail)],
        )?;
        Ok(view(m.id, &cube, &m.ns))
    }

    /// Every version of memory `id`, oldest first.
    pub fn history(&self, who: &Principal, id: MemoryId) -> Result<Vec<MemoryView>> {
        let m = self.authorise(who, id, Operation::Read, "history")?;
        let mut out = Vec::with_capacity(m.row.versions.len());
        let vault = self.vault();
        for v in &m.row.versions {
            let bytes = vault
                .get(&CubeId(*v))?
                .ok_or_else(|| corrupt("memory", format!("version {} missing", CubeId(*v))))?;
            let c = cube::decode_owned(&bytes).map_err(|e| corrupt("memory cube", e))?;
            out.push(view(id, &c, &m.ns));
        }
        drop(vault);
        self.log(&[Event::ok(who, "history", Some(id.0))])?;
        Ok(out)
    }

    /// Makes version `to` of memory `id` current again, as a new version.
    pub fn rollback(&self, who: &Principal, id: MemoryId, to: u32) -> Result<MemoryView> {
        let _w = self.write_lock();
        let m = self.authorise(who, id, Operation::Write, "rollback")?;
        let target_id = to
            .checked_sub(1)
            .and_then(|i| m.row.versions.get(i as usize))
            .ok_or_else(|| RuntimeError::Invalid(format!("memory {id} has no version {to}")))?;
        let bytes = self
            .vault()
            .get(&CubeId(*target_id))?
            .ok_or_else(|| corrupt("memory", format!("version {to} missing")))?;
        let target = cube::decode_owned(&bytes).map_err(|e| corrupt("memory cube", e))?;
        let cube = version::rollback(&m.head.meta, &target, random_id()?, now())?;
        self.commit_new_head(who, m, cube, "rollback", "")
    }

    /// Hard-deletes memory `id`: every version, its index entries, the
    /// snapshots and adapters derived from it and their blobs; then
    /// vacuums the database so no copy of the text remains in the file.
    pub fn delete(&self, who: &Principal, id: MemoryId) -> Result<DeleteReport> {
        let _w = self.write_lock();
        let m = self.authorise(who, id, Operation::Delete, "delete")?;
        let report = self.delete_loaded(&[m], &[Event::ok(who, "delete", Some(id.0))])?;
        self.vacuum()?;
        Ok(report)
    }

    /// Sets memory `id`'s expiry; a time not after now expires (deletes)
    /// it at once.
    pub fn expire(&self, who: &Principal, id: MemoryId, at: Timestamp) -> Result<()> {
        let _w = self.write_lock();
        // Expiring now is deleting: only who may delete may do it.
        let immediate = at <= now();
        let op = if immediate {
            Operation::Delete
        } else {
            Operation::Write
        };
        let mut m = self.authorise(who, id, op, "expire")?;
        let event = Event::ok(who, "expire", Some(id.0)).with(format!("at {}", at.0));
        if immediate {
            self.delete_loaded(&[m], &[event])?;
            return self.vacuum();
        }
        m.head.meta.expires_at = Some(at);
        self.commit_version(&m.head, m.id, &m.row, false, &[event])
    }

    /// Deletes every memory whose TTL has passed; returns how many.
    pub fn sweep_expired(&self) -> Result<usize> {
        let _w = self.write_lock();
        let now = now();
        let mut due = Vec::new();
        for id in self.memory_ids()? {
            if let Some(m) = self.load(id)?
                && m.head.meta.is_expired(now)
            {
                due.push(m);
            }
        }
        if due.is_empty() {
            return Ok(0);
        }
        let admin = self.admin();
        let events: Vec<Event<'_>> = due
            .iter()
            .map(|m| Event::ok(&admin, "expire", Some(m.id.0)).with("ttl passed".to_owned()))
            .collect();
        let n = due.len();
        self.delete_loaded(&due, &events)?;
        self.vacuum()?;
        Ok(n)
    }

    /// The current versions of the memories in namespace `ns` (at most
    /// `limit`, oldest id first), if `who` may read it.
    pub fn list(&self, who: &Principal, ns: NamespaceId, limit: usize) -> Result<Vec<MemoryView>> {
        self.authorise_namespace(who, ns, Operation::Read, "list")?;
        let now = now();
        let mut out = Vec::new();
        for id in self.memory_ids()? {
            if out.len() == limit {
                break;
            }
            let Some(m) = self.load(id)? else {
                continue;
            };
            if m.row.namespace == ns.0
                && governance::check(who, &m.policy(), Operation::Read, now).is_allowed()
            {
                out.push(view(id, &m.head, &m.ns));
            }
        }
        self.log(&[Event::ok(who, "list", None).with(format!("cube {ns}: {}", out.len()))])?;
        Ok(out)
    }

    /// Every memory id.
    pub(crate) fn memory_ids(&self) -> Result<Vec<MemoryId>> {
        let mut out = Vec::new();
        self.scan(MEMORIES, None, |k, _| {
            out.push(MemoryId(CubeId(k.to_be_bytes())));
            Ok(true)
        })?;
        Ok(out)
    }

    pub(crate) fn delete_loaded(
        &self,
        memories: &[Loaded],
        events: &[Event<'_>],
    ) -> Result<DeleteReport> {
        let versions: HashSet<CubeId> = memories
            .iter()
            .flat_map(|m| m.row.versions.iter().map(|v| CubeId(*v)))
            .collect();
        // Snapshots and adapters derived from any version go too.
        let vault = self.vault();
        let derived = derived_from(&vault, &versions)?;
        let keys: HashSet<u128> = memories.iter().map(|m| m.id.key()).collect();
        let txn = vault
            .database()
            .begin_write()
            .map_err(|e| vault.db_error(e))?;
        let dropped = (|| {
            let mut cubes = txn.open_table(CUBES)?;
            for v in versions.iter().chain(derived.iter().map(|(c, _)| c)) {
                cubes.remove(cube_key(v))?;
            }
            drop(cubes);
            // Deletion wins over memorisation: adapters that learnt any of
            // these memories go in the same transaction.
            let dropped =
                super::coverage::drop_covering(&txn, &keys, "a covered memory was deleted")?;
            let mut rows = txn.open_table(MEMORIES)?;
            for m in memories {
                rows.remove(m.id.key())?;
            }
            drop(rows);
            for m in memories {
                remove_text_key(&txn, &m.row.text_key, m.id)?;
            }
            append(&txn, events)?;
            Ok::<_, redb::Error>(dropped)
        })()
        .map_err(|e| vault.db_error(e))?;
        txn.commit().map_err(|e| vault.db_error(e))?;
        for b in derived
            .iter()
            .filter_map(|(_, b)| b.as_ref())
            .chain(&dropped)
        {
            vault.remove_blob_if_unreferenced(b)?;
        }
        drop(vault);
        let mut index = self.index_mut();
        for m in memories {
            index.remove(m.id.key());
        }
        Ok(DeleteReport {
            versions: versions.len(),
            derived: derived.len(),
        })
    }

    /// Rewrites the database without freed pages (see [`crate::vault::Vault::vacuum`]).
    pub(crate) fn vacuum(&self) -> Result<()> {
        Ok(self.vault_mut().vacuum(copy_all)?)
    }

    /// Rebuilds the search index from the stored head versions.
    pub(crate) fn rebuild_index(&self) -> Result<usize> {
        let ids = self.memory_ids()?;
        let mut loaded = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = self.load(id)? {
                loaded.push(m);
            }
        }
        // Insertion order, so neighbours in the index are neighbours in
        // the conversation (the hybrid ranker's context signal).
        loaded.sort_by_key(|m| m.row.seq);
        let mut index = self.index_mut();
        for m in &loaded {
            index.upsert(m.id.key(), &m.head);
        }
        Ok(index.len())
    }

    /// The best `req.k` memories for `req.query` that `who` may read.
    pub fn search(&self, who: &Principal, req: &SearchRequest) -> Result<Vec<SearchHit>> {
        if req.k == 0 || req.k > MAX_K {
            return Err(RuntimeError::Invalid(format!(
                "k must be 1–{MAX_K}, got {}",
                req.k
            )));
        }
        if req.query.len() > MAX_TEXT_LEN {
            return Err(RuntimeError::Invalid(format!(
                "the query is longer than {MAX_TEXT_LEN} bytes"
            )));
        }
        let now = now();
        let mut readable: Vec<(u64, NamespaceRow)> = self
            .namespace_rows()?
            .into_iter()
            .filter(|(id, r)| {
                governance::check(who, &r.policy_meta(*id), Operation::Read, now).is_allowed()
            })
            .collect();
        if let Some(only) = &req.namespaces {
            readable.retain(|(id, _)| only.iter().any(|n| n.0 == *id));
        }
        let allowed: HashSet<u64> = readable.iter().map(|(id, _)| *id).collect();
        let vector = self.embed_one(&req.query)?;
        let query = MemoryQuery {
            text: &req.query,
            vector: vector.as_ref().map(|(q, s, _)| (q.as_slice(), *s)),
            speakers: &[],
            time: QueryTime::of(&req.query, Some(Day::of(now))),
        };
        let params = if vector.is_some() {
            HybridParams::DEFAULT
        } else {
            HybridParams::KEYWORD_SIGNALS
        };
        let candidates = self.index().search(&query, &params, req.k * 4 + 8, |d| {
            allowed.contains(&d.namespace)
                && req.since.is_none_or(|t| d.event_ms >= t.0)
                && req.until.is_none_or(|t| d.event_ms < t.0)
                && req.tags.iter().all(|t| d.tags.contains(t))
        });
        let mut hits = Vec::new();
        let mut questions = Vec::new();
        for (doc, score) in candidates {
            if hits.len() == req.k {
                break;
            }
            let id = MemoryId(CubeId(doc.memory.to_be_bytes()));
            let Some(m) = self.load(id)? else {
                continue;
            };
            // The core's rule decides every hit (expiry, tombstones,
            // sharing), not only the namespace filter above.
            if governance::check(who, &m.policy(), Operation::Read, now).is_allowed() {
                let hit = SearchHit {
                    memory: view(id, &m.head, &m.ns),
                    score,
                };
                // A stored question repeats the next question word for
                // word and would outrank the fact that answers it: it
                // ranks below every statement among the candidates.
                if is_question(&hit.memory.text) {
                    questions.push(hit);
                } else {
                    hits.push(hit);
                }
            }
        }
        hits.extend(questions);
        hits.truncate(req.k);
        let mut events = vec![Event::ok(who, "search", None).with(format!("{} hits", hits.len()))];
        events.extend(
            hits.iter()
                .map(|h| Event::ok(who, "read", Some(h.memory.id.0))),
        );
        self.log(&events)?;
        Ok(hits)
    }
}

impl Runtime {
    /// The memory the candidate merges with or updates under its mode, if
    /// any. Memories that are expired, immutable or not writable by `who`
    /// never match: the text is then stored as a new memory.
    pub(crate) fn find_match(
        &self,
        who: &Principal,
        c: &Candidate<'_>,
        now: Timestamp,
    ) -> Result<Option<Match>> {
        if c.mode == DedupMode::Off {
            return Ok(None);
        }
        if let Some(id) = self.exact_text(c.key)?
            && let Some(m) = self.matchable(who, id, c, now)?
        {
            return Ok(Some(Match::Merge {
                memory: Box::new(m),
                similarity: 1.0,
            }));
        }
        let (DedupMode::Near, Some((q, scale, _))) = (c.mode, c.vector) else {
            return Ok(None);
        };
        let threshold = self.config().dedup.similarity;
        let nearest = self.index().nearest(q, *scale, |d| {
            d.namespace == c.namespace.0 && same_event(c.time, Timestamp(d.event_ms))
        });
        let Some((key, similarity)) = nearest.filter(|(_, s)| *s >= threshold) else {
            return Ok(None);
        };
        let Some(m) = self.matchable(who, MemoryId(CubeId(key.to_be_bytes())), c, now)? else {
            return Ok(None);
        };
        let same_text = match &m.head.payload {
            Payload::Plaintext(p) => normalise(&p.text) == normalise(c.text),
            _ => false,
        };
        let memory = Box::new(m);
        Ok(Some(if same_text {
            Match::Merge { memory, similarity }
        } else {
            Match::Update { memory, similarity }
        }))
    }

    /// The memory stored under exact-dedup key `key`, if any.
    fn exact_text(&self, key: &[u8]) -> Result<Option<MemoryId>> {
        let vault = self.vault();
        let txn = vault
            .database()
            .begin_read()
            .map_err(|e| vault.db_error(e))?;
        let found = match txn.open_table(TEXT_HASHES) {
            Ok(t) => t
                .get(key)
                .map_err(|e| vault.db_error(e))?
                .map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(vault.db_error(e).into()),
        };
        Ok(found.map(|m| MemoryId(CubeId(m.to_be_bytes()))))
    }

    /// Memory `id` loaded, if the candidate may merge with or update it:
    /// same cube, same event, alive, mutable, writable by `who`, and the
    /// tags of both fit in one memory.
    fn matchable(
        &self,
        who: &Principal,
        id: MemoryId,
        c: &Candidate<'_>,
        now: Timestamp,
    ) -> Result<Option<Loaded>> {
        let Some(m) = self.load(id)? else {
            return Ok(None);
        };
        let meta = &m.head.meta;
        let ok = m.row.namespace == c.namespace.0
            && same_event(c.time, meta.time.event_time)
            && !meta.is_expired(now)
            && meta.lifecycle.is_mutable()
            && union_tags(&meta.tags, c.tags).is_some()
            && governance::check(who, &m.policy(), Operation::Write, now).is_allowed();
        Ok(ok.then_some(m))
    }
}

/// Counts one use of a memory: hits, last access, heat.
fn use_once(meta: &mut Metadata<String>, now: Timestamp) {
    let u = &mut meta.usage;
    u.hits = u.hits.saturating_add(1);
    u.last_access = Some(now);
    u.heat.touch(now, HEAT_HALF_LIFE);
}

/// Snapshot and adapter cubes derived from any of `versions`, with their
/// blobs.
fn derived_from(
    vault: &crate::vault::Vault,
    versions: &HashSet<CubeId>,
) -> Result<Vec<(CubeId, Option<memkern_core::ids::BlobDigest>)>> {
    let mut derived = Vec::new();
    for (cid, bytes) in vault.cubes()? {
        let Ok(c) = cube::decode_owned(&bytes) else {
            continue;
        };
        if c.meta
            .provenance
            .parents
            .iter()
            .any(|p| versions.contains(p))
        {
            let blob = match &c.payload {
                Payload::Activation(a) => Some(a.blob.digest),
                Payload::Parametric(p) => Some(p.blob.digest),
                Payload::Plaintext(_) => continue,
            };
            derived.push((cid, blob));
        }
    }
    Ok(derived)
}

fn remove_text_key(
    txn: &WriteTransaction,
    key: &[u8],
    memory: MemoryId,
) -> Result<(), redb::Error> {
    let mut t = txn.open_table(TEXT_HASHES)?;
    let mine = t.get(key)?.is_some_and(|v| v.value() == memory.key());
    if mine {
        t.remove(key)?;
    }
    Ok(())
}
