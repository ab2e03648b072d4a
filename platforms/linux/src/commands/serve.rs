//! `memkern serve` and `memkern mcp`: the runtime for other programs —
//! HTTP (with the OpenAI endpoint and MCP), the control socket for memkern
//! commands, MCP over stdio.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use memkern_runtime::Assistant;

use super::ctx::{data_dir, open};
use super::llm::{chosen_model, load_llm};
use crate::cli::{McpArgs, ServeArgs};

/// `memkern serve`.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let (rt, _) = open(&args.vault)?;
    let rt = Arc::new(rt);
    let bind = args
        .bind
        .clone()
        .unwrap_or_else(|| rt.config().server.bind.clone());
    let max_body = rt.config().server.max_body_bytes;
    let assistant = if args.no_llm {
        None
    } else {
        let chosen = chosen_model(args.model.model.as_deref(), rt.config());
        let llm = load_llm(chosen.as_deref(), &args.model.backend)?;
        Some(Arc::new(Assistant::new(rt.clone(), llm)?))
    };
    // Background housekeeping every minute: expired memories are deleted,
    // snapshot tiers brought back within their budgets.
    let sweeper = {
        let rt = Arc::downgrade(&rt);
        let assistant = assistant.as_ref().map(Arc::downgrade);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
                let Some(rt) = rt.upgrade() else { break };
                match rt.sweep_expired() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "expired memories deleted"),
                    Err(e) => tracing::warn!("expiry sweep failed: {e}"),
                }
                if let Some(a) = assistant.as_ref().and_then(std::sync::Weak::upgrade) {
                    match a.housekeeping() {
                        Ok((0, 0)) => {}
                        Ok((deleted, demoted)) => {
                            tracing::info!(deleted, demoted, "snapshot tiers within budget")
                        }
                        Err(e) => tracing::warn!("snapshot housekeeping failed: {e}"),
                    }
                }
            }
        })
    };
    // memkern commands on this data directory come in through the control
    // socket and run here; without it they would find the vault locked.
    let control = {
        let dir = data_dir(&args.vault)?;
        let (rt, assistant) = (rt.clone(), assistant.clone());
        crate::control::listen(&dir, move |session| {
            super::vault::serve_session(&rt, assistant.as_ref(), session)
        })
        .inspect_err(|e| {
            tracing::warn!("no control socket ({e:#}): memkern commands cannot reach this serve")
        })
        .ok()
    };
    let server = memkern_server::Server::start_with(rt, assistant, &bind, max_body)
        .with_context(|| format!("cannot serve on {bind}"))?;
    eprintln!(
        "memkern: serving http://{} (SIGINT or SIGTERM stops){}",
        server.addr(),
        if control.is_some() {
            "; memkern commands on this data directory go through it"
        } else {
            ""
        }
    );
    server.wait()?;
    drop(control);
    drop(sweeper); // detached; it ends at its next wake-up (the runtime is gone)
    Ok(())
}

/// `memkern mcp`: MCP tools over stdio as one user. Logs go to standard
/// error; standard output carries only the protocol.
pub fn mcp(args: &McpArgs) -> Result<()> {
    let (rt, who) = open(&args.vault)?;
    let who = match (&args.key, &args.vault.as_user) {
        (Some(key), _) => rt.authenticate(key).context("--key")?,
        (None, Some(_)) => who,
        (None, None) => bail!("say which user the tools act as: --as USER or --key KEY"),
    };
    let rt = Arc::new(rt);
    let assistant = if args.no_llm {
        None
    } else {
        let chosen = chosen_model(args.model.model.as_deref(), rt.config());
        let llm = load_llm(chosen.as_deref(), &args.model.backend)?;
        Some(Arc::new(Assistant::new(rt.clone(), llm)?))
    };
    memkern_server::mcp::serve_stdio(rt, assistant, who).context("MCP over stdio")
}
