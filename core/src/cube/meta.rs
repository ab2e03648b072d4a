//! Metadata every MemCube carries, whatever its payload kind.
//!
//! The structs are generic over the string representation `S`: `&'a str`
//! when decoding in place from a byte slice (no heap), `String` with the
//! `alloc` feature. Both share one wire format.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::heat::Heat;
use crate::ids::{CubeId, NamespaceId, UserId};
use crate::lifecycle::LifecycleState;
use crate::time::Timestamp;

/// Most tags one cube may carry.
pub const MAX_TAGS: usize = 16;
/// Longest tag, in UTF-8 bytes.
pub const MAX_TAG_LEN: usize = 64;
/// Most parent cubes one provenance record may name.
pub const MAX_PARENTS: usize = 8;
/// Most extra readers (and, separately, writers) in an access policy.
pub const MAX_GRANTEES: usize = 8;
/// Longest provenance source reference, in UTF-8 bytes.
pub const MAX_SOURCE_REF_LEN: usize = 256;

/// Everything the runtime knows about a cube besides its payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Metadata<S> {
    /// Identity of this version of the cube.
    pub id: CubeId,
    /// The user who owns the memory.
    pub owner: UserId,
    /// The cube namespace the memory belongs to (unit of sharing/export).
    pub namespace: NamespaceId,
    /// Bi-temporal time: when it happened vs when it was recorded.
    pub time: BiTemporal,
    /// Where the memory came from.
    pub provenance: Provenance<S>,
    /// Where the memory is in its lifecycle.
    pub lifecycle: LifecycleState,
    /// Version number, starting at 1; an update creates version + 1.
    pub version: u32,
    /// The version this one replaces (`None` exactly when `version == 1`).
    pub previous: Option<CubeId>,
    /// Who besides the owner may see or change the memory.
    pub access: AccessPolicy,
    /// Usage statistics that drive scheduling.
    pub usage: UsageStats,
    /// When the memory expires (TTL), if ever.
    pub expires_at: Option<Timestamp>,
    /// Free-form labels for filtering.
    pub tags: Vec<S, MAX_TAGS>,
    /// How sensitive the content is; governs sharing and export.
    pub sensitivity: Sensitivity,
}

impl<S> Metadata<S> {
    /// A fresh version-1 cube's metadata with private access, no tags and
    /// zero usage — the common starting point for `add`.
    pub fn new(
        id: CubeId,
        owner: UserId,
        namespace: NamespaceId,
        event_time: Timestamp,
        recorded_at: Timestamp,
        source: SourceKind,
    ) -> Self {
        Metadata {
            id,
            owner,
            namespace,
            time: BiTemporal {
                event_time,
                recorded_at,
                valid_until: None,
            },
            provenance: Provenance {
                source,
                source_ref: None,
                parents: Vec::new(),
            },
            lifecycle: LifecycleState::Generated,
            version: 1,
            previous: None,
            access: AccessPolicy::default(),
            usage: UsageStats::default(),
            expires_at: None,
            tags: Vec::new(),
            sensitivity: Sensitivity::Personal,
        }
    }

    /// True when the cube's TTL has passed at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Two time axes: the fact's own time and the system's record time.
///
/// Keeping both lets a query ask "what did we know on date X" and "what
/// happened on date X" separately, and lets imports keep original times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BiTemporal {
    /// When the fact happened or was said.
    pub event_time: Timestamp,
    /// When memkern recorded it.
    pub recorded_at: Timestamp,
    /// When the fact stops being true, if known (must not precede `event_time`).
    pub valid_until: Option<Timestamp>,
}

/// What produced the memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A turn of a conversation.
    DialogueTurn,
    /// A document the user supplied.
    Document,
    /// Imported from another device or system.
    Import,
    /// Derived by memkern from other cubes (summary, snapshot, adapter).
    Derived,
}

/// Where a memory came from, for audit and for cascading deletes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Provenance<S> {
    /// Kind of source.
    pub source: SourceKind,
    /// Source-specific reference (dialogue turn id, file name, URL).
    pub source_ref: Option<S>,
    /// Cubes this one was derived from (a snapshot's text cube, an
    /// adapter's training memories).
    pub parents: Vec<CubeId, MAX_PARENTS>,
}

/// Who may see a cube.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Only the owner (and the local admin).
    #[default]
    Private,
    /// The owner plus the listed readers and writers.
    Shared,
    /// Every authenticated user may read it.
    Public,
}

/// Access grants beyond the owner.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AccessPolicy {
    /// Overall visibility.
    pub visibility: Visibility,
    /// Users granted read access (effective when `visibility` is `Shared`).
    pub readers: Vec<UserId, MAX_GRANTEES>,
    /// Users granted read-write access (effective when `visibility` is `Shared`).
    pub writers: Vec<UserId, MAX_GRANTEES>,
}

/// How often and how recently a memory was used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UsageStats {
    /// Number of times the memory was retrieved.
    pub hits: u32,
    /// Last retrieval time.
    pub last_access: Option<Timestamp>,
    /// Decayed access count used by the scheduler.
    pub heat: Heat,
}

/// Sensitivity level; higher levels restrict sharing and export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    /// May be shared and exported freely.
    Public,
    /// Not meant for outsiders, but not personal.
    Internal,
    /// Personal data (the default for user memories).
    #[default]
    Personal,
    /// Secrets: never shared or exported.
    Secret,
}
