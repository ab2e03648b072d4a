//! Sealing a module to one buyer: the module file encrypted with `age`
//! (ML-KEM-768 + X25519, age's post-quantum recipients) to the recipient key of the device that bought it. The
//! cryptography is the entitlement: only that device can install it, and
//! no payment processor or licence server is involved.
//!
//! Each device has one identity, `device.agekey` in its data directory
//! (mode 0600, made on first use); `memkern keys device` prints its
//! recipient (`age1pq1…`) for the publisher. Each user may have one too
//! (`keys/user-<id>.agekey`, `memkern modules user-key`), carried to the
//! user's other devices with `--export` / `--import`: a module sealed to
//! it installs on any of them, for that user only.

use std::io::{Read, Write};
use std::path::Path;

use age::secrecy::ExposeSecret;

use super::decode_module;
use crate::{Result, RuntimeError};

/// The first bytes of every age file (a sealed module).
pub const SEALED_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// The device identity's file name in the data directory.
pub const DEVICE_KEY_FILE: &str = "device.agekey";

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid(format!("sealed module: {}", msg.into()))
}

/// Whether `bytes` is a sealed (age-encrypted) file.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(SEALED_MAGIC)
}

/// Encrypts module file `module` (checked first: a signed module) to
/// `recipient` (`age1pq1…`).
pub fn seal(module: &[u8], recipient: &str) -> Result<Vec<u8>> {
    decode_module(module)?;
    let to: age::pq::Recipient = recipient.trim().parse().map_err(|e| {
        bad(format!(
            "{recipient:?} is not an age recipient (age1pq1…): {e}"
        ))
    })?;
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&to as &dyn age::Recipient))
        .map_err(|e| bad(format!("cannot encrypt: {e}")))?;
    let mut out = Vec::with_capacity(module.len() + 256);
    let mut w = encryptor
        .wrap_output(&mut out)
        .map_err(|e| bad(format!("cannot encrypt: {e}")))?;
    w.write_all(module)
        .and_then(|()| w.finish().map(|_| ()))
        .map_err(|e| bad(format!("cannot encrypt: {e}")))?;
    Ok(out)
}

/// Decrypts a sealed module with `identity`; a file sealed for another
/// device, or damaged, is refused with one line.
pub fn unseal(bytes: &[u8], identity: &age::pq::Identity) -> Result<Vec<u8>> {
    let decryptor =
        age::Decryptor::new(bytes).map_err(|e| bad(format!("not a readable age file: {e}")))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => {
                bad("it was sealed for another device (this device's key is `memkern keys device`)")
            }
            other => bad(format!("cannot decrypt: {other}")),
        })?;
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("damaged: {e}")))?;
    Ok(out)
}

/// This device's identity from `dir`, made on first use (mode 0600).
pub fn device_identity(dir: &Path) -> Result<age::pq::Identity> {
    identity_at(
        &dir.join(DEVICE_KEY_FILE),
        "memkern device identity: modules sealed to its recipient open here",
    )
}

/// The file of user `user`'s identity in data directory `dir`.
pub(crate) fn user_key_path(dir: &Path, user: u64) -> std::path::PathBuf {
    dir.join("keys").join(format!("user-{user}.agekey"))
}

/// Parses the identity in an identity file's `text`.
pub fn parse_identity(text: &str, what: &str) -> Result<age::pq::Identity> {
    text.lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-PQ-"))
        .ok_or_else(|| bad(format!("{what} holds no age identity")))?
        .trim()
        .parse()
        .map_err(|e| bad(format!("{what}: {e}")))
}

/// Writes `id` to a new file `path` (mode 0600), with `comment` above it.
pub(crate) fn write_identity(path: &Path, id: &age::pq::Identity, comment: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
    }
    let text = format!("# {comment}\n{}\n", id.to_string().expose_secret());
    crate::pack::write_private(path, text.as_bytes())
        .map_err(|e| bad(format!("cannot write {}: {e}", path.display())))
}

/// The identity in file `path`, made there on first use.
pub(crate) fn identity_at(path: &Path, comment: &str) -> Result<age::pq::Identity> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_identity(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = age::pq::Identity::generate();
            write_identity(path, &id, comment)?;
            Ok(id)
        }
        Err(e) => Err(bad(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Decrypts a sealed module with the first of `identities` it was sealed
/// to; returns the file and that identity's index. Sealed to none of
/// them is one line naming where the keys are shown.
pub fn unseal_any(bytes: &[u8], identities: &[&age::pq::Identity]) -> Result<(Vec<u8>, usize)> {
    for (i, id) in identities.iter().enumerate() {
        match unseal(bytes, id) {
            Ok(out) => return Ok((out, i)),
            Err(e) if e.to_string().contains("sealed for another") => continue,
            Err(e) => return Err(e),
        }
    }
    Err(bad(
        "it was sealed for another device or user (this device's key is `memkern keys \
         device`, a user's `memkern modules user-key --as USER`)",
    ))
}

/// This device's recipient (`age1pq1…`), what a publisher seals to.
pub fn device_recipient(dir: &Path) -> Result<String> {
    Ok(device_identity(dir)?.to_public().to_string())
}
