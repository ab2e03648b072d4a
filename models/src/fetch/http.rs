//! Blocking HTTPS with ureq (rustls, platform certificate verifier) and a
//! hashing, size-checked streaming download.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tracing::debug;
use ureq::tls::{RootCerts, TlsConfig};

use super::FetchOptions;
use super::error::FetchError;
use crate::fingerprint::to_hex;

/// Read/write buffer of the streaming download.
const CHUNK: usize = 256 << 10;

/// An HTTP agent configured for registry downloads.
pub(crate) struct Http {
    agent: ureq::Agent,
}

impl Http {
    /// Builds an agent that verifies TLS with the operating system's trust
    /// store (so corporate or sandbox CAs in the system store work), with
    /// the timeouts from `opts` and proxy settings from the environment.
    pub(crate) fn new(opts: &FetchOptions) -> Self {
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::PlatformVerifier)
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(Some(opts.read_timeout))
            .user_agent(concat!("memkern-models/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent: config.into(),
        }
    }

    fn call(&self, url: &str) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
        let resp = self.agent.get(url).call().map_err(|e| FetchError::Http {
            url: url.to_owned(),
            source: Box::new(e),
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(FetchError::HttpStatus {
                url: url.to_owned(),
                status,
            });
        }
        Ok(resp)
    }

    /// GETs a small document, refusing bodies over `limit` bytes.
    pub(crate) fn get_bytes(&self, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let mut resp = self.call(url)?;
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| FetchError::Http {
                url: url.to_owned(),
                source: Box::new(e),
            })
    }

    /// Streams `url` into a new file at `dest`, hashing as it goes, and
    /// fsyncs it. Fails (retryably) unless exactly `expected_size` bytes
    /// hashing to `expected_sha256` arrive; never writes more than
    /// `expected_size` bytes.
    pub(crate) fn download(
        &self,
        url: &str,
        dest: &Path,
        expected_sha256: &str,
        expected_size: u64,
        progress: bool,
        label: &str,
    ) -> Result<(), FetchError> {
        let started = Instant::now();
        let mut resp = self.call(url)?;
        if let Some(len) = resp.body().content_length()
            && len != expected_size
        {
            return Err(FetchError::DownloadSizeMismatch {
                url: url.to_owned(),
                expected: expected_size,
                actual: len,
            });
        }
        let mut file = File::create(dest).map_err(FetchError::io("creating", dest))?;
        let bar = progress_bar(progress, expected_size, label);
        let mut reader = resp.body_mut().as_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut total: u64 = 0;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    bar.abandon();
                    return Err(FetchError::Http {
                        url: url.to_owned(),
                        source: Box::new(ureq::Error::Io(e)),
                    });
                }
            };
            total += n as u64;
            if total > expected_size {
                bar.abandon();
                return Err(FetchError::DownloadSizeMismatch {
                    url: url.to_owned(),
                    expected: expected_size,
                    actual: total,
                });
            }
            let chunk = &buf[..n];
            hasher.update(chunk);
            file.write_all(chunk)
                .map_err(FetchError::io("writing", dest))?;
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        file.sync_all().map_err(FetchError::io("syncing", dest))?;
        if total != expected_size {
            return Err(FetchError::DownloadSizeMismatch {
                url: url.to_owned(),
                expected: expected_size,
                actual: total,
            });
        }
        let actual = to_hex(&hasher.finalize());
        if actual != expected_sha256 {
            return Err(FetchError::DownloadHashMismatch {
                url: url.to_owned(),
                expected: expected_sha256.to_owned(),
                actual,
            });
        }
        debug!(
            url,
            bytes = total,
            secs = started.elapsed().as_secs_f64(),
            "downloaded"
        );
        Ok(())
    }
}

/// A byte progress bar on stderr; hidden when `show` is false or stderr is
/// not a terminal (indicatif does not draw to non-terminals).
#[cfg(feature = "progress")]
fn progress_bar(show: bool, len: u64, label: &str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_owned());
    bar
}

/// Without the `progress` feature a download reports its start through
/// `tracing` and draws nothing.
#[cfg(not(feature = "progress"))]
fn progress_bar(show: bool, len: u64, label: &str) -> NoBar {
    if show {
        tracing::info!(file = label, bytes = len, "downloading");
    }
    NoBar
}

/// The progress bar of a build without the `progress` feature.
#[cfg(not(feature = "progress"))]
struct NoBar;

#[cfg(not(feature = "progress"))]
impl NoBar {
    fn inc(&self, _: u64) {}
    fn abandon(&self) {}
    fn finish_and_clear(&self) {}
}
