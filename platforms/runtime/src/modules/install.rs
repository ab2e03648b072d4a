//! The device's side: the trust store of publisher keys, and installing,
//! updating, listing and removing modules as read-only namespaces.

use memkern_core::cube::{self, MAX_GRANTEES, Payload};
use memkern_core::governance::{DenyReason, Principal, Role};
use memkern_core::ids::{Fingerprint, NamespaceId, UserId};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{DerivedKind, Manifest, ModuleBody, decode_module};
use crate::audit::{Event, append};
use crate::pack::{Ids, PackReport};
use crate::tables::{
    MEMORIES, MODULES, ModuleRow, Mount, NAMESPACES, NamespaceRow, PUBLISHERS, decode, encode, next,
};
use crate::{ADMIN, Result, Runtime, RuntimeError, corrupt, hex, now};

/// For whom an install mounts a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every user of the device (administrator only).
    Global,
    /// These users (a user may install for themself).
    Users(Vec<UserId>),
}

/// What an install did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallAction {
    /// A module new to this device.
    Installed,
    /// A newer version replaced the installed one.
    Updated,
    /// The installed version was mounted for more users.
    Extended,
    /// Nothing to do: this file is installed for these users.
    AlreadyInstalled,
}

/// The outcome of [`Runtime::install_module`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstallReport {
    /// What happened.
    pub action: InstallAction,
    /// The module's id.
    pub id: String,
    /// Its version now installed.
    pub version: String,
    /// The version it replaced (updates).
    pub previous: Option<String>,
    /// Memories it holds.
    pub memories: u64,
    /// Memories embedded here because the module's vectors came from
    /// another embedder (or none).
    pub embedded_here: usize,
    /// Mounted for every user.
    pub global: bool,
    /// Otherwise, the users it is mounted for.
    pub users: Vec<UserId>,
    /// The model-bound derivatives it carries, by kind and model.
    pub derived: Vec<DerivedSummary>,
}

/// The derivatives of one kind for one model a module carries.
///
/// Exists so an install can say what serves the model in use and what
/// is kept for another one (used again if the device switches to it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DerivedSummary {
    /// KV blocks or adapters.
    pub kind: DerivedKind,
    /// The model's fingerprint (hex).
    pub model: String,
    /// How many.
    pub count: usize,
    /// Their blobs' bytes.
    pub bytes: u64,
    /// Whether that is the model loaded beside this runtime (None: no
    /// model is loaded here).
    pub this_model: Option<bool>,
}

/// Summarises `body`'s derivatives for a runtime whose LLM is `model`.
fn summarise(body: &ModuleBody, model: Option<Fingerprint>) -> Vec<DerivedSummary> {
    let mut groups: std::collections::BTreeMap<(DerivedKind, [u8; 16]), (usize, u64)> =
        std::collections::BTreeMap::new();
    for d in &body.derived {
        // Checked by decode_module; an undecodable one is not counted.
        let Ok(c) = cube::decode_owned(&d.cube) else {
            continue;
        };
        let Some((kind, fp, _)) = super::describe(&c) else {
            continue;
        };
        let g = groups.entry((kind, fp.0)).or_default();
        g.0 += 1;
        g.1 += d.blob.len() as u64;
    }
    groups
        .into_iter()
        .map(|((kind, fp), (count, bytes))| DerivedSummary {
            kind,
            model: hex(&fp),
            count,
            bytes,
            this_model: model.map(|m| m.0 == fp),
        })
        .collect()
}

/// An installed module, as `modules list` / `info` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModuleInfo {
    /// The signed manifest.
    pub manifest: Manifest,
    /// The read-only namespace holding its memories.
    pub cube: NamespaceId,
    /// Mounted for every user.
    pub global: bool,
    /// Otherwise, the users it is mounted for.
    pub users: Vec<UserId>,
    /// Memories it holds.
    pub memories: u64,
    /// SHA-256 of the installed file (hex).
    pub sha256: String,
    /// When it was installed (ms since the epoch).
    pub installed_ms: i64,
}

/// The outcome of [`Runtime::remove_module`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RemoveReport {
    /// The module's id.
    pub id: String,
    /// The version removed.
    pub version: String,
    /// True if it was removed from the device; false if only unmounted
    /// for the calling user (others still have it).
    pub removed: bool,
    /// Memories deleted.
    pub memories: usize,
}

fn bad(msg: String) -> RuntimeError {
    RuntimeError::Invalid(format!("module: {msg}"))
}

impl Runtime {
    fn require_admin(&self, who: &Principal, action: &str) -> Result<()> {
        if who.role == Role::Admin {
            Ok(())
        } else {
            Err(self.deny(who, action, None, DenyReason::NotOwner))
        }
    }

    /// Trusts modules signed by publisher `key` (hex), remembered under
    /// `name` (administrator only).
    pub fn trust_publisher(&self, who: &Principal, key: &str, name: &str) -> Result<String> {
        self.require_admin(who, "trust_publisher")?;
        let key = super::parse_publisher(key)?;
        let name = name.trim();
        if name.is_empty() || name.len() > super::MAX_FIELD {
            return Err(bad(format!(
                "a publisher's name is 1–{} bytes",
                super::MAX_FIELD
            )));
        }
        let _w = self.write_lock();
        self.write(true, |txn| {
            txn.open_table(PUBLISHERS)?.insert(key.as_str(), name)?;
            append(
                txn,
                &[Event::ok(who, "trust_publisher", None).with(format!("{key} ({name})"))],
            )
        })?;
        Ok(key)
    }

    /// Stops trusting publisher `key`; true if it was trusted. Installed
    /// modules stay (remove them to be rid of them).
    pub fn distrust_publisher(&self, who: &Principal, key: &str) -> Result<bool> {
        self.require_admin(who, "distrust_publisher")?;
        let key = super::parse_publisher(key)?;
        let _w = self.write_lock();
        self.write(true, |txn| {
            let was = txn.open_table(PUBLISHERS)?.remove(key.as_str())?.is_some();
            append(
                txn,
                &[Event::ok(who, "distrust_publisher", None).with(key.clone())],
            )?;
            Ok(was)
        })
    }

    /// The trusted publishers: (key, name).
    pub fn publishers(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        self.scan(PUBLISHERS, None, |k, v| {
            out.push((k.to_owned(), v.to_owned()));
            Ok(true)
        })?;
        Ok(out)
    }

    fn module_row(&self, id: &str) -> Result<Option<ModuleRow>> {
        let mut row = None;
        self.scan(MODULES, Some(id), |k, v| {
            if k == id {
                row = Some(decode(v).map_err(|e| corrupt("module", e))?);
            }
            Ok(false)
        })?;
        Ok(row)
    }

    fn module_rows(&self) -> Result<Vec<ModuleRow>> {
        let mut out = Vec::new();
        self.scan(MODULES, None, |_, v| {
            out.push(decode(v).map_err(|e| corrupt("module", e))?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Installs module file `bytes` for `scope`: verified (checksum,
    /// signature, manifest, a trusted publisher) before anything is
    /// stored, then committed in one transaction, so a crash leaves the
    /// module fully installed or not at all. A newer version replaces the
    /// installed one (which stays until the new one is committed); an
    /// older one, or another file under the same version, is refused.
    pub fn install_module(
        &self,
        who: &Principal,
        bytes: &[u8],
        scope: &Scope,
    ) -> Result<InstallReport> {
        let opened;
        let bytes = if super::seal::is_sealed(bytes) {
            opened = self.open_sealed(bytes, scope)?;
            opened.as_slice()
        } else {
            bytes
        };
        let body = decode_module(bytes)?;
        let m = &body.manifest;
        let version = m.check()?;
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        let users = match scope {
            Scope::Global => {
                self.require_admin(who, "install_module")?;
                Vec::new()
            }
            Scope::Users(users) => {
                if users.is_empty() {
                    return Err(bad(
                        "install it for at least one user, or globally".to_owned()
                    ));
                }
                if who.role != Role::Admin && users.iter().any(|u| *u != who.user) {
                    return Err(self.deny(who, "install_module", None, DenyReason::NotOwner));
                }
                for u in users {
                    self.user_by_id(*u)?;
                }
                users.clone()
            }
        };
        if !self
            .publishers()?
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(&m.publisher))
        {
            return Err(bad(format!(
                "{} {} is signed by publisher {}, which this device does not trust \
                 (`memkern modules trust {}` if you do)",
                m.id, m.version, m.publisher, m.publisher
            )));
        }
        let mut cubes = body
            .memories
            .iter()
            .map(|b| {
                let c = cube::decode_owned(b).map_err(|e| bad(format!("invalid memory: {e}")))?;
                match c.payload {
                    Payload::Plaintext(_) => Ok(c),
                    _ => Err(bad("a module's memories are plaintext cubes".to_owned())),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let embedded_here = self.embed_stale(&mut cubes)?;

        let _w = self.write_lock();
        self.sweep_module_orphans()?;
        let old = self.module_row(&m.id)?;
        let mut global = matches!(scope, Scope::Global);
        let mut readers: Vec<u64> = users.iter().map(|u| u.0).collect();
        if let Some(old) = &old {
            let old_version =
                semver::Version::parse(&old.manifest.version).map_err(|e| corrupt("module", e))?;
            let old_ns = self.namespace_row(NamespaceId(old.namespace))?;
            let old_global = old_ns.mount.as_ref().is_some_and(|m| m.global);
            if version < old_version {
                return Err(bad(format!(
                    "{} {} is older than the installed {}",
                    m.id, m.version, old.manifest.version
                )));
            }
            global |= old_global;
            for r in &old_ns.readers {
                if !readers.contains(r) {
                    readers.push(*r);
                }
            }
            readers.sort_unstable();
            if version == old_version {
                if old.sha256 != sha {
                    return Err(bad(format!(
                        "another file than the installed one claims {} {}: \
                         a publisher releases changes under a new version",
                        m.id, m.version
                    )));
                }
                let mut sorted_old = old_ns.readers.clone();
                sorted_old.sort_unstable();
                let action = if global == old_global && (global || readers == sorted_old) {
                    InstallAction::AlreadyInstalled
                } else {
                    let mut row = old_ns;
                    row.readers = if global { Vec::new() } else { readers.clone() };
                    if let Some(mount) = &mut row.mount {
                        mount.global = global;
                    }
                    check_readers(&row.readers)?;
                    let detail = format!("{} {}: mounted for more users", m.id, m.version);
                    self.write(true, |txn| {
                        txn.open_table(NAMESPACES)?
                            .insert(old.namespace, encode(&row).unwrap_or_default().as_slice())?;
                        append(txn, &[Event::ok(who, "install_module", None).with(detail)])
                    })?;
                    InstallAction::Extended
                };
                return Ok(InstallReport {
                    action,
                    id: m.id.clone(),
                    version: m.version.clone(),
                    previous: None,
                    memories: old.memories,
                    embedded_here,
                    global,
                    users: if global {
                        Vec::new()
                    } else {
                        readers.into_iter().map(UserId).collect()
                    },
                    derived: summarise(&body, self.llm_model()),
                });
            }
        }
        if global {
            readers.clear();
        }
        check_readers(&readers)?;

        // Derivatives (checked by decode_module): blobs first (durable; an
        // install cut short leaves orphans the next open removes), cubes
        // in the install's commit.
        let derived = body
            .derived
            .iter()
            .map(|d| cube::decode_owned(&d.cube).map_err(|e| bad(format!("derivative: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        {
            let vault = self.vault();
            for d in &body.derived {
                vault
                    .blobs()
                    .put(&d.blob)
                    .map_err(crate::vault::VaultError::from)?;
            }
        }

        let vault = self.vault();
        let txn = vault
            .database()
            .begin_write()
            .map_err(|e| vault.db_error(e))?;
        let ns = NamespaceId(next(&txn, "namespace", 1).map_err(|e| vault.db_error(e))?);
        let row = NamespaceRow {
            owner: ADMIN.0,
            name: format!("module:{}", m.id),
            readers: readers.clone(),
            writers: Vec::new(),
            mount: Some(Mount {
                module: m.id.clone(),
                global,
            }),
        };
        let memories = cubes
            .into_iter()
            .map(|c| vec![self.reown_cube(c, ADMIN, ns)])
            .collect();
        let mut stored = PackReport::default();
        let (heads, renamed) =
            self.store_memories(&vault, &txn, ns, memories, Ids::Copy, &mut stored)?;
        for c in derived {
            let mut c = self.reown_cube(c, ADMIN, ns);
            for p in c.meta.provenance.parents.iter_mut() {
                *p = *renamed.get(p).unwrap_or(p);
            }
            c.meta.id = crate::pack::copy_id(c.meta.id, ns);
            let bytes = cube::encode_to_vec(&c)
                .map_err(|e| bad(format!("re-encoding a derivative: {e}")))?;
            vault.put_in(&txn, &bytes)?;
        }
        let module = ModuleRow {
            manifest: m.clone(),
            namespace: ns.0,
            sha256: sha,
            installed_ms: now().0,
            memories: stored.memories as u64,
        };
        let action = if old.is_some() {
            InstallAction::Updated
        } else {
            InstallAction::Installed
        };
        let detail = format!(
            "{} {} ({} memories, publisher {}){}",
            m.id,
            m.version,
            stored.memories,
            m.publisher,
            old.as_ref().map_or(String::new(), |o| format!(
                ", replacing {}",
                o.manifest.version
            ))
        );
        (|| {
            txn.open_table(NAMESPACES)?
                .insert(ns.0, encode(&row).unwrap_or_default().as_slice())?;
            txn.open_table(MODULES)?.insert(
                m.id.as_str(),
                encode(&module).unwrap_or_default().as_slice(),
            )?;
            append(&txn, &[Event::ok(who, "install_module", None).with(detail)])
        })()
        .map_err(|e| vault.db_error(e))?;
        txn.commit().map_err(|e| vault.db_error(e))?;
        drop(vault);
        self.bump_derived_epoch();
        {
            let mut index = self.index_mut();
            for (id, head) in &heads {
                index.upsert(crate::vault::cube_key(id), head);
            }
        }
        // The old version's namespace is now an orphan: dropped after the
        // new one is committed (a crash here leaves it to the next sweep).
        if old.is_some() {
            self.sweep_module_orphans()?;
            self.vacuum()?;
        }
        Ok(InstallReport {
            action,
            id: m.id.clone(),
            version: m.version.clone(),
            previous: old.map(|o| o.manifest.version),
            memories: module.memories,
            embedded_here,
            global,
            users: readers.into_iter().map(UserId).collect(),
            derived: summarise(&body, self.llm_model()),
        })
    }

    /// Opens a sealed module with this device's key or the key of a user
    /// it is being installed for; one sealed to a user installs for that
    /// user alone (the entitlement is theirs, not the device's).
    fn open_sealed(&self, bytes: &[u8], scope: &Scope) -> Result<Vec<u8>> {
        use super::seal;
        let device = seal::device_identity(self.dir())?;
        let mut owners = vec![None];
        let mut ids = vec![device];
        if let Scope::Users(users) = scope {
            for u in users {
                let path = seal::user_key_path(self.dir(), u.0);
                if path.exists() {
                    ids.push(seal::identity_at(&path, "")?);
                    owners.push(Some(*u));
                }
            }
        }
        let refs: Vec<&age::pq::Identity> = ids.iter().collect();
        let (out, i) = seal::unseal_any(bytes, &refs)?;
        if let Some(Some(user)) = owners.get(i)
            && *scope != Scope::Users(vec![*user])
        {
            let name = self
                .user_by_id(*user)
                .map_or_else(|_| user.to_string(), |u| u.name);
            return Err(bad(format!(
                "it is sealed to {name}'s key: install it for {name} alone (--for {name})"
            )));
        }
        Ok(out)
    }

    /// `user`'s sealing key (`age1pq1…`), made on first use: what a
    /// publisher seals a module to so it installs for that user on any
    /// device holding the key.
    pub fn user_key(&self, who: &Principal, user: UserId) -> Result<String> {
        self.check_self_or_admin(who, user)?;
        self.user_by_id(user)?;
        let path = super::seal::user_key_path(self.dir(), user.0);
        let id = super::seal::identity_at(
            &path,
            "memkern user identity: modules sealed to its recipient install for this user",
        )?;
        Ok(id.to_public().to_string())
    }

    /// `user`'s identity file (secret), to carry to their other devices.
    pub fn export_user_key(&self, who: &Principal, user: UserId) -> Result<String> {
        self.user_key(who, user)?;
        let path = super::seal::user_key_path(self.dir(), user.0);
        std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))
    }

    /// Makes identity file `text` (exported on another device) `user`'s
    /// key here; returns its recipient. A user with another key already
    /// keeps it (modules sealed to it would no longer open).
    pub fn import_user_key(&self, who: &Principal, user: UserId, text: &str) -> Result<String> {
        self.check_self_or_admin(who, user)?;
        self.user_by_id(user)?;
        let id = super::seal::parse_identity(text, "the identity file")?;
        let recipient = id.to_public().to_string();
        let path = super::seal::user_key_path(self.dir(), user.0);
        if path.exists() {
            let have = super::seal::identity_at(&path, "")?.to_public().to_string();
            if have == recipient {
                return Ok(recipient);
            }
            return Err(bad(format!(
                "user {user} already has another key ({have}); modules sealed to it would no \
                 longer install"
            )));
        }
        super::seal::write_identity(
            &path,
            &id,
            "memkern user identity: modules sealed to its recipient install for this user",
        )?;
        Ok(recipient)
    }

    /// Embeds the cubes whose vectors came from another embedder than this
    /// runtime's (or have none); returns how many. Without an embedder,
    /// strips foreign vectors (the index keeps text and time).
    fn embed_stale(&self, cubes: &mut [cube::OwnedCube]) -> Result<usize> {
        let mine = self
            .embedder()
            .map(|e| (e, e.fingerprint().unwrap_or(Fingerprint([0; 16]))));
        let stale: Vec<usize> = cubes
            .iter()
            .enumerate()
            .filter(|(_, c)| match &c.payload {
                Payload::Plaintext(p) => match (&p.embedding, &mine) {
                    (Some(e), Some((_, fp))) => e.embedder != *fp,
                    (None, Some(_)) => true,
                    (Some(_), None) => true,
                    (None, None) => false,
                },
                _ => false,
            })
            .map(|(i, _)| i)
            .collect();
        let Some((embedder, fp)) = mine else {
            for &i in &stale {
                if let Payload::Plaintext(p) = &mut cubes[i].payload {
                    p.embedding = None;
                }
            }
            return Ok(0);
        };
        for batch in stale.chunks(16) {
            let texts: Vec<&str> = batch
                .iter()
                .map(|&i| match &cubes[i].payload {
                    Payload::Plaintext(p) => p.text.as_str(),
                    _ => "",
                })
                .collect();
            let vectors = embedder
                .embed(&texts)
                .map_err(|e| RuntimeError::Embed(e.to_string()))?;
            for (&i, v) in batch.iter().zip(vectors) {
                if let Payload::Plaintext(p) = &mut cubes[i].payload {
                    p.embedding = crate::index::quantize(&v).map(|(q, scale)| cube::Embedding {
                        embedder: fp,
                        scale,
                        values: cube::Int8Vec(q.into_iter().map(|x| x as u8).collect()),
                    });
                }
            }
        }
        Ok(stale.len())
    }

    /// The modules `who` can see: all for an administrator, else the ones
    /// mounted globally or for them.
    pub fn modules(&self, who: &Principal) -> Result<Vec<ModuleInfo>> {
        let mut out = Vec::new();
        for row in self.module_rows()? {
            let Ok(ns) = self.namespace_row(NamespaceId(row.namespace)) else {
                continue; // an install being swept
            };
            let global = ns.mount.as_ref().is_some_and(|m| m.global);
            if who.role == Role::Admin || global || ns.readers.contains(&who.user.0) {
                out.push(ModuleInfo {
                    manifest: row.manifest,
                    cube: NamespaceId(row.namespace),
                    global,
                    users: ns.readers.iter().map(|u| UserId(*u)).collect(),
                    memories: row.memories,
                    sha256: hex(&row.sha256),
                    installed_ms: row.installed_ms,
                });
            }
        }
        Ok(out)
    }

    /// Module `id`, if `who` can see it.
    pub fn module(&self, who: &Principal, id: &str) -> Result<ModuleInfo> {
        self.modules(who)?
            .into_iter()
            .find(|m| m.manifest.id == id)
            .ok_or_else(|| RuntimeError::NotFound {
                what: "module",
                id: id.to_owned(),
            })
    }

    /// Removes module `id`: an administrator removes it from the device
    /// (every memory, its namespace, no residue in the file); a user it
    /// is mounted for unmounts it for themself, which removes it once
    /// nobody is left.
    pub fn remove_module(&self, who: &Principal, id: &str) -> Result<RemoveReport> {
        let info = self.module(who, id)?;
        let _w = self.write_lock();
        let row = self.module_row(id)?.ok_or_else(|| RuntimeError::NotFound {
            what: "module",
            id: id.to_owned(),
        })?;
        let mut ns = self.namespace_row(NamespaceId(row.namespace))?;
        if who.role != Role::Admin {
            if info.global || !ns.readers.contains(&who.user.0) {
                return Err(self.deny(who, "remove_module", None, DenyReason::NotOwner));
            }
            ns.readers.retain(|u| *u != who.user.0);
            if !ns.readers.is_empty() {
                let detail = format!("{id}: unmounted for user {}", who.user);
                self.write(true, |txn| {
                    txn.open_table(NAMESPACES)?
                        .insert(row.namespace, encode(&ns).unwrap_or_default().as_slice())?;
                    append(txn, &[Event::ok(who, "remove_module", None).with(detail)])
                })?;
                return Ok(RemoveReport {
                    id: id.to_owned(),
                    version: row.manifest.version,
                    removed: false,
                    memories: 0,
                });
            }
        }
        let detail = format!("{id} {}", row.manifest.version);
        self.write(true, |txn| {
            txn.open_table(MODULES)?.remove(id)?;
            append(txn, &[Event::ok(who, "remove_module", None).with(detail)])
        })?;
        // The namespace is an orphan now; a crash before the sweep below
        // leaves it to the next one (it is unreadable meanwhile: no module
        // row mounts it).
        let memories = self.sweep_module_orphans()?;
        self.vacuum()?;
        self.bump_derived_epoch();
        Ok(RemoveReport {
            id: id.to_owned(),
            version: row.manifest.version,
            removed: true,
            memories,
        })
    }

    /// Deletes module namespaces no installed module points at (left by
    /// an update or removal that stopped half-way), with their memories.
    /// Returns the memories deleted. The caller holds the write lock.
    pub(crate) fn sweep_module_orphans(&self) -> Result<usize> {
        let live: Vec<u64> = self.module_rows()?.iter().map(|m| m.namespace).collect();
        let orphans: Vec<u64> = self
            .namespace_rows()?
            .into_iter()
            .filter(|(id, r)| r.mount.is_some() && !live.contains(id))
            .map(|(id, _)| id)
            .collect();
        if orphans.is_empty() {
            return Ok(0);
        }
        let mut doomed = Vec::new();
        for id in self.memory_ids()? {
            if let Some(m) = self.load(id)?
                && orphans.contains(&m.row.namespace)
            {
                doomed.push(m);
            }
        }
        let admin = self.admin();
        let n = doomed.len();
        if n > 0 {
            let event = Event::ok(&admin, "remove_module", None)
                .with(format!("{n} memories of a replaced or removed module"));
            self.delete_loaded(&doomed, &[event])?;
        }
        self.write(true, |txn| {
            let mut t = txn.open_table(NAMESPACES)?;
            for id in &orphans {
                t.remove(*id)?;
            }
            Ok(())
        })?;
        Ok(n)
    }

    /// Whether memory table rows still point into namespace `ns` (tests).
    #[doc(hidden)]
    pub fn namespace_is_empty(&self, ns: NamespaceId) -> Result<bool> {
        let mut empty = true;
        self.scan(MEMORIES, None, |_, v| {
            let row: crate::tables::MemoryRow = decode(v).map_err(|e| corrupt("memory", e))?;
            if row.namespace == ns.0 {
                empty = false;
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(empty)
    }
}

fn check_readers(readers: &[u64]) -> Result<()> {
    if readers.len() > MAX_GRANTEES {
        return Err(bad(format!(
            "a module is mounted for at most {MAX_GRANTEES} users one by one: install it --global"
        )));
    }
    Ok(())
}
