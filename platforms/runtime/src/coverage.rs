//! Which memories an adapter covers, seen from the tables: the one rule
//! that memory changes and parametric memory share.
//!
//! Exists so that "deletion wins over memorisation" is written once, below
//! both `memories` (which drops the covering adapter when a memory changes
//! or goes) and `parametric` (which marks covered memories `Merged`), and
//! neither has to import the other.

use std::collections::HashSet;

use memkern_core::cube;
use memkern_core::ids::{BlobDigest, CubeId};
use memkern_core::lifecycle::LifecycleState;
use redb::{ReadableTable, WriteTransaction};

use super::tables::{ADAPTERS, AdapterRow, MEMORIES, MemoryRow, decode, encode};
use crate::vault::{CUBES, cube_key};

/// Drops every adapter covering one of `memories` inside `txn`: removes its
/// cube, returns the other covered memories to `Activated`, and records
/// why in the row. Returns the blobs to remove once `txn` committed.
pub(crate) fn drop_covering(
    txn: &WriteTransaction,
    memories: &HashSet<u128>,
    reason: &str,
) -> std::result::Result<Vec<BlobDigest>, redb::Error> {
    let mut hits = Vec::new();
    {
        let table = txn.open_table(ADAPTERS)?;
        for entry in table.iter()? {
            let (k, v) = entry?;
            let Ok(row) = decode::<AdapterRow>(v.value()) else {
                continue;
            };
            if row.cube.is_some() && row.covers.iter().any(|c| memories.contains(c)) {
                hits.push((k.value(), row));
            }
        }
    }
    let mut blobs = Vec::new();
    for (user, mut row) in hits {
        if let Some(c) = row.cube.take() {
            txn.open_table(CUBES)?.remove(cube_key(&CubeId(c)))?;
        }
        for k in row.covers.iter().filter(|k| !memories.contains(k)) {
            set_lifecycle(txn, *k, LifecycleState::Activated)?;
        }
        row.covers.retain(|k| !memories.contains(k));
        row.stale = Some(reason.to_owned());
        blobs.push(BlobDigest(row.digest));
        txn.open_table(ADAPTERS)?
            .insert(user, encode(&row).unwrap_or_default().as_slice())?;
    }
    Ok(blobs)
}

/// Rewrites memory `key`'s head cube with lifecycle `state` (a memory
/// that is gone, or whose state may not move there, is left alone).
pub(crate) fn set_lifecycle(
    txn: &WriteTransaction,
    key: u128,
    state: LifecycleState,
) -> std::result::Result<(), redb::Error> {
    let head = {
        let rows = txn.open_table(MEMORIES)?;
        let Some(v) = rows.get(key)? else {
            return Ok(());
        };
        match decode::<MemoryRow>(v.value()).ok().and_then(|r| r.head()) {
            Some(h) => h,
            None => return Ok(()),
        }
    };
    let mut cubes = txn.open_table(CUBES)?;
    let Some(bytes) = cubes.get(cube_key(&head))?.map(|v| v.value().to_vec()) else {
        return Ok(());
    };
    let Ok(mut c) = cube::decode_owned(&bytes) else {
        return Ok(());
    };
    let from = match c.meta.lifecycle {
        // Served although never marked so (see `choose`): Generated →
        // Activated is the legal first step.
        LifecycleState::Generated => LifecycleState::Activated,
        s => s,
    };
    if c.meta.lifecycle == state || !memkern_core::lifecycle::is_allowed(from, state) {
        return Ok(());
    }
    c.meta.lifecycle = state;
    if let Ok(out) = cube::encode_to_vec(&c) {
        cubes.insert(cube_key(&head), out.as_slice())?;
    }
    Ok(())
}
