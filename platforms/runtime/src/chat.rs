//! `chat`: retrieve → plan within budgets → restore a KV snapshot and/or
//! put memories into the prompt as text → generate with SmolLM2.
//!
//! Exists as the product's main loop: the place where plaintext memory,
//! activation memory and the core's fixed-budget scheduler meet.
//!
//! Activation memory here: a snapshot is the KV cache of a prompt prefix
//! *system header + the lines of up to 8 memories*, at position 0 — an
//! activation cube derived from those memories (its provenance parents, in
//! prompt order). Snapshots are bound to their prefix (RoPE positions,
//! prefix fingerprint), so a turn restores at most one: the stored block
//! covering most of the retrieved memories. The scheduler sees each covered
//! memory as restorable (its share of the block's bytes) and every other
//! one as text; the turn restores the block, keeps the longest prefix of it
//! the plan selected (truncating the rest) and prefills the remaining
//! memories as text. When the plan promotes hot memories, the turn's whole
//! memory prefix is saved as a new block after the answer; the plan's
//! evictions delete blocks, its demotions drop them from RAM.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use memkern_core::cube::{self, KvDtype, MAX_PARENTS, Metadata, Payload, SourceKind};
use memkern_core::governance::Principal;
use memkern_core::ids::{BlobDigest, CubeId, NamespaceId, UserId};
use memkern_core::scheduler::{self, Candidate, Kind, Location, RELEVANCE_ONE};
use memkern_models::lora::Adapter;
use memkern_models::prompt;
use memkern_models::tokenizer::{Role as ChatRole, Tokenizer, TokenizerError};
use memkern_models::{
    Llm, Sampler, SamplingConfig, Session, Snapshot, SnapshotOptions, StopReason,
};
use serde::{Deserialize, Serialize};

use super::stop::{MAX_STOP_LEN, MAX_STOPS, StopFilter};
use super::utterance::is_question;
use super::{
    AddRequest, MemoryId, Result, Runtime, RuntimeError, SearchHit, SearchRequest, now, random_id,
};

/// Element type of chat snapshots (half the size of f32; see
/// `benches/RESULTS.md` for its effect on greedy agreement).
pub const SNAPSHOT_DTYPE: KvDtype = KvDtype::F16;

/// A memory as the prompt shows it: its date (the event's, so relative
/// words such as "yesterday" in the text have an anchor) and its text.
pub(crate) fn memory_line(text: &str, time: memkern_core::time::Timestamp) -> String {
    match chrono::DateTime::from_timestamp_millis(time.0) {
        Some(d) => format!("- [{}] {text}\n", d.format("%-d %B %Y")),
        None => format!("- {text}\n"),
    }
}

/// The KV block of the prompt prefix *system header + the lines of
/// `memories`* (text and event time, in prompt order) on `llm`: exactly
/// what a turn saves when it promotes them, made ahead of use (a module
/// build ships such blocks for the models it names).
pub(crate) fn prefix_snapshot(
    llm: &Llm,
    memories: &[(&str, memkern_core::time::Timestamp)],
) -> Result<Snapshot> {
    let tok = llm.tokenizer();
    let mut ids = prompt::header(tok).map_err(llm_err)?;
    for (text, time) in memories {
        ids.extend(
            tok.encode_literal(&memory_line(text, *time))
                .map_err(llm_err)?,
        );
    }
    let mut session = llm.session();
    session.prefill(&ids).map_err(llm_err)?;
    session
        .snapshot(0..ids.len(), SnapshotOptions::dtype(SNAPSHOT_DTYPE))
        .map_err(llm_err)
}

/// Most candidates one turn considers.
const MAX_CANDIDATES: usize = 16;

/// One chat turn's request.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The user's message.
    pub message: String,
    /// Search only these namespaces (default: every readable one).
    #[serde(default)]
    pub namespaces: Option<Vec<NamespaceId>>,
    /// Answer from exactly these memories, in this order, instead of
    /// searching (each must be readable by the caller; at most 16):
    /// memories a user picked, or the evidence of a benchmark's oracle.
    /// An empty list answers with no memories at all.
    #[serde(default)]
    pub memories: Option<Vec<MemoryId>>,
    /// Store the user's message as a memory (the default) — unless it only
    /// asks: a question is never stored.
    #[serde(default = "yes")]
    pub remember: bool,
    /// Where to store it (default: the caller's cube named `default`).
    #[serde(default)]
    pub remember_in: Option<NamespaceId>,
    /// Most tokens to generate.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Use activation memory (restore and promote snapshots).
    #[serde(default = "yes")]
    pub snapshots: bool,
    /// The caller's own instructions (an OpenAI `system` message), placed
    /// in memkern's system turn after the memories.
    #[serde(default)]
    pub system: Option<String>,
    /// Earlier turns of this conversation, oldest first, placed before
    /// the message; the oldest are left out when they do not fit half the
    /// model's context.
    #[serde(default)]
    pub history: Vec<Turn>,
    /// Sampling temperature, 0–2; 0 (the default) is greedy decoding.
    #[serde(default)]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this
    /// probability mass, (0, 1]; 1 (the default) keeps all.
    #[serde(default = "one")]
    pub top_p: f32,
    /// Seed of the sampler (default: fixed, so answers repeat).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Up to 4 strings that end the answer (not included in it).
    #[serde(default)]
    pub stop: Vec<String>,
}

/// One earlier turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub text: String,
}

/// The speaker of a [`Turn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person.
    User,
    /// The model.
    Assistant,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// The model ended its turn, or a stop sequence came.
    Stop,
    /// `max_tokens` ran out.
    Length,
}

/// Most earlier turns one request may carry.
pub const MAX_HISTORY_TURNS: usize = 64;

fn default_max_tokens() -> usize {
    64
}

fn yes() -> bool {
    true
}

fn one() -> f32 {
    1.0
}

impl ChatRequest {
    /// A message over every readable namespace, remembered in the
    /// caller's `default` cube.
    pub fn new(message: impl Into<String>) -> ChatRequest {
        ChatRequest {
            message: message.into(),
            namespaces: None,
            memories: None,
            remember: true,
            remember_in: None,
            max_tokens: default_max_tokens(),
            snapshots: true,
            system: None,
            history: Vec::new(),
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
            stop: Vec::new(),
        }
    }
}

/// How a memory entered the prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsedAs {
    /// Its KV snapshot was restored (no prefill).
    Snapshot,
    /// Its text was prefilled.
    Text,
}

/// A memory the answer used.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UsedMemory {
    /// The memory.
    pub id: MemoryId,
    /// Its text.
    pub text: String,
    /// How it entered the prompt.
    pub used_as: UsedAs,
}

/// One chat turn's answer and what it cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatResponse {
    /// The generated answer.
    pub answer: String,
    /// Why generation ended.
    pub finish: Finish,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// The memories in the prompt, in prompt order.
    pub memories: Vec<UsedMemory>,
    /// The user's message stored as a memory, if asked (never a message
    /// that only asks a question).
    pub stored: Option<MemoryId>,
    /// Retrieval (embedding + search), ms.
    pub retrieval_ms: f64,
    /// From the start of the turn to the first generated token, ms.
    pub ttft_ms: f64,
    /// The whole turn, ms (promotion after the answer included).
    pub total_ms: f64,
    /// Prompt tokens (restored + prefilled).
    pub prompt_tokens: usize,
    /// Of which restored from a snapshot.
    pub restored_tokens: usize,
    /// Snapshots created after the answer.
    pub promoted: usize,
    /// Snapshots deleted by the scheduler.
    pub evicted: usize,
    /// The user's parametric adapter (Parametric cube) applied, if any.
    pub adapter: Option<String>,
}

/// Counters for `memkern stats` (persisted in the vault).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatStats {
    /// Turns answered.
    pub turns: u64,
    /// Turns that restored a snapshot.
    pub snapshot_hits: u64,
    /// Turns that had memories but restored none.
    pub snapshot_misses: u64,
    /// Sum of TTFT over turns with a restore, ms.
    pub ttft_warm_ms_sum: f64,
    /// Sum of TTFT over turns with memories and no restore, ms.
    pub ttft_cold_ms_sum: f64,
    /// Snapshots promoted.
    pub promoted: u64,
    /// Snapshots evicted.
    pub evicted: u64,
}

/// A stored block snapshot: which memory versions it covers, in order.
#[derive(Clone, Debug)]
struct Block {
    cube: CubeId,
    digest: BlobDigest,
    bytes: u64,
    members: Vec<CubeId>,
}

struct State {
    llm: Llm,
    /// Stored block snapshots of this model (the flash tier).
    blocks: Vec<Block>,
    /// Snapshot cube → the loaded snapshot (the RAM tier).
    resident: HashMap<CubeId, Arc<Snapshot>>,
    stats: ChatStats,
    /// Loaded parametric adapters: user → (Parametric cube, adapter).
    adapters: HashMap<UserId, (CubeId, Arc<Adapter>)>,
    /// Adapters installed modules ship for this model: (the module's
    /// namespace, the Parametric cube), in namespace order.
    module_adapters: ModuleAdapters,
    /// The runtime's derived epoch `blocks` and `module_adapters` were
    /// read at.
    epoch: u64,
}

/// Adapters modules ship: (the module's namespace, the Parametric cube).
type ModuleAdapters = Vec<(NamespaceId, CubeId)>;

/// The KV blocks of model `model` and the adapters installed modules
/// ship for it, as the vault holds them now.
fn scan_derived(
    rt: &Runtime,
    model: memkern_models::Fingerprint,
) -> Result<(Vec<Block>, ModuleAdapters)> {
    let mut blocks = Vec::new();
    let mut adapters = Vec::new();
    let cubes = rt.vault().cubes()?;
    for (id, bytes) in cubes {
        let Ok(c) = cube::decode_owned(&bytes) else {
            continue;
        };
        match &c.payload {
            Payload::Activation(a)
                if a.model.0 == model.0 && !c.meta.provenance.parents.is_empty() =>
            {
                blocks.push(Block {
                    cube: id,
                    digest: a.blob.digest,
                    bytes: a.blob.size,
                    members: c.meta.provenance.parents.iter().copied().collect(),
                });
            }
            Payload::Parametric(p)
                if p.base_model.0 == model.0
                    && rt
                        .namespace_row(c.meta.namespace)
                        .is_ok_and(|n| n.mount.is_some()) =>
            {
                adapters.push((c.meta.namespace, id));
            }
            _ => {}
        }
    }
    adapters.sort_unstable_by_key(|(ns, _)| ns.0);
    Ok((blocks, adapters))
}

/// The assistant: a runtime plus the LLM, answering one turn at a time.
pub struct Assistant {
    rt: Arc<Runtime>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Assistant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assistant").finish_non_exhaustive()
    }
}

fn llm_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Invalid(format!("language model: {e}"))
}

/// Memory head → (memory, text, its prompt line's tokens).
type Lines = HashMap<CubeId, (MemoryId, String, Vec<u32>)>;

/// The prompt after the memory lines: the caller's system text, memkern's
/// system text closed and the first user turn opened (in the model's chat
/// format, [`memkern_models::prompt`]), the history turns that fit
/// `budget` tokens (newest kept; a kept history never starts with a
/// reply), the message, and the assistant's turn opened.
fn conversation_tail(
    tok: &Tokenizer,
    req: &ChatRequest,
    budget: usize,
) -> std::result::Result<Vec<u32>, TokenizerError> {
    let f = tok.chat_format();
    // The caller's instructions close memkern's own system text, after
    // the memory lines: a second system turn between the memories and the
    // question makes a small model lose the memories (measured: "Where
    // does my sister live?" after "You are a helpful assistant." as its
    // own turn → "Ashwood"; inside the first turn → "Porto"). The KV
    // block prefix (header + memory lines) is unchanged either way.
    let mut tail = Vec::new();
    if let Some(system) = req.system.as_deref().filter(|s| !s.trim().is_empty()) {
        tail.extend(tok.encode_literal(system.trim())?);
        tail.extend(tok.encode_literal("\n")?);
    }
    tail.extend(prompt::system_to_user(tok)?);
    let mut last = tok.encode_literal(&req.message)?;
    last.extend(prompt::generation_prompt(tok)?);
    let close = tok.encode(f.user_close())?;
    let open_user = tok.encode(prompt::turn_open(f, ChatRole::User))?;
    let open_assistant = tok.encode(prompt::turn_open(f, ChatRole::Assistant))?;
    let mut room = budget.saturating_sub(tail.len() + open_user.len() + last.len());
    let mut kept: Vec<(&Turn, Vec<u32>)> = Vec::new();
    for t in req.history.iter().rev() {
        let text = tok.encode_literal(&t.text)?;
        let cost = text.len() + close.len() + open_user.len().max(1);
        if cost > room {
            break;
        }
        room -= cost;
        kept.push((t, text));
    }
    kept.reverse();
    // The first user turn is already open: a reply cannot lead.
    let lead = kept
        .iter()
        .take_while(|(t, _)| t.role == Role::Assistant)
        .count();
    let mut any = false;
    for (i, (t, text)) in kept.into_iter().skip(lead).enumerate() {
        if i > 0 {
            tail.extend(match t.role {
                Role::User => &open_user,
                Role::Assistant => &open_assistant,
            });
        }
        tail.extend(text);
        tail.extend(close.iter().copied());
        any = true;
    }
    if any {
        tail.extend(&open_user);
    }
    tail.extend(last);
    Ok(tail)
}

fn validate(req: &ChatRequest) -> Result<()> {
    if req.message.trim().is_empty() {
        return Err(RuntimeError::Invalid("the message is empty".to_owned()));
    }
    if req.message.len() > memkern_core::cube::MAX_TEXT_LEN {
        return Err(RuntimeError::Invalid("the message is too long".to_owned()));
    }
    if req
        .memories
        .as_ref()
        .is_some_and(|m| m.len() > MAX_CANDIDATES)
    {
        return Err(RuntimeError::Invalid(format!(
            "memories: at most {MAX_CANDIDATES}"
        )));
    }
    if req.max_tokens == 0 || req.max_tokens > 512 {
        return Err(RuntimeError::Invalid("max_tokens must be 1–512".to_owned()));
    }
    if !(0.0..=2.0).contains(&req.temperature) {
        return Err(RuntimeError::Invalid(format!(
            "temperature must be 0–2, got {}",
            req.temperature
        )));
    }
    if !(req.top_p > 0.0 && req.top_p <= 1.0) {
        return Err(RuntimeError::Invalid(format!(
            "top_p must be in (0, 1], got {}",
            req.top_p
        )));
    }
    if req.stop.len() > MAX_STOPS
        || req
            .stop
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_LEN)
    {
        return Err(RuntimeError::Invalid(format!(
            "stop: at most {MAX_STOPS} strings of 1–{MAX_STOP_LEN} bytes"
        )));
    }
    if req.history.len() > MAX_HISTORY_TURNS {
        return Err(RuntimeError::Invalid(format!(
            "history: at most {MAX_HISTORY_TURNS} turns, got {}",
            req.history.len()
        )));
    }
    let long = memkern_core::cube::MAX_TEXT_LEN;
    if req.system.as_ref().is_some_and(|s| s.len() > long)
        || req.history.iter().any(|t| t.text.len() > long)
    {
        return Err(RuntimeError::Invalid(format!(
            "a system or history message is longer than {long} bytes"
        )));
    }
    Ok(())
}

/// Prompt order: the longest prefix of `block` the plan restores, then the
/// other selected memories least relevant first, so the most relevant one
/// sits right before the question (small models weigh recent context
/// most).
fn prompt_order<const N: usize>(
    block: Option<&Block>,
    plan: &scheduler::Plan<N>,
    hits: &[SearchHit],
) -> Prompt {
    let mut prompt = Prompt {
        restore: None,
        order: Vec::new(),
    };
    if let Some(b) = block {
        let keep = b
            .members
            .iter()
            .take_while(|m| plan.restore.contains(m))
            .count();
        if keep > 0 {
            prompt.order.extend(b.members[..keep].iter().copied());
            prompt.restore = Some((b.clone(), keep));
        }
    }
    let rank = |id: &CubeId| {
        hits.iter()
            .position(|h| CubeId::from_hex(&h.memory.cube).as_ref() == Some(id))
    };
    let mut rest: Vec<CubeId> = plan
        .restore
        .iter()
        .chain(plan.text.iter())
        .filter(|id| !prompt.order.contains(id))
        .copied()
        .collect();
    rest.sort_by_key(|id| std::cmp::Reverse(rank(id)));
    prompt.order.extend(rest);
    prompt
}

impl ChatStats {
    fn record(
        &mut self,
        restored: bool,
        had_memories: bool,
        ttft_ms: f64,
        promoted: usize,
        evicted: usize,
    ) {
        self.turns += 1;
        self.promoted += promoted as u64;
        self.evicted += evicted as u64;
        if restored {
            self.snapshot_hits += 1;
            self.ttft_warm_ms_sum += ttft_ms;
        } else if had_memories {
            self.snapshot_misses += 1;
            self.ttft_cold_ms_sum += ttft_ms;
        }
    }
}

/// What a turn decided to put in the prompt.
struct Prompt {
    /// The block to restore and how many of its members to keep.
    restore: Option<(Block, usize)>,
    /// Memory heads in prompt order (restored prefix first).
    order: Vec<CubeId>,
}

impl Assistant {
    /// Joins `rt` and `llm`; finds the snapshots already in the vault.
    pub fn new(rt: Arc<Runtime>, llm: Llm) -> Result<Assistant> {
        rt.set_llm_model(memkern_core::ids::Fingerprint(llm.fingerprint().0));
        let epoch = rt.derived_epoch();
        let (blocks, module_adapters) = scan_derived(&rt, llm.fingerprint())?;
        let stats = rt.chat_stats()?;
        Ok(Assistant {
            rt,
            state: Mutex::new(State {
                llm,
                blocks,
                resident: HashMap::new(),
                stats,
                adapters: HashMap::new(),
                module_adapters,
                epoch,
            }),
        })
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// The model's context window, tokens.
    pub fn context_len(&self) -> usize {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.llm.config().context
    }

    /// Tokens `text` takes in a prompt (special tokens as plain text),
    /// so that callers can fit their own text (a `system` message) to
    /// the window.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(s.llm
            .tokenizer()
            .encode_literal(text)
            .map_err(llm_err)?
            .len())
    }

    /// Counters since the vault was created.
    pub fn stats(&self) -> ChatStats {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).stats
    }

    /// Snapshot tiers: (stored blocks, their bytes, resident blocks, their
    /// bytes).
    pub fn tiers(&self) -> (usize, u64, usize, u64) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stored: u64 = s.blocks.iter().map(|b| b.bytes).sum();
        let resident: u64 = s.resident.values().map(|r| r.bytes().len() as u64).sum();
        (s.blocks.len(), stored, s.resident.len(), resident)
    }

    /// Background housekeeping of the snapshot tiers: forgets blocks whose
    /// cube is gone (a memory was deleted or updated), deletes the oldest
    /// blocks while the stored ones exceed the flash budget, and drops
    /// resident blocks while they exceed the RAM budget. Returns (blocks
    /// deleted, blocks dropped from RAM).
    pub fn housekeeping(&self) -> Result<(usize, usize)> {
        let budgets = self.rt.config().budgets;
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        {
            let vault = self.rt.vault();
            let mut live = Vec::with_capacity(state.blocks.len());
            for b in state.blocks.drain(..) {
                if vault.get(&b.cube)?.is_some() {
                    live.push(b);
                } else {
                    state.resident.remove(&b.cube);
                }
            }
            state.blocks = live;
        }
        // Blocks are kept in creation order: the oldest go first.
        let mut deleted = 0;
        while state.blocks.iter().map(|b| b.bytes).sum::<u64>() > budgets.snapshot_flash_bytes {
            let b = state.blocks.remove(0);
            state.resident.remove(&b.cube);
            if self.rt.vault().delete(&b.cube)? {
                deleted += 1;
            }
        }
        let mut demoted = 0;
        loop {
            let resident: u64 = state
                .resident
                .values()
                .map(|r| r.bytes().len() as u64)
                .sum();
            if resident <= budgets.kv_ram_bytes {
                break;
            }
            let Some(oldest) = state
                .blocks
                .iter()
                .find(|b| state.resident.contains_key(&b.cube))
                .map(|b| b.cube)
            else {
                break;
            };
            state.resident.remove(&oldest);
            demoted += 1;
        }
        state.stats.evicted += deleted as u64;
        Ok((deleted, demoted))
    }

    /// Answers one message for `who`.
    pub fn chat(&self, who: &Principal, req: &ChatRequest) -> Result<ChatResponse> {
        self.chat_streaming(who, req, |_| true)
    }

    /// [`Self::chat`], calling `on_token` with each piece of answer text as
    /// it is generated; `on_token` returning `false` stops generation (the
    /// response then holds the text so far).
    pub fn chat_streaming(
        &self,
        who: &Principal,
        req: &ChatRequest,
        mut on_token: impl FnMut(&str) -> bool,
    ) -> Result<ChatResponse> {
        validate(req)?;
        let start = Instant::now();
        let budgets = self.rt.config().budgets;
        let k = (budgets.max_memories as usize * 2).clamp(1, MAX_CANDIDATES);
        let hits = match &req.memories {
            // Pinned: in the given order (scores fall with the position).
            Some(ids) => ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    Ok(SearchHit {
                        memory: self.rt.get(who, *id)?,
                        score: (ids.len() - i) as f32,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            None => {
                let mut search = SearchRequest::new(req.message.clone(), k);
                search.namespaces = req.namespaces.clone();
                self.rt.search(who, &search)?
            }
        };
        let retrieval_ms = start.elapsed().as_secs_f64() * 1e3;

        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        let epoch = self.rt.derived_epoch();
        if epoch != state.epoch {
            // A module or pack brought or took KV blocks or adapters.
            let (blocks, adapters) = scan_derived(&self.rt, state.llm.fingerprint())?;
            state
                .resident
                .retain(|c, _| blocks.iter().any(|b| b.cube == *c));
            state.blocks = blocks;
            state.module_adapters = adapters;
            state.epoch = epoch;
        }
        let adapter = self.adapter_of(state, who.user);
        // KV blocks belong to one model: a turn with the user's adapter
        // neither restores base-model blocks nor saves adapted ones.
        let snapshots = req.snapshots && adapter.is_none();
        let tok = state.llm.tokenizer();
        let header = prompt::header(tok).map_err(llm_err)?;
        let context = state.llm.config().context;
        let tail = conversation_tail(tok, req, context / 2).map_err(llm_err)?;
        let now = now();
        let mut lines = Lines::new();
        for h in &hits {
            if let Some(head) = CubeId::from_hex(&h.memory.cube) {
                let line = tok
                    .encode_literal(&memory_line(&h.memory.text, h.memory.time))
                    .map_err(llm_err)?;
                lines.insert(head, (h.memory.id, h.memory.text.clone(), line));
            }
        }
        // The stored block covering most of the hits (members must all be
        // hits, so a restore never brings in a memory the caller may not
        // read or that no longer exists).
        // Among equal ones, the block of the best-ranked hit (its members
        // lead the prompt).
        let heads: Vec<Option<CubeId>> = hits
            .iter()
            .map(|h| CubeId::from_hex(&h.memory.cube))
            .collect();
        let rank = |b: &Block| {
            heads
                .iter()
                .position(|c| c.is_some_and(|c| b.members.contains(&c)))
                .unwrap_or(usize::MAX)
        };
        let block = state
            .blocks
            .iter()
            .filter(|b| snapshots && b.members.iter().all(|m| lines.contains_key(m)))
            .max_by_key(|b| (b.members.len(), std::cmp::Reverse(rank(b))))
            .cloned();
        let mut candidates = self.candidates(state, &hits, &lines, block.as_ref(), snapshots, now);
        let mut b = budgets.budgets();
        let in_play = block.as_ref().map_or(0, |b| b.bytes);
        let stored: u64 = state.blocks.iter().map(|b| b.bytes).sum();
        b.flash_bytes = b.flash_bytes.saturating_sub(stored.saturating_sub(in_play));
        let room = state
            .llm
            .config()
            .context
            .saturating_sub(header.len() + tail.len() + req.max_tokens);
        b.context_tokens = b
            .context_tokens
            .min(u32::try_from(room).unwrap_or(u32::MAX));
        let plan = scheduler::plan::<MAX_CANDIDATES>(
            &mut candidates,
            b,
            self.rt.config().scheduler.policy(),
        )
        .map_err(|e| RuntimeError::Invalid(format!("scheduler: {e}")))?;
        let prompt = prompt_order(block.as_ref(), &plan, &hits);

        // Restore the block's kept prefix, prefill the rest, generate.
        let mut session = match &adapter {
            Some((_, a)) => Session::with_adapter(&state.llm, a).map_err(llm_err)?,
            None => state.llm.session(),
        };
        let mut restored = None;
        if let Some((b, keep)) = &prompt.restore {
            match load_snapshot(&self.rt, &state.resident, b).and_then(|snap| {
                session.restore(&snap).map_err(llm_err)?;
                Ok(snap)
            }) {
                Ok(snap) => {
                    // The block must hold exactly the prompt this turn would
                    // prefill (a block saved under another prompt format
                    // is prefilled instead, never trusted).
                    let mut expected = header.clone();
                    for m in &prompt.order[..*keep] {
                        if let Some(l) = lines.get(m) {
                            expected.extend_from_slice(&l.2);
                        }
                    }
                    if snap.token_ids().get(..expected.len()) == Some(&expected[..]) {
                        session.truncate(expected.len());
                        restored = Some((b.cube, snap, *keep));
                    } else {
                        tracing::warn!(
                            "snapshot {} holds another prompt, prefilling instead",
                            b.cube
                        );
                        session.reset();
                    }
                }
                Err(e) => {
                    tracing::warn!("snapshot {} unusable, prefilling instead: {e}", b.cube);
                    session.reset();
                }
            }
        }
        let restored_tokens = if restored.is_some() { session.len() } else { 0 };
        let restored_members = restored.as_ref().map_or(0, |r| r.2);
        if restored.is_none() {
            session.prefill(&header).map_err(llm_err)?;
        }
        let mut used = Vec::new();
        for (i, id) in prompt.order.iter().enumerate() {
            let Some((mid, text, line)) = lines.get(id) else {
                continue;
            };
            let used_as = if i < restored_members {
                UsedAs::Snapshot
            } else {
                session.prefill(line).map_err(llm_err)?;
                UsedAs::Text
            };
            used.push(UsedMemory {
                id: *mid,
                text: text.clone(),
                used_as,
            });
        }
        let memory_prefix = session.len();
        session.prefill(&tail).map_err(llm_err)?;
        let mut sampling = SamplingConfig::greedy();
        let cfg = self.rt.config().chat;
        let (penalty, last_n) = state.llm.sampling_defaults().penalty();
        sampling.no_repeat_ngram = cfg.no_repeat_ngram;
        sampling.repetition_penalty = cfg.repeat_penalty.unwrap_or(penalty);
        sampling.repeat_last_n = cfg.repeat_last_n.unwrap_or(last_n);
        sampling.temperature = req.temperature;
        sampling.top_p = req.top_p;
        if let Some(seed) = req.seed {
            sampling.seed = seed;
        }
        let sampler = Sampler::new(sampling).map_err(llm_err)?;
        let mut ttft_ms = None;
        let mut stops = StopFilter::new(&req.stop);
        let mut caller_stopped = false;
        let generation = session
            .generate_with(sampler, req.max_tokens, |t| {
                ttft_ms.get_or_insert_with(|| start.elapsed().as_secs_f64() * 1e3);
                let (shown, stop) = stops.push(&t.text);
                let go_on = shown.is_empty() || on_token(&shown);
                caller_stopped |= !go_on;
                go_on && !stop
            })
            .map_err(llm_err)?;
        let held = stops.finish();
        if !held.is_empty() && !caller_stopped {
            on_token(&held);
        }
        let finish = if stops.stopped() || generation.stop != StopReason::MaxTokens {
            Finish::Stop
        } else {
            Finish::Length
        };
        let completion_tokens = generation.ids.len();
        let ttft_ms = ttft_ms.unwrap_or_else(|| start.elapsed().as_secs_f64() * 1e3);
        let prompt_tokens = session.len().saturating_sub(generation.ids.len());

        // Tiers, as the plan says: promote this turn's memory prefix unless
        // it was restored whole, then evictions and demotions.
        let covered = block.as_ref().is_some_and(|b| {
            b.members.len() == prompt.order.len() && restored_members == b.members.len()
        });
        let mut promoted = 0;
        if !plan.promote.is_empty()
            && snapshots
            && !covered
            && !used.is_empty()
            && prompt.order.len() <= MAX_PARENTS
        {
            match self.save_block(
                &mut state.blocks,
                &session,
                memory_prefix,
                &prompt.order,
                &lines,
            ) {
                Ok(()) => promoted += 1,
                Err(e) => tracing::warn!("snapshot promotion failed: {e}"),
            }
        }
        drop(session);
        if let Some((cube, snap, _)) = restored {
            state.resident.insert(cube, snap);
        }
        let evicted = self.apply_tiers(state, block.as_ref(), &plan);
        state.stats.record(
            restored_tokens > 0,
            !used.is_empty(),
            ttft_ms,
            promoted,
            evicted,
        );
        let stats = state.stats;
        drop(guard);
        if let Err(e) = self.rt.save_chat_stats(&stats) {
            tracing::warn!("cannot save chat statistics: {e}");
        }

        self.rt.touch(who, used.iter().map(|u| u.id), now)?;
        let stored = self.remember(who, req)?;
        Ok(ChatResponse {
            answer: stops.answer().trim().to_owned(),
            finish,
            completion_tokens,
            memories: used,
            stored,
            retrieval_ms,
            ttft_ms,
            total_ms: start.elapsed().as_secs_f64() * 1e3,
            prompt_tokens,
            restored_tokens,
            promoted,
            evicted,
            adapter: adapter.map(|(c, _)| c.to_string()),
        })
    }

    /// `user`'s live adapter — their own, else one a module mounted for
    /// them ships for this model (cached by Parametric cube; reloaded when
    /// it changed, forgotten when it was dropped). An adapter
    /// that fails its checks is skipped with a warning: the turn goes on
    /// with the base model.
    fn adapter_of(&self, state: &mut State, user: UserId) -> Option<(CubeId, Arc<Adapter>)> {
        if !self.rt.config().parametric.use_in_chat {
            return None;
        }
        let own = match self.rt.adapter_cube(user) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot read user {}'s adapter: {e}", user.0);
                None
            }
        };
        // The user's own adapter first; else the first module mounted for
        // them that ships one for this model.
        let current = own.or_else(|| {
            state.module_adapters.iter().find_map(|(ns, cube)| {
                let row = self.rt.namespace_row(*ns).ok()?;
                let mount = row.mount?;
                (mount.global || row.readers.contains(&user.0)).then_some(*cube)
            })
        });
        let Some(cube) = current else {
            state.adapters.remove(&user);
            return None;
        };
        if let Some((c, a)) = state.adapters.get(&user)
            && *c == cube
        {
            return Some((cube, a.clone()));
        }
        match self.rt.adapter_by_cube(cube, &state.llm) {
            Ok((c, a)) => {
                let a = Arc::new(a);
                state.adapters.insert(user, (c, a.clone()));
                Some((c, a))
            }
            Err(e) => {
                tracing::warn!(
                    "user {}'s adapter is unusable, answering without it: {e}",
                    user.0
                );
                state.adapters.remove(&user);
                None
            }
        }
    }

    /// The scheduler's candidates: every hit as text; members of `block`
    /// as restorable, each with its share of the block's bytes.
    fn candidates(
        &self,
        state: &State,
        hits: &[SearchHit],
        lines: &Lines,
        block: Option<&Block>,
        snapshots: bool,
        now: memkern_core::time::Timestamp,
    ) -> Vec<Candidate> {
        let top = hits.first().map_or(1.0, |h| h.score.max(f32::MIN_POSITIVE));
        let per_token = state
            .llm
            .kv_layout(SNAPSHOT_DTYPE)
            .tensor_bytes(1)
            .unwrap_or(0);
        let mut out = Vec::with_capacity(hits.len());
        for h in hits {
            let Some(head) = CubeId::from_hex(&h.memory.cube) else {
                continue;
            };
            let Some((_, _, line)) = lines.get(&head) else {
                continue;
            };
            let relevance = ((h.score / top).clamp(0.0, 1.0) * RELEVANCE_ONE as f32) as u32;
            let mut c = Candidate {
                id: head,
                relevance: relevance.max(1),
                tokens: u32::try_from(line.len()).unwrap_or(u32::MAX),
                bytes: per_token * line.len() as u64,
                kind: if snapshots {
                    Kind::Activation
                } else {
                    Kind::Plaintext
                },
                location: Location::FlashText,
                heat: self.rt.heat_of(h.memory.id, now).unwrap_or(0),
            };
            if let Some(b) = block.filter(|b| b.members.contains(&head)) {
                c.bytes = b.bytes / b.members.len() as u64;
                c.location = if state.resident.contains_key(&b.cube) {
                    Location::ResidentSnapshot
                } else {
                    Location::FlashSnapshot
                };
            }
            out.push(c);
        }
        out
    }

    /// Applies the plan's eviction (delete the block) or demotion (drop it
    /// from RAM) to the block in play; returns blocks deleted.
    fn apply_tiers<const N: usize>(
        &self,
        state: &mut State,
        block: Option<&Block>,
        plan: &scheduler::Plan<N>,
    ) -> usize {
        let Some(b) = block else {
            return 0;
        };
        if plan.evict.iter().any(|id| b.members.contains(id)) {
            state.resident.remove(&b.cube);
            state.blocks.retain(|x| x.cube != b.cube);
            return usize::from(self.rt.vault().delete(&b.cube).unwrap_or(false));
        }
        if plan.demote.iter().any(|id| b.members.contains(id)) {
            state.resident.remove(&b.cube);
        }
        0
    }

    /// Stores the user's turn as a memory unless the request says not to
    /// or the turn only asks ([`is_question`]): questions are not facts.
    fn remember(&self, who: &Principal, req: &ChatRequest) -> Result<Option<MemoryId>> {
        if is_question(&req.message) {
            return Ok(None);
        }
        let ns = match (req.remember, req.remember_in) {
            (false, _) => return Ok(None),
            (true, Some(ns)) => ns,
            (true, None) => self.rt.namespace_named(who.user, "default")?.id,
        };
        let add = AddRequest {
            namespace: ns,
            text: req.message.clone(),
            ..AddRequest::default()
        };
        Ok(Some(self.rt.add(who, &add)?.id))
    }

    /// Saves positions `0..len` of `session` (header + the memory lines of
    /// `order`) as a block snapshot derived from those memories.
    fn save_block(
        &self,
        blocks: &mut Vec<Block>,
        session: &memkern_models::Session<'_>,
        len: usize,
        order: &[CubeId],
        lines: &HashMap<CubeId, (MemoryId, String, Vec<u32>)>,
    ) -> Result<()> {
        let snap = session
            .snapshot(0..len, SnapshotOptions::dtype(SNAPSHOT_DTYPE))
            .map_err(llm_err)?;
        let Some(first) = order.first().and_then(|m| lines.get(m)) else {
            return Ok(());
        };
        let Some(owner) = self.rt.load_head(first.0)? else {
            return Ok(()); // deleted meanwhile
        };
        let mut meta: Metadata<String> = Metadata::new(
            random_id()?,
            owner.owner,
            owner.namespace,
            now(),
            now(),
            SourceKind::Derived,
        );
        for m in order {
            meta.provenance.parents.push(*m).map_err(|_| {
                RuntimeError::Invalid("a block covers at most 8 memories".to_owned())
            })?;
        }
        let cube = cube::Cube {
            meta,
            payload: Payload::<String, Vec<u8>>::Activation(snap.activation_payload()),
        };
        let bytes = cube::encode_to_vec(&cube)
            .map_err(|e| RuntimeError::Invalid(format!("snapshot cube: {e}")))?;
        let vault = self.rt.vault();
        // Blob first (durable), then the cube that references it.
        let digest = vault
            .blobs()
            .put(snap.bytes())
            .map_err(crate::vault::VaultError::from)?;
        let id = vault.put(&bytes)?;
        blocks.push(Block {
            cube: id,
            digest,
            bytes: snap.bytes().len() as u64,
            members: order.to_vec(),
        });
        Ok(())
    }
}

fn load_snapshot(
    rt: &Runtime,
    resident: &HashMap<CubeId, Arc<Snapshot>>,
    b: &Block,
) -> Result<Arc<Snapshot>> {
    if let Some(snap) = resident.get(&b.cube) {
        return Ok(snap.clone());
    }
    let bytes = rt
        .vault()
        .blobs()
        .get(&b.digest)
        .map_err(crate::vault::VaultError::from)?;
    let snap = Snapshot::from_bytes(bytes).map_err(llm_err)?;
    Ok(Arc::new(snap))
}
