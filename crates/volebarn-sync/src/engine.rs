//! The sync engine: one pass = refresh the remote mirror (manifest once, then `/changes`), scan
//! the folder against the index, make the [`Plan`] (renames as server-side moves, safety rails,
//! the three-way plan of [docs/design.md](docs/design.md) §6, name clashes, directory
//! deletions: see [`crate::plan`]), then — unless it is a dry run — execute it and persist the
//! index. A dry run returns the very plan a real pass would execute.
//!
//! Safety rails: without the root marker (`.volebarn/marker`) while the index remembers synced
//! files, nothing is done at all (an unmounted disk or a recreated folder must not look like
//! "the user deleted everything"); deleting more than `max_delete` percent of the synced files
//! in one pass is held until `--force`; paths that could not be read are left untouched.

use crate::apply::{Executor, SyncResult};
use crate::error::{Result, SyncError};
use crate::index::{Base, Entry, FileIndex, Key, PassBase, Stat};
use crate::plan::{
    add_parents, is_under, make_plan, move_dirs, move_keys, remove_dirs, remove_keys, Plan, PlanInput,
};
use crate::scan::{self, local_path, Scan};
use crate::state::STATE_DIR;
use crate::state::{self, ConflictRecord, StatusFile};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use volebarn_client::{Client, ClientError, ConflictStrategy, ErrorCode, TransferMetrics, TransferObserver};
use volebarn_core::sorted::Cursor;
use volebarn_core::sync::{BaseState, RemoteState};
use volebarn_core::timefmt::now_nanos;
use volebarn_core::types::ChangeKind;

/// The server's files as this client last learned them.
#[derive(Debug, Default, Clone)]
struct RemoteMirror {
    /// Keyed by the index's [`Key`]s where it holds the path: the path is not held twice.
    files: BTreeMap<Key, RemoteState>,
    dirs: BTreeSet<String>,
    /// Journal revision the mirror is current as of; None: fetch the manifest.
    cursor: Option<u64>,
}

impl RemoteMirror {
    /// The server's tree as the index records it synced, as of journal revision `cursor`.
    fn of_index(index: &BTreeMap<Key, Entry>, cursor: u64) -> RemoteMirror {
        // Sorted already: each map is built in one go.
        RemoteMirror {
            files: remote_of_bases(index),
            dirs: index
                .iter()
                .filter(|(_, e)| e.dir)
                .map(|(p, _)| p.to_string())
                .collect(),
            cursor: Some(cursor),
        }
    }

    /// Whether the index `next` (its entries in order) would be rebuilt into exactly this
    /// mirror ([`RemoteMirror::of_index`]).
    fn matches_index<'a>(&self, next: impl Iterator<Item = (&'a str, Entry)>) -> bool {
        let (mut files, mut dirs) = (self.files.iter(), self.dirs.iter());
        for (p, e) in next {
            if let Some(b) = e.base {
                let want = base_as_remote(&BaseState::from(b));
                if files.next().is_none_or(|(q, r)| &**q != p || *r != want) {
                    return false;
                }
            }
            if e.dir && dirs.next().is_none_or(|d| d != p) {
                return false;
            }
        }
        files.next().is_none() && dirs.next().is_none()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    pub dry_run: bool,
    pub force: bool,
}

impl PassOptions {
    /// Plan and report, change nothing.
    pub const DRY_RUN: PassOptions = PassOptions {
        dry_run: true,
        force: false,
    };
}

/// What one pass did (or, with `dry_run`, would do).
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct PassReport {
    /// Set when the pass did nothing at all, and why.
    pub refused: Option<String>,
    /// Set when the server could not be reached; local changes stay pending.
    pub offline: Option<String>,
    pub result: SyncResult,
    /// Renames done as server-side moves: (from, to) (with `dry_run`: to be done).
    pub moved: Vec<(String, String)>,
    /// Directories deleted on one side and so removed on the other.
    pub dirs_deleted_remote: Vec<String>,
    pub dirs_deleted_local: Vec<String>,
    /// Directories the plan created on the server.
    #[serde(skip)]
    created_remote_dirs: Vec<String>,
    /// The journal revisions of the pass's own writes on the server that report one (uploads
    /// and directories made), see [`past_own_writes`].
    #[serde(skip)]
    pub(crate) own_revs: Vec<u64>,
    /// Content conflicts left for the user (strategy `manual`): both versions are in the
    /// folder and `volebarn conflicts` lists them.
    pub manual_conflicts: Vec<String>,
    /// Local deletions not propagated, awaiting `volebarn sync --force`.
    pub held_deletions: Vec<String>,
    pub held_reason: Option<String>,
    /// Paths not synced this pass and why (unreadable, symlink, name clash, still changing…).
    pub problems: Vec<(String, String)>,
    /// What is left to do, as planned operations: with `dry_run`, or while offline, all of
    /// the plan; after a real pass, what failed (it is planned again by the next pass).
    pub pending: Pending,
    /// Every decision of the pass (dry run, or offline: what is pending); a real pass executes
    /// exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Files whose content the scan read, and how many bytes.
    pub hashed: u64,
    pub bytes_read: u64,
    /// Files the scan looked at: the whole folder, or only the changed paths of a
    /// [`Scope::Paths`] pass.
    #[serde(default)]
    pub examined: u64,
    /// True when the pass scanned the whole folder.
    #[serde(default)]
    pub full_scan: bool,
    /// True when the pass listed the server's whole tree (the manifest) rather than asking
    /// only for the changes since the cursor: the first pass of an engine whose index holds
    /// no cursor, after the server's journal was trimmed past it, after a move, and when the
    /// pass planned again after errors.
    #[serde(default)]
    pub listed_remote: bool,
    /// Errors of earlier attempts of this pass, which planned again (see
    /// [`Engine::pass_scoped`]); `result.errors` holds those that still stand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<(String, String)>,
}

/// What of the folder a pass scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every file (what `volebarn sync` does, and the watch loop's periodic safety net).
    Full,
    /// Only these paths (relative, `/`-separated; a directory stands for everything below
    /// it) and the paths the server changed since the last pass; the rest of the folder is
    /// taken as the previous pass left it. For a watcher that lost no event: the engine
    /// scans in full anyway on its first pass, after the server's tree was re-listed, and when
    /// a path is the root.
    Paths(BTreeSet<String>),
}

#[derive(Debug, Default, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Pending {
    pub uploads: Vec<String>,
    pub downloads: Vec<String>,
    pub deletes_remote: Vec<String>,
    pub deletes_local: Vec<String>,
    /// Renames done as server-side moves (a whole directory's as one move).
    pub moves: Vec<(String, String)>,
    pub conflicts: Vec<String>,
    /// Directories deleted on one side, to be deleted on the other.
    #[serde(default)]
    pub dir_deletes_remote: Vec<String>,
    #[serde(default)]
    pub dir_deletes_local: Vec<String>,
}

impl Pending {
    /// The plan's operations a person cares about (no bookkeeping, no directory creations).
    pub fn of(plan: &Plan) -> Pending {
        Pending {
            uploads: plan.uploads.clone(),
            downloads: plan.downloads.clone(),
            deletes_remote: plan.deletes_remote.clone(),
            deletes_local: plan.deletes_local.clone(),
            moves: plan
                .moves
                .iter()
                .map(|m| (m.from.clone(), m.to.clone()))
                .collect(),
            conflicts: plan.conflicts.iter().map(|c| c.path.clone()).collect(),
            dir_deletes_remote: plan.dir_deletes_remote.clone(),
            dir_deletes_local: plan.dir_deletes_local.clone(),
        }
    }

    /// What is still to do once a pass has executed `plan` as `r` says: the operations that
    /// failed (and conflicts left for the user). What the pass did is no longer pending. Made
    /// after the pass, so a large plan is not copied while it runs.
    fn left_after(plan: &Plan, r: &SyncResult) -> Pending {
        let failed: BTreeSet<&str> = r.errors.iter().map(|(p, _)| p.as_str()).collect();
        let left = |v: &[String]| -> Vec<String> {
            if failed.is_empty() {
                return Vec::new();
            }
            v.iter()
                .filter(|p| failed.contains(p.as_str()))
                .cloned()
                .collect()
        };
        Pending {
            uploads: left(&plan.uploads),
            downloads: left(&plan.downloads),
            deletes_remote: left(&plan.deletes_remote),
            deletes_local: left(&plan.deletes_local),
            moves: plan
                .moves
                .iter()
                .filter(|m| failed.contains(m.from.as_str()) || failed.contains(m.to.as_str()))
                .map(|m| (m.from.clone(), m.to.clone()))
                .collect(),
            conflicts: plan
                .conflicts
                .iter()
                .filter(|c| failed.contains(c.path.as_str()) || r.conflicts.contains(&c.path))
                .map(|c| c.path.clone())
                .collect(),
            dir_deletes_remote: left(&plan.dir_deletes_remote),
            dir_deletes_local: left(&plan.dir_deletes_local),
        }
    }

    pub fn total(&self) -> usize {
        self.uploads.len()
            + self.downloads.len()
            + self.deletes_remote.len()
            + self.deletes_local.len()
            + self.moves.len()
            + self.conflicts.len()
            + self.dir_deletes_remote.len()
            + self.dir_deletes_local.len()
    }
}

impl PassReport {
    /// Adds what a later attempt of the same pass did: its transfers, moves and deletions
    /// after these; its errors, problems, plan and pending work instead of these.
    fn absorb(&mut self, later: PassReport) {
        let (r, l) = (&mut self.result, later.result);
        r.uploaded.extend(l.uploaded);
        r.uploaded.sort_unstable();
        r.downloaded.extend(l.downloaded);
        r.downloaded.sort_unstable();
        r.deleted_local.extend(l.deleted_local);
        r.deleted_remote.extend(l.deleted_remote);
        r.created_dirs.extend(l.created_dirs);
        r.conflicts_resolved.extend(l.conflicts_resolved);
        r.conflict_copies.extend(l.conflict_copies);
        r.conflicts.extend(l.conflicts);
        self.retried.append(&mut r.errors);
        r.errors = l.errors;
        self.moved.extend(later.moved);
        self.dirs_deleted_remote.extend(later.dirs_deleted_remote);
        self.dirs_deleted_local.extend(later.dirs_deleted_local);
        self.created_remote_dirs.extend(later.created_remote_dirs);
        self.own_revs.extend(later.own_revs);
        self.manual_conflicts.extend(later.manual_conflicts);
        self.refused = later.refused;
        self.offline = later.offline;
        self.held_deletions = later.held_deletions;
        self.held_reason = later.held_reason;
        self.problems = later.problems;
        self.pending = later.pending;
        self.plan = later.plan;
        self.hashed += later.hashed;
        self.bytes_read += later.bytes_read;
        self.examined += later.examined;
        self.full_scan |= later.full_scan;
        self.listed_remote |= later.listed_remote;
    }

    /// Anything transferred, moved or deleted.
    pub fn changed_anything(&self) -> bool {
        let r = &self.result;
        !(r.uploaded.is_empty()
            && r.downloaded.is_empty()
            && r.deleted_local.is_empty()
            && r.deleted_remote.is_empty()
            && r.created_dirs.is_empty()
            && r.conflicts_resolved.is_empty()
            && self.moved.is_empty()
            && self.dirs_deleted_remote.is_empty()
            && self.dirs_deleted_local.is_empty())
    }
}

/// Extra attempts of a pass that ended with errors (see [`Engine::pass_scoped`]).
pub const RETRIES_AFTER_ERRORS: usize = 2;

pub struct EngineConfig {
    pub strategy: ConflictStrategy,
    pub max_delete_percent: u8,
}

/// Called when a pass is about to transfer `bytes` of content in `files` files; the observer
/// it returns hears those transfers and is dropped when they are over.
pub type ProgressFactory = Box<dyn Fn(u64, u64) -> Arc<dyn TransferObserver> + Send + Sync>;

pub struct Engine {
    root: PathBuf,
    client: Client,
    index: FileIndex,
    remote: RemoteMirror,
    pub config: EngineConfig,
    progress: Option<ProgressFactory>,
    /// When the current pass started, and the client's figures then (for the metrics).
    pass_start: (std::time::Instant, TransferMetrics),
    /// What the last persisted pass wrote to `status.json` (this engine is its only writer).
    status: StatusFile,
    /// The folder as the last pass saw it, for a [`Scope::Paths`] pass to start from.
    last_scan: Option<LastScan>,
    /// Paths to scan again next pass whatever the caller says: what the server changed since
    /// the last pass, and what the last pass itself wrote in the folder. `None`: more than
    /// `rescan_above` of them, so the next pass scans in full.
    touched: Option<BTreeSet<String>>,
    /// See [`Engine::rescan_above`].
    rescan_above: usize,
    /// The server's tree was listed afresh (first pass, trimmed journal, a move): which paths
    /// changed is unknown, so the next pass scans in full.
    relisted: bool,
    /// Which attempt of the current pass is running: 0, then 1.. when it plans again.
    attempt: usize,
    /// The mirror's cursor as the index holds it ([`CURSOR_KEY`]), to write it only when it
    /// changes.
    stored_cursor: Option<Vec<u8>>,
}

/// Index metadata: `<server URL>\n<journal revision>`, present while the server's tree as of
/// that revision is exactly what the index holds as synced (every file's base, every synced
/// directory). A process then starts its mirror from the index and asks only for the changes
/// since, instead of listing the whole tree.
const CURSOR_KEY: &str = "cursor";

/// The [`CURSOR_KEY`] value for journal revision `rev` of the server at `url`.
fn encode_cursor(url: &str, rev: u64) -> Vec<u8> {
    format!("{url}\n{rev}").into_bytes()
}

/// The revision a [`CURSOR_KEY`] value holds, when it is one of the server at `url`.
fn decode_cursor(value: &[u8], url: &str) -> Option<u64> {
    let (of, rev) = std::str::from_utf8(value).ok()?.rsplit_once('\n')?;
    (of == url).then(|| rev.parse().ok()).flatten()
}

/// A folder's state, opened by [`Engine::open_folder`]; [`OpenFolder::engine`] makes the engine.
pub struct OpenFolder {
    root: PathBuf,
    index: FileIndex,
    stored_cursor: Option<Vec<u8>>,
    status: StatusFile,
}

impl OpenFolder {
    /// The engine for this folder, talking to the server through `client`.
    pub fn engine(self, client: Client, config: EngineConfig) -> Engine {
        let OpenFolder {
            root,
            index,
            stored_cursor,
            status,
        } = self;
        // The stored cursor is used only with the server it came from.
        let remote = stored_cursor
            .as_deref()
            .and_then(|v| decode_cursor(v, client.server_url()))
            .map(|rev| RemoteMirror::of_index(&index.entries, rev))
            .unwrap_or_default();
        Engine {
            root,
            client,
            index,
            remote,
            stored_cursor,
            config,
            progress: None,
            pass_start: (std::time::Instant::now(), TransferMetrics::default()),
            status,
            last_scan: None,
            touched: Some(BTreeSet::new()),
            rescan_above: RESCAN_ABOVE,
            relisted: false,
            attempt: 0,
        }
    }
}

impl Engine {
    /// Opens the folder's state (`.volebarn/`, created on first use); fails clearly when the
    /// folder is missing or another engine has it open.
    pub fn open(root: &Path, client: Client, config: EngineConfig) -> Result<Engine> {
        Ok(Engine::open_folder(root)?.engine(client, config))
    }

    /// The first half of [`Engine::open`]: the folder's state alone, so a caller can build its
    /// client meanwhile (building one reads the system's certificates; reading the index takes
    /// about as long).
    pub fn open_folder(root: &Path) -> Result<OpenFolder> {
        if !root.is_dir() {
            return Err(SyncError::NoFolder(root.to_path_buf()));
        }
        let state = root.join(STATE_DIR);
        std::fs::create_dir_all(&state).map_err(SyncError::io("creating", &state))?;
        let index = FileIndex::open(&state.join("index"))?;
        if index.base_count() == 0 && !state::marker_exists(root) {
            state::write_marker(root)?;
        }
        Ok(OpenFolder {
            root: root.to_path_buf(),
            stored_cursor: index.get_meta(CURSOR_KEY)?,
            index,
            status: state::read_status(root).ok().flatten().unwrap_or_default(),
        })
    }

    /// Shows each pass's transfers through observers made by `progress`.
    pub fn set_progress(&mut self, progress: ProgressFactory) {
        self.progress = Some(progress);
    }

    /// The client to apply `plan` with: one reporting to a fresh progress observer when there
    /// is something to transfer and a progress factory is set.
    fn transfer_client(&self, plan: &Plan, local: &BTreeMap<Key, crate::index::Stat>) -> Client {
        let Some(progress) = &self.progress else {
            return self.client.clone();
        };
        let up = plan
            .uploads
            .iter()
            .filter_map(|p| local.get(p.as_str()))
            .map(|f| f.size);
        let down = plan
            .downloads
            .iter()
            .filter_map(|p| self.remote.files.get(p.as_str()))
            .map(|r| r.size);
        let sizes: Vec<u64> = up.chain(down).collect();
        if sizes.is_empty() {
            return self.client.clone();
        }
        self.client
            .with_observer(progress(sizes.iter().sum(), sizes.len() as u64))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The journal revision the remote mirror is current as of.
    pub fn cursor(&self) -> Option<u64> {
        self.remote.cursor
    }

    /// Brings the mirror of the server up to date: the manifest the first time (or after the
    /// journal was trimmed past our cursor), then only the changes since.
    async fn refresh_remote(&mut self) -> std::result::Result<(), ClientError> {
        loop {
            let Some(cursor) = self.remote.cursor else {
                // The listing is taken entry by entry as it arrives, never held whole. Its
                // files come in path order and are collected into a list first: a map built
                // from it in one go has full nodes, one filled key by key half-empty ones.
                let index = Arc::clone(&self.index.entries);
                let ((files, dirs), rev) = self
                    .client
                    .fold_manifest(
                        None,
                        || (Vec::new(), BTreeSet::new()),
                        move |(files, dirs): &mut (Vec<(Key, RemoteState)>, BTreeSet<String>), p, f| {
                            if f.is_directory {
                                dirs.insert(p);
                            } else {
                                add_parents(dirs, &p);
                                files.push((shared_key(&index, &p), remote_state(&f)));
                            }
                        },
                    )
                    .await?;
                self.remote = RemoteMirror {
                    files: files.into_iter().collect(),
                    dirs,
                    cursor: Some(rev),
                };
                self.relisted = true;
                return Ok(());
            };
            let resp = match self.client.changes(cursor, 0).await {
                Ok(r) => r,
                Err(e) if e.error_code() == Some(ErrorCode::Gone) => {
                    self.remote.cursor = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if resp.changes.is_empty() {
                return Ok(());
            }
            for c in &resp.changes {
                if !self.echo_of_ours(c) {
                    self.touch(std::iter::once(c.path.as_str()));
                }
                match c.kind {
                    ChangeKind::Put | ChangeKind::Mkdir => match &c.metadata {
                        Some(m) if m.is_directory => {
                            self.remote.dirs.insert(c.path.clone());
                        }
                        Some(m) => {
                            add_parents(&mut self.remote.dirs, &c.path);
                            let key = shared_key(&self.index.entries, &c.path);
                            self.remote.files.insert(key, remote_state(m));
                        }
                        // Superseded by a later change in the journal, which comes after and
                        // settles the entry; the parents the server made for it stay.
                        None => {
                            add_parents(&mut self.remote.dirs, &c.path);
                            if matches!(c.kind, ChangeKind::Mkdir) {
                                self.remote.dirs.insert(c.path.clone());
                            }
                        }
                    },
                    ChangeKind::Delete | ChangeKind::Rmdir => {
                        remove_keys(&mut self.remote.files, &c.path);
                        remove_dirs(&mut self.remote.dirs, &c.path);
                    }
                    // Whole trees may have moved: re-list rather than guess.
                    ChangeKind::Move | ChangeKind::Copy => {
                        self.remote.cursor = None;
                    }
                }
            }
            if self.remote.cursor.is_some() {
                self.remote.cursor = Some(resp.next);
            }
        }
    }

    /// True when a journal entry only reports what the folder already holds as its base (this
    /// engine's own upload, or a deletion of what it no longer tracks): nothing to scan for.
    fn echo_of_ours(&self, c: &volebarn_client::ChangeEntry) -> bool {
        let entry = self.index.entries.get(c.path.as_str());
        match (c.kind, &c.metadata) {
            (ChangeKind::Put, Some(m)) if !m.is_directory => entry
                .and_then(|e| e.base)
                .is_some_and(|b| b.rev == m.rev && b.xxh3 == m.xxhash3.0),
            (ChangeKind::Delete, _) => {
                entry.is_none()
                    && !self
                        .index
                        .entries
                        .range::<str, _>((
                            std::ops::Bound::Excluded(c.path.as_str()),
                            std::ops::Bound::Unbounded,
                        ))
                        .next()
                        .is_some_and(|(k, _)| is_under(k, &c.path))
            }
            _ => false,
        }
    }

    /// One full pass. Errors on single paths are in the report; an `Err` means the pass could
    /// not run at all (e.g. the index could not be written).
    pub async fn pass(&mut self, opts: PassOptions) -> Result<PassReport> {
        self.pass_scoped(opts, Scope::Full).await
    }

    /// One pass that scans only what `scope` says might have changed (see [`Scope`]).
    ///
    /// A pass that ends with errors plans again at once, at most [`RETRIES_AFTER_ERRORS`]
    /// times: most such errors are races with another client (a file changed on the server
    /// between listing and writing, so the write's `If-Match` failed; a path moved away), and
    /// a plan made afresh settles them. What still fails is reported; the report covers every
    /// attempt.
    pub async fn pass_scoped(&mut self, opts: PassOptions, scope: Scope) -> Result<PassReport> {
        self.attempt = 0;
        let mut report = self.pass_once(opts, scope).await?;
        while self.plans_again(opts, &report) {
            tracing::debug!(
                errors = report.result.errors.len(),
                "pass ended with errors; planning again"
            );
            self.attempt += 1;
            // From a fresh listing of the server: a write refused because the server does not
            // hold what the mirror says (a file gone or changed under it) must not meet the same
            // mirror again.
            self.remote.cursor = None;
            let again = self.pass_once(opts, Scope::Full).await?;
            report.absorb(again);
        }
        // What failed at first and then went through.
        let standing: BTreeSet<String> = report.result.errors.iter().map(|(p, _)| p.clone()).collect();
        report.retried.retain(|(p, _)| !standing.contains(p));
        Ok(report)
    }

    /// Whether the pass whose attempt `self.attempt` just ended as `report` runs once more.
    fn plans_again(&self, opts: PassOptions, report: &PassReport) -> bool {
        !opts.dry_run
            && self.attempt < RETRIES_AFTER_ERRORS
            && report.offline.is_none()
            && report.refused.is_none()
            && !report.result.errors.is_empty()
    }

    async fn pass_once(&mut self, opts: PassOptions, scope: Scope) -> Result<PassReport> {
        self.pass_start = (std::time::Instant::now(), self.client.metrics());
        let mut report = PassReport::default();
        if !self.root.is_dir() {
            report.refused = Some(format!(
                "the folder {} is gone (unmounted or removed?): nothing synced, nothing deleted",
                self.root.display()
            ));
            return Ok(report);
        }
        if self.index.base_count() > 0 && !state::marker_exists(&self.root) {
            if !opts.force || opts.dry_run {
                report.refused = Some(format!(
                    "the root marker {}/{STATE_DIR}/marker is missing: is this the right folder, or was it \
                     recreated or unmounted? Nothing synced, nothing deleted. `volebarn sync --force` adopts \
                     the folder as it is now (downloads what is missing, deletes nothing).",
                    self.root.display()
                ));
                return Ok(report);
            }
            // Re-adopt: forget the base, so nothing missing here counts as deleted.
            let next = self
                .index
                .entries
                .iter()
                .map(|(p, e)| (p.clone(), Entry { base: None, ..*e }))
                .collect();
            self.index.commit_with(next, &[(CURSOR_KEY, None)])?;
            self.stored_cursor = None;
            state::write_marker(&self.root)?;
        }

        let root = self.root.clone();
        let previous = Arc::clone(&self.index.entries);
        // A pass that scans in full does not need the server's answer to know what to scan:
        // the walk runs while the mirror is brought up to date.
        let incremental = matches!(scope, Scope::Paths(_)) && self.last_scan.is_some() && !self.relisted;
        let early = (!incremental).then(|| {
            let (root, previous) = (root.clone(), Arc::clone(&previous));
            tokio::task::spawn_blocking(move || scan::scan(&root, &previous))
        });
        let started = std::time::Instant::now();
        let online = self.refresh_remote().await;
        let refreshed = started.elapsed();
        report.listed_remote = self.relisted;
        // Taken out: a pass that fails on the way leaves none, and the next one scans in full.
        let last = self.last_scan.take();
        let partial = match (scope, last) {
            (Scope::Paths(paths), Some(last)) if incremental && !self.relisted && self.touched.is_some() => {
                let mut dirty = self.touched.take().unwrap_or_default();
                // A changed ignore file changes what is synced below its directory.
                dirty.extend(paths.into_iter().map(|p| match p.rsplit_once('/') {
                    Some((dir, name)) if name == crate::rules::IGNORE_FILE => dir.to_string(),
                    None if p == crate::rules::IGNORE_FILE => String::new(),
                    _ => p,
                }));
                (!dirty.contains("")).then_some((last, dirty))
            }
            _ => None,
        };
        self.relisted = false;
        self.touched = Some(BTreeSet::new());
        // The scan's share of the index ends with it: persist then changes the index in place.
        let scanned = match (early, partial) {
            (Some(handle), _) => {
                drop(previous);
                handle.await.map(|sc| (sc, true))
            }
            (None, partial) => {
                tokio::task::spawn_blocking(move || match partial {
                    Some((last, dirty)) => {
                        let sc = scan::rescan(&root, last.into_scan(&previous), &dirty, &previous);
                        // Something synced is gone (deleted or renamed): the safety rails weigh
                        // deletions against the whole folder, and a batch of them may have been
                        // reported in parts, so this pass looks at all of it.
                        let gone = dirty.iter().any(|d| {
                            scan::covered(&previous, d).any(|(p, e)| {
                                e.base.is_some() && !sc.files.contains_key(p) && !sc.is_skipped(p)
                            })
                        });
                        if gone {
                            (scan::scan(&root, &previous), true)
                        } else {
                            (sc, false)
                        }
                    }
                    None => (scan::scan(&root, &previous), true),
                })
                .await
            }
        };
        let (sc, full_scan) = scanned.map_err(|e| SyncError::Scan(e.to_string()))?;
        tracing::debug!(
            refresh_ms = refreshed.as_millis() as u64,
            scan_ms = started.elapsed().as_millis() as u64,
            full_scan,
            examined = sc.examined,
            "pass: mirror refreshed, folder scanned"
        );
        report.full_scan = full_scan;
        report.hashed = sc.hashed;
        report.bytes_read = sc.bytes_read;
        report.examined = sc.examined;
        report.problems.extend(sc.problems.iter().cloned());

        if let Err(e) = online {
            report.offline = Some(format!("server unreachable: {e}"));
            // What would go up if the server still held the base: the local changes alone.
            let as_remote = remote_of_bases(&self.index.entries);
            let plan = self.plan(&sc, &as_remote, &self.remote.dirs, opts);
            report.pending = Pending::of(&plan);
            report.plan = Some(plan);
            self.last_scan = Some(self.persist(sc, None, &BTreeSet::new(), &report)?);
            return Ok(report);
        }

        let planning = std::time::Instant::now();
        let plan = self.plan(&sc, &self.remote.files, &self.remote.dirs, opts);
        let planned = planning.elapsed();
        report.held_deletions = plan.held_deletions.clone();
        report.held_reason = plan.held_reason.clone();
        report.problems.extend(plan.clashes.iter().map(|c| {
            (
                c.path.clone(),
                format!(
                    "name clashes with {:?} on case-insensitive or normalizing filesystems: \
                     not downloaded (rename one of them)",
                    c.clashes_with
                ),
            )
        }));
        if opts.dry_run {
            report.pending = Pending::of(&plan);
            report.moved = report.pending.moves.clone();
            report.plan = Some(plan);
            self.last_scan = Some(LastScan::Kept(sc));
            return Ok(report);
        }

        // Nothing to do (a no-op pass): nothing to execute, the mirror stays as it is, and the
        // base is the index's.
        let mut rebased = None;
        if !plan.is_empty() {
            let mut base = PassBase::new(Arc::clone(&self.index.entries));
            let client = self.transfer_client(&plan, &sc.files);
            Executor {
                client: &client,
                root: &self.root,
                remote: &self.remote.files,
                local: &sc.files,
            }
            .apply(&plan, &mut base, &mut report)
            .await;
            // The mirror follows what this pass did to the server's tree.
            for (from, to) in &report.moved {
                move_keys(&mut self.remote.files, from, to);
                move_dirs(&mut self.remote.dirs, from, to);
            }
            for d in &report.dirs_deleted_remote {
                remove_dirs(&mut self.remote.dirs, d);
            }
            report.created_remote_dirs = plan.create_dirs_remote.clone();
            rebased = Some(self.follow_base(base, &report));
            // The journal's next entries may be this pass's own writes, which the mirror has
            // just followed: the cursor goes past them rather than read them back.
            if let Some(next) = self.remote.cursor.and_then(|c| past_own_writes(c, &report)) {
                self.remote.cursor = Some(next);
            }
            report.pending = Pending::left_after(&plan, &report.result);
        }
        let applied = planning.elapsed();
        report.manual_conflicts = self.record_conflicts(&report.result)?;
        let held: BTreeSet<String> = plan.held_deletions.iter().cloned().collect();
        tracing::trace!(?plan, "pass: the plan");
        let actions = plan.actions();
        // Done with: freed before the index grows by what the pass did.
        drop(plan);
        let last = self.persist(sc, rebased, &held, &report)?;
        tracing::debug!(
            plan_ms = planned.as_millis() as u64,
            apply_ms = (applied - planned).as_millis() as u64,
            persist_ms = (planning.elapsed() - applied).as_millis() as u64,
            actions,
            "pass: planned, applied, persisted"
        );
        // What this pass wrote in the folder is scanned again by the next one.
        let r = &report.result;
        let wrote = r.downloaded.iter().map(|k| &**k).chain(
            r.deleted_local
                .iter()
                .chain(&r.created_dirs)
                .chain(&r.conflicts_resolved)
                .chain(&r.conflicts)
                .chain(r.conflict_copies.iter().map(|c| &c.copy))
                .chain(&report.dirs_deleted_local)
                .chain(report.moved.iter().flat_map(|(from, to)| [from, to]))
                .map(String::as_str),
        );
        self.touch(wrote);
        self.last_scan = Some(last);
        Ok(report)
    }

    /// Every decision of this pass ([`make_plan`]), against the server's files and directories
    /// as given.
    fn plan(
        &self,
        sc: &Scan,
        remote_files: &BTreeMap<Key, RemoteState>,
        remote_dirs: &BTreeSet<String>,
        opts: PassOptions,
    ) -> Plan {
        make_plan(&PlanInput {
            scan: sc,
            index: &self.index.entries,
            remote_files,
            remote_dirs,
            strategy: self.config.strategy,
            max_delete_percent: self.config.max_delete_percent,
            force: opts.force,
        })
    }

    fn record_conflicts(&self, r: &SyncResult) -> Result<Vec<String>> {
        let mut new: Vec<ConflictRecord> = Vec::new();
        let mut manual = Vec::new();
        if self.config.strategy == ConflictStrategy::Manual {
            manual.extend(r.conflict_copies.iter().map(|c| c.path.clone()));
            new.extend(r.conflict_copies.iter().map(|c| ConflictRecord {
                path: c.path.clone(),
                copy: Some(c.copy.clone()),
                copy_is_local: c.copy_is_local,
                kind: "content".into(),
                detected: volebarn_core::timefmt::format_rfc3339(now_nanos()),
            }));
        }
        new.extend(r.conflicts.iter().map(|p| ConflictRecord {
            path: p.clone(),
            copy: None,
            copy_is_local: false,
            kind: "file_directory".into(),
            detected: volebarn_core::timefmt::format_rfc3339(now_nanos()),
        }));
        if new.is_empty() {
            return Ok(manual);
        }
        state::update_conflicts(&self.root, |list| {
            for c in new {
                if !list.iter().any(|o| o.path == c.path && o.copy == c.copy) {
                    list.push(c);
                }
            }
        })?;
        Ok(manual)
    }

    /// Brings the mirror up to what this pass did on the server: a path whose base the pass
    /// changed is, on the server, as the new base says (the server acknowledged the upload,
    /// deletion, move or adoption that changed it); a directory the pass created is there.
    /// The journal entries of these changes come later and say the same.
    ///
    /// Returns the paths whose base the pass changed besides the files it transferred, in
    /// path order: the mirror now holds their new base (or not the path, when it is no longer
    /// synced), and the files the report lists as uploaded or downloaded are rebased too
    /// ([`rebased_keys`]). So the pass's base is freed here instead of being held
    /// beside the mirror until the index is written (at a first sync of 100,000 files, 6 MB
    /// more at the peak); the base is taken as the mirror takes its changes, with no list of
    /// them in between (7 MB at 100,000 files), and the transfers are not listed twice (1.6 MB).
    fn follow_base(&mut self, base: PassBase, report: &PassReport) -> Vec<Key> {
        let mut transferred = Cursor::new(rebased_keys(&report.result, &[]).map(|k| &**k));
        let mut rebased = Vec::new();
        let dirs = &mut self.remote.dirs;
        let changes = base.into_changes().map(|(p, now)| {
            if now.is_some() {
                add_parents(dirs, &p);
            }
            // A transfer always changes its path's base (a new revision up, the server's
            // state down): its new base is in the mirror like the rest.
            if !transferred.contains(&p) {
                rebased.push(Key::clone(&p));
            }
            (p, now.as_ref().map(base_as_remote))
        });
        volebarn_core::sorted::apply_changes(&mut self.remote.files, changes);
        for d in &report.created_remote_dirs {
            if !report.result.errors.iter().any(|(p, _)| p == d) {
                add_parents(&mut self.remote.dirs, d);
                self.remote.dirs.insert(d.clone());
            }
        }
        rebased
    }

    /// Adds `paths` to those the next pass scans again, or gives them up for a full scan once
    /// there are more than [`Engine::rescan_above`]: a first sync down of 100,000 files kept
    /// them all (8 MB as a set of strings) for a pass that would only look at them one by one.
    fn touch<'a>(&mut self, paths: impl IntoIterator<Item = &'a str>) {
        let Some(touched) = &mut self.touched else {
            return;
        };
        for p in paths {
            if touched.len() >= self.rescan_above {
                self.touched = None;
                return;
            }
            touched.insert(p.to_string());
        }
    }

    /// Past how many paths to look at again (what the server changed since the last pass and
    /// what the last pass wrote here) a scoped pass scans the whole folder instead (default
    /// 10,000, as many as the watch takes from notify before it does the same).
    pub fn rescan_above(&mut self, paths: usize) {
        self.rescan_above = paths;
    }

    /// A local directory the plan created on the server this pass (or that holds an uploaded
    /// file: `uploaded` is in path order, so the first path at or after `d/` tells).
    fn pushed_dir(d: &str, report: &PassReport) -> bool {
        let uploaded = &report.result.uploaded;
        let below = format!("{d}/");
        let first = uploaded.partition_point(|p| **p < *below);
        !report.result.errors.iter().any(|(p, _)| p == d)
            && (uploaded.get(first).is_some_and(|p| is_under(p, d))
                || report.created_remote_dirs.iter().any(|c| c == d))
    }

    /// Writes the index (scan stats + new base) and the status file.
    /// `rebased`: the paths whose base this pass changed besides its transfers
    /// ([`Engine::follow_base`]): their base and the transferred files' is what the mirror now
    /// holds; every other path keeps the index's (`None`: all of them).
    /// Only the entries that differ from the index are written, and applied to it in place.
    ///
    /// The scan's files are taken as the new index is built (at a first sync of 100,000
    /// files, their map freed 5 MB at the peak): the index holds them now ([`LastScan`]).
    fn persist(
        &mut self,
        mut sc: Scan,
        rebased: Option<Vec<Key>>,
        held: &BTreeSet<String>,
        report: &PassReport,
    ) -> Result<LastScan> {
        let files = std::mem::take(&mut sc.files);
        // A racy file's own stat: the index remembers it with an impossible mtime.
        let racy: BTreeMap<Key, Stat> = sc
            .racy
            .iter()
            .filter_map(|p| files.get_key_value(p.as_str()))
            .map(|(p, s)| (Key::clone(p), *s))
            .collect();
        // The report lists its transfers in path order: the downloads are asked about in
        // that order below, with no set of them beside the list.
        let mut downloaded = Cursor::new(report.result.downloaded.iter().map(|k| &**k));
        let index = Arc::clone(&self.index.entries);
        let mirror = &self.remote.files;
        let bases = || -> Box<dyn Iterator<Item = (&Key, BaseState)> + '_> {
            match &rebased {
                Some(extra) => Box::new(
                    volebarn_core::sorted::join(
                        crate::index::bases(&index).map(|(p, b)| (&**p, (p, b))),
                        rebased_keys(&report.result, extra).map(|p| (&**p, p)),
                    )
                    .filter_map(|(_, was, now)| match now {
                        Some(p) => mirror.get(&**p).map(|r| (p, BaseState::from(*r))),
                        None => was,
                    }),
                ),
                None => Box::new(crate::index::bases(&index)),
            }
        };
        // Directories now on both sides.
        let mut synced_dirs: BTreeSet<&str> = BTreeSet::new();
        let parents;
        if report.offline.is_none() {
            let gone: BTreeSet<&String> = report
                .dirs_deleted_local
                .iter()
                .chain(report.dirs_deleted_remote.iter())
                .collect();
            // Parents of synced files exist on both sides.
            let mut p = BTreeSet::new();
            volebarn_core::sorted::add_ancestors(&mut p, bases().map(|(p, _)| &**p));
            parents = p;
            for d in sc
                .dirs
                .iter()
                .chain(report.result.created_dirs.iter())
                .map(String::as_str)
                .chain(parents.iter().copied())
            {
                let removed = !gone.is_empty() && gone.iter().any(|g| *g == d || is_under(d, g));
                if !removed
                    && (parents.contains(d) || self.remote.dirs.contains(d) || Self::pushed_dir(d, report))
                {
                    synced_dirs.insert(d);
                }
            }
        } else {
            synced_dirs.extend(index.iter().filter(|(_, e)| e.dir).map(|(p, _)| &**p));
        }
        // The folder's stats, the synced directories and the base, merged path by path (all
        // three are sorted), and compared with the index in the same walk.
        // Each path keeps the key the scan or the base holds: the new index shares it.
        let remembered = files.into_iter().map(|(p, s)| {
            let mtime = if racy.contains_key(&p) { i64::MIN } else { s.mtime };
            (p, Stat { mtime, ..s })
        });
        let merged = volebarn_core::sorted::join3_owned(
            remembered,
            synced_dirs.into_iter().map(|d| (Key::from(d), ())),
            bases().map(|(p, b)| (Key::clone(p), b)),
        )
        .map(|(p, local, dir, b)| {
            let mut e = Entry {
                local,
                base: b.map(Base::from),
                dir: dir.is_some(),
            };
            if let Some(b) = b.filter(|_| downloaded.contains(&p)) {
                // Downloads carry the remote mtime: while the file keeps it, it is ours.
                e.local = std::fs::symlink_metadata(local_path(&self.root, &p))
                    .ok()
                    .filter(|m| m.len() == b.size && scan::mtime_nanos(m) == b.mtime)
                    .map(|m| scan::stat_of(&m, b.xxh3.0));
            }
            (p, e)
        });
        // Untouched paths keep what the index had; the rest is what was merged.
        let untouched = |p: &str| held.contains(p) || sc.is_skipped(p);
        let changes =
            volebarn_core::sorted::join_owned(merged, index.iter().map(|(p, e)| (Key::clone(p), *e)))
                .filter_map(|(p, new, old)| {
                    let new = match old {
                        Some(o) if untouched(&p) => Some(o),
                        _ => new,
                    };
                    (old != new).then_some((p, new))
                });
        // Written as they are found (see FileIndex::stage).
        let staged = self.index.stage(&index, changes)?;
        // The cursor is kept while the mirror can be rebuilt from the index (see CURSOR_KEY).
        let cursor = match self.remote.cursor {
            Some(rev) if report.offline.is_none() => self
                .remote
                .matches_index(staged.next(&index))
                .then(|| encode_cursor(self.client.server_url(), rev)),
            _ => None,
        };
        let synced_files = bases().count();
        // The changed paths are in the index now: freed, with the index's old entries.
        drop(rebased);
        drop(index);
        if cursor != self.stored_cursor {
            self.index
                .commit_staged(staged, &[(CURSOR_KEY, cursor.as_deref())])?;
            self.stored_cursor = cursor;
        } else {
            self.index.commit_staged(staged, &[])?;
        }
        let mut metrics = self.status.metrics.clone();
        let r = &report.result;
        // A pass that plans again counts once, with the errors its last attempt left.
        if self.attempt == 0 {
            metrics.passes += 1;
        }
        metrics.files_synced += (r.uploaded.len() + r.downloaded.len() + report.moved.len()) as u64;
        if !self.plans_again(PassOptions::default(), report) {
            metrics.sync_errors += r.errors.len() as u64;
        }
        metrics.pass_ms_total += self.pass_start.0.elapsed().as_millis() as u64;
        metrics
            .transfer
            .add(&self.client.metrics().since(&self.pass_start.1));
        let status = StatusFile {
            last_pass: volebarn_core::timefmt::format_rfc3339(now_nanos()),
            last_sync: if report.offline.is_none() {
                Some(volebarn_core::timefmt::format_rfc3339(now_nanos()))
            } else {
                self.status.last_sync.clone()
            },
            offline: report.offline.clone(),
            refused: report.refused.clone(),
            pending: report.pending.clone(),
            held_deletions: report.held_deletions.clone(),
            held_reason: report.held_reason.clone(),
            problems: report.problems.clone(),
            errors: report.result.errors.clone(),
            synced_files,
            metrics,
        };
        state::write_status(&self.root, &status)?;
        self.status = status;
        Ok(LastScan::InIndex {
            scan: sc,
            held: held.clone(),
            racy,
        })
    }
}

/// The scan a pass that looks only at what changed starts from ([`scan::rescan`]).
enum LastScan {
    /// A dry run's scan, as it was.
    Kept(Scan),
    /// A pass's scan whose files went into the index ([`Engine::persist`]): they are the
    /// index's local stats, held once instead of twice while a watch waits (at 100,000
    /// files, 5 MB).
    InIndex {
        /// The scan, without its files.
        scan: Scan,
        /// Held deletions: the index keeps their entry, but they are not in the folder.
        held: BTreeSet<String>,
        /// Racy files with their own stat: the index remembers an impossible mtime.
        racy: BTreeMap<Key, Stat>,
    },
}

impl LastScan {
    /// The scan, with its files as `index` (written by the pass that made it) remembers them:
    /// every path with a local stat, but for held deletions and skipped paths (the index
    /// keeps their entry, yet they are not in the folder as the scan saw it). A file the pass
    /// downloaded is there with its new stat.
    fn into_scan(self, index: &BTreeMap<Key, Entry>) -> Scan {
        let (mut scan, held, racy) = match self {
            LastScan::Kept(scan) => return scan,
            LastScan::InIndex { scan, held, racy } => (scan, held, racy),
        };
        let mut files = volebarn_core::sorted::MapBuilder::default();
        for (p, e) in index {
            if let Some(s) = e.local.filter(|_| !held.contains(&**p) && !scan.is_skipped(p)) {
                files.push(Key::clone(p), racy.get(p).copied().unwrap_or(s));
            }
        }
        scan.files = files.finish();
        scan
    }
}

/// The journal revision the cursor can move to when every entry after `cursor` up to it is
/// one of this pass's own writes, which the mirror follows already; `None` to read them.
///
/// Every journal entry has a revision of its own, and a write's answer names it: an upload's
/// metadata, a directory's. When the pass's revisions above the cursor are exactly the next
/// ones (`cursor + 1`, `cursor + 2`, …), no one else wrote between them. Any gap (another
/// client's write, a write of ours whose answer was lost, a parent the server made) leaves
/// the journal to be read. So do passes that deleted or moved on the server or settled a
/// conflict there, whose answers name no revision. A first sync up of 100,000 files used to
/// leave its next pass to read back its 100,000 uploads (0.7 s, 5 MB more at its peak).
fn past_own_writes(cursor: u64, report: &PassReport) -> Option<u64> {
    let r = &report.result;
    if !r.deleted_remote.is_empty()
        || !r.conflicts_resolved.is_empty()
        || !report.moved.is_empty()
        || !report.dirs_deleted_remote.is_empty()
    {
        return None;
    }
    following(cursor, report.own_revs.iter().copied())
}

/// The last of `revs` when those above `cursor` are exactly `cursor + 1 ..= last`.
fn following(cursor: u64, revs: impl Iterator<Item = u64>) -> Option<u64> {
    let mut above: Vec<u64> = revs.filter(|&r| r > cursor).collect();
    above.sort_unstable();
    above.dedup();
    let last = *above.last()?;
    (last - cursor == above.len() as u64).then_some(last)
}

/// The server's files as the index records them synced (their bases), in path order.
fn remote_of_bases(index: &BTreeMap<Key, Entry>) -> BTreeMap<Key, RemoteState> {
    crate::index::bases(index)
        .map(|(p, b)| (Key::clone(p), base_as_remote(&b)))
        .collect()
}

/// See [`Engine::rescan_above`].
const RESCAN_ABOVE: usize = 10_000;

/// The paths a pass rebased, in path order: the files it uploaded and downloaded (lists in
/// path order) and `extra`, the rest ([`Engine::follow_base`]).
fn rebased_keys<'a>(r: &'a SyncResult, extra: &'a [Key]) -> impl Iterator<Item = &'a Key> {
    let of = |l: &'a [Key]| l.iter().map(|k| (&**k, k));
    volebarn_core::sorted::join3(of(&r.uploaded), of(&r.downloaded), of(extra))
        .map(|(_, a, b, c)| a.or(b).or(c).expect("a joined key is in one list at least"))
}

/// `path` as a [`Key`]: the index's when it holds the path, so it is not held twice.
fn shared_key(index: &BTreeMap<Key, Entry>, path: &str) -> Key {
    crate::index::held_key(index, path).unwrap_or_else(|| Key::from(path))
}

fn base_as_remote(b: &BaseState) -> RemoteState {
    RemoteState {
        xxh3: b.xxh3,
        size: b.size,
        mtime: b.mtime,
        rev: b.rev,
    }
}

fn remote_state(m: &volebarn_client::FileMetadata) -> RemoteState {
    RemoteState {
        xxh3: m.xxhash3,
        size: m.size,
        mtime: m.modified,
        rev: m.rev,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_goes_past_the_next_revisions_only_when_all_of_them_are_the_pass_s_own() {
        assert_eq!(following(10, [13, 11, 12].into_iter()), Some(13));
        assert_eq!(
            following(10, [11, 11, 4, 12].into_iter()),
            Some(12),
            "old and repeated revisions"
        );
        assert_eq!(following(10, [11, 13].into_iter()), None, "12 is someone else's");
        assert_eq!(following(10, [12, 13].into_iter()), None, "11 is someone else's");
        assert_eq!(
            following(10, [3, 10].into_iter()),
            None,
            "nothing written past the cursor"
        );
        assert_eq!(following(10, std::iter::empty()), None);
        let mut report = PassReport {
            own_revs: vec![11, 12],
            ..PassReport::default()
        };
        assert_eq!(past_own_writes(10, &report), Some(12));
        report.result.deleted_remote.push("gone".into());
        assert_eq!(
            past_own_writes(10, &report),
            None,
            "a deletion's revision is not known"
        );
        report.result.deleted_remote.clear();
        report.moved.push(("a".into(), "b".into()));
        assert_eq!(past_own_writes(10, &report), None, "nor a move's");
    }

    #[test]
    fn the_last_scan_is_the_index_but_for_held_skipped_and_racy_files() {
        let stat = |n: u64, mtime: i64| Stat {
            size: n,
            mtime,
            inode: n,
            xxh3: n,
        };
        let entry = |local: Option<Stat>| Entry {
            local,
            base: None,
            dir: false,
        };
        let index: BTreeMap<Key, Entry> = [
            ("a.txt", entry(Some(stat(1, 10)))),
            ("held.txt", entry(Some(stat(2, 20)))),
            ("locked/x.txt", entry(Some(stat(3, 30)))),
            ("racy.txt", entry(Some(stat(4, i64::MIN)))),
            ("gone.txt", entry(None)),
        ]
        .into_iter()
        .map(|(p, e)| (Key::from(p), e))
        .collect();
        let scan = Scan {
            skipped_dirs: ["locked".to_string()].into(),
            ..Scan::default()
        };
        let last = LastScan::InIndex {
            scan,
            held: ["held.txt".to_string()].into(),
            racy: [(Key::from("racy.txt"), stat(4, 40))].into(),
        };
        let files: Vec<(String, Stat)> = last
            .into_scan(&index)
            .files
            .into_iter()
            .map(|(p, s)| (p.to_string(), s))
            .collect();
        assert_eq!(
            files,
            [
                ("a.txt".to_string(), stat(1, 10)),
                ("racy.txt".to_string(), stat(4, 40))
            ]
        );
        let kept = Scan {
            files: [(Key::from("only.txt"), stat(5, 50))].into(),
            ..Scan::default()
        };
        assert_eq!(
            LastScan::Kept(kept).into_scan(&index).files.len(),
            1,
            "a dry run's scan is as it was"
        );
    }
}
