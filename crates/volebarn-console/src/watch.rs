//! `volebarn watch`: after the initial pass, a pass runs whenever the folder changes (notify,
//! debounced), whenever the server's journal moves (`/changes` long-poll), and every
//! `poll_interval` regardless, to catch anything a watcher can miss (overflowed event queues,
//! network filesystems). Passes never overlap; wake-ups that arrive during one are merged.
//! A pass after a local event scans only the paths notify reported (and what the server
//! changed); the periodic pass, and any pass after the watcher lost events, scans everything.
//! A `volebarn sync` run meanwhile cannot open the index; it leaves a request in `.volebarn/`
//! instead, which wakes the watch for a pass with the sync's options (`--force`, `--dry-run`),
//! and gets that pass's report back (see `state::PassRequest`).

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::RecursiveMode;
use notify_debouncer_full::DebounceEventResult;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use volebarn_client::{Client, ErrorCode};
use volebarn_sync::engine::{Engine, PassOptions, PassReport, Scope};
use volebarn_sync::rules;
use volebarn_sync::state;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Local,
    Remote,
    Request,
}

/// Paths notify reported since the last pass; more than this and the pass scans in full.
const MAX_DIRTY: usize = 10_000;

/// What changed locally since the last pass, as notify reported it.
#[derive(Debug, Default)]
struct Dirty {
    /// Events were lost (or too many paths): scan everything.
    full: bool,
    paths: BTreeSet<String>,
}

impl Dirty {
    /// The scope of the next pass, leaving nothing behind.
    fn take(&mut self) -> Scope {
        let paths = std::mem::take(&mut self.paths);
        if std::mem::take(&mut self.full) {
            Scope::Full
        } else {
            Scope::Paths(paths)
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// How often the server is asked again while its change feed cannot be reached (the
    /// longest back-off).
    pub poll_interval: Duration,
    /// How often the whole folder is scanned, the safety net for events the watcher missed.
    pub rescan_interval: Duration,
    pub debounce: Duration,
}

/// Runs until `shutdown` completes; `on_pass` sees every pass's report (for printing).
pub async fn run(
    mut engine: Engine,
    opts: WatchOptions,
    shutdown: impl Future<Output = ()>,
    mut on_pass: impl FnMut(&PassReport),
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel::<Wake>(256);
    let root = engine.root().to_path_buf();
    let defaults = rules::defaults(&root);
    let tx_local = tx.clone();
    let watched_root = root.clone();
    let dirty = Arc::new(Mutex::new(Dirty::default()));
    let dirty_in = dirty.clone();
    let mut debouncer =
        notify_debouncer_full::new_debouncer(opts.debounce, None, move |res: DebounceEventResult| {
            // Opening or reading a file or directory (the engine's own scan does both) changes
            // nothing: without this filter every pass would wake the next one.
            let paths = || {
                res.iter()
                    .flatten()
                    .filter(|e| {
                        !matches!(
                            e.kind,
                            EventKind::Access(
                                AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
                            )
                        )
                    })
                    .flat_map(|e| e.paths.iter())
            };
            if paths().any(|p| state::is_request(&watched_root, p)) {
                let _ = tx_local.try_send(Wake::Request);
            }
            let changed: Vec<String> = paths()
                .filter_map(|p| relevant(&watched_root, &defaults, p))
                .collect();
            if res.is_err() || !changed.is_empty() {
                let mut d = dirty_in.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                // Lost or overflowed events (or the root itself changed): rescan to be sure.
                d.full |= res.is_err() || changed.iter().any(String::is_empty);
                d.paths.extend(changed);
                if d.paths.len() > MAX_DIRTY {
                    d.full = true;
                    d.paths.clear();
                }
                drop(d);
                let _ = tx_local.try_send(Wake::Local);
            }
        })?;
    debouncer.watch(&root, RecursiveMode::Recursive)?;
    // The folder is watched before the first pass: what changes while that pass runs (or
    // right after it) wakes the next one, nothing waits for the periodic rescan.
    let report = engine.pass(PassOptions::default()).await?;
    on_pass(&report);

    let (cursor_tx, cursor_rx) = watch::channel(engine.cursor());
    let poller = tokio::spawn(long_poll(
        engine.client().clone(),
        cursor_rx,
        tx.clone(),
        opts.poll_interval,
    ));

    if state::has_requests(&root) {
        let _ = tx.try_send(Wake::Request);
    }
    let mut tick = tokio::time::interval(opts.rescan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    tokio::pin!(shutdown);
    loop {
        let mut periodic = false;
        tokio::select! {
            () = &mut shutdown => break,
            w = rx.recv() => {
                if w.is_none() {
                    break;
                }
                while rx.try_recv().is_ok() {}
            }
            _ = tick.tick() => periodic = true,
        }
        let requests = state::take_requests(&root);
        if requests.is_empty() {
            let scope = dirty
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            let scope = if periodic { Scope::Full } else { scope };
            match engine.pass_scoped(PassOptions::default(), scope).await {
                Ok(report) => on_pass(&report),
                Err(e) => tracing::error!(error = %crate::chain(&e), "sync pass failed"),
            }
        }
        for r in requests {
            let opts = PassOptions {
                dry_run: r.dry_run,
                force: r.force,
            };
            let result = engine.pass(opts).await;
            match &result {
                Ok(report) if !r.dry_run => on_pass(report),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %crate::chain(e), "requested sync pass failed"),
            }
            if let Err(e) = state::answer(&root, r.id, result.as_ref().map_err(|e| crate::chain(e))) {
                tracing::error!(error = %crate::chain(&e), "cannot answer a sync request");
            }
        }
        let _ = cursor_tx.send(engine.cursor());
    }
    poller.abort();
    drop(debouncer);
    Ok(())
}

/// The relative path of an event on `path` when it can change what is synced (`""`: the
/// folder itself).
fn relevant(root: &Path, defaults: &ignore::gitignore::Gitignore, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let rel = rel.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
    (rel.is_empty() || !rules::ignored_by_default(defaults, root, &rel, false)).then_some(rel)
}

/// Long-polls `/changes` and wakes the engine when the journal moves. Starts from the engine's
/// cursor; while the server is unreachable it backs off (1 s, 2 s, … up to `poll_interval`) and
/// wakes the engine once it answers again, so queued local changes go up at once.
async fn long_poll(
    client: Client,
    mut engine_cursor: watch::Receiver<Option<u64>>,
    tx: mpsc::Sender<Wake>,
    poll_interval: Duration,
) {
    let mut since: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let engine_at = *engine_cursor.borrow_and_update();
        let Some(from) = since.max(engine_at) else {
            // The engine has not reached the server yet: wait for its first successful pass.
            if engine_cursor.changed().await.is_err() {
                return;
            }
            continue;
        };
        match client.changes(from, 25).await {
            Ok(resp) => {
                if failures > 0 || !resp.changes.is_empty() {
                    let _ = tx.send(Wake::Remote).await;
                }
                failures = 0;
                since = Some(resp.next);
            }
            Err(e) if e.error_code() == Some(ErrorCode::Gone) => {
                // Our cursor was trimmed from the journal: the engine re-lists and tells us.
                since = None;
                let _ = tx.send(Wake::Remote).await;
                if engine_cursor.changed().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                let delay = Duration::from_secs(1u64 << failures.min(5))
                    .min(poll_interval.max(Duration::from_millis(100)));
                tracing::debug!(error = %e, ?delay, "change feed unavailable");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
