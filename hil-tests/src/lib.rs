//! Hardware-in-the-loop harness for memkern's Cortex-M firmware.
//!
//! It exists so tests on the host can treat the firmware like a device on
//! a wire: [`firmware`] builds it (once per process), a [`Board`] owns a
//! NOR flash image that persists across boots, [`Board::boot`] starts QEMU
//! (`mps2-an386`, semihosting) on it, and a [`Session`] exchanges protocol
//! frames ([`memkern_core::protocol`]), pulls the plug ([`Session::cut_power`])
//! or waits for the firmware to exit ([`Session::finish`]).
//!
//! QEMU must be installed (`qemu-system-arm`); tests call [`qemu_or_skip`],
//! which fails when `MEMKERN_REQUIRE_QEMU=1` (CI) and skips otherwise.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use memkern_core::protocol::{self, Request, Response};

/// QEMU binary for the Cortex-M board.
pub const QEMU: &str = "qemu-system-arm";

/// How long one request may take before the session is declared hung.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Harness failures, each with enough context to debug from a CI log.
#[derive(Debug, thiserror::Error)]
pub enum HilError {
    /// Building the firmware failed.
    #[error("building the firmware failed: {0}")]
    Build(String),
    /// A host I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The firmware sent no answer in time or closed the link.
    #[error("no reply from the firmware ({why}); its stderr:\n{stderr}")]
    NoReply {
        /// Timeout or exit.
        why: String,
        /// What the firmware printed on stderr.
        stderr: String,
    },
    /// A frame did not decode.
    #[error("undecodable frame from the firmware: {0}")]
    BadFrame(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HilError {
    let what = what.into();
    move |source| HilError::Io { what, source }
}

/// Whether QEMU for Arm is installed; panics when it is not but
/// `MEMKERN_REQUIRE_QEMU=1` says it must be (CI), so a CI machine without it
/// fails instead of skipping.
pub fn qemu_or_skip() -> bool {
    let found = Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("MEMKERN_REQUIRE_QEMU").as_deref() == Ok("1") {
            panic!("{QEMU} not found but MEMKERN_REQUIRE_QEMU=1");
        }
        eprintln!("SKIP: {QEMU} not installed (apt-get install qemu-system-arm)");
    }
    found
}

/// The workspace root (this crate lives in `hil-tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Builds the firmware in release mode (once per process) and returns the
/// ELF's path. The firmware crate is outside the workspace (it only builds
/// for `thumbv7em-none-eabihf`), with its own target directory.
pub fn firmware() -> Result<PathBuf, HilError> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = workspace_root().join("platforms/cortex-m");
            let out = Command::new(env!("CARGO"))
                .args(["build", "--release", "--quiet"])
                .current_dir(&dir)
                // The outer cargo's settings are for the host build.
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_BUILD_TARGET")
                .output()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(dir.join("target/thumbv7em-none-eabihf/release/memkern-firmware"))
        })
        .clone()
        .map_err(HilError::Build)
}

/// A device: a directory holding its NOR flash image (`flash.img`) and its
/// defmt log. Removed when dropped.
pub struct Board {
    dir: PathBuf,
    elf: PathBuf,
}

impl Board {
    /// A board with a blank (erased, all `0xFF`) flash of `flash_bytes`
    /// (a multiple of 4 KiB).
    pub fn new(flash_bytes: usize) -> Result<Board, HilError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "memkern-hil-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let board = Board {
            dir,
            elf: firmware()?,
        };
        std::fs::write(board.flash_path(), vec![0xFFu8; flash_bytes])
            .map_err(io("write flash image"))?;
        Ok(board)
    }

    /// The flash image file.
    pub fn flash_path(&self) -> PathBuf {
        self.dir.join("flash.img")
    }

    /// The working directory QEMU runs in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Boots the firmware on this board; `args` become semihosting
    /// arguments (after the program name).
    pub fn boot(&self, args: &[&str]) -> Result<Session, HilError> {
        self.boot_with(&[], args)
    }

    /// [`Board::boot`] with extra QEMU options (e.g. `-icount shift=0`, so
    /// the firmware's tick counts measure instructions).
    pub fn boot_with(&self, qemu_args: &[&str], args: &[&str]) -> Result<Session, HilError> {
        let mut semi = String::from("enable=on,target=native,arg=memkern-firmware");
        for a in args {
            semi.push_str(",arg=");
            semi.push_str(a);
        }
        let mut child = Command::new(QEMU)
            .args([
                "-machine",
                "mps2-an386",
                "-cpu",
                "cortex-m4",
                "-nographic",
                "-monitor",
                "none",
                "-serial",
                "none",
                "-semihosting-config",
                &semi,
                "-kernel",
            ])
            .arg(&self.elf)
            .args(qemu_args)
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(format!("start {QEMU}")))?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().ok_or_else(|| HilError::NoReply {
            why: "no stdout pipe".into(),
            stderr: String::new(),
        })?;
        let mut stderr_pipe = child.stderr.take();
        let (tx, frames) = channel();
        let reader = std::thread::spawn(move || {
            let mut frame = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                for &b in &chunk[..n] {
                    if b == 0 {
                        if tx.send(std::mem::take(&mut frame)).is_err() {
                            return;
                        }
                    } else {
                        frame.push(b);
                    }
                }
            }
        });
        let stderr = std::sync::Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(p) = stderr_pipe.as_mut() {
                let _ = p.read_to_string(&mut text);
            }
            if let Ok(mut s) = sink.lock() {
                s.push_str(&text);
            }
        });
        Ok(Session {
            child,
            stdin,
            frames,
            reader: Some(reader),
            err_reader: Some(err_reader),
            stderr,
        })
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One response frame from the firmware, COBS-decoded; [`Reply::response`]
/// borrows the message from it.
#[derive(Clone, Debug)]
pub struct Reply(Vec<u8>);

impl Reply {
    fn from_frame(mut frame: Vec<u8>) -> Result<Reply, HilError> {
        let n =
            cobs::decode_in_place(&mut frame).map_err(|e| HilError::BadFrame(format!("{e:?}")))?;
        frame.truncate(n);
        Ok(Reply(frame))
    }

    /// The response message.
    pub fn response(&self) -> Result<Response<'_>, HilError> {
        postcard::from_bytes(&self.0).map_err(|e| HilError::BadFrame(e.to_string()))
    }
}

/// A running firmware (one QEMU process).
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<Vec<u8>>,
    reader: Option<JoinHandle<()>>,
    err_reader: Option<JoinHandle<()>>,
    stderr: std::sync::Arc<Mutex<String>>,
}

/// How a session ended.
#[derive(Debug)]
pub struct Exit {
    /// QEMU's exit status (the firmware's semihosting exit code).
    pub status: ExitStatus,
    /// What the firmware printed on stderr.
    pub stderr: String,
}

impl Session {
    /// Sends raw bytes (a frame, or garbage for robustness tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), HilError> {
        let stdin = self.stdin.as_mut().ok_or_else(|| HilError::NoReply {
            why: "link already closed".into(),
            stderr: String::new(),
        })?;
        stdin
            .write_all(bytes)
            .map_err(io("write to the firmware"))?;
        stdin.flush().map_err(io("flush to the firmware"))
    }

    /// Sends one request without waiting for the answer (for pipelining).
    pub fn send(&mut self, req: &Request<'_>) -> Result<(), HilError> {
        let mut buf = vec![0u8; protocol::MAX_REQUEST_FRAME * 2];
        let frame =
            protocol::encode(req, &mut buf).map_err(|e| HilError::BadFrame(e.to_string()))?;
        let frame = frame.to_vec();
        self.send_raw(&frame)
    }

    /// Waits for the next reply.
    pub fn recv(&mut self) -> Result<Reply, HilError> {
        match self.frames.recv_timeout(REPLY_TIMEOUT) {
            Ok(frame) => Reply::from_frame(frame),
            Err(RecvTimeoutError::Timeout) => Err(HilError::NoReply {
                why: format!("timeout after {REPLY_TIMEOUT:?}"),
                stderr: self.stderr_now(),
            }),
            Err(RecvTimeoutError::Disconnected) => {
                // Give the stderr reader a moment to collect the reason.
                std::thread::sleep(Duration::from_millis(100));
                Err(HilError::NoReply {
                    why: "the firmware closed its output".into(),
                    stderr: self.stderr_now(),
                })
            }
        }
    }

    /// Sends a request and waits for its reply.
    pub fn call(&mut self, req: &Request<'_>) -> Result<Reply, HilError> {
        self.send(req)?;
        self.recv()
    }

    fn stderr_now(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Kills QEMU at once (SIGKILL: a power cut — the flash image keeps
    /// whatever the firmware had written) and returns the replies the
    /// firmware had sent before it died, in order.
    pub fn cut_power(mut self) -> Result<Vec<Reply>, HilError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin = None;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut replies = Vec::new();
        while let Ok(frame) = self.frames.try_recv() {
            replies.push(Reply::from_frame(frame)?);
        }
        Ok(replies)
    }

    /// Closes the link (the firmware exits 0 when stdin closes) and waits
    /// up to `timeout` for QEMU to exit; a firmware still running then is
    /// killed and reported as hung.
    pub fn finish(mut self, timeout: Duration) -> Result<Exit, HilError> {
        self.stdin = None;
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().map_err(io("wait for QEMU"))? {
                if let Some(r) = self.err_reader.take() {
                    let _ = r.join();
                }
                return Ok(Exit {
                    status,
                    stderr: self.stderr_now(),
                });
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(HilError::NoReply {
                    why: format!("QEMU still running after {timeout:?} (hung firmware)"),
                    stderr: self.stderr_now(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
