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

/// A public key as lowercase hex (what others trust).
fn public_hex(public: &[u8]) -> String {
    public.iter().map(|b| format!("{b:02x}")).collect()
}

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
            let public = public_hex(key.verifying_key().as_bytes());
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

/// The manual's documents, as built into this binary.
const MANUAL_DOCS: [(&str, &str); 3] = [
    ("README.md", include_str!("../../../../README.md")),
    (
        "ARCHITECTURE.md",
        include_str!("../../../../ARCHITECTURE.md"),
    ),
    ("FORMAT.md", include_str!("../../../../core/FORMAT.md")),
];

/// Every command's `--help` (long form), depth first.
/// Options most commands share (vault, output): left out of the manual's
/// command texts, where they only drowned what each command does.
const SHARED_OPTIONS: &[&str] = &["data_dir", "config", "no_embed", "as_user", "json", "help"];

/// A command's help as the manual keeps it: what it does, its usage, and
/// its own arguments in one line each.
fn concise_help(cmd: &mut clap::Command, name: &str) -> String {
    let about = cmd
        .get_long_about()
        .or_else(|| cmd.get_about())
        .map(ToString::to_string)
        .unwrap_or_default();
    // The usage of a subcommand names it alone ("share"): name it whole.
    let usage = cmd.render_usage().to_string().replacen(
        &format!("Usage: {}", cmd.get_name()),
        &format!("Usage: {name}"),
        1,
    );
    let mut text = format!("{about}\n\n{usage}\n");
    for arg in cmd.get_arguments() {
        if arg.is_hide_set() || SHARED_OPTIONS.contains(&arg.get_id().as_str()) {
            continue;
        }
        let what = match (arg.get_long(), arg.get_value_names()) {
            (Some(long), Some(v)) => format!("--{long} <{}>", v.join(" ")),
            (Some(long), None) => format!("--{long}"),
            (None, _) => format!("<{}>", arg.get_id().as_str().to_uppercase()),
        };
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_owned())
            .collect();
        text += &format!("- {what}: {help}");
        if !values.is_empty() {
            text += &format!(" ({})", values.join(", "));
        }
        text += "\n";
    }
    text
}

fn help_texts(cmd: &mut clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    let name = if path.is_empty() {
        cmd.get_name().to_owned()
    } else {
        format!("{path} {}", cmd.get_name())
    };
    out.push((name.clone(), concise_help(cmd, &name)));
    for sub in cmd.get_subcommands_mut() {
        if sub.get_name() != "help" {
            help_texts(sub, &name, out);
        }
    }
}

/// `memkern modules manual`: memkern's own documentation as a module.
pub fn manual(key: &std::path::Path, out: &std::path::Path, no_vectors: bool) -> Result<()> {
    use clap::CommandFactory;
    let mut items = Vec::new();
    for (name, text) in MANUAL_DOCS {
        items.extend(modules::chunk_file(name, text));
    }
    let mut helps = Vec::new();
    help_texts(&mut crate::cli::Cli::command(), "", &mut helps);
    for (command, text) in helps {
        let mut chunk = modules::chunk_file("--help", &format!("# `{command}`\n\n{text}"));
        for item in &mut chunk {
            item.source = Some(format!("{command} --help"));
        }
        items.extend(chunk);
    }
    let args = BuildArgs {
        from_dir: None,
        from_json: None,
        from_pack: None,
        id: "memkern-manual".to_owned(),
        name: Some("memkern manual".to_owned()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        licence: env!("CARGO_PKG_LICENSE").to_owned(),
        description:
            "How to use memkern: README, ARCHITECTURE, the cube format and every command's --help"
                .to_owned(),
        language: "en".to_owned(),
        released: None,
        key: key.to_path_buf(),
        out: out.to_path_buf(),
        no_vectors,
        kv_models: Vec::new(),
        adapters: Vec::new(),
    };
    build_items(&args, items, no_vectors, false)
}

/// `memkern modules build`: no vault, only the embedder.
pub fn build(args: &BuildArgs, no_embed: bool, json: bool) -> Result<()> {
    let read = |file: &std::path::Path| {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
    };
    let items = match (&args.from_dir, &args.from_json, &args.from_pack) {
        (Some(dir), _, _) => modules::items_from_dir(dir)?,
        (None, Some(file), _) => modules::items_from_json(&read(file)?)?,
        (None, None, Some(file)) => modules::items_from_pack(&read(file)?)?,
        (None, None, None) => bail!("give --from-dir DIR, --from-json FILE or --from-pack FILE"),
    };
    build_items(args, items, no_embed, json)
}

fn build_items(
    args: &BuildArgs,
    items: Vec<modules::Item>,
    no_embed: bool,
    json: bool,
) -> Result<()> {
    let key = memkern_runtime::pack::load_key(&args.key)?;
    let publisher = public_hex(key.verifying_key().as_bytes());
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
    let llms = args
        .kv_models
        .iter()
        .map(|m| super::llm::load_llm(Some(m), "cpu"))
        .collect::<Result<Vec<_>>>()?;
    let adapters = args
        .adapters
        .iter()
        .map(|f| std::fs::read(f).with_context(|| format!("cannot read {}", f.display())))
        .collect::<Result<Vec<_>>>()?;
    let extras = modules::Extras {
        kv_models: llms.iter().collect(),
        adapters,
    };
    let (bytes, report) = modules::build_module(
        &manifest,
        released,
        &items,
        embedder.as_deref(),
        &extras,
        &key,
        |n| bar.set_position(n as u64),
    )?;
    bar.finish_and_clear();
    let tmp = args.out.with_extension("tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, &args.out))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    print(&mut std::io::stdout(), json, &report, |r| {
        let mut extras = String::new();
        if r.kv_blocks > 0 {
            extras += &format!(", {} KV blocks", r.kv_blocks);
        }
        if r.adapters > 0 {
            extras += &format!(", {} adapters", r.adapters);
        }
        format!(
            "built {} {}: {} memories{}{extras}, {} bytes, sha256 {}",
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
        ModulesCommand::Build(_)
        | ModulesCommand::Seal { .. }
        | ModulesCommand::Index { .. }
        | ModulesCommand::Manual { .. } => {
            bail!("`modules build`, `seal` and `index` need no vault and run here")
        }
        ModulesCommand::Search { query, indexes } => {
            let found = indexes_of(rt, indexes)?;
            let mut rows = Vec::new();
            for (url, index) in &found {
                for e in index.search(query) {
                    rows.push(serde_json::json!({
                        "index": url, "id": e.id, "name": e.name, "version": e.version,
                        "description": e.description, "publisher": e.publisher, "bytes": e.bytes
                    }));
                }
            }
            print(cx.out, json, &rows, |rows| {
                if rows.is_empty() {
                    "no module matches".to_owned()
                } else {
                    rows.iter()
                        .map(|r| {
                            format!(
                                "{} {}  {}  ({} bytes)\n  {}",
                                r["id"].as_str().unwrap_or(""),
                                r["version"].as_str().unwrap_or(""),
                                r["name"].as_str().unwrap_or(""),
                                r["bytes"],
                                r["description"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            })
        }
        ModulesCommand::Update { id, indexes } => update(id.as_deref(), indexes, cx, json),
        ModulesCommand::UserKey {
            user,
            export,
            import,
        } => {
            let id = rt.user(user)?.id;
            let recipient = match import {
                Some(file) => rt.import_user_key(
                    &who,
                    id,
                    &std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read {}", file.display()))?,
                )?,
                None => rt.user_key(&who, id)?,
            };
            if let Some(file) = export {
                let text = rt.export_user_key(&who, id)?;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                use std::io::Write;
                opts.open(file)
                    .and_then(|mut f| f.write_all(text.as_bytes()))
                    .with_context(|| {
                        format!("cannot write {} (it must not exist)", file.display())
                    })?;
            }
            print(
                cx.out,
                json,
                &serde_json::json!({ "user": user, "key": recipient }),
                |_| format!("{user}'s key: {recipient}"),
            )
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
    let path = std::path::Path::new(&a.module);
    let bytes = if a.module.starts_with("http://") || a.module.starts_with("https://") {
        // No index vouches for its checksum: the signature, the trusted
        // publisher and (if sealed) this device's key still decide.
        get(&a.module)?
    } else if path.exists() {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
    } else if a.module.contains('/') || a.module.ends_with(".mkmod") {
        bail!("no module file {}", path.display())
    } else {
        let found = indexes_of(rt, &a.indexes)?;
        let (url, entry) = found
            .iter()
            .filter_map(|(url, i)| i.newest(&a.module).map(|e| (url, e)))
            .max_by_key(|(_, e)| semver::Version::parse(&e.version).ok())
            .with_context(|| {
                format!(
                    "no file {:?} here and no module {:?} in the indexes",
                    a.module, a.module
                )
            })?;
        download(url, entry, cx.local())?
    };
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
        let mut out = format!(
            "{verb} {} {} ({} memories{embedded})",
            r.id, r.version, r.memories
        );
        for d in &r.derived {
            let fit = match d.this_model {
                Some(true) => "this model: used",
                Some(false) => "another model: kept, unused here (KV blocks are derived on demand)",
                None => "no model loaded here",
            };
            out += &format!(
                "\n  {} {}{} ({} bytes) for model {}: {fit}",
                d.count,
                d.kind.name(),
                if d.count == 1 { "" } else { "s" },
                d.bytes,
                d.model
            );
        }
        out
    })
}

/// `memkern modules index`: no vault.
pub fn index(
    files: &[std::path::PathBuf],
    base_url: &str,
    key: &std::path::Path,
    out: &std::path::Path,
) -> Result<()> {
    let key = memkern_runtime::pack::load_key(key)?;
    let mut loaded = Vec::with_capacity(files.len());
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no UTF-8 file name", f.display()))?
            .to_owned();
        loaded.push((
            name,
            std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
        ));
    }
    let (json, sig) = modules::index::build_index(&loaded, base_url, &key)?;
    let sig_path = signature_path(out);
    std::fs::write(out, &json)
        .and_then(|()| std::fs::write(&sig_path, format!("{sig}\n")))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "wrote {} ({} modules) and {}",
        out.display(),
        loaded.len(),
        sig_path.display()
    );
    Ok(())
}

fn signature_path(index: &std::path::Path) -> std::path::PathBuf {
    let mut s = index.as_os_str().to_owned();
    s.push(".sig");
    std::path::PathBuf::from(s)
}

/// Largest index or module download, bytes.
const MAX_DOWNLOAD: u64 = 256 << 20;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .build()
        .into()
}

fn get(url: &str) -> Result<Vec<u8>> {
    agent()
        .get(url)
        .call()
        .with_context(|| format!("cannot fetch {url}"))?
        .into_body()
        .with_config()
        .limit(MAX_DOWNLOAD)
        .read_to_vec()
        .with_context(|| format!("cannot read {url}"))
}

/// The indexes `urls` (or `[modules] index`), each verified against the
/// trusted publishers.
fn indexes_of(
    rt: &memkern_runtime::Runtime,
    urls: &[String],
) -> Result<Vec<(String, modules::index::Index)>> {
    let urls: Vec<String> = if urls.is_empty() {
        rt.config().modules.index.clone()
    } else {
        urls.to_vec()
    };
    if urls.is_empty() {
        bail!("no module index: pass --index URL or set [modules] index in memkern.toml");
    }
    let trusted: Vec<String> = rt.publishers()?.into_iter().map(|(k, _)| k).collect();
    urls.into_iter()
        .map(|url| {
            let json = get(&url)?;
            let sig = String::from_utf8(get(&format!("{url}.sig"))?)
                .with_context(|| format!("{url}.sig is not text"))?;
            let index = modules::index::open_index(&json, sig.trim(), &trusted)
                .with_context(|| url.clone())?;
            Ok((url, index))
        })
        .collect()
}

/// Downloads `entry` of the index at `index_url` with a progress bar and
/// checks it (size, SHA-256, the module it claims) before returning it.
fn download(index_url: &str, entry: &modules::index::IndexEntry, local: bool) -> Result<Vec<u8>> {
    let url = modules::index::resolve_url(index_url, &entry.url);
    let response = agent()
        .get(&url)
        .call()
        .with_context(|| format!("cannot fetch {url}"))?;
    let bar = if local {
        ProgressBar::new(entry.bytes)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("{} {}", entry.id, entry.version));
    let mut bytes = Vec::with_capacity(usize::try_from(entry.bytes).unwrap_or(0).min(1 << 26));
    let mut reader = bar.wrap_read(
        response
            .into_body()
            .into_with_config()
            .limit(MAX_DOWNLOAD)
            .reader(),
    );
    std::io::Read::read_to_end(&mut reader, &mut bytes)
        .with_context(|| format!("cannot read {url}"))?;
    bar.finish_and_clear();
    modules::index::check_download(entry, &bytes)?;
    Ok(bytes)
}

/// `memkern modules update [ID]`.
fn update(id: Option<&str>, indexes: &[String], cx: &mut Ctx<'_>, json: bool) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let installed: Vec<ModuleInfo> = rt
        .modules(&who)?
        .into_iter()
        .filter(|m| id.is_none_or(|id| m.manifest.id == id))
        .collect();
    if let Some(id) = id
        && installed.is_empty()
    {
        bail!("module {id} is not installed");
    }
    let found = indexes_of(rt, indexes)?;
    let mut reports = Vec::new();
    for m in &installed {
        let current = semver::Version::parse(&m.manifest.version)?;
        let newest = found
            .iter()
            .filter_map(|(url, i)| i.newest(&m.manifest.id).map(|e| (url, e)))
            .filter(|(_, e)| semver::Version::parse(&e.version).is_ok_and(|v| v > current))
            .max_by_key(|(_, e)| semver::Version::parse(&e.version).ok());
        let Some((url, entry)) = newest else { continue };
        let bytes = download(url, entry, cx.local())?;
        let scope = if m.global {
            Scope::Global
        } else if who.role == memkern_core::governance::Role::Admin {
            Scope::Users(m.users.clone())
        } else {
            Scope::Users(vec![who.user])
        };
        reports.push(rt.install_module(&who, &bytes, &scope)?);
    }
    print(cx.out, json, &reports, |r| {
        if r.is_empty() {
            "every module is up to date".to_owned()
        } else {
            r.iter()
                .map(|r| {
                    format!(
                        "updated {} from {} to {}",
                        r.id,
                        r.previous.as_deref().unwrap_or("?"),
                        r.version
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    })
}
