//! The control socket: how a `memkern` command reaches a running
//! `memkern serve` instead of opening the vault it holds.
//!
//! It exists because the vault is one redb file that one process holds at a
//! time. `serve` listens on `serve.sock` in the data directory (mode 0600:
//! whoever may connect may also read the vault file, so the socket grants
//! no more than the file does), and a command that finds it sends its
//! arguments there; serve runs the command against its open runtime and
//! streams the output back — the way `ollama`'s CLI talks to its daemon.
//!
//! The protocol is newline-delimited JSON between two copies of the same
//! binary: one [`Request`] line from the client, then (for commands that
//! read standard input) the client's standard input as raw bytes until it
//! shuts down its writing half; the server answers with [`Frame`] lines,
//! the last one [`Frame::Done`] or [`Frame::Failed`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "serve.sock";

/// The longest request line the server reads (arguments are small; a
/// longer line is refused, not buffered).
const MAX_REQUEST: u64 = 1 << 20;

/// Commands the server runs at once; more wait for a slot.
const MAX_CONCURRENT: usize = 8;

/// What a client asks the server to run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The client's version: client and server must be the same build.
    pub version: String,
    /// The command line, program name first.
    pub argv: Vec<String>,
    /// The client's working directory, for relative paths in `argv`.
    pub cwd: PathBuf,
}

/// One line of the server's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// Text for the client's standard output.
    Out(String),
    /// Text for the client's standard error.
    Err(String),
    /// The command succeeded.
    Done,
    /// The command failed; the message is its one `error:` line.
    Failed(String),
}

/// The socket path of a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Connects to the serve running on `data_dir`, if there is one: `None`
/// when there is no socket or nobody answers on it (a serve that was killed
/// leaves its socket behind).
pub fn connect(data_dir: &Path) -> Result<Option<UnixStream>> {
    let path = socket_path(data_dir);
    match UnixStream::connect(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("cannot connect to {}", path.display())),
    }
}

/// Runs `argv` on the server behind `stream`, copying standard input to it
/// when `stdin` is set, and prints what it answers. An error is the
/// server's `error:` line.
pub fn forward(stream: UnixStream, argv: Vec<String>, stdin: bool) -> Result<()> {
    let request = Request {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        argv,
        cwd: std::env::current_dir().context("the working directory")?,
    };
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .context("sending the command to memkern serve")?;
    if stdin {
        // Standard input goes on in the background while answers come
        // back (an interactive chat); end of input ends the session.
        let mut w = stream.try_clone().context("socket")?;
        std::thread::spawn(move || {
            let _ = io::copy(&mut io::stdin().lock(), &mut w);
            let _ = w.shutdown(std::net::Shutdown::Write);
        });
    } else {
        stream.shutdown(std::net::Shutdown::Write)?;
    }
    let (mut out, mut err) = (io::stdout().lock(), io::stderr());
    for line in BufReader::new(stream).lines() {
        let line = line.context("reading memkern serve's answer")?;
        let frame: Frame = serde_json::from_str(&line)
            .with_context(|| format!("memkern serve answered {line:?}"))?;
        match frame {
            Frame::Out(s) => {
                out.write_all(s.as_bytes())?;
                out.flush()?;
            }
            Frame::Err(s) => err.write_all(s.as_bytes())?,
            Frame::Done => return Ok(()),
            Frame::Failed(why) => bail!("{why}"),
        }
    }
    bail!("memkern serve closed the connection before the command ended (it stopped?)")
}

/// A command as the server runs it: the request, and the client's
/// standard input and output.
pub struct Session<'a> {
    /// What to run.
    pub request: Request,
    /// The client's standard input (empty unless it sends it).
    pub input: &'a mut dyn BufRead,
    /// The client's standard output.
    pub out: &'a mut dyn Write,
    /// The client's standard error.
    pub err: &'a mut dyn Write,
}

/// The listening socket of a running serve; dropping it removes the file.
pub struct Listener {
    path: PathBuf,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `data_dir`'s socket and runs each connection's command with
/// `run` on its own thread. The caller holds the vault, so a socket already
/// there is a dead serve's and is replaced.
pub fn listen<F>(data_dir: &Path, run: F) -> Result<Listener>
where
    F: Fn(Session<'_>) -> Result<()> + Send + Sync + 'static,
{
    let path = socket_path(data_dir);
    // Bound under a private name, made owner-only, then moved into place:
    // nobody can connect before the mode is set.
    let tmp = data_dir.join(format!(".{SOCKET}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).with_context(|| format!("cannot listen on {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot create {}", path.display()))?;
    let run = Arc::new(run);
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (run, busy) = (run.clone(), busy.clone());
            std::thread::spawn(move || {
                while busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONCURRENT {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                if let Err(e) = serve_one(conn, &*run) {
                    tracing::warn!("control socket: {e:#}");
                }
                busy.fetch_sub(1, Ordering::AcqRel);
            });
        }
    });
    Ok(Listener { path })
}

fn serve_one<F>(conn: UnixStream, run: &F) -> Result<()>
where
    F: Fn(Session<'_>) -> Result<()>,
{
    let shared = Arc::new(Mutex::new(conn.try_clone()?));
    let mut input = BufReader::new(conn);
    let mut line = String::new();
    (&mut input).take(MAX_REQUEST).read_line(&mut line)?;
    let send = |frame: &Frame| write_frame(&shared, frame);
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return send(&Frame::Failed(format!("bad control request: {e}"))),
    };
    if request.version != env!("CARGO_PKG_VERSION") {
        return send(&Frame::Failed(format!(
            "the running memkern serve is version {}, this memkern is {}: stop serve or use the same binary",
            env!("CARGO_PKG_VERSION"),
            memkern_runtime::input::shown(&request.version)
        )));
    }
    let mut out = FrameWriter::new(shared.clone(), Frame::Out);
    let mut err = FrameWriter::new(shared.clone(), Frame::Err);
    let result = run(Session {
        request,
        input: &mut input,
        out: &mut out,
        err: &mut err,
    });
    out.flush()?;
    err.flush()?;
    match result {
        Ok(()) => send(&Frame::Done),
        // `{:#}`: the whole context chain on one line, as the CLI prints it.
        Err(e) => send(&Frame::Failed(format!("{e:#}"))),
    }
}

fn write_frame(stream: &Mutex<UnixStream>, frame: &Frame) -> Result<()> {
    let mut line = serde_json::to_vec(frame)?;
    line.push(b'\n');
    // A poisoned lock only means another writer panicked mid-line; the
    // stream itself is still usable.
    let mut s = stream.lock().unwrap_or_else(|p| p.into_inner());
    s.write_all(&line)?;
    Ok(())
}

/// Sends what a command writes as frames of one kind. Bytes that end in
/// the middle of a UTF-8 character wait for the rest.
struct FrameWriter {
    stream: Arc<Mutex<UnixStream>>,
    kind: fn(String) -> Frame,
    pending: Vec<u8>,
}

impl FrameWriter {
    fn new(stream: Arc<Mutex<UnixStream>>, kind: fn(String) -> Frame) -> Self {
        FrameWriter {
            stream,
            kind,
            pending: Vec::new(),
        }
    }
}

impl Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            // An incomplete character at the end: send what precedes it.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Invalid bytes: send them replaced rather than hold them.
            Err(_) => self.pending.len(),
        };
        if valid > 0 {
            let text = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
            self.pending.drain(..valid);
            write_frame(&self.stream, &(self.kind)(text)).map_err(io::Error::other)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            write_frame(&self.stream, &(self.kind)(text)).map_err(io::Error::other)?;
        }
        Ok(())
    }
}
