//! The Linux vault: where memories, snapshots and adapters live on disk.
//!
//! Exists to keep the runtime's durable state in one place with one set of
//! crash rules: [`Vault`] keeps every cube in a redb database and the
//! blobs that activation and parametric cubes reference in a
//! content-addressed directory ([`blobs::BlobStore`]), and never commits a
//! cube whose blob is not durable. Users, namespaces, search indexes and
//! the audit log join it with the runtime.

pub mod blobs;
pub mod cubes;

pub(crate) use cubes::{CUBES, key as cube_key};
pub use cubes::{Recovery, Vault, VaultError};
