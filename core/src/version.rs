//! Version history: updates create linked versions; rollback creates a new
//! version with old content, so history is never rewritten.

use crate::cube::{Cube, Metadata};
use crate::ids::CubeId;
use crate::lifecycle::LifecycleState;
use crate::time::Timestamp;

/// Why a new version could not be made, or a history does not hold together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum VersionError {
    /// The current state forbids changing the content.
    #[error("a {0:?} memory cannot be updated")]
    Immutable(LifecycleState),
    /// The version counter is exhausted.
    #[error("version number overflow")]
    Overflow,
    /// The new id equals an id already in the chain.
    #[error("new version id {0} is already used")]
    IdReused(CubeId),
    /// A version does not link to the one before it.
    #[error("version {version} does not follow its predecessor")]
    BrokenChain {
        /// The offending version number.
        version: u32,
    },
    /// A version changed owner or namespace.
    #[error("version {version} changed owner or namespace")]
    OwnerChanged {
        /// The offending version number.
        version: u32,
    },
    /// The rollback target is not an older version of this memory.
    #[error("rollback target is not an earlier version of this memory")]
    NotAnAncestor,
}

/// Metadata for the version after `current`: `version + 1`, linked to
/// `current` by `previous`, recorded at `now`. Usage, access and tags carry
/// over; the caller sets the new content. A `Merged` memory's new version
/// is `Activated`: its new content is in no adapter yet.
pub fn next_version<S: Clone>(
    current: &Metadata<S>,
    new_id: CubeId,
    now: Timestamp,
) -> Result<Metadata<S>, VersionError> {
    if !current.lifecycle.is_mutable() {
        return Err(VersionError::Immutable(current.lifecycle));
    }
    if new_id == current.id || current.previous == Some(new_id) {
        return Err(VersionError::IdReused(new_id));
    }
    let version = current
        .version
        .checked_add(1)
        .ok_or(VersionError::Overflow)?;
    let mut next = current.clone();
    next.id = new_id;
    next.version = version;
    next.previous = Some(current.id);
    next.time.recorded_at = now;
    if next.lifecycle == LifecycleState::Merged {
        next.lifecycle = LifecycleState::Activated;
    }
    Ok(next)
}

/// A new head version whose content is `target`'s, linked after `head`.
///
/// `target` must be an earlier version of the same memory (same owner and
/// namespace, lower version number). Rolling back never deletes the versions
/// in between; they stay in the history.
pub fn rollback<S: Clone, B: Clone>(
    head: &Metadata<S>,
    target: &Cube<S, B>,
    new_id: CubeId,
    now: Timestamp,
) -> Result<Cube<S, B>, VersionError> {
    if target.meta.version >= head.version
        || target.meta.owner != head.owner
        || target.meta.namespace != head.namespace
    {
        return Err(VersionError::NotAnAncestor);
    }
    let meta = next_version(head, new_id, now)?;
    Ok(Cube {
        meta,
        payload: target.payload.clone(),
    })
}

/// Checks that `versions` (oldest first) form one unbroken history.
pub fn verify_chain<S>(versions: &[&Metadata<S>]) -> Result<(), VersionError> {
    for pair in versions.windows(2) {
        let [prev, cur] = pair else { continue };
        if cur.previous != Some(prev.id) || Some(cur.version) != prev.version.checked_add(1) {
            return Err(VersionError::BrokenChain {
                version: cur.version,
            });
        }
        if cur.owner != prev.owner || cur.namespace != prev.namespace {
            return Err(VersionError::OwnerChanged {
                version: cur.version,
            });
        }
    }
    Ok(())
}
