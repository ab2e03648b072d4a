//! `memkern modules …` and `memkern keys …`: building and signing modules
//! (here, no vault needed), and the device's side (through a running
//! serve when there is one, like every vault command).

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use memkern_core::time::Timestamp;
use memkern_runtime::input::parse_time;
use memkern_runtime::modules::{self, InstallAction, Manifest, ModuleInfo, Scope};

use super::ctx::Ctx;
use super::memory::print;
use crate::cli::{BuildArgs, InstallArgs, KeysCommand, ModulesArgs, ModulesCommand};

/// `memkern keys new|show`.
pub fn keys(command: &KeysCommand) -> Result<()> {
    match command {
        KeysCommand::New { file } => {
            let public = memkern_runtime::pack::generate_key(file)?;
            println!("public key: {public}");
            eprintln!(
                "keep {} secret; give the public key to whoever installs what you sign",
                file.display()
            );
        }
        KeysCommand::Device { vault } => {
            let dir = super::ctx::data_dir(vault)?;
            let recipient = modules::seal::device_recipient(&dir)?;
            println!("device key: {recipient}");
        }
        KeysCommand::Show { file } => {
            let key = memkern_runtime::pack::load_key(file)?;
            let public: String = key
                .verifying_key()
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            println!("public key: {public}");
        }
    }
    Ok(())
}

/// `memkern modules seal`: no vault.
pub fn seal(module: &std::path::Path, to: &str, out: &std::path::Path) -> Result<()> {
    let bytes =
        std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    let path = std::path::Path::new(to);
    let recipient = if !to.starts_with("age1") && path.is_file() {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .find_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("age1"))
                    .map(str::to_owned)
            })
            .with_context(|| format!("no age1… recipient in {}", path.display()))?
    } else {
        to.to_owned()
    };
    let sealed = modules::seal::seal(&bytes, &recipient)?;
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &sealed)
        .and_then(|()| std::fs::rename(&tmp, out))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "sealed {} to {to}: {} bytes",
        module.display(),
        sealed.len()
    );
    Ok(())
}

/// `memkern modules build`: no vault, only the embedder.
pub fn build(args: &BuildArgs, no_embed: bool, json: bool) -> Result<()> {
    let items = match (&args.from_dir, &args.from_json) {
        (Some(dir), _) => modules::items_from_dir(dir)?,
        (None, Some(file)) => modules::items_from_json(
            &std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?,
        )?,
        (None, None) => bail!("give --from-dir DIR or --from-json FILE"),
    };
    let key = memkern_runtime::pack::load_key(&args.key)?;
    let publisher: String = key
        .verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let manifest = Manifest {
        id: args.id.clone(),
        name: args.name.clone().unwrap_or_else(|| args.id.clone()),
        version: args.version.clone(),
        publisher,
        licence: args.licence.clone(),
        description: args.description.clone(),
        language: args.language.clone(),
    };
    manifest.check()?;
    let released = match (&args.released, std::env::var("SOURCE_DATE_EPOCH")) {
        (Some(date), _) => parse_time(date)?,
        (None, Ok(secs)) => Timestamp(
            secs.trim()
                .parse::<i64>()
                .context("SOURCE_DATE_EPOCH is not a number of seconds")?
                .saturating_mul(1000),
        ),
        (None, Err(_)) => Timestamp(0),
    };
    let embedder = if args.no_vectors || no_embed {
        None
    } else {
        Some(memkern_runtime::embed::load_default().map_err(|why| {
            anyhow::anyhow!("{why} (use --no-vectors to let the installer embed)")
        })?)
    };
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} memories ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = ProgressBar::new(items.len() as u64)
        .with_style(style)
        .with_message("embedding");
    let (bytes, report) = modules::build_module(
        &manifest,
        released,
        &items,
        embedder.as_deref(),
        &key,
        |n| bar.set_position(n as u64),
    )?;
    bar.finish_and_clear();
    let tmp = args.out.with_extension("tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, &args.out))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    print(&mut std::io::stdout(), json, &report, |r| {
        format!(
            "built {} {}: {} memories{}, {} bytes, sha256 {}",
            r.id,
            r.version,
            r.memories,
            if r.embedded { " with vectors" } else { "" },
            r.bytes,
            r.sha256
        )
    })
}

fn info_text(m: &ModuleInfo, rt: &memkern_runtime::Runtime) -> String {
    let scope = if m.global {
        "everyone".to_owned()
    } else {
        m.users
            .iter()
            .map(|u| rt.user_by_id(*u).map_or_else(|_| u.to_string(), |i| i.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{} {}  {}  ({} memories, for {})\n  licence {}; publisher {}\n  {}",
        m.manifest.id,
        m.manifest.version,
        m.manifest.name,
        m.memories,
        scope,
        m.manifest.licence,
        m.manifest.publisher,
        m.manifest.description
    )
}

/// `memkern modules …` on a vault (here or in serve).
pub fn run(args: &ModulesArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let json = args.vault.json;
    match &args.command {
        ModulesCommand::Build(_) | ModulesCommand::Seal { .. } => {
            bail!("`modules build` and `seal` need no vault and run here")
        }
        ModulesCommand::Trust { key, name } => {
            let key = rt.trust_publisher(&who, key, name)?;
            print(
                cx.out,
                json,
                &serde_json::json!({ "trusted": key, "name": name }),
                |_| format!("trusting modules signed by {key} ({name})"),
            )
        }
        ModulesCommand::Distrust { key } => {
            let was = rt.distrust_publisher(&who, key)?;
            print(
                cx.out,
                json,
                &serde_json::json!({ "distrusted": was }),
                |_| {
                    if was {
                        "no longer trusted (installed modules stay)".to_owned()
                    } else {
                        "that key was not trusted".to_owned()
                    }
                },
            )
        }
        ModulesCommand::Publishers => {
            let list = rt.publishers()?;
            let rows: Vec<_> = list
                .iter()
                .map(|(k, n)| serde_json::json!({ "key": k, "name": n }))
                .collect();
            print(cx.out, json, &rows, |_| {
                if list.is_empty() {
                    "no trusted publishers".to_owned()
                } else {
                    list.iter()
                        .map(|(k, n)| format!("{k}  {n}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            })
        }
        ModulesCommand::Install(a) => install(a, cx, json),
        ModulesCommand::List => {
            let list = rt.modules(&who)?;
            print(cx.out, json, &list, |l| {
                if l.is_empty() {
                    "no modules installed".to_owned()
                } else {
                    l.iter()
                        .map(|m| info_text(m, rt))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            })
        }
        ModulesCommand::Info { id } => {
            let m = rt.module(&who, id)?;
            print(cx.out, json, &m, |m| info_text(m, rt))
        }
        ModulesCommand::Remove { id } => {
            let r = rt.remove_module(&who, id)?;
            print(cx.out, json, &r, |r| {
                if r.removed {
                    format!("removed {} {} ({} memories)", r.id, r.version, r.memories)
                } else {
                    format!("unmounted {} for you; others still have it", r.id)
                }
            })
        }
    }
}

fn install(a: &InstallArgs, cx: &mut Ctx<'_>, json: bool) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let scope = if a.global {
        Scope::Global
    } else if !a.users.is_empty() {
        Scope::Users(
            a.users
                .iter()
                .map(|u| rt.user(u).map(|i| i.id))
                .collect::<Result<_, _>>()?,
        )
    } else if who.role == memkern_core::governance::Role::Admin {
        bail!("say for whom: --for USER (repeatable) or --global")
    } else {
        Scope::Users(vec![who.user])
    };
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let r = rt.install_module(&who, &bytes, &scope)?;
    print(cx.out, json, &r, |r| {
        let verb = match r.action {
            InstallAction::Installed => "installed".to_owned(),
            InstallAction::Updated => {
                format!("updated from {} to", r.previous.as_deref().unwrap_or("?"))
            }
            InstallAction::Extended => "mounted for more users:".to_owned(),
            InstallAction::AlreadyInstalled => "already installed:".to_owned(),
        };
        let embedded = if r.embedded_here > 0 {
            format!(", {} embedded here", r.embedded_here)
        } else {
            String::new()
        };
        format!(
            "{verb} {} {} ({} memories{embedded})",
            r.id, r.version, r.memories
        )
    })
}
