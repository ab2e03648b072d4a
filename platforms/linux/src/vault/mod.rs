//! The Linux vault: where memories, snapshots and adapters live on disk.
//!
//! Exists to keep the runtime's durable state in one place with one set of
//! crash rules. Today it holds the content-addressed blob directory
//! ([`blobs::BlobStore`]) that activation snapshots and adapters go to; the
//! redb database of users, namespaces, memories and indexes joins it with
//! the runtime.

pub mod blobs;
