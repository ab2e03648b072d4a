//! A loopback HTTP/1.1 server that plays the package registry, with fault
//! injection. It listens on 127.0.0.1 only, serves one connection at a
//! time, and stops when dropped or after 60 s, whichever comes first.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What to answer.
pub enum Reply {
    /// 200 with this body.
    Body(Vec<u8>),
    /// This status, empty body.
    Status(u16),
    /// 200 announcing the full length but sending only the first `n` bytes.
    Truncated(Vec<u8>, usize),
}

/// Decides the reply for (path, how many times this path was hit before).
pub type Handler = dyn Fn(&str, usize) -> Reply + Send + Sync;

pub struct Server {
    pub base: String,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(handler: Box<Handler>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, st) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut counts: HashMap<String, usize> = HashMap::new();
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &*handler, &h, &mut counts),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        Self {
            base,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    /// Paths requested so far, in order.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }

    /// How many requests went to paths ending in `suffix`.
    pub fn count(&self, suffix: &str) -> usize {
        self.hits().iter().filter(|p| p.ends_with(suffix)).count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    handler: &Handler,
    hits: &Mutex<Vec<String>>,
    counts: &mut HashMap<String, usize>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        if req.len() > 64 << 10 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    hits.lock().unwrap().push(path.clone());
    let n = counts.entry(path.clone()).or_insert(0);
    let reply = handler(&path, *n);
    *n += 1;
    let (status, body, send) = match reply {
        Reply::Body(b) => {
            let len = b.len();
            (200, b, len)
        }
        Reply::Status(s) => (s, Vec::new(), 0),
        Reply::Truncated(b, n) => (200, b, n),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body[..send.min(body.len())]);
    let _ = stream.flush();
}
