//! The HTTP API end to end: a real server on 127.0.0.1 (port 0), real
//! HTTP over loopback (ureq), a keyword-only runtime on a real vault.
//! Authentication, the memory lifecycle, user B's attempts on user A's
//! memories (0 leaks), bad input as clear JSON errors, graceful shutdown,
//! signals, and a reduced load test (0 errors, 0 lost writes).

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memkern_core::ids::NamespaceId;
use memkern_eval::load::{self, LoadOptions, LoadUser, Op};
use memkern_runtime::{Config, MemoryId, Runtime};
use memkern_server::{Server, ServerError};
use serde_json::{Value, json};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memkern-http-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A running server over a fresh vault, and an HTTP client for it.
struct Api {
    dir: PathBuf,
    rt: Arc<Runtime>,
    server: Option<Server>,
    base: String,
    agent: ureq::Agent,
    admin_key: String,
}

/// A response: status, content type, body (parsed if JSON, else a
/// string), headers of interest.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    allow: String,
    json: Value,
}

impl Reply {
    /// The `error` message of a JSON error answer (panics otherwise).
    fn error(&self) -> &str {
        assert!(
            self.content_type.starts_with("application/json"),
            "{self:?}"
        );
        self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {self:?}"))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Api {
    fn start(name: &str, max_body: usize) -> Api {
        let dir = temp_dir(name);
        let (rt, _) = Runtime::open(&dir, Config::default(), None).expect("vault opens");
        let rt = Arc::new(rt);
        let admin_key = rt.rotate_key(&rt.admin(), "admin").expect("admin key").0;
        let server = Server::start(rt.clone(), "127.0.0.1:0", max_body).expect("server starts");
        let base = format!("http://{}", server.addr());
        Api {
            dir,
            rt,
            server: Some(server),
            base,
            agent: agent(),
            admin_key,
        }
    }

    /// Any request: raw body bytes and headers exactly as given.
    fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = match body {
            Some(b) => self.agent.run(req.body(b).expect("request")),
            None => self.agent.run(req.body(()).expect("request")),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (content_type, allow) = (header("content-type"), header("allow"));
        let text = resp.into_body().read_to_string().expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            content_type,
            allow,
            json,
        }
    }

    /// A JSON request as the holder of `key`.
    fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> Reply {
        let auth = format!("Bearer {key}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.raw(
            method,
            path,
            &headers,
            body.map(|b| b.to_string().into_bytes()),
        )
    }

    /// Creates a user (as admin); returns their key, id and default cube.
    fn user(&self, name: &str) -> (String, u64, u64) {
        let r = self.call(
            "POST",
            "/v1/users",
            &self.admin_key,
            Some(json!({ "name": name })),
        );
        assert_eq!(r.status, 201, "{r:?}");
        let key = r.json["api_key"].as_str().expect("api_key").to_owned();
        let id = r.json["user"]["id"].as_u64().expect("user id");
        let cubes = self.call("GET", "/v1/cubes", &key, None);
        assert_eq!(cubes.status, 200, "{cubes:?}");
        let cube = cubes.json.as_array().expect("cubes")[0]["id"]
            .as_u64()
            .expect("cube id");
        (key, id, cube)
    }

    /// Adds `text` to `cube` as `key`; returns the memory id.
    fn add(&self, key: &str, cube: u64, text: &str) -> String {
        let r = self.call(
            "POST",
            "/v1/memories",
            key,
            Some(json!({ "namespace": cube, "text": text })),
        );
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.json["duplicate"], false, "{r:?}");
        r.json["id"].as_str().expect("id").to_owned()
    }

    /// The texts of a search as `key`.
    fn search(&self, key: &str, body: Value) -> Vec<(String, u64)> {
        let r = self.call("POST", "/v1/search", key, Some(body));
        assert_eq!(r.status, 200, "{r:?}");
        r.json
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| {
                let m = &h["memory"];
                (
                    m["text"].as_str().unwrap_or("").to_owned(),
                    m["owner"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn health_is_open_and_everything_else_needs_a_key() {
    let api = Api::start("auth", 64 * 1024);
    let health = api.raw("GET", "/v1/health", &[], None);
    assert_eq!(
        (health.status, health.json.clone()),
        (200, json!({ "status": "ok" }))
    );

    let none = api.raw("GET", "/v1/users", &[], None);
    assert_eq!(none.status, 401);
    assert!(none.error().contains("Authorization"), "{none:?}");
    for bad in [
        "Basic YWRtaW46YWRtaW4=",
        "Bearer",
        "Bearer ",
        "mk_abc",
        "Bearer mk_not_a_key",
    ] {
        let r = api.raw("GET", "/v1/cubes", &[("Authorization", bad)], None);
        assert_eq!(r.status, 401, "{bad}: {r:?}");
        assert!(!r.error().is_empty());
    }
    let unknown = api.call("GET", "/v1/users", "mk_0123456789abcdef", None);
    assert_eq!((unknown.status, unknown.error()), (401, "unknown API key"));
    // Authentication comes before the body is looked at.
    let r = api.raw("POST", "/v1/memories", &[], Some(b"{not json".to_vec()));
    assert_eq!(r.status, 401, "{r:?}");
    for (method, path) in [
        ("POST", "/v1/search"),
        ("GET", "/v1/memories/00000000000000000000000000000000"),
        ("DELETE", "/v1/memories/00000000000000000000000000000000"),
        ("GET", "/v1/audit"),
        ("POST", "/v1/cubes/1/share"),
    ] {
        assert_eq!(
            api.raw(method, path, &[], None).status,
            401,
            "{method} {path}"
        );
    }

    // The admin key works; a user's key is not an admin's.
    let (key, id, _) = api.user("alice");
    let me = api.call("GET", "/v1/users", &key, None);
    assert_eq!(me.status, 200);
    assert_eq!(
        me.json.as_array().map(Vec::len),
        Some(1),
        "a user lists only themself: {me:?}"
    );
    assert_eq!(me.json[0]["id"].as_u64(), Some(id));
    let all = api.call("GET", "/v1/users", &api.admin_key, None);
    assert_eq!(all.json.as_array().map(Vec::len), Some(2), "{all:?}");
    let r = api.call(
        "POST",
        "/v1/users",
        &key,
        Some(json!({ "name": "mallory" })),
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(api.call("GET", "/v1/audit", &key, None).status, 403);
    let taken = api.call(
        "POST",
        "/v1/users",
        &api.admin_key,
        Some(json!({ "name": "alice" })),
    );
    assert_eq!(taken.status, 409, "{taken:?}");
    let bad_name = api.call(
        "POST",
        "/v1/users",
        &api.admin_key,
        Some(json!({ "name": "a b" })),
    );
    assert_eq!(bad_name.status, 400, "{bad_name:?}");
}

#[test]
fn memory_lifecycle_over_http() {
    let api = Api::start("lifecycle", 64 * 1024);
    let (key, alice, cube) = api.user("alice");

    // Cubes: a second one, owned by the caller by default.
    let work = api.call("POST", "/v1/cubes", &key, Some(json!({ "name": "work" })));
    assert_eq!(work.status, 201, "{work:?}");
    assert_eq!(work.json["owner"].as_u64(), Some(alice));
    let again = api.call("POST", "/v1/cubes", &key, Some(json!({ "name": "work" })));
    assert_eq!(again.status, 409, "{again:?}");
    let listed = api.call("GET", "/v1/cubes", &key, None);
    assert_eq!(listed.json.as_array().map(Vec::len), Some(2), "{listed:?}");

    // Add, duplicate, get, search.
    let id = api.add(&key, cube, "My dog is called Biscuit.");
    assert!(id.len() == 32 && id.parse::<MemoryId>().is_ok(), "{id}");
    api.add(&key, cube, "I painted a sunrise last week.");
    let dup = api.call(
        "POST",
        "/v1/memories",
        &key,
        Some(json!({ "namespace": cube, "text": "my dog is called   BISCUIT" })),
    );
    assert_eq!(dup.status, 200, "{dup:?}");
    assert_eq!(
        (dup.json["duplicate"].clone(), dup.json["id"].clone()),
        (json!(true), json!(id))
    );
    let got = api.call("GET", &format!("/v1/memories/{id}"), &key, None);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.json["text"], "My dog is called Biscuit.");
    assert_eq!(
        (got.json["version"].as_u64(), got.json["hits"].as_u64()),
        (Some(1), Some(1))
    );
    let hits = api.search(&key, json!({ "query": "what is my dog called?" }));
    assert_eq!(hits[0].0, "My dog is called Biscuit.");

    // Update, history, rollback.
    let v2 = api.call(
        "PUT",
        &format!("/v1/memories/{id}"),
        &key,
        Some(json!({ "text": "My dog is called Pretzel now." })),
    );
    assert_eq!(
        (v2.status, v2.json["version"].as_u64()),
        (200, Some(2)),
        "{v2:?}"
    );
    assert!(api.search(&key, json!({ "query": "Biscuit" })).is_empty());
    let history = api.call("GET", &format!("/v1/memories/{id}/history"), &key, None);
    let versions: Vec<(u64, String)> = history
        .json
        .as_array()
        .expect("history")
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap_or(0),
                v["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            (1, "My dog is called Biscuit.".to_owned()),
            (2, "My dog is called Pretzel now.".to_owned())
        ]
    );
    let back = api.call(
        "POST",
        &format!("/v1/memories/{id}/rollback"),
        &key,
        Some(json!({ "version": 1 })),
    );
    assert_eq!(
        (back.status, back.json["version"].as_u64()),
        (200, Some(3)),
        "{back:?}"
    );
    assert_eq!(back.json["text"], "My dog is called Biscuit.");
    let nine = api.call(
        "POST",
        &format!("/v1/memories/{id}/rollback"),
        &key,
        Some(json!({ "version": 9 })),
    );
    assert_eq!(nine.status, 400);
    assert!(nine.error().contains("no version 9"), "{nine:?}");

    // Expiry: in the future (number or "30d"), then both or neither → 400.
    let path = format!("/v1/memories/{id}/expire");
    let later = api.call("POST", &path, &key, Some(json!({ "ttl_ms": 60_000 })));
    assert_eq!(
        (later.status, later.json["deleted"].clone()),
        (200, json!(false)),
        "{later:?}"
    );
    let at = later.json["expires_at"].as_i64().expect("expires_at");
    let got = api.call("GET", &format!("/v1/memories/{id}"), &key, None);
    assert_eq!(got.json["expires_at"].as_i64(), Some(at));
    let days = api.call("POST", &path, &key, Some(json!({ "ttl_ms": "30d" })));
    assert_eq!(days.status, 200, "{days:?}");
    for body in [
        json!({}),
        json!({ "ttl_ms": 1, "at": 1 }),
        json!({ "ttl_ms": -5 }),
        json!({ "ttl_ms": "soon" }),
    ] {
        let r = api.call("POST", &path, &key, Some(body.clone()));
        assert_eq!(r.status, 400, "{body}: {r:?}");
    }

    // Tags and time filters reach the runtime.
    let tagged = api.call(
        "POST",
        "/v1/memories",
        &key,
        Some(json!({ "namespace": cube, "text": "Hiking trip to the lake", "tags": ["outdoor"], "time": 1_683_504_000_000i64 })),
    );
    assert_eq!(tagged.status, 201, "{tagged:?}");
    assert_eq!(
        api.search(&key, json!({ "query": "hiking", "tags": ["outdoor"] }))
            .len(),
        1
    );
    assert!(
        api.search(&key, json!({ "query": "hiking", "tags": ["indoor"] }))
            .is_empty()
    );
    let since = json!({ "query": "hiking", "since": 1_700_000_000_000i64 });
    let later = api.call("POST", "/v1/search", &key, Some(since));
    let texts = later.json.as_array().map(|h| {
        h.iter()
            .map(|h| h["memory"]["text"].to_string())
            .collect::<Vec<_>>()
    });
    assert!(
        texts.is_some_and(|t| !t.iter().any(|t| t.contains("Hiking"))),
        "{later:?}"
    );

    // Hard delete; expire-now deletes too.
    let del = api.call("DELETE", &format!("/v1/memories/{id}"), &key, None);
    assert_eq!(
        (del.status, del.json["versions"].as_u64()),
        (200, Some(3)),
        "{del:?}"
    );
    let gone = api.call("GET", &format!("/v1/memories/{id}"), &key, None);
    assert_eq!(gone.status, 404);
    assert!(gone.error().contains("not found"), "{gone:?}");
    assert_eq!(
        api.call("DELETE", &format!("/v1/memories/{id}"), &key, None)
            .status,
        404
    );
    assert!(
        api.search(&key, json!({ "query": "dog Biscuit" }))
            .is_empty()
    );
    let sunrise = api.search(&key, json!({ "query": "sunrise", "k": 1 }));
    assert_eq!(sunrise.len(), 1);
    let tid = tagged.json["id"].as_str().expect("id");
    let now = api.call(
        "POST",
        &format!("/v1/memories/{tid}/expire"),
        &key,
        Some(json!({ "at": 0 })),
    );
    assert_eq!(
        (now.status, now.json["deleted"].clone()),
        (200, json!(true)),
        "{now:?}"
    );
    assert_eq!(
        api.call("GET", &format!("/v1/memories/{tid}"), &key, None)
            .status,
        404
    );

    // The audit log saw it, pages by `from` and `limit`.
    let log = api.call("GET", "/v1/audit?from=0&limit=1000", &api.admin_key, None);
    assert_eq!(log.status, 200);
    let entries = log.json.as_array().expect("entries");
    for action in ["add", "update", "rollback", "delete", "expire", "search"] {
        assert!(
            entries
                .iter()
                .any(|e| e["action"] == action && e["actor"] == alice),
            "{action}"
        );
    }
    let page = api.call("GET", "/v1/audit?from=3&limit=2", &api.admin_key, None);
    let seqs: Vec<u64> = page
        .json
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [3, 4]);
    for q in ["limit=0", "from=x", "page=2"] {
        let r = api.call("GET", &format!("/v1/audit?{q}"), &api.admin_key, None);
        assert_eq!(r.status, 400, "{q}: {r:?}");
    }
}

#[test]
fn dedup_is_visible_and_chosen_per_request_over_http() {
    let api = Api::start("dedup", 65536);
    let (key, _, cube) = api.user("alice");
    let post = |body: Value| api.call("POST", "/v1/memories", &key, Some(body));
    let first = post(json!({ "namespace": cube, "text": "My locker number is 214." }));
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(
        (first.json["action"].clone(), first.json["version"].clone()),
        (json!("stored"), json!(1))
    );
    // The same text merges (200, the existing id)…
    let same = post(json!({ "namespace": cube, "text": "my locker number is 214" }));
    assert_eq!(same.status, 200, "{same:?}");
    assert_eq!(
        (same.json["action"].clone(), same.json["id"].clone()),
        (json!("merged"), first.json["id"].clone())
    );
    // …unless the request says `off`: then it is a new memory.
    let off =
        post(json!({ "namespace": cube, "text": "My locker number is 214.", "dedup": "off" }));
    assert_eq!(off.status, 201, "{off:?}");
    assert_eq!(off.json["action"], "stored");
    assert_ne!(off.json["id"], first.json["id"]);
    // Another text is kept under `exact` (and, without an embedder, `near`).
    for mode in ["exact", "near"] {
        let text = format!("My locker number is 241 ({mode}).");
        let r = post(json!({ "namespace": cube, "text": text, "dedup": mode }));
        assert_eq!(
            (r.status, r.json["action"].clone()),
            (201, json!("stored")),
            "{r:?}"
        );
    }
    // The cube by name, or left out (the caller's "default"), as on the
    // CLI; an unknown name is a 404.
    for body in [
        json!({ "namespace": "default", "text": "My bike is green." }),
        json!({ "text": "My bike has a bell." }),
    ] {
        let r = post(body);
        assert_eq!(r.status, 201, "{r:?}");
        let got = api.call(
            "GET",
            &format!("/v1/memories/{}", r.json["id"].as_str().unwrap_or("")),
            &key,
            None,
        );
        assert_eq!(got.json["namespace"].as_u64(), Some(cube), "{got:?}");
    }
    let nowhere = post(json!({ "namespace": "holidays", "text": "x" }));
    assert_eq!(nowhere.status, 404, "{nowhere:?}");
    let bad = post(json!({ "namespace": cube, "text": "x", "dedup": "fuzzy" }));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.error().contains("unknown variant"), "{bad:?}");
}

#[test]
fn user_b_never_sees_user_a_over_http() {
    let api = Api::start("leaks", 64 * 1024);
    let (ka, alice, a_cube) = api.user("alice");
    let (kb, bob, b_cube) = api.user("bob");
    let secret = "Alice keeps the spare key under the blue flowerpot";
    let id = api.add(&ka, a_cube, secret);
    api.add(&kb, b_cube, "Bob likes blue bicycles");

    let mut leaks = Vec::new();
    let mut expect = |what: &str, r: Reply, want: u16| {
        let text = r.json.to_string();
        if r.status != want || text.contains("flowerpot") {
            leaks.push(format!("{what}: {} {text}", r.status));
        }
    };
    let m = format!("/v1/memories/{id}");
    expect("get", api.call("GET", &m, &kb, None), 404);
    expect(
        "history",
        api.call("GET", &format!("{m}/history"), &kb, None),
        404,
    );
    expect(
        "update",
        api.call("PUT", &m, &kb, Some(json!({ "text": "pwned" }))),
        404,
    );
    expect(
        "rollback",
        api.call(
            "POST",
            &format!("{m}/rollback"),
            &kb,
            Some(json!({ "version": 1 })),
        ),
        404,
    );
    expect(
        "expire",
        api.call(
            "POST",
            &format!("{m}/expire"),
            &kb,
            Some(json!({ "at": 0 })),
        ),
        404,
    );
    expect(
        "expire later",
        api.call(
            "POST",
            &format!("{m}/expire"),
            &kb,
            Some(json!({ "ttl_ms": 5 })),
        ),
        404,
    );
    expect("delete", api.call("DELETE", &m, &kb, None), 404);
    let into_a = json!({ "namespace": a_cube, "text": "Bob was here" });
    expect(
        "add into A",
        api.call("POST", "/v1/memories", &kb, Some(into_a.clone())),
        404,
    );
    let share = json!({ "user": bob, "access": "read_write" });
    expect(
        "share A's cube",
        api.call(
            "POST",
            &format!("/v1/cubes/{a_cube}/share"),
            &kb,
            Some(share),
        ),
        404,
    );
    expect("audit", api.call("GET", "/v1/audit", &kb, None), 403);
    let cube_for_a = json!({ "name": "sneaky", "owner": alice });
    expect(
        "cube for A",
        api.call("POST", "/v1/cubes", &kb, Some(cube_for_a)),
        403,
    );
    for q in ["spare key flowerpot", "blue", "Alice", "key"] {
        for body in [
            json!({ "query": q, "k": 100 }),
            json!({ "query": q, "k": 100, "namespaces": [a_cube] }),
        ] {
            let r = api.call("POST", "/v1/search", &kb, Some(body.clone()));
            let foreign = r.json.as_array().map_or(0, |h| {
                h.iter().filter(|h| h["memory"]["owner"] != bob).count()
            });
            if r.status != 200 || foreign > 0 {
                leaks.push(format!("search {body}: {} {}", r.status, r.json));
            }
        }
    }
    let cubes = api.call("GET", "/v1/cubes", &kb, None);
    if cubes
        .json
        .as_array()
        .is_none_or(|c| c.iter().any(|c| c["owner"] != bob))
    {
        leaks.push(format!("cubes: {}", cubes.json));
    }
    let users = api.call("GET", "/v1/users", &kb, None);
    if users
        .json
        .as_array()
        .is_none_or(|u| u.iter().any(|u| u["id"] != bob))
    {
        leaks.push(format!("users: {}", users.json));
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    let intact = api.call("GET", &m, &ka, None);
    assert_eq!(
        (intact.status, intact.json["text"].as_str()),
        (200, Some(secret))
    );
    assert!(intact.json["expires_at"].is_null(), "{intact:?}");

    // Shared read-only: visible and findable, not writable.
    let share = api.call(
        "POST",
        &format!("/v1/cubes/{a_cube}/share"),
        &ka,
        Some(json!({ "user": bob, "access": "read" })),
    );
    assert_eq!(share.status, 200, "{share:?}");
    assert_eq!(share.json["readers"], json!([bob]));
    let seen = api.call("GET", &m, &kb, None);
    assert_eq!(
        (seen.status, seen.json["text"].as_str()),
        (200, Some(secret))
    );
    assert!(
        api.search(&kb, json!({ "query": "flowerpot" }))
            .iter()
            .any(|(t, _)| t == secret)
    );
    let only_a = api.search(&kb, json!({ "query": "blue", "namespaces": [a_cube] }));
    assert_eq!(only_a, [(secret.to_owned(), alice)]);
    assert_eq!(
        api.call("PUT", &m, &kb, Some(json!({ "text": "x" })))
            .status,
        403
    );
    assert_eq!(api.call("DELETE", &m, &kb, None).status, 403);
    assert_eq!(
        api.call("POST", "/v1/memories", &kb, Some(into_a.clone()))
            .status,
        403
    );
    // Read-write, naming Bob by his user name: Bob adds into Alice's cube.
    let rw = api.call(
        "POST",
        &format!("/v1/cubes/{a_cube}/share"),
        &ka,
        Some(json!({ "user": "bob", "access": "read_write" })),
    );
    assert_eq!(rw.status, 200, "{rw:?}");
    assert_eq!(rw.json["writers"], json!([bob]));
    let nobody = api.call(
        "POST",
        &format!("/v1/cubes/{a_cube}/share"),
        &ka,
        Some(json!({ "user": "nobody", "access": "read" })),
    );
    assert_eq!(nobody.status, 404, "{nobody:?}");
    assert_eq!(
        api.call("POST", "/v1/memories", &kb, Some(into_a)).status,
        201
    );
    // Revoked: gone again.
    let none = api.call(
        "POST",
        &format!("/v1/cubes/{a_cube}/share"),
        &ka,
        Some(json!({ "user": bob, "access": "none" })),
    );
    assert_eq!(none.status, 200, "{none:?}");
    assert_eq!(api.call("GET", &m, &kb, None).status, 404);
    assert!(api.search(&kb, json!({ "query": "flowerpot" })).is_empty());
    let bad = api.call(
        "POST",
        &format!("/v1/cubes/{a_cube}/share"),
        &ka,
        Some(json!({ "user": bob, "access": "all" })),
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.error().contains("unknown variant"), "{bad:?}");
}

#[test]
fn bad_input_gets_a_clear_json_error() {
    let api = Api::start("bad", 4096);
    let (key, _, cube) = api.user("alice");
    let auth = format!("Bearer {key}");
    let json_headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let post = |path: &str, body: &str| {
        api.raw("POST", path, &json_headers, Some(body.as_bytes().to_vec()))
    };

    // Over the limit: 413 naming it; the server stays usable.
    let big = json!({ "namespace": cube, "text": "a".repeat(12_000) }).to_string();
    let r = post("/v1/memories", &big);
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.error().contains("4096 bytes"), "{r:?}");
    let r = post(
        "/v1/search",
        &format!("{{\"query\": \"{}\"}}", "x".repeat(300_000)),
    );
    assert_eq!(r.status, 413, "{r:?}");
    let small = json!({ "namespace": cube, "text": "a".repeat(3000) }).to_string();
    assert_eq!(post("/v1/memories", &small).status, 201);

    // Malformed JSON, wrong types, missing and unknown fields: 400 with
    // serde's message and position.
    let cases = [
        (
            "/v1/memories",
            "{\"namespace\": 1, \"text\": ",
            "line 1 column",
        ),
        (
            "/v1/memories",
            "{\"namespace\": 1 \"text\": \"x\"}",
            "malformed JSON",
        ),
        ("/v1/memories", "not json at all", "malformed JSON"),
        ("/v1/memories", "", "request body"),
        (
            "/v1/memories",
            "{\"namespace\": true, \"text\": \"x\"}",
            "did not match any variant",
        ),
        ("/v1/memories", "{\"namespace\": 1}", "missing field `text`"),
        (
            "/v1/memories",
            "{\"namespace\": 1, \"text\": \"x\", \"colour\": \"red\"}",
            "unknown field `colour`",
        ),
        (
            "/v1/search",
            "{\"query\": \"x\", \"limit\": 3}",
            "unknown field `limit`",
        ),
        ("/v1/search", "[1, 2]", "invalid type"),
        ("/v1/users", "{\"name\": 7}", "invalid type"),
        (
            "/v1/cubes",
            "{\"name\": \"c\", \"owner\": true}",
            "a user id (a whole number) or a user name",
        ),
    ];
    for (path, body, needle) in cases {
        let r = post(path, body);
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(
            r.error().contains(needle),
            "{body}: want {needle:?} in {:?}",
            r.error()
        );
    }
    // Runtime validation: 400 with the runtime's message.
    let empty = post(
        "/v1/memories",
        &json!({ "namespace": cube, "text": "  " }).to_string(),
    );
    assert_eq!(
        (empty.status, empty.error()),
        (400, "invalid request: the memory text is empty")
    );
    let k0 = post("/v1/search", "{\"query\": \"x\", \"k\": 0}");
    assert_eq!(k0.status, 400);
    assert!(k0.error().contains("k must be"), "{k0:?}");
    let nowhere = post("/v1/memories", "{\"namespace\": 999, \"text\": \"lost\"}");
    assert_eq!(nowhere.status, 404, "{nowhere:?}");

    // Not JSON at all: 415.
    let body = Some(b"{\"query\": \"x\"}".to_vec());
    let r = api.raw(
        "POST",
        "/v1/search",
        &[("Authorization", auth.as_str())],
        body.clone(),
    );
    assert_eq!(r.status, 415, "{r:?}");
    assert!(r.error().contains("application/json"), "{r:?}");
    let plain = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "text/plain"),
    ];
    assert_eq!(
        api.raw("POST", "/v1/search", &plain, body.clone()).status,
        415
    );
    let utf8 = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json; charset=utf-8"),
    ];
    assert_eq!(api.raw("POST", "/v1/search", &utf8, body).status, 200);

    // A TTL of 0 would acknowledge a memory that is already gone, and a
    // negative time is no time: both refused before anything is stored.
    for (body, says) in [
        (
            json!({ "namespace": cube, "text": "gone", "ttl_ms": 0 }),
            "ttl_ms must be at least 1",
        ),
        (
            json!({ "namespace": cube, "text": "when", "time": -5 }),
            "time must be epoch",
        ),
    ] {
        let r = api.call("POST", "/v1/memories", &key, Some(body));
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.error().contains(says), "{r:?}");
    }

    // Bad ids in paths: 400 naming the form.
    let r = api.call("GET", "/v1/memories/not-an-id", &key, None);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("32 hex digits"), "{r:?}");
    let r = api.call(
        "POST",
        "/v1/cubes/abc/share",
        &key,
        Some(json!({ "user": 1, "access": "read" })),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("not a cube id"), "{r:?}");

    // Unknown routes: JSON 404 (with or without a key); wrong method: 405.
    for path in ["/v1/nope", "/", "/v1/memories/abc/def/ghi", "/v2/health"] {
        let r = api.raw("GET", path, &[], None);
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert!(r.error().contains("no route"), "{r:?}");
    }
    let r = api.call("DELETE", "/v1/search", &key, None);
    assert_eq!(r.status, 405, "{r:?}");
    assert!(r.error().contains("not allowed"), "{r:?}");
    assert!(r.allow.contains("POST"), "{r:?}");
    let r = api.raw("PATCH", "/v1/health", &[], None);
    assert_eq!(r.status, 405, "{r:?}");
    assert!(!r.error().is_empty());
}

/// Adds from several threads while the server shuts down: every add
/// acknowledged before the shutdown is in the vault; shutdown returns Ok
/// and frees the port.
#[test]
fn shutdown_is_graceful() {
    let mut api = Api::start("shutdown", 64 * 1024);
    let (key, _, cube) = api.user("alice");
    let server = api.server.take().expect("server");
    let addr = server.addr();

    // The address is taken while it runs.
    let twice = Server::start(api.rt.clone(), &addr.to_string(), 1024);
    assert!(matches!(twice, Err(ServerError::Bind { .. })), "{twice:?}");

    let base = api.base.clone();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (key, base) = (key.clone(), base.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut acked = Vec::new();
                for i in 0.. {
                    let body = json!({ "namespace": cube, "text": format!("shutdown writer {t} note {i}") });
                    let resp = agent
                        .post(format!("{base}/v1/memories"))
                        .header("Authorization", format!("Bearer {key}"))
                        .header("Content-Type", "application/json")
                        .send(body.to_string());
                    match resp {
                        Ok(r) if r.status().as_u16() == 201 => {
                            let text = r.into_body().read_to_string().unwrap_or_default();
                            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                            acked.push(v["id"].as_str().unwrap_or("").to_owned());
                        }
                        Ok(r) => panic!("add answered {} during shutdown", r.status()),
                        Err(_) => break, // the server has stopped accepting
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    server.shutdown().expect("graceful shutdown");
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.join().expect("writer thread"));
    }
    assert!(!acked.is_empty(), "the writers got some adds in");
    let alice = api.rt.authenticate(&key).expect("key");
    let missing = acked
        .iter()
        .filter(|id| {
            id.parse::<MemoryId>()
                .map_or(true, |id| api.rt.get(&alice, id).is_err())
        })
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged adds lost",
        acked.len()
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still listening"
    );
    // The port is free again.
    let again = Server::start(api.rt.clone(), &addr.to_string(), 1024).expect("rebind");
    again.shutdown().expect("shutdown");
}

/// `wait` returns (gracefully) on SIGTERM.
#[test]
fn wait_returns_on_sigterm() {
    // Install tokio's process-wide SIGTERM handler first, so a signal sent
    // before `wait` has registered cannot kill the test process.
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let _guard = {
        let _in = tokio_rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal")
    };
    let mut api = Api::start("sigterm", 64 * 1024);
    let server = api.server.take().expect("server");
    let addr = server.addr();
    let waiter = std::thread::spawn(move || server.wait());
    assert_eq!(api.raw("GET", "/v1/health", &[], None).status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waiter.is_finished() {
        assert!(
            Instant::now() < deadline,
            "wait did not return after SIGTERM"
        );
        // The shell's builtin `kill`: no procps package needed.
        let sent = std::process::Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", std::process::id())])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        std::thread::sleep(Duration::from_millis(200));
    }
    waiter.join().expect("wait thread").expect("wait");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still listening"
    );
}

#[test]
fn load_has_no_errors_and_loses_no_writes() {
    let api = Api::start("load", 64 * 1024);
    let users: Vec<LoadUser> = ["ann", "ben", "cat", "dan"]
        .iter()
        .map(|name| {
            let (key, _, cube) = api.user(name);
            LoadUser {
                api_key: key,
                namespace: NamespaceId(cube),
            }
        })
        .collect();
    let opts = LoadOptions {
        clients: 8,
        duration: Duration::from_secs(3),
        mix: vec![(Op::Add, 1), (Op::Search, 1)],
        ..LoadOptions::default()
    };
    let addr = api.server.as_ref().expect("server").addr();
    let report = load::run(addr, &users, &opts).expect("load runs");
    println!("{report}");
    println!("{}", serde_json::to_string(&report).expect("json"));
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.lost_writes, 0, "{report}");
    assert!(
        report.acknowledged_writes > 0 && report.verified_writes == report.acknowledged_writes,
        "{report}"
    );
    for op in [Op::Add, Op::Search] {
        let o = report.ops.iter().find(|o| o.op == op).expect("op ran");
        assert!(
            o.requests > 0 && o.p50_ms > 0.0 && o.p50_ms <= o.p95_ms && o.p95_ms <= o.max_ms,
            "{report}"
        );
    }
    // Against a stopped server every request is an error, and the
    // report says so (the counters can fail the test).
    let mut api = api;
    api.server
        .take()
        .expect("server")
        .shutdown()
        .expect("shutdown");
    let short = LoadOptions {
        clients: 2,
        duration: Duration::from_millis(300),
        timeout: Duration::from_secs(2),
        ..LoadOptions::default()
    };
    let down = load::run(addr, &users, &short).expect("load runs");
    println!("{down}");
    assert!(down.requests > 0 && down.errors == down.requests, "{down}");
    assert_eq!(down.acknowledged_writes, 0);
}

/// A signed one-memory module `sailing` at `version`, and its publisher key.
fn sailing_module(dir: &std::path::Path, version: &str) -> (Vec<u8>, String) {
    use memkern_runtime::modules::{self, Item, Manifest};
    let path = dir.join(format!("publisher-{version}.key"));
    let _ = std::fs::remove_file(&path);
    let public = memkern_runtime::pack::generate_key(&path).expect("keygen");
    let key = memkern_runtime::pack::load_key(&path).expect("key");
    let manifest = Manifest {
        id: "sailing".to_owned(),
        name: "Sailing basics".to_owned(),
        version: version.to_owned(),
        publisher: public.clone(),
        licence: "CC-BY-4.0".to_owned(),
        description: String::new(),
        language: "en".to_owned(),
    };
    let items = [Item {
        text: "A bowline makes a fixed loop that does not slip.".to_owned(),
        source: Some("knots.md".to_owned()),
        tags: Vec::new(),
    }];
    let (file, _) = modules::build_module(
        &manifest,
        memkern_core::time::Timestamp(0),
        &items,
        None,
        &modules::Extras::default(),
        &key,
        |_| {},
    )
    .expect("build");
    (file, public)
}

#[test]
fn modules_over_http_install_read_only_and_remove() {
    let api = Api::start("modules", 65536);
    let (alice, _, _) = api.user("alice");
    let (bob, _, _) = api.user("bob");
    std::fs::create_dir_all(&api.dir).expect("dir");
    let (file, public) = sailing_module(&api.dir, "1.0.0");
    let upload = |key: &str, query: &str, body: &[u8], content_type: &str| {
        let auth = format!("Bearer {key}");
        api.raw(
            "POST",
            &format!("/v1/modules{query}"),
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", content_type),
            ],
            Some(body.to_vec()),
        )
    };
    const BIN: &str = "application/octet-stream";

    // Untrusted, then trusted by the administrator only.
    let r = upload(&alice, "", &file, BIN);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("does not trust"), "{r:?}");
    let trust = json!({ "key": public, "name": "school" });
    assert_eq!(
        api.call("POST", "/v1/publishers", &alice, Some(trust.clone()))
            .status,
        403
    );
    let r = api.call("POST", "/v1/publishers", &api.admin_key, Some(trust));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        api.call("GET", "/v1/publishers", &bob, None).json[0]["key"],
        public
    );

    // Bad uploads: JSON content type, damaged file, global as a user.
    assert_eq!(upload(&alice, "", &file, "application/json").status, 415);
    let mut damaged = file.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 4;
    let r = upload(&alice, "", &damaged, BIN);
    assert!(r.status == 400 && r.error().contains("checksum"), "{r:?}");
    assert_eq!(upload(&alice, "?global=true", &file, BIN).status, 403);
    assert_eq!(upload(&alice, "?for=bob", &file, BIN).status, 403);
    assert_eq!(upload(&alice, "?colour=red", &file, BIN).status, 400);

    // Alice installs it for herself.
    let r = upload(&alice, "", &file, BIN);
    assert_eq!(
        (r.status, r.json["action"].as_str()),
        (201, Some("installed")),
        "{r:?}"
    );
    let r = upload(&alice, "", &file, BIN);
    assert_eq!(
        (r.status, r.json["action"].as_str()),
        (200, Some("already_installed"))
    );
    let mods = api.call("GET", "/v1/modules", &alice, None);
    assert_eq!(mods.json[0]["manifest"]["id"], "sailing", "{mods:?}");
    assert_eq!(api.call("GET", "/v1/modules", &bob, None).json, json!([]));
    assert_eq!(
        api.call("GET", "/v1/modules/sailing", &bob, None).status,
        404
    );
    let hits = api.call(
        "POST",
        "/v1/search",
        &alice,
        Some(json!({ "query": "bowline loop", "k": 3 })),
    );
    let hit = &hits.json[0]["memory"];
    assert_eq!(
        (hit["module"].as_str(), hit["source"].as_str()),
        (Some("sailing"), Some("knots.md"))
    );
    let id = hit["id"].as_str().expect("id").to_owned();
    let r = api.call("DELETE", &format!("/v1/memories/{id}"), &alice, None);
    assert!(r.status == 403 && r.error().contains("read-only"), "{r:?}");
    let none = api.call(
        "POST",
        "/v1/search",
        &bob,
        Some(json!({ "query": "bowline loop", "k": 3 })),
    );
    assert_eq!(none.json, json!([]), "not bob's");

    // Bob cannot remove it; the administrator removes it.
    assert_eq!(
        api.call("DELETE", "/v1/modules/sailing", &bob, None).status,
        404
    );
    let r = api.call("DELETE", "/v1/modules/sailing", &api.admin_key, None);
    assert_eq!(
        (r.status, r.json["removed"].as_bool()),
        (200, Some(true)),
        "{r:?}"
    );
    assert_eq!(api.call("GET", "/v1/modules", &alice, None).json, json!([]));
    let r = api.call(
        "DELETE",
        &format!("/v1/publishers/{public}"),
        &api.admin_key,
        None,
    );
    assert_eq!(r.json["distrusted"], true);
}
