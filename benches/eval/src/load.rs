//! A load generator for the HTTP API: N client threads, each with its own
//! keep-alive HTTP/1.1 connection, issue a weighted mix of operations for
//! a fixed time; then every acknowledged write is read back.
//!
//! Exists to measure throughput and latency of a device under concurrent
//! assistants, and to prove that no acknowledged write is lost under load
//! (`lost_writes`). It speaks raw HTTP over `std::net::TcpStream` so it
//! needs no HTTP client dependency.
//!
//! To add an operation (e.g. chat): add an [`Op`] variant, its name in
//! [`Op::name`] and its request in `Op::request`; give it a weight in
//! [`LoadOptions::mix`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use memkern_core::ids::NamespaceId;
use serde::Serialize;
use serde_json::{Value, json};

/// One kind of request the generator issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `POST /v1/memories` with a unique text (acknowledged ids are read
    /// back after the run).
    Add,
    /// `POST /v1/search` for two words of the generator's vocabulary.
    Search,
    /// `POST /v1/chat` asking about two words (a few tokens of answer).
    Chat,
}

impl Op {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Search => "search",
            Op::Chat => "chat",
        }
    }

    /// The request for this op: method, path and JSON body.
    fn request(self, cx: &mut ClientCx<'_>) -> (&'static str, String, Option<Value>) {
        match self {
            Op::Add => {
                cx.seq += 1;
                let words = [cx.word(), cx.word(), cx.word(), cx.word()];
                let text = format!(
                    "load c{} n{}: {} {} near the {} after {}",
                    cx.client, cx.seq, words[0], words[1], words[2], words[3]
                );
                let body = json!({ "namespace": cx.user.namespace, "text": text });
                ("POST", "/v1/memories".to_owned(), Some(body))
            }
            Op::Search => {
                let body = json!({ "query": format!("{} {}", cx.word(), cx.word()), "k": cx.k });
                ("POST", "/v1/search".to_owned(), Some(body))
            }
            Op::Chat => {
                let message = format!(
                    "What do you remember about the {} {}?",
                    cx.word(),
                    cx.word()
                );
                let body = json!({ "message": message, "max_tokens": 8 });
                ("POST", "/v1/chat".to_owned(), Some(body))
            }
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whose key a client uses and where its adds go.
///
/// Exists because the generator writes as real users: client `i` acts as
/// user `i mod n`.
#[derive(Clone, Debug)]
pub struct LoadUser {
    /// The user's API key.
    pub api_key: String,
    /// A cube the user may write (e.g. their `default` cube).
    pub namespace: NamespaceId,
}

/// How hard and how long to load the server.
///
/// Exists so benches and tests state the load they ran.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Concurrent clients (threads, one connection each).
    pub clients: usize,
    /// How long to issue requests.
    pub duration: Duration,
    /// Operations and their relative weights.
    pub mix: Vec<(Op, u32)>,
    /// `k` of each search.
    pub search_k: usize,
    /// Read/write timeout of each request.
    pub timeout: Duration,
    /// Read every acknowledged add back after the run.
    pub verify_writes: bool,
}

impl Default for LoadOptions {
    /// 8 clients for 10 s, half adds and half searches (k = 5).
    fn default() -> Self {
        LoadOptions {
            clients: 8,
            duration: Duration::from_secs(10),
            mix: vec![(Op::Add, 1), (Op::Search, 1)],
            search_k: 5,
            timeout: Duration::from_secs(30),
            verify_writes: true,
        }
    }
}

/// Why a load run could not start.
///
/// Exists to tell an impossible setup from a server that fails.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Options that cannot run (no clients, no users, no weighted op).
    #[error("invalid load options: {0}")]
    Options(String),
    /// A client thread could not be started.
    #[error("cannot start a client thread: {0}")]
    Thread(#[from] io::Error),
    /// A client thread panicked.
    #[error("a load client thread panicked")]
    Panicked,
}

/// Requests and latencies of one operation.
///
/// Exists as one row of a [`LoadReport`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpReport {
    /// The operation.
    pub op: Op,
    /// Requests issued.
    pub requests: u64,
    /// Requests that failed (transport error or non-2xx status).
    pub errors: u64,
    /// Requests per second over the run.
    pub throughput_rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// Slowest request, ms.
    pub max_ms: f64,
}

/// What a load run measured.
///
/// Exists so a run can be printed (Display) or saved (Serialize) and
/// checked: `errors` and `lost_writes` should be 0.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadReport {
    /// Concurrent clients.
    pub clients: usize,
    /// How long requests were issued, seconds.
    pub duration_s: f64,
    /// Requests issued, all operations.
    pub requests: u64,
    /// Failed requests, all operations.
    pub errors: u64,
    /// Requests per second, all operations.
    pub throughput_rps: f64,
    /// Per operation.
    pub ops: Vec<OpReport>,
    /// Adds answered 2xx with an id.
    pub acknowledged_writes: u64,
    /// Of those, read back afterwards with their text.
    pub verified_writes: u64,
    /// Acknowledged adds that could not be read back (0 unless
    /// verification was off).
    pub lost_writes: u64,
    /// A few failures, for diagnosis.
    pub error_samples: Vec<String>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "load: {} clients, {:.1} s, {} requests ({:.1} req/s), {} errors",
            self.clients, self.duration_s, self.requests, self.throughput_rps, self.errors
        )?;
        writeln!(
            f,
            "  {:<8} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8}",
            "op", "requests", "errors", "req/s", "p50 ms", "p95 ms", "max ms"
        )?;
        for o in &self.ops {
            writeln!(
                f,
                "  {:<8} {:>9} {:>7} {:>9.1} {:>8.2} {:>8.2} {:>8.2}",
                o.op.name(),
                o.requests,
                o.errors,
                o.throughput_rps,
                o.p50_ms,
                o.p95_ms,
                o.max_ms
            )?;
        }
        write!(
            f,
            "writes: {} acknowledged, {} read back, {} lost",
            self.acknowledged_writes, self.verified_writes, self.lost_writes
        )?;
        for s in &self.error_samples {
            write!(f, "\n  error: {s}")?;
        }
        Ok(())
    }
}

/// How many failures a report quotes.
const MAX_SAMPLES: usize = 8;

/// Loads the server at `addr` as `users` for `opts.duration`, then (if
/// `opts.verify_writes`) reads every acknowledged add back. Blocks until
/// done.
pub fn run(
    addr: SocketAddr,
    users: &[LoadUser],
    opts: &LoadOptions,
) -> Result<LoadReport, LoadError> {
    if opts.clients == 0 {
        return Err(LoadError::Options("clients must be at least 1".to_owned()));
    }
    if users.is_empty() {
        return Err(LoadError::Options("give at least one user".to_owned()));
    }
    let mix: Vec<(Op, u32)> = opts.mix.iter().copied().filter(|(_, w)| *w > 0).collect();
    if mix.is_empty() {
        return Err(LoadError::Options(
            "give at least one operation a positive weight".to_owned(),
        ));
    }
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut threads = Vec::with_capacity(opts.clients);
    for client in 0..opts.clients {
        // `users` is not empty (checked above), so the index is in range.
        let user = users[client % users.len()].clone();
        let mix = mix.clone();
        let (k, timeout) = (opts.search_k, opts.timeout);
        threads.push(
            std::thread::Builder::new()
                .name(format!("memkern-load-{client}"))
                .spawn(move || load_client(addr, client, &user, &mix, k, timeout, deadline))?,
        );
    }
    let mut outcomes = Vec::with_capacity(threads.len());
    for t in threads {
        outcomes.push(t.join().map_err(|_| LoadError::Panicked)?);
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);

    let mut per_op: BTreeMap<Op, (Vec<Duration>, u64)> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut acked = Vec::new();
    for o in outcomes {
        for (op, lat, ok) in o.requests {
            let e = per_op.entry(op).or_default();
            e.0.push(lat);
            e.1 += u64::from(!ok);
        }
        for s in o.samples {
            if samples.len() < MAX_SAMPLES {
                samples.push(s);
            }
        }
        acked.extend(o.acked);
    }
    let ops: Vec<OpReport> = per_op
        .into_iter()
        .map(|(op, (mut lat, errors))| {
            lat.sort_unstable();
            OpReport {
                op,
                requests: lat.len() as u64,
                errors,
                throughput_rps: lat.len() as f64 / elapsed,
                p50_ms: percentile_ms(&lat, 50),
                p95_ms: percentile_ms(&lat, 95),
                max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            }
        })
        .collect();
    let requests: u64 = ops.iter().map(|o| o.requests).sum();
    let errors: u64 = ops.iter().map(|o| o.errors).sum();

    let acknowledged = acked.len() as u64;
    let verified = if opts.verify_writes {
        let (n, more) = verify(addr, acked, opts.clients, opts.timeout)?;
        for s in more {
            if samples.len() < MAX_SAMPLES {
                samples.push(s);
            }
        }
        n
    } else {
        acknowledged
    };
    Ok(LoadReport {
        clients: opts.clients,
        duration_s: elapsed,
        requests,
        errors,
        throughput_rps: requests as f64 / elapsed,
        ops,
        acknowledged_writes: acknowledged,
        verified_writes: verified,
        lost_writes: acknowledged - verified.min(acknowledged),
        error_samples: samples,
    })
}

/// Nearest-rank percentile of sorted latencies, ms.
fn percentile_ms(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // 1 ≤ rank ≤ len for a non-empty slice: the index is in range.
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

/// An acknowledged add: who wrote what, and the id it got.
struct Acked {
    api_key: String,
    id: String,
    text: String,
}

/// What one client thread did.
#[derive(Default)]
struct ClientOutcome {
    requests: Vec<(Op, Duration, bool)>,
    acked: Vec<Acked>,
    samples: Vec<String>,
}

/// A client's state for building requests.
struct ClientCx<'a> {
    client: usize,
    user: &'a LoadUser,
    seq: u64,
    k: usize,
    rng: u64,
}

/// Words the texts and queries are made of (so searches hit).
const WORDS: &[&str] = &[
    "garden", "bicycle", "kitchen", "violin", "harbour", "lantern", "meadow", "pottery", "glacier",
    "orchard", "compass", "saffron", "tram", "library", "pebble", "thunder", "falcon", "marble",
    "canyon", "ferry", "quilt", "cedar", "biscuit", "planet", "kettle", "sparrow", "velvet",
    "island", "tulip", "anchor",
];

impl ClientCx<'_> {
    /// xorshift64*: a different, reproducible stream per client.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn word(&mut self) -> &'static str {
        let i = (self.next() % WORDS.len() as u64) as usize;
        WORDS[i]
    }

    fn pick(&mut self, mix: &[(Op, u32)]) -> Op {
        let total: u64 = mix.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut r = self.next() % total.max(1);
        for (op, w) in mix {
            if r < u64::from(*w) {
                return *op;
            }
            r -= u64::from(*w);
        }
        // Unreachable for a non-empty mix (r < total); any op will do.
        mix.last().map_or(Op::Search, |(op, _)| *op)
    }
}

fn load_client(
    addr: SocketAddr,
    client: usize,
    user: &LoadUser,
    mix: &[(Op, u32)],
    k: usize,
    timeout: Duration,
    deadline: Instant,
) -> ClientOutcome {
    let mut out = ClientOutcome::default();
    let mut conn = Conn::new(addr, timeout);
    let mut cx = ClientCx {
        client,
        user,
        seq: 0,
        k,
        rng: 0x9E37_79B9_7F4A_7C15 ^ ((client as u64 + 1) << 17),
    };
    while Instant::now() < deadline {
        let op = cx.pick(mix);
        let (method, path, body) = op.request(&mut cx);
        let body = body.map(|b| b.to_string());
        let t0 = Instant::now();
        let result = conn.request(method, &path, &user.api_key, body.as_deref());
        let latency = t0.elapsed();
        let ok = match &result {
            Ok((status, _)) => (200..300).contains(status),
            Err(_) => false,
        };
        match result {
            Ok((_, reply)) if ok => {
                if op == Op::Add {
                    let id = serde_json::from_slice::<Value>(&reply)
                        .ok()
                        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
                    let text = body
                        .as_deref()
                        .and_then(|b| serde_json::from_str::<Value>(b).ok())
                        .and_then(|v| v.get("text").and_then(Value::as_str).map(str::to_owned));
                    if let (Some(id), Some(text)) = (id, text) {
                        out.acked.push(Acked {
                            api_key: user.api_key.clone(),
                            id,
                            text,
                        });
                    }
                }
            }
            Ok((status, reply)) => {
                if out.samples.len() < MAX_SAMPLES {
                    let reply = String::from_utf8_lossy(&reply);
                    out.samples.push(format!(
                        "{op}: {status} {}",
                        reply.chars().take(200).collect::<String>()
                    ));
                }
            }
            Err(e) => {
                if out.samples.len() < MAX_SAMPLES {
                    out.samples.push(format!("{op}: {e}"));
                }
            }
        }
        out.requests.push((op, latency, ok));
    }
    out
}

/// Reads every acknowledged add back (GET by id, same text), `clients`
/// threads at a time; returns how many were found and failure samples.
fn verify(
    addr: SocketAddr,
    acked: Vec<Acked>,
    clients: usize,
    timeout: Duration,
) -> Result<(u64, Vec<String>), LoadError> {
    let chunk = acked.len().div_ceil(clients.max(1)).max(1);
    let mut chunks: Vec<Vec<Acked>> = Vec::new();
    let mut rest = acked;
    while !rest.is_empty() {
        let tail = rest.split_off(chunk.min(rest.len()));
        chunks.push(rest);
        rest = tail;
    }
    let mut threads = Vec::new();
    for part in chunks {
        threads.push(
            std::thread::Builder::new()
                .name("memkern-verify".to_owned())
                .spawn(move || {
                    let mut conn = Conn::new(addr, timeout);
                    let mut found = 0u64;
                    let mut samples = Vec::new();
                    for a in part {
                        let path = format!("/v1/memories/{}", a.id);
                        let problem = match conn.request("GET", &path, &a.api_key, None) {
                            Ok((200, body)) => {
                                let text =
                                    serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
                                        v.get("text").and_then(Value::as_str).map(str::to_owned)
                                    });
                                if text.as_deref() == Some(a.text.as_str()) {
                                    None
                                } else {
                                    Some(format!("lost write {}: read back {text:?}", a.id))
                                }
                            }
                            Ok((status, _)) => {
                                Some(format!("lost write {}: GET answered {status}", a.id))
                            }
                            Err(e) => Some(format!("lost write {}: GET failed: {e}", a.id)),
                        };
                        match problem {
                            None => found += 1,
                            Some(p) if samples.len() < MAX_SAMPLES => samples.push(p),
                            Some(_) => {}
                        }
                    }
                    (found, samples)
                })?,
        );
    }
    let mut found = 0;
    let mut samples = Vec::new();
    for t in threads {
        let (n, s) = t.join().map_err(|_| LoadError::Panicked)?;
        found += n;
        samples.extend(s);
    }
    Ok((found, samples))
}

/// Largest response body the client accepts.
const MAX_RESPONSE: usize = 64 << 20;

/// A keep-alive HTTP/1.1 connection (reconnects when the server closes).
struct Conn {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<BufReader<TcpStream>>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Conn {
    fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        Conn {
            addr,
            timeout,
            stream: None,
        }
    }

    /// Sends one request; returns the status and body.
    fn request(
        &mut self,
        method: &str,
        path: &str,
        api_key: &str,
        body: Option<&str>,
    ) -> io::Result<(u16, Vec<u8>)> {
        let result = self.exchange(method, path, api_key, body);
        match &result {
            Ok((_, _, keep_alive)) if *keep_alive => {}
            _ => self.stream = None,
        }
        result.map(|(status, body, _)| (status, body))
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        api_key: &str,
        body: Option<&str>,
    ) -> io::Result<(u16, Vec<u8>, bool)> {
        let reader = match self.stream.take() {
            Some(r) => r,
            None => {
                let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(self.timeout))?;
                s.set_write_timeout(Some(self.timeout))?;
                BufReader::new(s)
            }
        };
        let reader = self.stream.insert(reader);
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {api_key}\r\n",
            self.addr
        );
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        reader.get_mut().write_all(req.as_bytes())?;

        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut keep_alive = true;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the headers",
                ));
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((name, value)) = h.split_once(':') else {
                return Err(invalid(format!("bad header line {h:?}")));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().map_err(|_| invalid("bad Content-Length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close");
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let size_text = line.trim().split(';').next().unwrap_or("");
                let size =
                    usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        line.clear();
                        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                if body.len() + size > MAX_RESPONSE {
                    return Err(invalid("response too large"));
                }
                let at = body.len();
                body.resize(at + size, 0);
                reader.read_exact(&mut body[at..])?;
                line.clear();
                reader.read_line(&mut line)?;
            }
        } else if let Some(n) = length {
            if n > MAX_RESPONSE {
                return Err(invalid("response too large"));
            }
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        } else if status != 204 && status != 304 {
            // No length: the body runs to the end of the connection.
            reader.take(MAX_RESPONSE as u64).read_to_end(&mut body)?;
            keep_alive = false;
        }
        Ok((status, body, keep_alive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&lat, 50), 50.0);
        assert_eq!(percentile_ms(&lat, 95), 95.0);
        assert_eq!(percentile_ms(&lat[..1], 95), 1.0);
        assert_eq!(percentile_ms(&[], 50), 0.0);
    }

    #[test]
    fn the_mix_follows_the_weights() {
        let user = LoadUser {
            api_key: String::new(),
            namespace: NamespaceId(1),
        };
        let mut cx = ClientCx {
            client: 0,
            user: &user,
            seq: 0,
            k: 5,
            rng: 42,
        };
        let mix = [(Op::Add, 1), (Op::Search, 3)];
        let adds = (0..4000).filter(|_| cx.pick(&mix) == Op::Add).count();
        assert!((800..1200).contains(&adds), "{adds}");
        assert!((0..100).all(|_| cx.pick(&[(Op::Search, 1)]) == Op::Search));
    }

    #[test]
    fn bad_options_are_errors() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let user = LoadUser {
            api_key: "k".to_owned(),
            namespace: NamespaceId(1),
        };
        let zero = LoadOptions {
            clients: 0,
            ..LoadOptions::default()
        };
        assert!(matches!(
            run(addr, std::slice::from_ref(&user), &zero),
            Err(LoadError::Options(_))
        ));
        assert!(matches!(
            run(addr, &[], &LoadOptions::default()),
            Err(LoadError::Options(_))
        ));
        let no_ops = LoadOptions {
            mix: vec![(Op::Add, 0)],
            ..LoadOptions::default()
        };
        assert!(matches!(
            run(addr, &[user], &no_ops),
            Err(LoadError::Options(_))
        ));
    }
}
