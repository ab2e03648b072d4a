//! `memkern-cube`: convert MemCubes between JSON and the binary format, and
//! verify cube files.
//!
//! It exists so that humans (and scripts) can read, write and check the
//! compact binary cubes that memkern keeps on flash.

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use memkern_core::cube::{self, OwnedCube};

/// Largest input accepted (JSON is verbose; binary cubes are ≤ 128 KiB).
const MAX_INPUT: u64 = 16 * 1024 * 1024;

#[derive(Parser)]
#[command(
    name = "memkern-cube",
    version,
    about = "Convert MemCubes between JSON and binary, and verify them",
    long_about = "Convert MemCubes between JSON and memkern's compact binary format \
                  (see core/FORMAT.md), and verify cube files.\n\n\
                  Every command reads FILE, or standard input when FILE is '-' or omitted. \
                  On bad input it prints one error line and exits with status 1."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// JSON → binary: parse a cube written as JSON, check every format rule,
    /// and write the binary cube to OUT (or standard output).
    Encode {
        /// JSON input ('-' or omitted: standard input).
        file: Option<PathBuf>,
        /// Binary output file (default: standard output).
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Binary → JSON: check a binary cube (header, CRC, payload, rules) and
    /// print it as pretty JSON.
    Decode {
        /// Binary input ('-' or omitted: standard input).
        file: Option<PathBuf>,
    },
    /// Check a binary cube without printing it; prints a one-line summary.
    Verify {
        /// Binary input ('-' or omitted: standard input).
        file: Option<PathBuf>,
    },
    /// Print an example cube of the given kind as JSON (a template for `encode`).
    Example {
        /// Payload kind.
        #[arg(value_enum, default_value = "plaintext")]
        kind: Kind,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Plaintext,
    Activation,
    Parametric,
}

fn read_input(file: Option<&PathBuf>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    match file.filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            let f =
                fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            f.take(MAX_INPUT + 1)
                .read_to_end(&mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?;
        }
        None => {
            io::stdin()
                .take(MAX_INPUT + 1)
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
        }
    }
    if buf.len() as u64 > MAX_INPUT {
        bail!("input is larger than {MAX_INPUT} bytes");
    }
    Ok(buf)
}

fn write_output(out: Option<&PathBuf>, bytes: &[u8]) -> Result<()> {
    match out {
        Some(path) => {
            fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(bytes)
                .and_then(|()| stdout.flush())
                .context("cannot write standard output")
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Encode { file, out } => {
            let input = read_input(file.as_ref())?;
            let cube: OwnedCube = serde_json::from_slice(&input).context("invalid cube JSON")?;
            let bytes = cube::encode_to_vec(&cube).context("cannot encode cube")?;
            write_output(out.as_ref(), &bytes)
        }
        Command::Decode { file } => {
            let input = read_input(file.as_ref())?;
            let cube = cube::decode_owned(&input).context("invalid cube")?;
            let mut json = serde_json::to_string_pretty(&cube).context("cannot render JSON")?;
            json.push('\n');
            write_output(None, json.as_bytes())
        }
        Command::Verify { file } => {
            let input = read_input(file.as_ref())?;
            let c = cube::decode(&input).context("invalid cube")?;
            let summary = format!(
                "ok: {:?} cube {} v{} ({:?}), {} bytes\n",
                c.kind(),
                c.meta.id,
                c.meta.version,
                c.meta.lifecycle,
                input.len()
            );
            write_output(None, summary.as_bytes())
        }
        Command::Example { kind } => {
            let mut json =
                serde_json::to_string_pretty(&example(kind)).context("cannot render JSON")?;
            json.push('\n');
            write_output(None, json.as_bytes())
        }
    }
}

fn example(kind: Kind) -> OwnedCube {
    use memkern_core::cube::*;
    use memkern_core::ids::*;
    use memkern_core::time::Timestamp;
    let t = Timestamp(1_683_553_000_000);
    let mut meta = Metadata::new(
        CubeId([0x11; 16]),
        UserId(1),
        NamespaceId(1),
        t,
        t,
        SourceKind::DialogueTurn,
    );
    meta.lifecycle = memkern_core::lifecycle::LifecycleState::Activated;
    let _ = meta.tags.push("example".to_owned());
    let blob = BlobRef {
        digest: BlobDigest([0x22; 32]),
        size: 4096,
    };
    let payload = match kind {
        Kind::Plaintext => Payload::Plaintext(Plaintext {
            text: "My dog is called Biscuit.".to_owned(),
            embedding: Some(Embedding {
                embedder: Fingerprint([0x33; 16]),
                scale: 0.01,
                values: Int8Vec(vec![12, 0xf4, 100, 0]),
            }),
        }),
        Kind::Activation => {
            let layout = KvLayout {
                dtype: KvDtype::F16,
                layers: 30,
                kv_heads: 3,
                head_dim: 64,
            };
            let kv_bytes = layout.tensor_bytes(16).unwrap_or(0);
            Payload::Activation(Activation {
                model: Fingerprint([0x44; 16]),
                tokenizer: Fingerprint([0x55; 16]),
                token_count: 16,
                first_position: 0,
                layout,
                kv_bytes,
                blob: BlobRef {
                    size: kv_bytes + 256,
                    ..blob
                },
            })
        }
        Kind::Parametric => Payload::Parametric(Parametric {
            base_model: Fingerprint([0x44; 16]),
            format: AdapterFormat::SafetensorsLora,
            rank: 8,
            alpha: 16.0,
            targets: TargetModules::Q.union(TargetModules::V),
            blob,
        }),
    };
    Cube { meta, payload }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
