//! The publisher's side: texts (a directory of text/markdown files, a
//! JSON list, a cube's memories) made into a module's memories, embedded
//! and signed, byte for byte the same for the same inputs.

use std::path::Path;

use ed25519_dalek::SigningKey;
use memkern_core::cube::{
    self, Embedding, Int8Vec, MAX_SOURCE_REF_LEN, MAX_TAG_LEN, MAX_TAGS, MAX_TEXT_LEN, Metadata,
    Payload, Plaintext, Sensitivity, SourceKind,
};
use memkern_core::ids::{CubeId, Fingerprint, NamespaceId, UserId};
use memkern_core::lifecycle::LifecycleState;
use memkern_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Derived, Manifest, ModuleBody, encode_module};
use crate::embed::DenseEmbedder;
use crate::{Result, RuntimeError};

/// A chunk of a file is cut at a paragraph end once it is this long.
pub const CHUNK_CHARS: usize = 700;
/// Texts embedded per call.
const EMBED_BATCH: usize = 16;

/// One memory to be: its text, where it came from, its tags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The memory text.
    pub text: String,
    /// Where it came from (a file and section), shown with search hits.
    #[serde(default)]
    pub source: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// What [`build_module`] made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BuildReport {
    /// The module's id.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Memories in it.
    pub memories: usize,
    /// Whether they carry embeddings (otherwise the installer embeds).
    pub embedded: bool,
    /// KV blocks shipped (one per memory per `--kv-model`).
    pub kv_blocks: usize,
    /// Adapters shipped.
    pub adapters: usize,
    /// The file's size.
    pub bytes: usize,
    /// SHA-256 of the file (hex).
    pub sha256: String,
}

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid(format!("module build: {}", msg.into()))
}

/// Items from a JSON file: an array of strings, or of objects with
/// `text` and optional `source` and `tags`.
pub fn items_from_json(bytes: &[u8]) -> Result<Vec<Item>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Text(String),
        Item(Item),
    }
    let entries: Vec<Entry> = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "not a JSON list of texts or {{text, source, tags}}: {e}"
        ))
    })?;
    Ok(entries
        .into_iter()
        .map(|e| match e {
            Entry::Text(text) => Item {
                text,
                source: None,
                tags: Vec::new(),
            },
            Entry::Item(i) => i,
        })
        .collect())
}

/// Items from a pack of a cube (`memkern export`): each memory's current
/// text, tags and source, in the pack's order. Exists so a publisher can
/// curate knowledge as an ordinary cube and publish it as a module. The
/// pack's checksum and signature (if any) are verified; secret memories
/// were already left out by the export.
pub fn items_from_pack(bytes: &[u8]) -> Result<Vec<Item>> {
    let (body, _) = crate::pack::decode_pack(bytes, &[])?;
    let mut items = Vec::with_capacity(body.memories.len());
    for m in &body.memories {
        let Some(head) = m.versions.last() else {
            continue;
        };
        let c = cube::decode_owned(head).map_err(|e| bad(format!("pack: invalid cube: {e}")))?;
        if let Payload::Plaintext(p) = c.payload {
            items.push(Item {
                text: p.text,
                source: c.meta.provenance.source_ref,
                tags: c.meta.tags.into_iter().collect(),
            });
        }
    }
    if items.is_empty() {
        return Err(bad("the pack holds no memories"));
    }
    Ok(items)
}

/// Items from every `.md` and `.txt` file under `dir` (sorted by path, so
/// the order does not depend on the file system): each file cut into
/// chunks of whole paragraphs, a markdown heading starting a new chunk,
/// each chunk prefixed with its file's title and section.
pub fn items_from_dir(dir: &Path) -> Result<Vec<Item>> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut items = Vec::new();
    for rel in files {
        let path = dir.join(&rel);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let name = rel.to_string_lossy().replace('\\', "/");
        items.extend(chunk_file(&name, &text));
    }
    if items.is_empty() {
        return Err(bad(format!(
            "no text in .md or .txt files under {}",
            dir.display()
        )));
    }
    Ok(items)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| bad(format!("cannot list {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("cannot list {}: {e}", dir.display())))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file()
            && path
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("md") || x.eq_ignore_ascii_case("txt"))
            && let Ok(rel) = path.strip_prefix(root)
        {
            out.push(rel.to_path_buf());
        }
    }
    Ok(())
}

/// Cuts one file into items: paragraphs (blank-line separated) gathered
/// up to [`CHUNK_CHARS`]; a markdown heading closes the chunk before it
/// and names the section of the chunks after it; fenced code stays whole.
pub fn chunk_file(name: &str, text: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut title: Option<String> = None;
    let mut section: Option<String> = None;
    let mut chunk = String::new();
    let mut paragraph = String::new();
    let mut in_fence = false;
    let flush_chunk = |chunk: &mut String,
                       items: &mut Vec<Item>,
                       title: &Option<String>,
                       section: &Option<String>| {
        let body = chunk.trim();
        if !body.is_empty() {
            let label = match (title, section) {
                (Some(t), Some(s)) if t != s => format!("{t} › {s}"),
                (Some(t), _) => t.clone(),
                (None, Some(s)) => s.clone(),
                (None, None) => String::new(),
            };
            let text = if label.is_empty() {
                body.to_owned()
            } else {
                format!("{label}: {body}")
            };
            let source = if label.is_empty() {
                name.to_owned()
            } else {
                format!("{name} › {label}")
            };
            items.push(Item {
                text: clip(&text, MAX_TEXT_LEN),
                source: Some(clip(&source, MAX_SOURCE_REF_LEN)),
                tags: Vec::new(),
            });
        }
        chunk.clear();
    };
    let add_paragraph = |paragraph: &mut String,
                         chunk: &mut String,
                         items: &mut Vec<Item>,
                         title: &Option<String>,
                         section: &Option<String>| {
        let p = paragraph.trim();
        if !p.is_empty() {
            if !chunk.is_empty() && chunk.len() + p.len() > CHUNK_CHARS {
                flush_chunk(chunk, items, title, section);
            }
            if !chunk.is_empty() {
                chunk.push('\n');
            }
            chunk.push_str(p);
        }
        paragraph.clear();
    };
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_fence = !in_fence;
        }
        let heading = (!in_fence && trimmed.starts_with('#'))
            .then(|| trimmed.trim_start_matches('#').trim())
            .filter(|h| !h.is_empty());
        if let Some(h) = heading {
            add_paragraph(&mut paragraph, &mut chunk, &mut items, &title, &section);
            flush_chunk(&mut chunk, &mut items, &title, &section);
            if title.is_none() && trimmed.starts_with("# ") {
                title = Some(h.to_owned());
            } else {
                section = Some(h.to_owned());
            }
        } else if line.trim().is_empty() && !in_fence {
            add_paragraph(&mut paragraph, &mut chunk, &mut items, &title, &section);
        } else {
            paragraph.push_str(line);
            paragraph.push('\n');
        }
    }
    add_paragraph(&mut paragraph, &mut chunk, &mut items, &title, &section);
    flush_chunk(&mut chunk, &mut items, &title, &section);
    items
}

/// `s` cut to at most `max` bytes at a character boundary.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A memory's id in the module: the same for the same module, position
/// and text, so a rebuild gives the same file.
fn item_id(module: &str, index: usize, text: &str) -> CubeId {
    let mut h = Sha256::new();
    h.update(b"memkern module memory\0");
    h.update(module.as_bytes());
    h.update([0]);
    h.update((index as u64).to_be_bytes());
    h.update(text.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    CubeId(id)
}

/// Model-bound derivatives a build ships beside the memories.
///
/// Exists so a publisher can spare every buyer's device the prefill of
/// the module's text (KV blocks) or give it a skill (a LoRA adapter),
/// for the models the publisher names; other models ignore them.
#[derive(Default)]
pub struct Extras<'a> {
    /// Models to derive one KV block per memory for (the prefix *system
    /// header + that memory's line* a turn would prefill).
    pub kv_models: Vec<&'a memkern_models::Llm>,
    /// memkern adapter files (safetensors, as `memkern distill
    /// --export-adapter` writes them), each bound to its base model.
    pub adapters: Vec<Vec<u8>>,
}

/// An id derived from the module id and `parts`: the same for the same
/// inputs, so a rebuild gives the same file.
fn derived_id(domain: &str, module: &str, parts: &[&[u8]]) -> CubeId {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0]);
    h.update(module.as_bytes());
    for p in parts {
        h.update([0]);
        h.update(p);
    }
    let d: [u8; 32] = h.finalize().into();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    CubeId(id)
}

/// A derivative cube of the module's memories `parents`.
fn derived_cube(
    id: CubeId,
    released: Timestamp,
    parents: &[CubeId],
    payload: Payload<String, Vec<u8>>,
    blob: Vec<u8>,
) -> Result<Derived> {
    let mut meta: Metadata<String> = Metadata::new(
        id,
        UserId(0),
        NamespaceId(0),
        released,
        released,
        SourceKind::Derived,
    );
    for p in parents {
        meta.provenance
            .parents
            .push(*p)
            .map_err(|_| bad("a derivative has at most 8 parents"))?;
    }
    let cube = cube::encode_to_vec(&cube::Cube { meta, payload })
        .map_err(|e| bad(format!("derivative {id}: {e}")))?;
    Ok(Derived { cube, blob })
}

/// The derivatives `extras` asks for over `memories` (id, text).
fn derivatives(
    module: &str,
    released: Timestamp,
    memories: &[(CubeId, String)],
    extras: &Extras<'_>,
) -> Result<Vec<Derived>> {
    let mut out = Vec::new();
    for llm in &extras.kv_models {
        let fp = llm.fingerprint();
        for (id, text) in memories {
            let snap = crate::chat::prefix_snapshot(llm, &[(text.as_str(), released)])?;
            out.push(derived_cube(
                derived_id("memkern module kv", module, &[&id.0, &fp.0]),
                released,
                &[*id],
                Payload::Activation(snap.activation_payload()),
                snap.bytes().to_vec(),
            )?);
        }
    }
    for (n, file) in extras.adapters.iter().enumerate() {
        let p = memkern_models::lora::parametric_of_file(file)
            .map_err(|e| bad(format!("adapter {}: {e}", n + 1)))?;
        // An adapter is the module's as a whole: it names the first memory
        // as its parent, so removing the module removes it.
        let Some((first, _)) = memories.first() else {
            return Err(bad("an adapter needs at least one memory"));
        };
        out.push(derived_cube(
            derived_id("memkern module adapter", module, &[&p.blob.digest.0]),
            released,
            &[*first],
            Payload::Parametric(p),
            file.clone(),
        )?);
    }
    Ok(out)
}

/// Builds and signs a module of `items`, released at `released`, embedded
/// with `embedder` when given (the installer re-embeds only when its own
/// embedder differs), with the derivatives `extras` asks for.
/// Deterministic: the same inputs give the same bytes.
pub fn build_module(
    manifest: &Manifest,
    released: Timestamp,
    items: &[Item],
    embedder: Option<&(dyn DenseEmbedder + Send + Sync)>,
    extras: &Extras<'_>,
    key: &SigningKey,
    mut progress: impl FnMut(usize),
) -> Result<(Vec<u8>, BuildReport)> {
    manifest.check()?;
    if items.is_empty() {
        return Err(bad("no memories to pack"));
    }
    let mut memories = Vec::with_capacity(items.len());
    let mut texts = Vec::with_capacity(items.len());
    for (batch_no, batch) in items.chunks(EMBED_BATCH).enumerate() {
        let vectors: Vec<Option<Embedding<Vec<u8>>>> = match embedder {
            Some(e) => {
                let texts: Vec<&str> = batch.iter().map(|i| i.text.as_str()).collect();
                let fp = e.fingerprint().unwrap_or(Fingerprint([0; 16]));
                e.embed(&texts)
                    .map_err(|err| RuntimeError::Embed(err.to_string()))?
                    .iter()
                    .map(|v| {
                        crate::index::quantize(v).map(|(q, scale)| Embedding {
                            embedder: fp,
                            scale,
                            values: Int8Vec(q.into_iter().map(|x| x as u8).collect()),
                        })
                    })
                    .collect()
            }
            None => vec![None; batch.len()],
        };
        for (k, (item, embedding)) in batch.iter().zip(vectors).enumerate() {
            let index = batch_no * EMBED_BATCH + k;
            let text = item.text.trim();
            if text.is_empty() || text.len() > MAX_TEXT_LEN {
                return Err(bad(format!(
                    "memory {} is empty or longer than {MAX_TEXT_LEN} bytes",
                    index + 1
                )));
            }
            let mut meta = Metadata::new(
                item_id(&manifest.id, index, text),
                UserId(0),
                NamespaceId(0),
                released,
                released,
                SourceKind::Document,
            );
            meta.lifecycle = LifecycleState::Activated;
            meta.sensitivity = Sensitivity::Public;
            meta.provenance.source_ref =
                item.source.as_deref().map(|s| clip(s, MAX_SOURCE_REF_LEN));
            if item.tags.len() > MAX_TAGS {
                return Err(bad(format!(
                    "memory {}: at most {MAX_TAGS} tags",
                    index + 1
                )));
            }
            for t in &item.tags {
                if t.is_empty() || t.len() > MAX_TAG_LEN {
                    return Err(bad(format!(
                        "memory {}: tags are 1–{MAX_TAG_LEN} bytes",
                        index + 1
                    )));
                }
                // Bounded by the MAX_TAGS check above.
                let _ = meta.tags.push(t.clone());
            }
            texts.push((meta.id, text.to_owned()));
            let cube = cube::Cube {
                meta,
                payload: Payload::Plaintext(Plaintext {
                    text: text.to_owned(),
                    embedding,
                }),
            };
            memories.push(
                cube::encode_to_vec(&cube)
                    .map_err(|e| bad(format!("memory {}: {e}", index + 1)))?,
            );
        }
        progress(memories.len());
    }
    let derived = derivatives(&manifest.id, released, &texts, extras)?;
    let (kv_blocks, adapters) = (extras.kv_models.len() * texts.len(), extras.adapters.len());
    let body = ModuleBody {
        manifest: manifest.clone(),
        released_ms: released.0,
        memories,
        derived,
    };
    let bytes = encode_module(&body, key)?;
    let report = BuildReport {
        id: manifest.id.clone(),
        version: manifest.version.clone(),
        memories: body.memories.len(),
        embedded: embedder.is_some(),
        kv_blocks,
        adapters,
        bytes: bytes.len(),
        sha256: crate::hex(&Sha256::digest(&bytes)),
    };
    Ok((bytes, report))
}
