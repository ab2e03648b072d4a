//! A vault command's context, and opening the vault in this process.
//!
//! It exists so that every command that reads or writes memories is written
//! once, against a [`Ctx`], whether it runs here or inside a running serve
//! (`vault.rs` decides which).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use memkern_core::governance::Principal;
use memkern_runtime::{Assistant, Config, Runtime};

use super::llm::{chosen_model, load_llm};
use crate::cli::{ModelArgs, VaultArgs};

/// A vault command's world: the runtime, who acts, and the caller's
/// standard streams (this process's, or a control-socket client's).
pub struct Ctx<'a> {
    /// The open runtime.
    pub rt: Arc<Runtime>,
    /// Who acts: `--as USER`, else the local administrator.
    pub who: Principal,
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error: prompts, progress, summaries.
    pub err: &'a mut dyn Write,
    /// Standard input.
    pub input: &'a mut dyn BufRead,
    /// Inside a running serve: its assistant (`None` with `--no-llm`).
    pub served: Option<Option<Arc<Assistant>>>,
}

impl Ctx<'_> {
    /// The assistant a chat uses: serve's own, or the model loaded here.
    pub fn assistant(&self, model: &ModelArgs) -> Result<Arc<Assistant>> {
        match &self.served {
            None => {
                let chosen = chosen_model(model.model.as_deref(), self.rt.config());
                let llm = load_llm(chosen.as_deref(), &model.backend)?;
                Ok(Arc::new(Assistant::new(self.rt.clone(), llm)?))
            }
            Some(_) if model.model.is_some() || model.backend != "cpu" => bail!(
                "the running memkern serve answers with its own model: drop --model/--backend, or stop serve"
            ),
            Some(Some(a)) => Ok(a.clone()),
            Some(None) => bail!(
                "the running memkern serve was started with --no-llm: restart it with a model to chat"
            ),
        }
    }

    /// Whether a progress bar may be drawn (only in the user's own
    /// terminal, never inside serve).
    pub fn local(&self) -> bool {
        self.served.is_none()
    }
}

/// The data directory: `--data-dir`, `$MEMKERN_DATA_DIR`,
/// `$XDG_DATA_HOME/memkern` or `~/.local/share/memkern`.
pub fn data_dir(v: &VaultArgs) -> Result<PathBuf> {
    if let Some(d) = &v.data_dir {
        return Ok(d.clone());
    }
    if let Some(d) = std::env::var_os("MEMKERN_DATA_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("memkern"));
    }
    let home = std::env::var_os("HOME").context("no --data-dir, XDG_DATA_HOME or HOME")?;
    Ok(PathBuf::from(home).join(".local/share/memkern"))
}

/// Opens the runtime the flags name and the principal to act as.
pub fn open(v: &VaultArgs) -> Result<(Runtime, Principal)> {
    let dir = data_dir(v)?;
    let config_path = v.config.clone().unwrap_or_else(|| dir.join("memkern.toml"));
    let config = Config::load(&config_path)?;
    let embedder = if v.no_embed {
        None
    } else {
        match memkern_runtime::embed::load_default() {
            Ok(e) => Some(e),
            Err(why) => bail!("{why} (use --no-embed for keyword search only)"),
        }
    };
    let (rt, report) = Runtime::open(&dir, config, embedder)
        .with_context(|| format!("cannot open the vault in {}", dir.display()))?;
    tracing::info!(?report, dir = %dir.display(), "vault open");
    let who = principal(&rt, v)?;
    Ok((rt, who))
}

pub fn principal(rt: &Runtime, v: &VaultArgs) -> Result<Principal> {
    Ok(match &v.as_user {
        Some(name) => Principal::user(rt.user(name)?.id),
        None => rt.admin(),
    })
}
