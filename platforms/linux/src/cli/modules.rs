//! Arguments of `memkern modules …` and `memkern keys …`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::VaultArgs;

/// Arguments of `memkern modules`.
#[derive(Args, Debug)]
pub struct ModulesArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModulesCommand,
    /// The vault.
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// `memkern modules …`: knowledge packaged by a publisher, installed
/// read-only.
#[derive(Subcommand, Debug)]
pub enum ModulesCommand {
    /// Publisher: build and sign a module from a directory of .md/.txt
    /// files (chunked by section), a JSON list of texts or a cube's pack
    /// (`memkern export`), optionally with KV blocks and adapters for
    /// named models; the same inputs give the same file.
    Build(Box<BuildArgs>),
    /// Publisher: encrypt a module to one device's key (`memkern keys
    /// device` on that device): only it can install the result.
    Seal {
        /// The module file.
        module: PathBuf,
        /// The buying device's recipient (`age1pq1…`), or a file holding it.
        #[arg(long, value_name = "RECIPIENT|FILE")]
        to: String,
        /// Where to write the sealed module.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Build memkern's own manual as a module (README, ARCHITECTURE, the
    /// cube format and what every command does, as built into this
    /// binary): installed, `memkern chat` and `search` answer from it.
    Manual {
        /// The signing key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where to write the module.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Leave the memories without embeddings (the installer embeds them).
        #[arg(long)]
        no_vectors: bool,
    },
    /// Publisher: write a signed index of module files (`index.json` and
    /// `index.json.sig`) to serve beside them from any web server.
    Index {
        /// The module files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The URL the files will be served under (default: relative,
        /// beside the index).
        #[arg(long, value_name = "URL", default_value = "")]
        base_url: String,
        /// The signing key (`memkern keys new FILE`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where to write `index.json` (the signature goes beside it).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Search the module indexes (`--index` or `[modules] index`).
    Search {
        /// Words of the id, name or description (none: everything).
        #[arg(default_value = "")]
        query: String,
        /// An index URL (repeatable; default: `[modules] index`).
        #[arg(long = "index", value_name = "URL")]
        indexes: Vec<String>,
    },
    /// Install the newest versions the indexes offer of installed modules
    /// (all, or one).
    Update {
        /// Only this module.
        id: Option<String>,
        /// An index URL (repeatable; default: `[modules] index`).
        #[arg(long = "index", value_name = "URL")]
        indexes: Vec<String>,
    },
    /// Trust modules signed by this publisher key (administrator).
    Trust {
        /// The publisher's public key (64 hex digits, from `memkern keys`).
        key: String,
        /// A name to remember the publisher by.
        #[arg(long, default_value = "publisher")]
        name: String,
    },
    /// Stop trusting a publisher key (installed modules stay).
    Distrust {
        /// The publisher's public key.
        key: String,
    },
    /// List the trusted publisher keys.
    Publishers,
    /// Print a user's sealing key (`age1pq1…`, made on first use): a
    /// module sealed to it installs for that user, on any device holding
    /// the key. `--export` writes the secret identity file to carry to
    /// the user's other devices, `--import` takes one from there.
    UserKey {
        /// The user.
        user: String,
        /// Write the user's identity file (secret; mode 0600) here.
        #[arg(long, value_name = "FILE", conflicts_with = "import")]
        export: Option<PathBuf>,
        /// Make the identity in this file (exported on another device)
        /// the user's key here.
        #[arg(long, value_name = "FILE")]
        import: Option<PathBuf>,
    },
    /// Install a module file (a newer version updates it) for users or
    /// for everyone; verified and trusted before anything is stored.
    Install(InstallArgs),
    /// List the installed modules the acting user can see.
    List,
    /// Show one installed module's manifest and mount.
    Info {
        /// The module's id.
        id: String,
    },
    /// Remove a module from the device (administrator), or unmount it for
    /// yourself (`--as USER`); no residue is left in the vault.
    Remove {
        /// The module's id.
        id: String,
    },
}

/// Arguments of `memkern modules build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// A directory: every .md and .txt file under it, one memory per
    /// section chunk.
    #[arg(
        long = "from-dir",
        value_name = "DIR",
        conflicts_with_all = ["from_json", "from_pack"],
        required_unless_present_any = ["from_json", "from_pack"]
    )]
    pub from_dir: Option<PathBuf>,
    /// A JSON file: a list of texts, or of {"text", "source", "tags"}.
    #[arg(long = "from-json", value_name = "FILE", conflicts_with = "from_pack")]
    pub from_json: Option<PathBuf>,
    /// A cube, exported with `memkern export --cube NAME --out FILE`: its
    /// memories' current texts, tags and sources.
    #[arg(long = "from-pack", value_name = "FILE")]
    pub from_pack: Option<PathBuf>,
    /// The module's id (a–z 0–9 - _ .).
    #[arg(long)]
    pub id: String,
    /// Its human-readable name (default: the id).
    #[arg(long)]
    pub name: Option<String>,
    /// Its semantic version.
    #[arg(long = "module-version", value_name = "SEMVER")]
    pub version: String,
    /// SPDX licence id or licence text.
    #[arg(long)]
    pub licence: String,
    /// What it knows.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Language of the texts (BCP 47).
    #[arg(long, default_value = "en")]
    pub language: String,
    /// Release date (YYYY-MM-DD or RFC 3339): every memory's time
    /// (default: $SOURCE_DATE_EPOCH, else 1970-01-01, so builds repeat).
    #[arg(long)]
    pub released: Option<String>,
    /// The publisher's signing key (`memkern keys new FILE`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Where to write the module.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Leave the memories without embeddings (the installer embeds them).
    #[arg(long)]
    pub no_vectors: bool,
    /// Ship a KV block of every memory for this GGUF model (repeatable):
    /// devices running that model restore the block instead of
    /// prefilling the memory; other models ignore it. Costs about
    /// 22 KiB per token per block for SmolLM2-135M.
    #[arg(long = "kv-model", value_name = "GGUF")]
    pub kv_models: Vec<PathBuf>,
    /// Ship a LoRA adapter (repeatable; a memkern adapter file, as
    /// `memkern distill --export-adapter` writes it): applied for the
    /// module's users on the model it was trained on, unless they have
    /// their own.
    #[arg(long = "adapter", value_name = "FILE")]
    pub adapters: Vec<PathBuf>,
}

/// Arguments of `memkern modules install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// A module file (sealed or not), its http(s) URL, or a module id to
    /// fetch from the indexes.
    #[arg(value_name = "FILE|URL|ID")]
    pub module: String,
    /// An index URL (repeatable; default: `[modules] index`).
    #[arg(long = "index", value_name = "URL")]
    pub indexes: Vec<String>,
    /// Mount it for this user (repeatable; default: the `--as` user).
    #[arg(long = "for", value_name = "USER", conflicts_with = "global")]
    pub users: Vec<String>,
    /// Mount it for every user (administrator).
    #[arg(long)]
    pub global: bool,
}

/// `memkern keys …`: ed25519 keys that sign packs and modules.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a signing key file (mode 0600; must not exist) and print its
    /// public key.
    New {
        /// Where to write the key.
        file: PathBuf,
    },
    /// Print a key file's public key (what others trust).
    Show {
        /// The key file.
        file: PathBuf,
    },
    /// Print this device's sealing key (`age1pq1…`; made on first use in the
    /// data directory): what a publisher seals modules to.
    Device {
        /// The data directory.
        #[command(flatten)]
        vault: VaultArgs,
    },
}
