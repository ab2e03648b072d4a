//! The runtime's configuration file (TOML): budgets, hygiene, server.
//!
//! Exists so a device's limits are stated once, in a file an operator can
//! read, with defaults sized for a 4 GB Raspberry Pi.

use std::path::Path;

use memkern_core::scheduler::{Budgets, Policy};
use serde::{Deserialize, Serialize};

use super::dedup::DedupMode;
use super::redact::RedactionConfig;

/// Everything `memkern.toml` may set; every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Resource budgets for the scheduler.
    pub budgets: BudgetConfig,
    /// Scheduler preferences.
    pub scheduler: SchedulerConfig,
    /// Near-duplicate detection on `add`.
    pub dedup: DedupConfig,
    /// Secret redaction before storage.
    pub redaction: RedactionConfig,
    /// The HTTP server.
    pub server: ServerConfig,
    /// Pack signing and verification.
    pub packs: PackConfig,
    /// Parametric memory: distilling memories into LoRA adapters.
    pub parametric: ParametricConfig,
    /// How `chat` decodes answers.
    pub chat: ChatConfig,
    /// Where `memkern modules search|install NAME|update` look.
    pub modules: ModulesConfig,
    /// The LLM the vault's commands load when no `--model` is given.
    pub model: ModelConfig,
}

/// The vault's LLM: what `chat`, `serve`, `mcp` and `distill` load when
/// no `--model` is given.
///
/// Exists so a device set up with its own model keeps using it without
/// every command line repeating the path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A GGUF file, or the name of a model `memkern models list` shows
    /// (pulled on first use). Unset: SmolLM2-135M-Instruct Q4_1.
    pub llm: Option<String>,
}

/// Memory modules: the indexes read by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModulesConfig {
    /// URLs of signed module indexes (`index.json`, with `index.json.sig`
    /// beside it), searched in order.
    pub index: Vec<String>,
}

/// How `chat` decodes answers (temperature and top-p are per request).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// An answer never repeats a run of this many tokens of itself, so a
    /// small model cannot loop on a line ("Counseling and education" nine
    /// times); copying from the memories stays free. 0 turns it off.
    pub no_repeat_ngram: usize,
    /// Repetition penalty on recent tokens (`None`: the model file's
    /// `general.sampling.penalty_repeat`, else 1.0 = off, llama.cpp's
    /// default).
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens the penalty looks at (`None`: the file's
    /// `general.sampling.penalty_last_n`, else 64).
    pub repeat_last_n: Option<usize>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            no_repeat_ngram: 4,
            repeat_penalty: None,
            repeat_last_n: None,
        }
    }
}

/// Parametric memory: which memories are distilled into a user's LoRA
/// adapter and how it is trained (`memkern distill`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParametricConfig {
    /// Apply the user's adapter in `chat`.
    pub use_in_chat: bool,
    /// A memory must be unchanged for this many seconds to be distilled
    /// (0: any memory).
    pub min_age_secs: u64,
    /// Heat, in recent uses, a memory needs (0: also never-used ones).
    pub min_uses: f32,
    /// Most memories in one adapter.
    pub max_memories: u16,
    /// Most training tokens (prompt + answer, all pairs).
    pub max_tokens: u32,
    /// LoRA rank.
    pub rank: u16,
    /// LoRA alpha (the update is scaled by alpha / rank).
    pub alpha: f32,
    /// Adapt the MLP projections too (attention q, k, v, o always).
    pub mlp: bool,
    /// Optimizer steps.
    pub steps: u32,
    /// Examples per step.
    pub batch: u16,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Weight of the anchor term: the KL divergence from the base model
    /// on unrelated text and general questions, which keeps the adapter
    /// from damaging everything else (0: train on the facts alone).
    pub anchor_weight: f32,
    /// Anchors evaluated per step (each costs about one example's
    /// forward and backward pass).
    pub anchors_per_step: u16,
}

impl Default for ParametricConfig {
    /// Rank 8 on q, k, v, o, 60 steps of 8 examples at 3e-3, anchor
    /// weight 1 with 2 anchors a step (the settings `benches/RESULTS.md`
    /// measures), up to 64 memories.
    fn default() -> Self {
        ParametricConfig {
            use_in_chat: true,
            min_age_secs: 0,
            min_uses: 0.0,
            max_memories: 64,
            max_tokens: 65_536,
            rank: 8,
            alpha: 16.0,
            mlp: false,
            steps: 60,
            batch: 8,
            learning_rate: 3e-3,
            anchor_weight: 1.0,
            anchors_per_step: 2,
        }
    }
}

/// Pack signing and verification.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackConfig {
    /// Sign exported packs with this key file (`memkern pack keygen`).
    pub signing_key: Option<std::path::PathBuf>,
    /// Accept only packs signed by one of these public keys (hex); empty:
    /// any pack whose checksum (and signature, if signed) verifies.
    pub trusted_keys: Vec<String>,
}

/// Budgets of one chat turn and of the snapshot tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// RAM for resident KV snapshots, bytes.
    pub kv_ram_bytes: u64,
    /// Flash (disk) for stored KV snapshots, bytes.
    pub snapshot_flash_bytes: u64,
    /// Context tokens memories may take in one prompt.
    pub context_tokens: u32,
    /// Most memories used for one answer.
    pub max_memories: u32,
}

impl Default for BudgetConfig {
    /// A 4 GB Pi: 256 MiB of resident KV (≈ 11 k tokens of SmolLM2 f32
    /// KV), 2 GiB of snapshots on the SD card, 768 context tokens of
    /// memories (SmolLM2 has 8 k; prefill is the cost), 6 memories.
    fn default() -> Self {
        BudgetConfig {
            kv_ram_bytes: 256 << 20,
            snapshot_flash_bytes: 2 << 30,
            context_tokens: 768,
            max_memories: 6,
        }
    }
}

impl BudgetConfig {
    /// The core scheduler's budgets.
    pub fn budgets(&self) -> Budgets {
        Budgets {
            context_tokens: self.context_tokens,
            ram_bytes: self.kv_ram_bytes,
            flash_bytes: self.snapshot_flash_bytes,
            max_items: self.max_memories,
        }
    }
}

/// Scheduler preferences (not limits).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Save KV snapshots of hot memories at all.
    pub promote: bool,
    /// Heat, in recent uses, at which a memory used in a chat is promoted
    /// to a KV snapshot (0: every memory a chat uses).
    pub promote_min_uses: f32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            promote: true,
            promote_min_uses: 2.0,
        }
    }
}

impl SchedulerConfig {
    /// The core scheduler's policy.
    pub fn policy(&self) -> Policy {
        let heat = self.promote_min_uses * memkern_core::heat::ONE as f32;
        Policy {
            promote_min_heat: self.promote.then_some(heat.min(u32::MAX as f32) as u32),
        }
    }
}

/// When a new memory counts as a copy of an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    /// Detect duplicates at all (`false` is `mode = "off"`).
    pub enabled: bool,
    /// The mode of requests that name none: `off`, `exact` (the same
    /// text merges) or `near` (also: a near-duplicate in other words
    /// becomes the existing memory's new version).
    pub mode: DedupMode,
    /// Cosine similarity of the embeddings at or above which a memory in
    /// the same cube is a near-duplicate (identical normalised text always
    /// is).
    pub similarity: f32,
}

impl DedupConfig {
    /// The mode of a request that names none.
    pub fn default_mode(&self) -> DedupMode {
        if self.enabled {
            self.mode
        } else {
            DedupMode::Off
        }
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            enabled: true,
            mode: DedupMode::Near,
            similarity: 0.95,
        }
    }
}

/// The HTTP server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind (loopback by default; expose deliberately).
    pub bind: String,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:7077".to_owned(),
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// It is not valid TOML for [`Config`].
    #[error("invalid configuration {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with its place.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Value(String),
}

impl Config {
    /// Parses TOML text (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Rejects values no device could run with.
    fn check(&self) -> Result<(), ConfigError> {
        let s = self.dedup.similarity;
        if !(s.is_finite() && s > 0.0 && s <= 1.0) {
            return Err(ConfigError::Value(format!(
                "dedup.similarity must be in (0, 1], got {s}"
            )));
        }
        let p = self.scheduler.promote_min_uses;
        if !(p.is_finite() && p >= 0.0) {
            return Err(ConfigError::Value(format!(
                "scheduler.promote_min_uses must be 0 or more, got {p}"
            )));
        }
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::Value(
                "server.max_body_bytes must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("", "t").unwrap_or_default();
        assert_eq!(c, Config::default());
        assert_eq!(c.budgets.max_memories, 6);
    }

    #[test]
    fn values_are_read_and_checked() {
        let c = Config::from_toml(
            "[budgets]\ncontext_tokens = 300\n[dedup]\nsimilarity = 0.9\n",
            "t",
        );
        let c = c.map_err(|e| e.to_string());
        assert_eq!(c.as_ref().map(|c| c.budgets.context_tokens), Ok(300));
        assert_eq!(c.as_ref().map(|c| c.dedup.similarity), Ok(0.9));
        let exact = Config::from_toml("[dedup]\nmode = \"exact\"\n", "t");
        assert_eq!(
            exact.map(|c| c.dedup.default_mode()).ok(),
            Some(DedupMode::Exact)
        );
        let off = Config::from_toml("[dedup]\nenabled = false\n", "t");
        assert_eq!(
            off.map(|c| c.dedup.default_mode()).ok(),
            Some(DedupMode::Off)
        );
        let fuzzy = Config::from_toml("[dedup]\nmode = \"fuzzy\"\n", "t");
        assert!(matches!(fuzzy, Err(ConfigError::Parse { .. })), "{fuzzy:?}");
        let bad = Config::from_toml("[dedup]\nsimilarity = 1.5\n", "t");
        assert!(matches!(bad, Err(ConfigError::Value(_))), "{bad:?}");
        let typo = Config::from_toml("[budgets]\ncontext_token = 3\n", "t");
        assert!(
            matches!(&typo, Err(ConfigError::Parse { message, .. }) if message.contains("context_token")),
            "{typo:?}"
        );
    }
}
