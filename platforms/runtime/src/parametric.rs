//! Parametric memory in the runtime: a user's stable memories distilled
//! into a LoRA adapter (a Parametric cube + safetensors blob), applied by
//! `chat`, dropped as soon as a memory it covers changes or is deleted.
//!
//! - Selection is the core's ([`memkern_core::distill::select`]): stable,
//!   used, non-secret, non-expiring memories the user owns, hottest first,
//!   within the count and token budgets of [`ParametricConfig`].
//! - Training pairs come from templates over the memory text
//!   ([`memkern_models::lora::pairs`]); training is
//!   [`memkern_models::lora::Trainer`] on the frozen base model, with a
//!   checkpoint every few steps so an interrupted run resumes.
//! - Commit is one redb transaction: the cube, the user's adapter row, the
//!   covered memories' lifecycle (`Merged`), the audit entry. It is refused
//!   if a covered memory changed or vanished while training ran.
//! - Deletion wins over memorisation: deleting (or changing) a covered
//!   memory drops the adapter in the same transaction (cube and blob go,
//!   the other memories return to `Activated`, the row keeps why), so the
//!   fact is no longer answered; the next distillation starts from scratch
//!   and cannot contain it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use memkern_core::cube::{self, Metadata, Payload, SourceKind, TargetModules};
use memkern_core::distill::{DistillCandidate, DistillPolicy, select};
use memkern_core::governance::{Principal, Role};
use memkern_core::heat::ONE;
use memkern_core::ids::{BlobDigest, CubeId, NamespaceId, UserId};
use memkern_core::lifecycle::LifecycleState;
use memkern_models::lora::{
    self, Adapter, Anchor, LoraConfig, TrainConfig, Trainer, chat_example, pairs::pairs_from_memory,
};
use memkern_models::{Fingerprint, Llm};
use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;

use super::audit::{Event, append};
use super::config::ParametricConfig;
use super::coverage::set_lifecycle;
use super::memories::{HEAT_HALF_LIFE, MemoryId};
use super::tables::{ADAPTERS, AdapterRow, MEMORIES, MemoryRow, decode, encode};
use super::{Result, Runtime, RuntimeError, now, random_id};
use crate::vault::{CUBES, cube_key};

/// Steps between training checkpoints.
const CHECKPOINT_EVERY: usize = 10;

/// Anchors computed on one base model.
pub(crate) struct AnchorCache {
    model: Fingerprint,
    anchors: Vec<Anchor>,
}

/// What `memkern distill` asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DistillRequest {
    /// Only memories of this cube (namespace) of the user.
    pub namespace: Option<NamespaceId>,
    /// Steps (default: the configuration's).
    pub steps: Option<u32>,
    /// LoRA rank (default: the configuration's).
    pub rank: Option<u16>,
    /// Continue an interrupted run of the same selection from its
    /// checkpoint instead of starting over.
    pub resume: bool,
}

/// One training step, for progress reporting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistillProgress {
    /// Steps done.
    pub step: usize,
    /// Steps in all.
    pub steps: usize,
    /// The step's mean per-token loss.
    pub loss: f32,
    /// The step's mean KL divergence from the base model on its anchors
    /// (how far unrelated text drifted; None without anchors).
    pub anchor_kl: Option<f32>,
}

/// What a distillation did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DistillReport {
    /// The new Parametric cube.
    pub adapter: String,
    /// Memories distilled.
    pub memories: Vec<MemoryId>,
    /// Memories offered but not chosen (ineligible or over budget).
    pub skipped: usize,
    /// Training pairs.
    pub pairs: usize,
    /// Steps run in this invocation (fewer than `steps` after a resume).
    pub steps_run: usize,
    /// Steps in all.
    pub steps: usize,
    /// Resumed from a checkpoint.
    pub resumed: bool,
    /// Mean loss of the first and last step run.
    pub loss_first: f32,
    /// See `loss_first`.
    pub loss_last: f32,
    /// Anchors (unrelated texts and questions held to the base model).
    pub anchors: usize,
    /// Anchor divergence (nats per position) of the last step run.
    pub anchor_kl_last: Option<f32>,
    /// Adapter file size.
    pub bytes: u64,
    /// Wall time of training.
    pub train_seconds: f64,
}

/// A user's adapter as `stats` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdapterInfo {
    /// The Parametric cube (none once dropped).
    pub cube: Option<String>,
    /// Adapter file size.
    pub bytes: u64,
    /// Age in seconds.
    pub age_seconds: i64,
    /// Memories it covers.
    pub covers: Vec<MemoryId>,
    /// Why it was dropped (a covered memory changed or was deleted).
    pub stale: Option<String>,
    /// Rank, pairs, steps and first/last loss of the run.
    pub rank: u16,
    /// Training pairs.
    pub pairs: u32,
    /// Steps.
    pub steps: u32,
    /// First step's loss.
    pub loss_first: f32,
    /// Last step's loss.
    pub loss_last: f32,
}

fn lora_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Invalid(format!("parametric memory: {e}"))
}

impl ParametricConfig {
    fn policy(&self) -> DistillPolicy {
        let heat = (self.min_uses * ONE as f32).clamp(0.0, u32::MAX as f32) as u32;
        DistillPolicy {
            min_age_ms: i64::try_from(self.min_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            min_heat: heat,
            max_memories: self.max_memories,
            max_tokens: self.max_tokens,
        }
    }

    fn targets(&self) -> TargetModules {
        let attn = TargetModules::Q
            .union(TargetModules::K)
            .union(TargetModules::V)
            .union(TargetModules::O);
        if self.mlp {
            attn.union(TargetModules::GATE)
                .union(TargetModules::UP)
                .union(TargetModules::DOWN)
        } else {
            attn
        }
    }
}

/// A chosen memory with its head version and training examples.
struct Chosen {
    id: MemoryId,
    head: CubeId,
    namespace: NamespaceId,
    examples: Vec<lora::Example>,
}

impl Runtime {
    fn adapter_row(&self, user: UserId) -> Result<Option<AdapterRow>> {
        let vault = self.vault();
        let txn = vault
            .database()
            .begin_read()
            .map_err(|e| vault.db_error(e))?;
        let table = match txn.open_table(ADAPTERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(vault.db_error(e).into()),
        };
        let Some(v) = table.get(user.0).map_err(|e| vault.db_error(e))? else {
            return Ok(None);
        };
        decode(v.value())
            .map(Some)
            .map_err(|e| RuntimeError::Corrupt(format!("adapter row: {e}")))
    }

    pub(crate) fn check_self_or_admin(&self, who: &Principal, user: UserId) -> Result<()> {
        if who.role == Role::Admin || who.user == user {
            Ok(())
        } else {
            // Another user's adapter is not even said to exist.
            Err(RuntimeError::NotFound {
                what: "user",
                id: user.0.to_string(),
            })
        }
    }

    /// The Parametric cube of `user`'s live adapter, if any (one table
    /// read: what `chat` checks each turn).
    pub fn adapter_cube(&self, user: UserId) -> Result<Option<CubeId>> {
        Ok(self.adapter_row(user)?.and_then(|r| r.cube).map(CubeId))
    }

    /// `user`'s adapter as `stats` shows it (None: never distilled).
    pub fn adapter_info(&self, who: &Principal, user: UserId) -> Result<Option<AdapterInfo>> {
        self.check_self_or_admin(who, user)?;
        Ok(self.adapter_row(user)?.map(|r| AdapterInfo {
            cube: r.cube.map(|c| CubeId(c).to_string()),
            bytes: r.bytes,
            age_seconds: (now().0 - r.created_ms) / 1000,
            covers: r
                .covers
                .iter()
                .map(|k| MemoryId(CubeId(k.to_be_bytes())))
                .collect(),
            stale: r.stale,
            rank: r.rank,
            pairs: r.pairs,
            steps: r.steps,
            loss_first: r.loss_first,
            loss_last: r.loss_last,
        }))
    }

    /// `user`'s live adapter for `llm`, if any: the Parametric cube and its
    /// blob, checked (format, base model, checksum, shapes) before use.
    /// A dropped adapter is `None`; one that fails its checks is an error
    /// (the caller decides whether to go on without it).
    pub fn user_adapter(&self, user: UserId, llm: &Llm) -> Result<Option<(CubeId, Adapter)>> {
        let Some(row) = self.adapter_row(user)? else {
            return Ok(None);
        };
        let Some(cube_id) = row.cube.map(CubeId) else {
            return Ok(None);
        };
        self.adapter_by_cube(cube_id, llm).map(Some)
    }

    /// The adapter Parametric cube `cube_id` holds, for `llm`: checked
    /// (format, base model, checksum, shapes) before use. Exists for the
    /// adapters modules ship, which no user row names.
    pub fn adapter_by_cube(&self, cube_id: CubeId, llm: &Llm) -> Result<(CubeId, Adapter)> {
        let vault = self.vault();
        let bytes = vault
            .get(&cube_id)?
            .ok_or_else(|| RuntimeError::Corrupt(format!("adapter cube {cube_id} missing")))?;
        let c = cube::decode_owned(&bytes)
            .map_err(|e| RuntimeError::Corrupt(format!("adapter cube: {e}")))?;
        let Payload::Parametric(p) = c.payload else {
            return Err(RuntimeError::Corrupt(format!(
                "cube {cube_id} is not a parametric cube"
            )));
        };
        let blob = vault
            .blobs()
            .get(&p.blob.digest)
            .map_err(crate::vault::VaultError::from)?;
        drop(vault);
        let adapter = Adapter::from_cube(&p, &blob, llm.fingerprint(), llm.config(), llm.device())
            .map_err(lora_err)?;
        Ok((cube_id, adapter))
    }

    fn checkpoint_path(&self, user: UserId) -> PathBuf {
        self.dir()
            .join("parametric")
            .join(format!("user-{}.partial.safetensors", user.0))
    }

    /// Distils `user`'s eligible memories into a new adapter on `llm`
    /// and makes it theirs (replacing any previous one), calling
    /// `on_step` after each training step.
    ///
    /// Only the user (or an administrator) may do it, and only the user's
    /// own memories are used: knowledge in weights cannot be revoked like
    /// a share, so memories shared by others never go in.
    pub fn distill(
        &self,
        who: &Principal,
        user: UserId,
        llm: &Llm,
        req: &DistillRequest,
        mut on_step: impl FnMut(DistillProgress),
    ) -> Result<DistillReport> {
        self.check_self_or_admin(who, user)?;
        let cfg = self.config().parametric;
        let steps = req.steps.unwrap_or(cfg.steps) as usize;
        let rank = req.rank.unwrap_or(cfg.rank);
        if steps == 0 || steps > 100_000 {
            return Err(RuntimeError::Invalid(format!(
                "steps must be 1–100000, got {steps}"
            )));
        }
        let config =
            LoraConfig::new(usize::from(rank), cfg.alpha, cfg.targets()).map_err(lora_err)?;
        let (chosen, skipped) = self.choose(user, req.namespace, llm, &cfg)?;
        if chosen.is_empty() {
            return Err(RuntimeError::Invalid(format!(
                "no memory is eligible for distillation ({skipped} offered; see [parametric] \
                 in memkern.toml: min_age_secs, min_uses)"
            )));
        }
        let examples: Vec<lora::Example> = chosen.iter().flat_map(|c| c.examples.clone()).collect();
        let pairs = examples.len();

        // Train, checkpointing; resume only the same selection.
        let ckpt = self.checkpoint_path(user);
        if let Some(parent) = ckpt.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", parent.display())))?;
        }
        let selection = selection_tag(&chosen, steps, &config, &cfg);
        let (adapter, resumed) = match (req.resume, self.resumable(&ckpt, &selection, llm)) {
            (true, Some(a)) => (a, true),
            _ => (
                Adapter::new(config, llm.config(), llm.fingerprint(), llm.device()),
                false,
            ),
        };
        let train = TrainConfig {
            steps,
            learning_rate: cfg.learning_rate,
            batch: usize::from(cfg.batch.max(1)),
            seed: 0x6d656d6b,
            anchor_weight: cfg.anchor_weight,
            anchors_per_step: usize::from(cfg.anchors_per_step),
        };
        let anchors = if train.uses_anchors() {
            self.anchors_for(llm)?
        } else {
            Vec::new()
        };
        let n_anchors = anchors.len();
        let mut trainer = Trainer::new(llm.model(), adapter, examples, train)
            .map_err(lora_err)?
            .with_anchors(anchors);
        if resumed {
            trainer.resume(&ckpt).map_err(lora_err)?;
        }
        let started = Instant::now();
        let (mut first, mut last, mut run) = (f32::NAN, f32::NAN, 0usize);
        let mut kl_last = None;
        while !trainer.finished() {
            let step = trainer.step().map_err(lora_err)?;
            let loss = step.answer;
            run += 1;
            if run == 1 {
                first = loss;
            }
            last = loss;
            kl_last = step.anchor;
            on_step(DistillProgress {
                step: trainer.steps_done(),
                steps,
                loss,
                anchor_kl: step.anchor,
            });
            if trainer.steps_done() % CHECKPOINT_EVERY == 0 && !trainer.finished() {
                let a = trainer.adapter().map_err(lora_err)?;
                a.save(&ckpt, llm.config()).map_err(lora_err)?;
                trainer.save_checkpoint(&ckpt).map_err(lora_err)?;
                write_tag(&ckpt, &selection)?;
            }
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let adapter = trainer.adapter().map_err(lora_err)?;
        let file = adapter.to_safetensors(llm.config()).map_err(lora_err)?;
        let report = self.commit_adapter(who, user, &chosen, &adapter, &file, |row| {
            row.pairs = u32::try_from(pairs).unwrap_or(u32::MAX);
            row.steps = u32::try_from(steps).unwrap_or(u32::MAX);
            row.loss_first = first;
            row.loss_last = last;
            row.rank = rank;
        })?;
        let _ = std::fs::remove_file(&ckpt);
        let _ = std::fs::remove_file(tag_path(&ckpt));
        lora::remove_checkpoint(&ckpt);
        Ok(DistillReport {
            adapter: report.to_string(),
            memories: chosen.iter().map(|c| c.id).collect(),
            skipped,
            pairs,
            steps_run: run,
            steps,
            resumed,
            loss_first: first,
            loss_last: last,
            anchors: n_anchors,
            anchor_kl_last: kl_last,
            bytes: file.len() as u64,
            train_seconds,
        })
    }

    /// The standard anchors on `llm`, computed once per model and reused.
    fn anchors_for(&self, llm: &Llm) -> Result<Vec<Anchor>> {
        // A panic elsewhere cannot leave the cache half-written: it is
        // replaced whole.
        let mut cache = self.anchors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref()
            && c.model == llm.fingerprint()
        {
            return Ok(c.anchors.clone());
        }
        let anchors = lora::standard_anchors(llm).map_err(lora_err)?;
        *cache = Some(AnchorCache {
            model: llm.fingerprint(),
            anchors: anchors.clone(),
        });
        Ok(anchors)
    }

    /// The user's memories offered to the core's selection; returns the
    /// chosen ones with their examples, and how many were not chosen.
    fn choose(
        &self,
        user: UserId,
        namespace: Option<NamespaceId>,
        llm: &Llm,
        cfg: &ParametricConfig,
    ) -> Result<(Vec<Chosen>, usize)> {
        let now = now();
        let tok = llm.tokenizer();
        let mut offered = Vec::new();
        let mut candidates = Vec::new();
        for id in self.memory_ids()? {
            let Some(m) = self.load(id)? else { continue };
            let meta = &m.head.meta;
            if meta.owner != user || namespace.is_some_and(|ns| ns.0 != m.row.namespace) {
                continue;
            }
            let Payload::Plaintext(p) = &m.head.payload else {
                continue;
            };
            let mut examples = Vec::new();
            for pair in pairs_from_memory(&p.text) {
                examples.push(chat_example(tok, &pair).map_err(lora_err)?);
            }
            let tokens: usize = examples.iter().map(|e| e.tokens().len()).sum();
            candidates.push(DistillCandidate {
                id: id.0,
                heat: meta.usage.heat.value_at(now, HEAT_HALF_LIFE),
                changed: meta.time.recorded_at,
                // Memories stored before the runtime marked new memories
                // Activated stayed Generated although indexed and served.
                state: match meta.lifecycle {
                    LifecycleState::Generated => LifecycleState::Activated,
                    s => s,
                },
                expires: meta.expires_at,
                sensitivity: meta.sensitivity,
                tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
            });
            offered.push(Chosen {
                id,
                head: meta.id,
                namespace: NamespaceId(m.row.namespace),
                examples,
            });
        }
        let n = select(&mut candidates, now, &cfg.policy());
        let picked: HashSet<CubeId> = candidates[..n].iter().map(|c| c.id).collect();
        let total = offered.len();
        let chosen: Vec<Chosen> = offered
            .into_iter()
            .filter(|c| picked.contains(&c.id.0))
            .collect();
        let skipped = total - chosen.len();
        Ok((chosen, skipped))
    }

    fn resumable(&self, ckpt: &std::path::Path, selection: &str, llm: &Llm) -> Option<Adapter> {
        let tag = std::fs::read_to_string(tag_path(ckpt)).ok()?;
        if tag != selection {
            return None;
        }
        Adapter::load(ckpt, None, llm.fingerprint(), llm.config(), llm.device()).ok()
    }

    /// Stores the adapter (blob, then cube + row + lifecycle + audit in one
    /// transaction) and drops the user's previous one.
    fn commit_adapter(
        &self,
        who: &Principal,
        user: UserId,
        chosen: &[Chosen],
        adapter: &Adapter,
        file: &[u8],
        fill: impl FnOnce(&mut AdapterRow),
    ) -> Result<CubeId> {
        let payload = adapter.parametric_payload(file);
        let now = now();
        let mut meta: Metadata<String> = Metadata::new(
            random_id()?,
            user,
            chosen[0].namespace,
            now,
            now,
            SourceKind::Derived,
        );
        meta.lifecycle = LifecycleState::Activated;
        for c in chosen.iter().take(8) {
            // Provenance holds 8 parents; the row lists every memory.
            let _ = meta.provenance.parents.push(c.head);
        }
        let cube = cube::Cube {
            meta,
            payload: Payload::<String, Vec<u8>>::Parametric(payload),
        };
        let bytes = cube::encode_to_vec(&cube)
            .map_err(|e| RuntimeError::Invalid(format!("adapter cube: {e}")))?;
        let _w = self.write_lock();
        let previous = self.adapter_row(user)?;
        let vault = self.vault();
        // Blob first (durable), then the cube that references it.
        let digest = vault
            .blobs()
            .put(file)
            .map_err(crate::vault::VaultError::from)?;
        let covers: HashSet<u128> = chosen.iter().map(|c| c.id.key()).collect();
        let txn = vault
            .database()
            .begin_write()
            .map_err(|e| vault.db_error(e))?;
        let mut changed = false;
        let result = (|| -> std::result::Result<(), redb::Error> {
            // Deletion wins: a memory that changed or vanished while the
            // run trained refuses the commit.
            {
                let rows = txn.open_table(MEMORIES)?;
                for c in chosen {
                    let head = rows
                        .get(c.id.key())?
                        .and_then(|v| decode::<MemoryRow>(v.value()).ok())
                        .and_then(|r| r.head());
                    if head != Some(c.head) {
                        changed = true;
                        return Ok(());
                    }
                }
            }
            vault
                .put_in(&txn, &bytes)
                .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            let old: HashSet<u128> = previous
                .as_ref()
                .map(|r| r.covers.iter().copied().collect())
                .unwrap_or_default();
            if let Some(old_cube) = previous.as_ref().and_then(|r| r.cube) {
                txn.open_table(CUBES)?.remove(cube_key(&CubeId(old_cube)))?;
            }
            for k in old.difference(&covers) {
                set_lifecycle(&txn, *k, LifecycleState::Activated)?;
            }
            for k in &covers {
                set_lifecycle(&txn, *k, LifecycleState::Merged)?;
            }
            let mut row = AdapterRow {
                cube: Some(cube.meta.id.0),
                digest: digest.0,
                bytes: file.len() as u64,
                created_ms: now.0,
                covers: covers.iter().copied().collect(),
                stale: None,
                pairs: 0,
                steps: 0,
                loss_first: 0.0,
                loss_last: 0.0,
                rank: 0,
            };
            row.covers.sort_unstable();
            fill(&mut row);
            txn.open_table(ADAPTERS)?
                .insert(user.0, encode(&row).unwrap_or_default().as_slice())?;
            append(
                &txn,
                &[Event::ok(who, "distill", Some(cube.meta.id)).with(format!(
                    "user {}: {} memories, {} bytes",
                    user.0,
                    covers.len(),
                    file.len()
                ))],
            )
        })();
        if changed || result.is_err() {
            drop(txn);
            let _ = vault.remove_blob_if_unreferenced(&digest);
            result.map_err(|e| vault.db_error(e))?;
            return Err(RuntimeError::Invalid(
                "a memory changed or was deleted while distillation ran; run it again".into(),
            ));
        }
        txn.commit().map_err(|e| vault.db_error(e))?;
        if let Some(old) = previous.filter(|r| r.digest != digest.0) {
            vault.remove_blob_if_unreferenced(&BlobDigest(old.digest))?;
        }
        Ok(cube.meta.id)
    }
}

/// Identifies a training selection (memories and their versions, steps,
/// rank, alpha, targets) so a checkpoint is resumed only for the same run.
fn selection_tag(
    chosen: &[Chosen],
    steps: usize,
    config: &LoraConfig,
    cfg: &ParametricConfig,
) -> String {
    let mut s = format!(
        "steps={steps} rank={} alpha={} targets={} batch={} lr={}\n",
        config.rank(),
        config.alpha(),
        config.targets().0,
        cfg.batch,
        cfg.learning_rate
    );
    for c in chosen {
        s.push_str(&format!("{} {}\n", c.id, c.head));
    }
    s
}

fn tag_path(ckpt: &std::path::Path) -> PathBuf {
    let mut p = ckpt.as_os_str().to_owned();
    p.push(".selection");
    p.into()
}

fn write_tag(ckpt: &std::path::Path, tag: &str) -> Result<()> {
    std::fs::write(tag_path(ckpt), tag)
        .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", ckpt.display())))
}
