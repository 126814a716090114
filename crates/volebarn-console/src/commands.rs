//! Folder commands: init, sync, watch, status, conflicts.

use crate::cli::{Ctx, Keep};
use crate::config::{ConfigFile, Overrides, Settings};
use crate::output::Output;
use crate::watch::{self, WatchOptions};
use anyhow::{bail, Context};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use volebarn_client::{Client, ConflictStrategy};
use volebarn_sync::engine::{Engine, EngineConfig, PassOptions, PassReport};
use volebarn_sync::scan::local_path;
use volebarn_sync::state::{self, ConflictRecord};

/// Exit code of a pass that finished but left something for the user: held deletions, paths
/// that failed, a refusal by the safety rails.
const EXIT_ATTENTION: u8 = 2;

/// The engine's client fails over quickly: a pass that cannot reach the server leaves local
/// changes pending and the next pass (or the change feed) retries, so long waits inside one
/// request only delay everything else.
pub fn engine_client(settings: &Settings) -> anyhow::Result<Client> {
    let mut cfg = settings.client_config();
    cfg.retry.max_retries = cfg.retry.max_retries.min(2);
    cfg.retry.max_delay = Duration::from_secs(2);
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.breaker.recovery_timeout = Duration::from_secs(5);
    Client::new(cfg).context("connecting")
}

pub fn open_engine(settings: &Settings, strategy: Option<ConflictStrategy>) -> anyhow::Result<Engine> {
    let folder = settings.folder()?;
    // The client (it reads the system's certificates) is built while the index is read.
    let (folder, client) = std::thread::scope(|s| {
        let client = s.spawn(|| engine_client(settings));
        let folder = Engine::open_folder(folder);
        (folder, client.join())
    });
    let client = client.map_err(|_| anyhow::anyhow!("building the HTTP client panicked"))??;
    Ok(folder?.engine(
        client,
        EngineConfig {
            strategy: strategy.unwrap_or(settings.strategy),
            max_delete_percent: settings.max_delete_percent,
        },
    ))
}

/// Whether `e` says another process (a `volebarn watch`) holds the folder's index.
fn is_in_use(e: &anyhow::Error) -> bool {
    e.downcast_ref::<volebarn_sync::SyncError>()
        .is_some_and(volebarn_sync::SyncError::is_in_use)
}

pub fn init(ctx: &Ctx, mut file: ConfigFile, o: &Overrides, folder: &Path) -> anyhow::Result<ExitCode> {
    let Some(config_path) = &ctx.config_path else {
        bail!("no config file location: pass --config FILE (HOME is not set)");
    };
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    let folder = std::fs::canonicalize(folder).with_context(|| format!("resolving {}", folder.display()))?;
    file.client.local_folder = Some(folder.clone());
    if let Some(s) = &o.server {
        file.client.server_url = Some(s.clone());
    }
    if let Some(t) = &o.token {
        file.client.token = Some(t.clone());
    }
    if let Some(c) = &o.ca_cert {
        let c = std::fs::canonicalize(c).with_context(|| format!("CA certificate {}", c.display()))?;
        file.tls.ca_cert_path = Some(c);
    }
    if file.client.server_url.is_none() {
        bail!("init needs --server URL (and --token T)");
    }
    file.save(config_path)?;
    #[derive(Serialize)]
    struct Out<'a> {
        config: &'a Path,
        folder: &'a Path,
    }
    ctx.out.emit(
        &Out {
            config: config_path,
            folder: &folder,
        },
        || {
            format!(
                "wrote {}: {} ⇄ {}\nnext: `volebarn sync` once, or `volebarn watch` to keep it in sync",
                config_path.display(),
                folder.display(),
                file.client.server_url.as_deref().unwrap_or_default()
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

fn lines(out: &mut String, title: &str, items: &[String]) {
    if !items.is_empty() {
        out.push_str(&format!("{title} ({}):\n", items.len()));
        for i in items {
            out.push_str(&format!("  {i}\n"));
        }
    }
}

fn pairs(out: &mut String, title: &str, items: &[(String, String)]) {
    if !items.is_empty() {
        out.push_str(&format!("{title} ({}):\n", items.len()));
        for (p, e) in items {
            out.push_str(&format!("  {}: {e}\n", if p.is_empty() { "." } else { p }));
        }
    }
}

/// A pass report for a person.
pub fn describe(r: &PassReport, dry_run: bool) -> String {
    let mut s = String::new();
    if let Some(why) = &r.refused {
        return format!("refused: {why}\n");
    }
    if let Some(why) = &r.offline {
        s.push_str(&format!(
            "offline ({why}); {} local changes pending\n",
            r.pending.total()
        ));
    }
    if dry_run {
        let p = &r.pending;
        if p.total() == 0 {
            s.push_str("in sync: nothing to do\n");
        }
        let moves: Vec<String> = match &r.plan {
            Some(plan) => plan
                .moves
                .iter()
                .map(|m| {
                    let dir = if m.directory { " (directory)" } else { "" };
                    format!("{} → {}{dir}", m.from, m.to)
                })
                .collect(),
            None => p.moves.iter().map(|(a, b)| format!("{a} → {b}")).collect(),
        };
        lines(&mut s, "would move on the server", &moves);
        lines(&mut s, "would upload", &p.uploads);
        lines(&mut s, "would download", &p.downloads);
        lines(&mut s, "would delete on the server", &p.deletes_remote);
        lines(&mut s, "would delete here", &p.deletes_local);
        lines(
            &mut s,
            "would delete directories on the server",
            &p.dir_deletes_remote,
        );
        lines(&mut s, "would delete directories here", &p.dir_deletes_local);
        let conflicts: Vec<String> = match &r.plan {
            Some(plan) => plan.conflicts.iter().map(planned_conflict).collect(),
            None => p.conflicts.clone(),
        };
        lines(&mut s, "conflicts", &conflicts);
    } else if r.offline.is_none() {
        let x = &r.result;
        s.push_str(&format!(
            "uploaded {}, downloaded {}, moved {}, deleted {} here and {} on the server, {} conflicts settled\n",
            x.uploaded.len(),
            x.downloaded.len(),
            r.moved.len(),
            x.deleted_local.len(),
            x.deleted_remote.len(),
            x.conflicts_resolved.len(),
        ));
        let copies: Vec<String> = x
            .conflict_copies
            .iter()
            .map(|c| {
                format!(
                    "{}: the {} version is kept as {:?}",
                    c.path,
                    if c.copy_is_local { "local" } else { "remote" },
                    c.copy
                )
            })
            .collect();
        lines(&mut s, "conflicts", &copies);
        if !r.manual_conflicts.is_empty() {
            s.push_str("settle them with `volebarn conflicts resolve PATH --keep local|remote|both`\n");
        }
        lines(
            &mut s,
            "conflicts needing you (see `volebarn conflicts`)",
            &x.conflicts,
        );
        pairs(&mut s, "errors", &x.errors);
        pairs(&mut s, "failed, then settled by planning again", &r.retried);
    }
    if let Some(why) = &r.held_reason {
        s.push_str(&format!("deletions held: {why}\n"));
        lines(&mut s, "held", &r.held_deletions);
    }
    pairs(&mut s, "not synced", &r.problems);
    s
}

/// What a pass will do about one conflict, for a person.
fn planned_conflict(c: &volebarn_core::sync::SyncConflict) -> String {
    use volebarn_core::sync::{ConflictKind, ConflictResolution};
    let what = match (c.kind, c.resolution) {
        (ConflictKind::FileDirectory, _) => {
            "a file on one side, a directory on the other: left for you (see `volebarn conflicts`)"
        }
        (_, ConflictResolution::UseLocal) => {
            "the local version wins; the server's is kept as a conflict copy"
        }
        (_, ConflictResolution::Manual) => {
            "both versions kept (the local one as a conflict copy) for you to settle"
        }
        (_, _) => "the server's version wins; the local one is kept as a conflict copy",
    };
    format!("{}: {what}", c.path)
}

fn needs_attention(r: &PassReport) -> bool {
    r.refused.is_some()
        || r.offline.is_some()
        || !r.held_deletions.is_empty()
        || !r.result.errors.is_empty()
        || !r.result.conflicts.is_empty()
        || !r.manual_conflicts.is_empty()
}

pub async fn sync(
    ctx: &Ctx,
    strategy: Option<ConflictStrategy>,
    dry_run: bool,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let opts = PassOptions { dry_run, force };
    let report = match open_engine(&ctx.settings, strategy) {
        Ok(mut engine) => {
            show_progress(&mut engine, ctx.out);
            engine.pass(opts).await?
        }
        Err(e) if is_in_use(&e) => sync_through_watch(ctx, strategy, opts).await?,
        Err(e) => return Err(e),
    };
    // `--dry-run --json`: the plan itself (the README documents its shape).
    match &report.plan {
        Some(plan) if dry_run && report.refused.is_none() && report.offline.is_none() => {
            ctx.out.emit(plan, || describe(&report, dry_run))
        }
        _ => ctx.out.emit(&report, || describe(&report, dry_run)),
    }
    if report.refused.is_some() {
        bail!("{}", report.refused.as_deref().unwrap_or_default());
    }
    if let Some(o) = &report.offline {
        bail!("{o}");
    }
    Ok(if needs_attention(&report) {
        ExitCode::from(EXIT_ATTENTION)
    } else {
        ExitCode::SUCCESS
    })
}

/// `sync` while a `volebarn watch` holds the folder: asks the watch for a pass with these
/// options and waits for its report. Should the watch stop first, the pass runs here.
async fn sync_through_watch(
    ctx: &Ctx,
    strategy: Option<ConflictStrategy>,
    opts: PassOptions,
) -> anyhow::Result<PassReport> {
    let folder = ctx.settings.folder()?.to_path_buf();
    ctx.out
        .note("a `volebarn watch` is syncing this folder: asking it for this pass");
    if strategy.is_some() {
        ctx.out
            .note("--strategy is ignored: the running watch settles conflicts its own way (config)");
    }
    let request = state::request_pass(&folder, opts.dry_run, opts.force)?;
    let mut probe = tokio::time::Instant::now();
    loop {
        if let Some(answer) = state::take_answer(&folder, request.id)? {
            return match (answer.report, answer.error) {
                (Some(report), _) => Ok(report),
                (None, e) => bail!("{}", e.unwrap_or_else(|| "the watch's pass failed".into())),
            };
        }
        // Still watched? Once the index is free, nobody will answer: do the pass here.
        if probe.elapsed() >= Duration::from_secs(1) {
            probe = tokio::time::Instant::now();
            match open_engine(&ctx.settings, strategy) {
                Ok(mut engine) => {
                    state::withdraw(&folder, request.id);
                    show_progress(&mut engine, ctx.out);
                    return Ok(engine.pass(opts).await?);
                }
                Err(e) if is_in_use(&e) => {}
                Err(e) => return Err(e),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A progress bar for each pass's transfers (on a terminal, for a person).
fn show_progress(engine: &mut Engine, out: Output) {
    engine.set_progress(Box::new(move |bytes, files| Arc::new(out.progress(bytes, files))));
}

pub async fn watch(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut engine = open_engine(&ctx.settings, None)?;
    show_progress(&mut engine, ctx.out);
    let out = ctx.out;
    ctx.out.note(format!(
        "watching {} ⇄ {} (full rescan every {:?}); Ctrl-C stops",
        engine.root().display(),
        ctx.settings.server_url,
        ctx.settings.rescan_interval
    ));
    let mut last_attention = String::new();
    watch::run(
        engine,
        WatchOptions {
            poll_interval: ctx.settings.poll_interval,
            rescan_interval: ctx.settings.rescan_interval,
            debounce: ctx.settings.debounce,
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
        move |r| {
            if out.json {
                if let Ok(s) = serde_json::to_string(r) {
                    println!("{s}");
                }
                return;
            }
            let text = describe(r, false);
            let attention = needs_attention(r);
            // Print what changed, and a standing problem once rather than every pass.
            if r.changed_anything() || (attention && text != last_attention) {
                let t = volebarn_core::timefmt::format_rfc3339(volebarn_core::timefmt::now_nanos());
                out.note(format!("[{}] {}", &t[..19], text.trim_end()));
            }
            last_attention = if attention { text } else { String::new() };
        },
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct StatusOut {
    folder: String,
    server: String,
    server_ok: bool,
    server_detail: String,
    /// A `volebarn watch` holds the folder (the figures are from its last pass).
    watching: bool,
    last_sync: Option<String>,
    synced_files: usize,
    pending: volebarn_sync::engine::Pending,
    offline: Option<String>,
    refused: Option<String>,
    held_deletions: Vec<String>,
    held_reason: Option<String>,
    conflicts: Vec<ConflictRecord>,
    problems: Vec<(String, String)>,
    errors: Vec<(String, String)>,
    metrics: state::SyncMetrics,
}

pub async fn status(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let folder = ctx.settings.folder()?.to_path_buf();
    let client = engine_client(&ctx.settings)?;
    let (server_ok, server_detail) = match client.ping().await {
        Ok(h) => (true, format!("{} (version {})", h.status, h.version)),
        Err(e) => (false, format!("unreachable: {e}")),
    };
    // A dry-run pass when the folder is free; a running watch's last report otherwise.
    let (watching, report) = match open_engine(&ctx.settings, None) {
        Ok(mut engine) => (
            false,
            Some(
                engine
                    .pass(PassOptions {
                        dry_run: true,
                        force: false,
                    })
                    .await?,
            ),
        ),
        Err(e) if is_in_use(&e) => (true, None),
        Err(e) => return Err(e),
    };
    let saved = state::read_status(&folder)?.unwrap_or_default();
    // A fresh dry-run pass when we have one; the running watch's last pass otherwise.
    let (pending, offline, refused, held_deletions, held_reason, problems) = match report {
        Some(r) => (
            r.pending,
            r.offline,
            r.refused,
            r.held_deletions,
            r.held_reason,
            r.problems,
        ),
        None => (
            saved.pending,
            saved.offline,
            saved.refused,
            saved.held_deletions,
            saved.held_reason,
            saved.problems,
        ),
    };
    let s = StatusOut {
        folder: folder.display().to_string(),
        server: ctx.settings.server_url.clone(),
        server_ok,
        server_detail,
        watching,
        last_sync: saved.last_sync,
        synced_files: saved.synced_files,
        pending,
        offline,
        refused,
        held_deletions,
        held_reason,
        conflicts: state::read_conflicts(&folder)?,
        problems,
        errors: saved.errors,
        metrics: saved.metrics,
    };
    ctx.out.emit(&s, || {
        let mut t = format!(
            "folder:     {}{}\nserver:     {} — {}\nlast sync:  {}\nsynced:     {} files\n",
            s.folder,
            if s.watching {
                " (volebarn watch is running)"
            } else {
                ""
            },
            s.server,
            s.server_detail,
            s.last_sync.as_deref().unwrap_or("never"),
            s.synced_files
        );
        let p = &s.pending;
        t.push_str(&format!(
            "pending:    {} uploads, {} downloads, {} deletions on the server, {} here, {} moves\n",
            p.uploads.len(),
            p.downloads.len(),
            p.deletes_remote.len(),
            p.deletes_local.len(),
            p.moves.len()
        ));
        if let Some(r) = &s.refused {
            t.push_str(&format!("REFUSED:    {r}\n"));
        }
        if let Some(r) = &s.held_reason {
            t.push_str(&format!(
                "HELD:       {} deletions: {r}\n",
                s.held_deletions.len()
            ));
        }
        t.push_str(&format!(
            "conflicts:  {}{}\n",
            s.conflicts.len(),
            if s.conflicts.is_empty() {
                ""
            } else {
                " (see `volebarn conflicts`)"
            }
        ));
        pairs(&mut t, "not synced", &s.problems);
        pairs(&mut t, "errors in the last pass", &s.errors);
        t.push_str(&describe_metrics(&s.metrics));
        t
    });
    Ok(ExitCode::SUCCESS)
}

/// The folder's running totals, two lines for a person.
fn describe_metrics(m: &state::SyncMetrics) -> String {
    use indicatif::HumanBytes;
    let x = &m.transfer;
    let within = |q: f64| match x.response_within_ms(q) {
        Some(ms) => format!("≤ {ms} ms"),
        None => "slower".into(),
    };
    let responses = if x.response_ms.iter().sum::<u64>() == 0 {
        String::new()
    } else {
        format!("; answers p50 {}, p90 {}", within(0.5), within(0.9))
    };
    format!(
        "totals:     {} passes (avg {} ms), {} files synced, {} up, {} down, {} sync errors\n\
         network:    {} requests, {} network errors, {} hash mismatches{responses}\n",
        m.passes,
        m.average_pass_ms().unwrap_or(0),
        m.files_synced,
        HumanBytes(x.bytes_sent),
        HumanBytes(x.bytes_received),
        m.sync_errors,
        x.requests,
        x.network_errors,
        x.hash_mismatches,
    )
}

pub fn conflicts(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let folder = ctx.settings.folder()?;
    let list = state::read_conflicts(folder)?;
    ctx.out.emit(&list, || {
        if list.is_empty() {
            return "no conflicts".into();
        }
        let mut t = String::new();
        for c in &list {
            match &c.copy {
                Some(copy) => t.push_str(&format!(
                    "{}\n  at the path: the {} version\n  {:?}: the {} version\n",
                    c.path,
                    if c.copy_is_local { "remote" } else { "local" },
                    copy,
                    if c.copy_is_local { "local" } else { "remote" },
                )),
                None => t.push_str(&format!(
                    "{}\n  a file on one side, a directory on the other\n",
                    c.path
                )),
            }
        }
        t.push_str("settle one with `volebarn conflicts resolve PATH --keep local|remote|both`");
        t
    });
    Ok(ExitCode::SUCCESS)
}

/// Settles a conflict by file operations in the folder (the next pass syncs them: the removed
/// copy is deleted on the server, where it stays restorable from versions).
pub async fn resolve(ctx: &Ctx, path: &str, keep: Keep) -> anyhow::Result<ExitCode> {
    let folder = ctx.settings.folder()?.to_path_buf();
    let path = path.trim_start_matches('/').to_string();
    let list = state::read_conflicts(&folder)?;
    let Some(c) = list
        .iter()
        .find(|c| c.path == path || c.copy.as_deref() == Some(path.as_str()))
        .cloned()
    else {
        bail!("{path} is not in the conflicts list (see `volebarn conflicts`)");
    };
    match (&c.copy, keep) {
        (_, Keep::Both) => {}
        (None, _) => bail!(
            "{}: a file on one side and a directory on the other; rename or remove one, then sync \
             (or `--keep both` to stop listing it)",
            c.path
        ),
        (Some(copy), keep) => {
            let target = local_path(&folder, &c.path);
            let copy_path = local_path(&folder, copy);
            if !copy_path.exists() {
                bail!("the conflict copy {copy:?} is gone; nothing to settle (use --keep both to dismiss)");
            }
            let keep_copy = matches!(
                (keep, c.copy_is_local),
                (Keep::Local, true) | (Keep::Remote, false)
            );
            if keep_copy {
                std::fs::rename(&copy_path, &target)
                    .with_context(|| format!("moving {copy:?} to {:?}", c.path))?;
            } else {
                std::fs::remove_file(&copy_path).with_context(|| format!("removing {copy:?}"))?;
            }
        }
    }
    state::update_conflicts(&folder, |l| l.retain(|x| x != &c))?;
    // Push the result now unless a running `watch` will.
    let synced = match open_engine(&ctx.settings, None) {
        Ok(mut engine) => Some(engine.pass(PassOptions::default()).await?),
        Err(e) if is_in_use(&e) => None,
        Err(e) => return Err(e),
    };
    #[derive(Serialize)]
    struct Out<'a> {
        resolved: &'a str,
        kept: Keep,
        synced: bool,
    }
    ctx.out.emit(
        &Out {
            resolved: &c.path,
            kept: keep,
            synced: synced.as_ref().is_some_and(|r| r.offline.is_none()),
        },
        || {
            format!(
                "{}: kept {keep:?} version{}",
                c.path,
                if keep == Keep::Both { "s" } else { "" }
            )
            .to_lowercase()
        },
    );
    Ok(ExitCode::SUCCESS)
}
