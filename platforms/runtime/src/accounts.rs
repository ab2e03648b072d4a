//! Users, their API keys, cube namespaces and sharing.
//!
//! Exists because every memory belongs to a namespace ("cube") owned by
//! one user; sharing a namespace read-only or read-write is how one user
//! lets another see or add memories. The rule that decides is the core's
//! [`governance::check`], applied to the namespace's access policy.

use memkern_core::cube::{AccessPolicy, Metadata, SourceKind, Visibility};
use memkern_core::governance::{self, Operation, Principal, Role};
use memkern_core::ids::{CubeId, NamespaceId, UserId};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::audit::{Event, append};
use super::input::shown;
use super::tables::{
    NAMESPACES, NamespaceRow, USER_KEYS, USER_NAMES, USERS, UserRow, decode, encode, next,
};
use super::{ADMIN, Result, Runtime, RuntimeError, corrupt, now};

/// Longest user or namespace name, bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A user's secret API key, shown once at creation (only its SHA-256 is
/// stored).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(…)")
    }
}

/// A user, as listings show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// The id.
    pub id: UserId,
    /// The unique name.
    pub name: String,
    /// Whether the user is an administrator.
    pub admin: bool,
}

/// How another user may use a shared namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareAccess {
    /// See memories and search hits.
    Read,
    /// Also add and update memories.
    ReadWrite,
    /// Revoke a previous share.
    None,
}

/// A cube namespace, as listings show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NamespaceInfo {
    /// The id.
    pub id: NamespaceId,
    /// The owning user.
    pub owner: UserId,
    /// The name (unique per owner).
    pub name: String,
    /// Users with read access.
    pub readers: Vec<UserId>,
    /// Users with read-write access.
    pub writers: Vec<UserId>,
}

fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "{kind} name {}: use 1–{MAX_NAME_LEN} of A–Z a–z 0–9 - _ .",
            shown(name)
        )))
    }
}

fn new_key() -> Result<ApiKey> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b)
        .map_err(|e| RuntimeError::Invalid(format!("no randomness available: {e}")))?;
    Ok(ApiKey(format!("mk_{}", super::hex(&b))))
}

impl NamespaceRow {
    /// The metadata a governance check of this namespace sees: owner and
    /// access policy (sharing is per namespace).
    pub(crate) fn policy_meta(&self, id: u64) -> Metadata<String> {
        let mut meta = Metadata::new(
            CubeId([0; 16]),
            UserId(self.owner),
            NamespaceId(id),
            now(),
            now(),
            SourceKind::Document,
        );
        meta.access = self.access();
        if self.mount.is_some() {
            meta.lifecycle = memkern_core::lifecycle::LifecycleState::Frozen;
        }
        meta
    }

    /// The namespace's sharing as a core access policy.
    pub(crate) fn access(&self) -> AccessPolicy {
        let mut access = AccessPolicy::default();
        if self.mount.as_ref().is_some_and(|m| m.global) {
            access.visibility = Visibility::Public;
            return access;
        }
        if !self.readers.is_empty() || !self.writers.is_empty() {
            access.visibility = Visibility::Shared;
        }
        // The lists are capped at MAX_GRANTEES by `share`.
        for r in &self.readers {
            let _ = access.readers.push(UserId(*r));
        }
        for w in &self.writers {
            let _ = access.writers.push(UserId(*w));
        }
        access
    }

    fn info(&self, id: u64) -> NamespaceInfo {
        NamespaceInfo {
            id: NamespaceId(id),
            owner: UserId(self.owner),
            name: self.name.clone(),
            readers: self.readers.iter().map(|u| UserId(*u)).collect(),
            writers: self.writers.iter().map(|u| UserId(*u)).collect(),
        }
    }
}

impl Runtime {
    /// Creates the local administrator on first open.
    pub(crate) fn ensure_admin(&self) -> Result<()> {
        let key = new_key()?;
        self.write(true, |txn| {
            if txn.open_table(USERS)?.get(ADMIN.0)?.is_none() {
                insert_user(txn, ADMIN.0, "admin", &key, true)?;
            }
            Ok(())
        })
    }

    /// Creates user `name` (administrator only) with a namespace called
    /// `default`; returns the user and their API key (shown only now).
    pub fn create_user(&self, who: &Principal, name: &str) -> Result<(UserInfo, ApiKey)> {
        if who.role != Role::Admin {
            return Err(self.deny(who, "create_user", None, governance::DenyReason::NotOwner));
        }
        check_name("user", name)?;
        let _w = self.write_lock();
        let key = new_key()?;
        let id = self.write(true, |txn| {
            if txn.open_table(USER_NAMES)?.get(name)?.is_some() {
                return Ok(None);
            }
            let id = next(txn, "user", ADMIN.0 + 1)?;
            insert_user(txn, id, name, &key, false)?;
            let ns = next(txn, "namespace", 1)?;
            let row = NamespaceRow {
                owner: id,
                name: "default".to_owned(),
                readers: Vec::new(),
                writers: Vec::new(),
                mount: None,
            };
            txn.open_table(NAMESPACES)?
                .insert(ns, encode(&row).unwrap_or_default().as_slice())?;
            let event = Event::ok(who, "create_user", None).with(format!("user {id}"));
            append(txn, &[event])?;
            Ok(Some(id))
        })?;
        let id = id.ok_or_else(|| RuntimeError::Exists(format!("user {}", shown(name))))?;
        Ok((
            UserInfo {
                id: UserId(id),
                name: name.to_owned(),
                admin: false,
            },
            key,
        ))
    }

    /// Replaces user `name`'s API key (administrator only); the old key
    /// stops working at once.
    pub fn rotate_key(&self, who: &Principal, name: &str) -> Result<ApiKey> {
        if who.role != Role::Admin {
            return Err(self.deny(who, "rotate_key", None, governance::DenyReason::NotOwner));
        }
        let user = self.user(name)?;
        let _w = self.write_lock();
        let key = new_key()?;
        self.write(true, |txn| {
            let old = txn
                .open_table(USERS)?
                .get(user.id.0)?
                .map(|v| v.value().to_vec());
            if let Some(old) = old.and_then(|b| decode::<UserRow>(&b).ok()) {
                txn.open_table(USER_KEYS)?.remove(old.key_hash.as_slice())?;
            }
            insert_user(txn, user.id.0, name, &key, user.admin)?;
            let event = Event::ok(who, "rotate_key", None).with(format!("user {}", user.id));
            append(txn, &[event])
        })?;
        Ok(key)
    }

    /// The principal an API key belongs to.
    pub fn authenticate(&self, key: &str) -> Result<Principal> {
        let vault = self.vault();
        let txn = vault
            .database()
            .begin_read()
            .map_err(|e| vault.db_error(e))?;
        let id = match txn.open_table(USER_KEYS) {
            Ok(t) => t
                .get(key_hash(key).as_slice())
                .map_err(|e| vault.db_error(e))?
                .map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(vault.db_error(e).into()),
        };
        let id = id.ok_or(RuntimeError::BadKey)?;
        let user = self.user_by_id(UserId(id))?;
        Ok(if user.admin {
            Principal::admin(user.id)
        } else {
            Principal::user(user.id)
        })
    }

    /// User `name`.
    pub fn user(&self, name: &str) -> Result<UserInfo> {
        let vault = self.vault();
        let txn = vault
            .database()
            .begin_read()
            .map_err(|e| vault.db_error(e))?;
        let id = match txn.open_table(USER_NAMES) {
            Ok(t) => t
                .get(name)
                .map_err(|e| vault.db_error(e))?
                .map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(vault.db_error(e).into()),
        };
        drop(txn);
        drop(vault);
        let id = id.ok_or_else(|| RuntimeError::NotFound {
            what: "user",
            id: shown(name),
        })?;
        self.user_by_id(UserId(id))
    }

    /// User `id`.
    pub fn user_by_id(&self, id: UserId) -> Result<UserInfo> {
        self.users_where(|u| u == id.0)?
            .pop()
            .ok_or_else(|| RuntimeError::NotFound {
                what: "user",
                id: id.to_string(),
            })
    }

    /// Every user (administrator: all; a user: themself).
    pub fn users(&self, who: &Principal) -> Result<Vec<UserInfo>> {
        let admin = who.role == Role::Admin;
        self.users_where(|u| admin || u == who.user.0)
    }

    fn users_where(&self, keep: impl Fn(u64) -> bool) -> Result<Vec<UserInfo>> {
        let mut out = Vec::new();
        self.scan(USERS, None, |id, bytes| {
            if keep(id) {
                let row: UserRow = decode(bytes).map_err(|e| corrupt("user", e))?;
                out.push(UserInfo {
                    id: UserId(id),
                    name: row.name,
                    admin: row.admin,
                });
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Creates namespace `name` owned by `owner` (the owner themself or an
    /// administrator).
    pub fn create_namespace(
        &self,
        who: &Principal,
        owner: UserId,
        name: &str,
    ) -> Result<NamespaceInfo> {
        if who.role != Role::Admin && who.user != owner {
            return Err(self.deny(who, "create_cube", None, governance::DenyReason::NotOwner));
        }
        check_name("cube", name)?;
        self.user_by_id(owner)?;
        let _w = self.write_lock();
        if self.namespace_named(owner, name).is_ok() {
            return Err(RuntimeError::Exists(format!(
                "cube {name:?} of user {owner}"
            )));
        }
        let row = NamespaceRow {
            owner: owner.0,
            name: name.to_owned(),
            readers: Vec::new(),
            writers: Vec::new(),
            mount: None,
        };
        let id = self.write(true, |txn| {
            let id = next(txn, "namespace", 1)?;
            txn.open_table(NAMESPACES)?
                .insert(id, encode(&row).unwrap_or_default().as_slice())?;
            append(
                txn,
                &[Event::ok(who, "create_cube", None).with(format!("cube {id}"))],
            )?;
            Ok(id)
        })?;
        Ok(row.info(id))
    }

    /// Every namespace row, by id.
    pub(crate) fn namespace_rows(&self) -> Result<Vec<(u64, NamespaceRow)>> {
        let mut out = Vec::new();
        self.scan(NAMESPACES, None, |id, bytes| {
            out.push((
                id,
                NamespaceRow::decode(bytes).map_err(|e| corrupt("cube", e))?,
            ));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Namespace `id`'s row (one lookup: this is on every memory load).
    pub(crate) fn namespace_row(&self, id: NamespaceId) -> Result<NamespaceRow> {
        let mut row = None;
        self.scan(NAMESPACES, Some(id.0), |k, bytes| {
            if k == id.0 {
                row = Some(NamespaceRow::decode(bytes).map_err(|e| corrupt("cube", e))?);
            }
            Ok(false)
        })?;
        row.ok_or_else(|| RuntimeError::NotFound {
            what: "cube",
            id: id.to_string(),
        })
    }

    /// The namespace `owner` calls `name`.
    pub fn namespace_named(&self, owner: UserId, name: &str) -> Result<NamespaceInfo> {
        self.namespace_rows()?
            .into_iter()
            .find(|(_, r)| r.owner == owner.0 && r.name == name)
            .map(|(id, r)| r.info(id))
            .ok_or_else(|| RuntimeError::NotFound {
                what: "cube",
                id: format!("{owner}/{name}"),
            })
    }

    /// Namespaces `who` may read (all, for an administrator).
    pub fn namespaces(&self, who: &Principal) -> Result<Vec<NamespaceInfo>> {
        let now = now();
        Ok(self
            .namespace_rows()?
            .into_iter()
            .filter(|(id, r)| {
                governance::check(who, &r.policy_meta(*id), Operation::Read, now).is_allowed()
            })
            .map(|(id, r)| r.info(id))
            .collect())
    }

    /// Shares namespace `ns` with user `with` (or revokes with
    /// [`ShareAccess::None`]); the owner or an administrator only.
    pub fn share(
        &self,
        who: &Principal,
        ns: NamespaceId,
        with: UserId,
        access: ShareAccess,
    ) -> Result<NamespaceInfo> {
        let _w = self.write_lock();
        let mut row = self.authorise_namespace(who, ns, Operation::Share, "share")?;
        self.user_by_id(with)?;
        if with.0 == row.owner {
            return Err(RuntimeError::Invalid(
                "a cube's owner cannot share it with themself".to_owned(),
            ));
        }
        row.readers.retain(|u| *u != with.0);
        row.writers.retain(|u| *u != with.0);
        match access {
            ShareAccess::Read => row.readers.push(with.0),
            ShareAccess::ReadWrite => row.writers.push(with.0),
            ShareAccess::None => {}
        }
        let cap = memkern_core::cube::MAX_GRANTEES;
        if row.readers.len() > cap || row.writers.len() > cap {
            return Err(RuntimeError::Invalid(format!(
                "a cube may be shared with at most {cap} readers and {cap} writers"
            )));
        }
        self.write(true, |txn| {
            txn.open_table(NAMESPACES)?
                .insert(ns.0, encode(&row).unwrap_or_default().as_slice())?;
            let detail = format!("cube {ns} with user {with}: {access:?}");
            append(txn, &[Event::ok(who, "share", None).with(detail)])
        })?;
        Ok(row.info(ns.0))
    }
}

fn insert_user(
    txn: &WriteTransaction,
    id: u64,
    name: &str,
    key: &ApiKey,
    admin: bool,
) -> Result<(), redb::Error> {
    let row = UserRow {
        name: name.to_owned(),
        key_hash: key_hash(&key.0),
        admin,
    };
    txn.open_table(USERS)?
        .insert(id, encode(&row).unwrap_or_default().as_slice())?;
    txn.open_table(USER_NAMES)?.insert(name, id)?;
    txn.open_table(USER_KEYS)?
        .insert(row.key_hash.as_slice(), id)?;
    Ok(())
}
