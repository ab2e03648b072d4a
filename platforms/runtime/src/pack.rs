//! MemCube packs: a namespace's memories (every version) and the KV
//! snapshot blobs derived from them, in one checksummed file, signed
//! with ed25519 when a key is configured — memory migration between
//! devices.
//!
//! Exists so a user can move their memory from a Pi to a Jetson (or back
//! it up) without trusting the transport: the import verifies the
//! checksum, the signature and every cube before anything is stored.
//!
//! File layout: `MKPACK01` magic, then the postcard-encoded [`PackBody`]
//! (length-prefixed), its SHA-256, and a trailer: `0` (unsigned) or `1` +
//! the 32-byte ed25519 public key + the 64-byte signature of the SHA-256.

use std::collections::{HashMap, HashSet};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use memkern_core::cube::{self, Payload};
use memkern_core::governance::{self, Operation, Principal};
use memkern_core::ids::{CubeId, NamespaceId};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::audit::{Event, append};
use super::tables::{MEMORIES, MemoryRow, TEXT_HASHES, decode, encode, next};
use super::{Result, Runtime, RuntimeError, corrupt, hex, now};
use crate::vault::cube_key;

const MAGIC: &[u8; 8] = b"MKPACK01";
/// Largest pack accepted on import (1 GiB).
pub const MAX_PACK_BYTES: usize = 1 << 30;

/// One memory in a pack: its versions' encoded cubes, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackedMemory {
    /// Encoded cubes of every version.
    pub versions: Vec<Vec<u8>>,
}

/// The signed content of a pack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackBody {
    /// The source namespace's name.
    pub namespace: String,
    /// When the pack was made (ms since the epoch).
    pub created_ms: i64,
    /// The memories.
    pub memories: Vec<PackedMemory>,
    /// Snapshot cubes derived from them.
    pub derived: Vec<Vec<u8>>,
    /// The blobs those reference.
    pub blobs: Vec<Vec<u8>>,
}

/// What an export or import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PackReport {
    /// Memories packed or imported.
    pub memories: usize,
    /// Memories skipped: secret (export), or already present (import).
    pub skipped: usize,
    /// Derived snapshot/adapter cubes.
    pub derived: usize,
    /// Blob bytes.
    pub blob_bytes: u64,
    /// The signer's public key (hex), if signed.
    pub signed_by: Option<String>,
}

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid(format!("pack: {}", msg.into()))
}

/// Creates a signing key file (hex of a random 32-byte seed, mode 0600) and
/// returns the public key (hex) to list in `trusted_keys` elsewhere.
pub fn generate_key(path: &std::path::Path) -> Result<String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| bad(format!("no randomness: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    write_private(path, hex(&seed).as_bytes())
        .map_err(|e| bad(format!("cannot write {}: {e}", path.display())))?;
    Ok(hex(key.verifying_key().as_bytes()))
}

/// Writes a secret (a key file) to new file `path`: owner-only (mode
/// 0600) from its creation, synced; an existing file is never replaced.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes).and_then(|()| f.sync_all())
}

pub(crate) fn parse_hex<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let s = s.trim();
    let mut out = [0u8; N];
    if s.len() != 2 * N || !s.is_ascii() {
        return Err(bad(format!("{what} must be {} hex digits", 2 * N)));
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| bad(format!("{what} is not hex")))?;
    }
    Ok(out)
}

/// Reads a signing key file written by [`generate_key`].
pub fn load_key(path: &std::path::Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read key {}: {e}", path.display())))?;
    Ok(SigningKey::from_bytes(&parse_hex::<32>(
        &text,
        "the signing key",
    )?))
}

/// Frames `body` as a signed container: `magic`, the body's length (u64
/// LE), the body, its SHA-256, and the trailer (`0`, or `1` + public key +
/// signature of the SHA-256). Packs and modules share it.
pub(crate) fn seal(magic: &[u8; 8], body: &[u8], key: Option<&SigningKey>) -> Vec<u8> {
    let digest: [u8; 32] = Sha256::digest(body).into();
    let mut out = Vec::with_capacity(body.len() + 128);
    out.extend_from_slice(magic);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&digest);
    match key {
        Some(k) => {
            out.push(1);
            out.extend_from_slice(k.verifying_key().as_bytes());
            out.extend_from_slice(&k.sign(&digest).to_bytes());
        }
        None => out.push(0),
    }
    out
}

/// Checks a [`seal`]ed container (structure, checksum, signature) and
/// returns its body and the signer's public key (hex), if signed. Errors
/// name `what` ("pack", "module").
pub(crate) fn unseal<'a>(
    magic: &[u8; 8],
    bytes: &'a [u8],
    what: &str,
) -> Result<(&'a [u8], Option<String>)> {
    let bad = |msg: &str| RuntimeError::Invalid(format!("{what}: {msg}"));
    if bytes.len() > MAX_PACK_BYTES {
        return Err(bad(&format!("larger than {MAX_PACK_BYTES} bytes")));
    }
    let rest = bytes
        .strip_prefix(magic.as_slice())
        .ok_or_else(|| bad(&format!("not a memkern {what} (bad magic)")))?;
    let (len, rest) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| bad("truncated header"))?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| bad("length out of range"))?;
    if rest.len() < len {
        return Err(bad("truncated body"));
    }
    let (body, rest) = rest.split_at(len);
    let (digest, rest) = rest
        .split_first_chunk::<32>()
        .ok_or_else(|| bad("truncated checksum"))?;
    let actual: [u8; 32] = Sha256::digest(body).into();
    if &actual != digest {
        return Err(bad("checksum mismatch: the file is damaged"));
    }
    let signer = match rest {
        [0] => None,
        [1, sig @ ..] if sig.len() == 96 => {
            let (pk, sig) = sig.split_at(32);
            let pk: [u8; 32] = pk.try_into().map_err(|_| bad("bad public key"))?;
            let sig: [u8; 64] = sig.try_into().map_err(|_| bad("bad signature"))?;
            let vk = VerifyingKey::from_bytes(&pk).map_err(|_| bad("invalid public key"))?;
            vk.verify(digest, &Signature::from_bytes(&sig))
                .map_err(|_| bad("signature does not verify"))?;
            Some(hex(&pk))
        }
        _ => return Err(bad("malformed trailer")),
    };
    Ok((body, signer))
}

/// Encodes a pack file.
pub fn encode_pack(body: &PackBody, key: Option<&SigningKey>) -> Result<Vec<u8>> {
    let b = encode(body).map_err(|e| bad(format!("encoding: {e}")))?;
    Ok(seal(MAGIC, &b, key))
}

/// Decodes and verifies a pack file: structure, checksum, signature, and
/// (when `trusted` is not empty) that the signer is one of `trusted`.
pub fn decode_pack(bytes: &[u8], trusted: &[String]) -> Result<(PackBody, Option<String>)> {
    let (body, signer) = unseal(MAGIC, bytes, "pack")?;
    if !trusted.is_empty()
        && !signer
            .as_ref()
            .is_some_and(|s| trusted.iter().any(|t| t.eq_ignore_ascii_case(s)))
    {
        return Err(bad("not signed by a trusted key"));
    }
    let body: PackBody = decode(body).map_err(|e| bad(format!("body: {e}")))?;
    Ok((body, signer))
}

/// The id a copy of cube `id` gets in namespace `ns` when `id` is taken
/// by another cube of the vault: the same for every import into `ns`, so
/// a second import finds the copy.
pub(crate) fn copy_id(id: CubeId, ns: NamespaceId) -> CubeId {
    let mut h = Sha256::new();
    h.update(b"memkern pack copy\0");
    h.update(id.0);
    h.update(ns.0.to_be_bytes());
    let d: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    CubeId(out)
}

/// The namespace of memory `id` as `txn` sees it, if the memory exists.
fn memory_namespace(
    vault: &crate::vault::Vault,
    txn: &redb::WriteTransaction,
    id: &CubeId,
) -> Result<Option<u64>> {
    let row = txn
        .open_table(MEMORIES)
        .and_then(|t| Ok(t.get(cube_key(id))?.map(|v| v.value().to_vec())))
        .map_err(|e| vault.db_error(e))?;
    row.map(|r| {
        decode::<MemoryRow>(&r)
            .map(|r| r.namespace)
            .map_err(|e| corrupt("memory", e))
    })
    .transpose()
}

impl Runtime {
    /// Packs namespace `ns` (every memory `who` may export, all versions,
    /// and the snapshots derived from them). Secret memories are skipped.
    pub fn export(
        &self,
        who: &Principal,
        ns: NamespaceId,
        key: Option<&SigningKey>,
    ) -> Result<(Vec<u8>, PackReport)> {
        let row = self.authorise_namespace(who, ns, Operation::Export, "export")?;
        let now = now();
        let mut report = PackReport::default();
        let mut memories = Vec::new();
        let mut versions = HashSet::new();
        for id in self.memory_ids()? {
            let Some(m) = self.load(id)? else { continue };
            if m.row.namespace != ns.0 {
                continue;
            }
            if !governance::check(who, &m.policy(), Operation::Export, now).is_allowed() {
                report.skipped += 1;
                continue;
            }
            let vault = self.vault();
            let mut packed = PackedMemory {
                versions: Vec::new(),
            };
            for v in &m.row.versions {
                let bytes = vault
                    .get(&CubeId(*v))?
                    .ok_or_else(|| corrupt("memory", "missing version"))?;
                packed.versions.push(bytes);
                versions.insert(CubeId(*v));
            }
            memories.push(packed);
        }
        let vault = self.vault();
        let mut derived = Vec::new();
        let mut blobs = Vec::new();
        for (_, bytes) in vault.cubes()? {
            let Ok(c) = cube::decode_owned(&bytes) else {
                continue;
            };
            let blob = match &c.payload {
                Payload::Activation(a) => a.blob.digest,
                // Adapters are a user's, trained from all their memories
                // (not one namespace's) and tied to one base model: the
                // importer distils their own (`memkern distill`).
                Payload::Parametric(_) | Payload::Plaintext(_) => continue,
            };
            if c.meta
                .provenance
                .parents
                .iter()
                .all(|p| versions.contains(p))
                && !c.meta.provenance.parents.is_empty()
            {
                let data = vault
                    .blobs()
                    .get(&blob)
                    .map_err(crate::vault::VaultError::from)?;
                report.blob_bytes += data.len() as u64;
                blobs.push(data);
                derived.push(bytes);
            }
        }
        drop(vault);
        report.memories = memories.len();
        report.derived = derived.len();
        report.signed_by = key.map(|k| hex(k.verifying_key().as_bytes()));
        let body = PackBody {
            namespace: row.name.clone(),
            created_ms: now.0,
            memories,
            derived,
            blobs,
        };
        let bytes = encode_pack(&body, key)?;
        self.log(&[
            Event::ok(who, "export", None).with(format!("cube {ns}: {} memories", report.memories))
        ])?;
        Ok((bytes, report))
    }

    /// Imports a pack into namespace `ns` (which `who` must be able to
    /// write): every cube is validated, re-owned by the namespace's owner
    /// and committed in one transaction; memories already in `ns` are
    /// skipped. A memory another namespace of this vault holds (the pack
    /// was exported here) is stored as a copy with ids of its own, and so
    /// are the KV blocks derived from it; another namespace's cubes are
    /// never overwritten. `trusted` lists accepted signer keys (empty:
    /// any, or unsigned).
    pub fn import(
        &self,
        who: &Principal,
        ns: NamespaceId,
        pack: &[u8],
        trusted: &[String],
    ) -> Result<PackReport> {
        let (body, signer) = decode_pack(pack, trusted)?;
        let target = self.namespace_for_write(who, ns)?;
        let _w = self.write_lock();
        let mut report = PackReport {
            signed_by: signer,
            ..PackReport::default()
        };
        // Blobs first (durable), so derived cubes never dangle.
        {
            let vault = self.vault();
            for b in &body.blobs {
                vault
                    .blobs()
                    .put(b)
                    .map_err(crate::vault::VaultError::from)?;
                report.blob_bytes += b.len() as u64;
            }
        }
        let vault = self.vault();
        let txn = vault
            .database()
            .begin_write()
            .map_err(|e| vault.db_error(e))?;
        let owner = memkern_core::ids::UserId(target.owner);
        let memories = body
            .memories
            .iter()
            .map(|m| {
                m.versions
                    .iter()
                    .map(|b| self.reowned(b, owner, ns))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let (heads, renamed) =
            self.store_memories(&vault, &txn, ns, memories, Ids::CopyIfTaken, &mut report)?;
        for d in &body.derived {
            let mut c = self.reowned(d, owner, ns)?;
            if matches!(c.payload, Payload::Parametric(_)) {
                // Packs from before adapters were left out may hold one:
                // never applied here (see export), so not stored.
                continue;
            }
            let parents = &mut c.meta.provenance.parents;
            if parents.iter().any(|p| renamed.contains_key(p)) {
                for p in parents.iter_mut() {
                    *p = *renamed.get(p).unwrap_or(p);
                }
                c.meta.id = copy_id(c.meta.id, ns);
            }
            if vault.contains_in(&txn, &c.meta.id)? {
                // Already here (a re-import), or another cube's: never
                // overwritten.
                continue;
            }
            let bytes = cube::encode_to_vec(&c).map_err(|e| bad(format!("re-encoding: {e}")))?;
            vault.put_in(&txn, &bytes)?;
            report.derived += 1;
        }
        let detail = format!(
            "cube {ns}: {} memories, signed {}",
            report.memories,
            report.signed_by.is_some()
        );
        append(&txn, &[Event::ok(who, "import", None).with(detail)])
            .map_err(|e| vault.db_error(e))?;
        txn.commit().map_err(|e| vault.db_error(e))?;
        drop(vault);
        if report.derived > 0 {
            self.bump_derived_epoch();
        }
        let mut index = self.index_mut();
        for (id, head) in &heads {
            index.upsert(cube_key(id), head);
        }
        Ok(report)
    }

    /// Decodes a cube from a pack or module for namespace `ns` of `owner`,
    /// passing its text through the same redaction as an add.
    pub(crate) fn reowned(
        &self,
        bytes: &[u8],
        owner: memkern_core::ids::UserId,
        ns: NamespaceId,
    ) -> Result<cube::OwnedCube> {
        let c = cube::decode_owned(bytes).map_err(|e| bad(format!("invalid cube: {e}")))?;
        Ok(self.reown_cube(c, owner, ns))
    }

    /// `c` moved into namespace `ns` of `owner`, its text redacted.
    pub(crate) fn reown_cube(
        &self,
        mut c: cube::OwnedCube,
        owner: memkern_core::ids::UserId,
        ns: NamespaceId,
    ) -> cube::OwnedCube {
        c.meta.owner = owner;
        c.meta.namespace = ns;
        if let Payload::Plaintext(p) = &mut c.payload {
            let r = self.redactor.redact(&p.text);
            if !r.found.is_empty() {
                p.text = r.text.into_owned();
            }
        }
        c
    }

    /// Stores `memories` (each its versions, oldest first, already
    /// re-owned) in namespace `ns` within `txn`; counts stored and skipped
    /// ones in `report`. Returns the memory ids and heads to index, and
    /// the cube ids given new identities (old → new).
    pub(crate) fn store_memories(
        &self,
        vault: &crate::vault::Vault,
        txn: &redb::WriteTransaction,
        ns: NamespaceId,
        memories: Vec<Vec<cube::OwnedCube>>,
        ids: Ids,
        report: &mut PackReport,
    ) -> Result<StoredMemories> {
        let mut heads = Vec::new();
        let mut renamed: HashMap<CubeId, CubeId> = HashMap::new();
        for mut cubes in memories {
            let Some(first) = cubes.first() else { continue };
            let mut id = first.meta.id;
            let copy = match ids {
                Ids::Copy => true,
                Ids::CopyIfTaken => match memory_namespace(vault, txn, &id)? {
                    Some(n) if n == ns.0 => {
                        report.skipped += 1;
                        continue;
                    }
                    None => false,
                    Some(_) => true,
                },
            };
            if copy {
                // A memory whose id another cube of this vault holds (the
                // pack was exported here, or imported into another cube
                // before) gets ids derived from the originals and the
                // target cube: a copy of its own, found on a re-import.
                id = copy_id(id, ns);
                match memory_namespace(vault, txn, &id)? {
                    Some(n) if n == ns.0 => {
                        report.skipped += 1;
                        continue;
                    }
                    None => {}
                    Some(_) => {
                        return Err(bad(format!("memory {id} is in another cube of this vault")));
                    }
                }
                for c in &mut cubes {
                    let new = copy_id(c.meta.id, ns);
                    renamed.insert(c.meta.id, new);
                    c.meta.id = new;
                }
                for c in &mut cubes {
                    c.meta.previous = c.meta.previous.map(|p| *renamed.get(&p).unwrap_or(&p));
                }
            }
            let mut versions = Vec::new();
            for c in &cubes {
                let bytes = cube::encode_to_vec(c).map_err(|e| bad(format!("re-encoding: {e}")))?;
                vault.put_in(txn, &bytes)?;
                versions.push(c.meta.id.0);
            }
            let Some(head) = cubes.pop() else { continue };
            let text = match &head.payload {
                Payload::Plaintext(p) => p.text.as_str(),
                _ => "",
            };
            let row = MemoryRow {
                seq: next(txn, "memory", 1).map_err(|e| vault.db_error(e))?,
                namespace: ns.0,
                versions,
                text_key: super::memories::text_key(ns, text),
            };
            (|| {
                txn.open_table(MEMORIES)?
                    .insert(cube_key(&id), encode(&row).unwrap_or_default().as_slice())?;
                let mut hashes = txn.open_table(TEXT_HASHES)?;
                if hashes.get(row.text_key.as_slice())?.is_none() {
                    hashes.insert(row.text_key.as_slice(), cube_key(&id))?;
                }
                Ok::<_, redb::Error>(())
            })()
            .map_err(|e| vault.db_error(e))?;
            heads.push((id, head));
            report.memories += 1;
        }
        Ok((heads, renamed))
    }
}

/// What [`Runtime::store_memories`] returns: the (memory id, head) pairs
/// to index and the renamed cube ids.
pub(crate) type StoredMemories = (Vec<(CubeId, cube::OwnedCube)>, HashMap<CubeId, CubeId>);

/// Which ids stored memories get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ids {
    /// Their own, unless another namespace holds them (then a copy's).
    CopyIfTaken,
    /// Always a copy's, derived from the target namespace (modules: one
    /// file installed in several namespaces over its versions).
    Copy,
}
