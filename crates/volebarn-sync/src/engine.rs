//! The sync engine: one pass = refresh the remote mirror (manifest once, then `/changes`), scan
//! the folder against the index, turn renames into server-side moves, apply the safety rails,
//! plan three-way ([docs/design.md](docs/design.md) §6) locally, apply, and persist the index.
//!
//! Safety rails: without the root marker (`.volebarn/marker`) while the index remembers synced
//! files, nothing is done at all (an unmounted disk or a recreated folder must not look like
//! "the user deleted everything"); deleting more than `max_delete` percent of the synced files
//! in one pass is held until `--force`; paths that could not be read are left untouched.

use crate::apply::{base_of, Executor, SyncResult};
use crate::error::{Result, SyncError};
use crate::index::{Base, Entry, FileIndex, Stat};
use crate::scan::{self, local_path, Scan};
use crate::state::STATE_DIR;
use crate::state::{self, ConflictRecord, StatusFile};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use unicode_normalization::UnicodeNormalization;
use volebarn_client::{
    Client, ClientError, ConflictStrategy, ErrorCode, SyncPlan, TransferMetrics, TransferObserver,
};
use volebarn_core::sync::{plan, BaseState, LocalState, RemoteState};
use volebarn_core::timefmt::now_nanos;
use volebarn_core::types::ChangeKind;

/// The server's files as this client last learned them.
#[derive(Debug, Default, Clone)]
struct RemoteMirror {
    files: BTreeMap<String, RemoteState>,
    dirs: BTreeSet<String>,
    /// Journal revision the mirror is current as of; None: fetch the manifest.
    cursor: Option<u64>,
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
    /// Renames done as server-side moves: (from, to).
    pub moved: Vec<(String, String)>,
    /// Directories deleted on one side and so removed on the other.
    pub dirs_deleted_remote: Vec<String>,
    pub dirs_deleted_local: Vec<String>,
    /// Directories the plan created on the server.
    #[serde(skip)]
    created_remote_dirs: Vec<String>,
    /// Content conflicts left for the user (strategy `manual`): both versions are in the
    /// folder and `volebarn conflicts` lists them.
    pub manual_conflicts: Vec<String>,
    /// Local deletions not propagated, awaiting `volebarn sync --force`.
    pub held_deletions: Vec<String>,
    pub held_reason: Option<String>,
    /// Paths not synced this pass and why (unreadable, symlink, name clash, still changing…).
    pub problems: Vec<(String, String)>,
    /// Local changes not yet on the server (while offline), as planned operations.
    pub pending: Pending,
    /// The plan (dry run only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<SyncPlan>,
    /// Files whose content the scan read, and how many bytes.
    pub hashed: u64,
    pub bytes_read: u64,
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
    fn of(plan: &SyncPlan, moves: &[(String, String)]) -> Pending {
        Pending {
            uploads: plan.client_upload.clone(),
            downloads: plan.client_download.clone(),
            deletes_remote: plan.server_delete.clone(),
            deletes_local: plan.client_delete.clone(),
            moves: moves.to_vec(),
            conflicts: plan.conflicts.iter().map(|c| c.path.clone()).collect(),
            dir_deletes_remote: Vec::new(),
            dir_deletes_local: Vec::new(),
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
}

/// `name` folded as a case-insensitive, normalizing filesystem would see it.
fn fold(path: &str) -> String {
    path.nfc().collect::<String>().to_lowercase()
}

fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

impl Engine {
    /// Opens the folder's state (`.volebarn/`, created on first use); fails clearly when the
    /// folder is missing or another engine has it open.
    pub fn open(root: &Path, client: Client, config: EngineConfig) -> Result<Engine> {
        if !root.is_dir() {
            return Err(SyncError::NoFolder(root.to_path_buf()));
        }
        let state = root.join(STATE_DIR);
        std::fs::create_dir_all(&state).map_err(SyncError::io("creating", &state))?;
        let index = FileIndex::open(&state.join("index"))?;
        if index.base_count() == 0 && !state::marker_exists(root) {
            state::write_marker(root)?;
        }
        Ok(Engine {
            root: root.to_path_buf(),
            client,
            index,
            remote: RemoteMirror::default(),
            config,
            progress: None,
            pass_start: (std::time::Instant::now(), TransferMetrics::default()),
            status: state::read_status(root).ok().flatten().unwrap_or_default(),
        })
    }

    /// Shows each pass's transfers through observers made by `progress`.
    pub fn set_progress(&mut self, progress: ProgressFactory) {
        self.progress = Some(progress);
    }

    /// The client to apply `plan` with: one reporting to a fresh progress observer when there
    /// is something to transfer and a progress factory is set.
    fn transfer_client(&self, plan: &SyncPlan, local: &BTreeMap<String, LocalState>) -> Client {
        let Some(progress) = &self.progress else {
            return self.client.clone();
        };
        let up = plan
            .client_upload
            .iter()
            .filter_map(|p| local.get(p))
            .map(|f| f.size);
        let down = plan
            .client_download
            .iter()
            .filter_map(|p| self.remote.files.get(p))
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
                let (manifest, rev) = self.client.get_manifest_at(None).await?;
                let mut m = RemoteMirror {
                    cursor: Some(rev),
                    ..RemoteMirror::default()
                };
                for (p, f) in manifest.files {
                    if f.is_directory {
                        m.dirs.insert(p);
                    } else {
                        add_parents(&mut m.dirs, &p);
                        m.files.insert(p, remote_state(&f));
                    }
                }
                self.remote = m;
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
                match c.kind {
                    ChangeKind::Put | ChangeKind::Mkdir => match &c.metadata {
                        Some(m) if m.is_directory => {
                            self.remote.dirs.insert(c.path.clone());
                        }
                        Some(m) => {
                            add_parents(&mut self.remote.dirs, &c.path);
                            self.remote.files.insert(c.path.clone(), remote_state(m));
                        }
                        // Superseded by a later change in the journal.
                        None => {}
                    },
                    ChangeKind::Delete | ChangeKind::Rmdir => {
                        let p = c.path.as_str();
                        self.remote.files.retain(|k, _| k != p && !is_under(k, p));
                        self.remote.dirs.retain(|k| k != p && !is_under(k, p));
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

    /// One full pass. Errors on single paths are in the report; an `Err` means the pass could
    /// not run at all (e.g. the index could not be written).
    pub async fn pass(&mut self, opts: PassOptions) -> Result<PassReport> {
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
            self.index.commit(next)?;
            state::write_marker(&self.root)?;
        }

        let online = self.refresh_remote().await;

        let root = self.root.clone();
        let previous = self.index.entries.clone();
        let sc: Scan = tokio::task::spawn_blocking(move || scan::scan(&root, &previous))
            .await
            .map_err(|e| SyncError::Scan(e.to_string()))?;
        report.hashed = sc.hashed;
        report.bytes_read = sc.bytes_read;
        report.problems.extend(sc.problems.iter().cloned());

        let mut base: BTreeMap<String, BaseState> = self
            .index
            .entries
            .iter()
            .filter_map(|(p, e)| e.base.map(|b| (p.clone(), BaseState::from(b))))
            .collect();

        // Renames: a synced path gone locally, and a new path with its exact content.
        let renames = detect_renames(&sc, &self.index.entries);

        if let Err(e) = online {
            report.offline = Some(format!("server unreachable: {e}"));
            // What would go up if the server still held the base: the local changes alone.
            let mirror = std::mem::take(&mut self.remote);
            self.remote.files = base.iter().map(|(p, b)| (p.clone(), base_as_remote(b))).collect();
            self.remote.dirs = mirror.dirs.clone();
            let p = self.plan_with(&sc, &base, &BTreeSet::new(), &mut Vec::new());
            self.remote = mirror;
            report.pending = Pending::of(&p, &renames);
            self.persist(&sc, &base, &BTreeSet::new(), &report)?;
            return Ok(report);
        }

        // A dry run plans on the folder and mirror as the moves would leave them, so that it
        // shows what a real pass does: the moves, not uploads and deletions of the same files.
        let mut mirror_before_moves = None;
        if opts.dry_run && !renames.is_empty() {
            let moves = self.planned_moves(&renames, &base);
            mirror_before_moves = Some(self.remote.clone());
            for (from, to) in &moves {
                move_keys(&mut base, from, to);
                move_keys(&mut self.remote.files, from, to);
                let dirs: Vec<String> = self
                    .remote
                    .dirs
                    .iter()
                    .filter(|d| *d == from || is_under(d, from))
                    .cloned()
                    .collect();
                for d in dirs {
                    self.remote.dirs.remove(&d);
                    self.remote.dirs.insert(format!("{to}{}", &d[from.len()..]));
                }
                add_parents(&mut self.remote.dirs, to);
            }
            report.moved = moves;
        }
        if !opts.dry_run && !renames.is_empty() {
            report.moved = self
                .apply_renames(&renames, &mut base, &mut report.result.errors)
                .await;
            if !report.moved.is_empty() {
                self.remote.cursor = None;
                if let Err(e) = self.refresh_remote().await {
                    report.offline = Some(format!("server unreachable: {e}"));
                    self.persist(&sc, &base, &BTreeSet::new(), &report)?;
                    return Ok(report);
                }
            }
        }

        // Safety rail: mass deletions wait for --force.
        let deleted: Vec<String> = base
            .keys()
            .filter(|p| !sc.files.contains_key(*p) && !sc.is_skipped(p))
            .cloned()
            .collect();
        let mut held = BTreeSet::new();
        if !opts.force && !deleted.is_empty() {
            let total = base.len();
            let limit = total * usize::from(self.config.max_delete_percent) / 100;
            let reason = if sc.files.is_empty() {
                Some(format!(
                    "the folder is empty but {total} files were synced: not deleting them on the server"
                ))
            } else if deleted.len() > 1 && deleted.len() > limit {
                Some(format!(
                    "{} of {total} synced files were deleted locally, more than max_delete ({}%)",
                    deleted.len(),
                    self.config.max_delete_percent
                ))
            } else {
                None
            };
            if let Some(r) = reason {
                report.held_reason = Some(format!(
                    "{r}; held until `volebarn sync --force` (or restore the files)"
                ));
                held.extend(deleted);
                report.held_deletions = held.iter().cloned().collect();
            }
        }

        let mut plan = self.plan_with(&sc, &base, &held, &mut report.problems);
        let (dirs_remote, dirs_local) = self.dir_deletions(&sc, &mut plan);
        if opts.dry_run {
            if let Some(mirror) = mirror_before_moves {
                self.remote = mirror;
            }
            report.pending = Pending::of(&plan, &report.moved);
            report.pending.dir_deletes_remote = dirs_remote;
            report.pending.dir_deletes_local = dirs_local;
            report.plan = Some(plan);
            return Ok(report);
        }
        let local: BTreeMap<String, LocalState> = sc
            .files
            .iter()
            .map(|(p, s)| (p.clone(), s.local_state()))
            .collect();
        let mut result = std::mem::take(&mut report.result);
        let client = self.transfer_client(&plan, &local);
        Executor { client: &client }
            .apply_plan(&self.root, &plan, &local, &mut base, &mut result)
            .await;
        report.result = result;
        report.created_remote_dirs = plan.server_create_dirs.clone();
        self.delete_dirs(dirs_remote, dirs_local, &mut report).await;
        report.manual_conflicts = self.record_conflicts(&report.result)?;
        self.persist(&sc, &base, &held, &report)?;
        Ok(report)
    }

    /// The three-way plan for this scan, leaving out held and unreadable paths, and downloads
    /// whose names would clash with another file on a case-insensitive filesystem.
    fn plan_with(
        &self,
        sc: &Scan,
        base: &BTreeMap<String, BaseState>,
        held: &BTreeSet<String>,
        problems: &mut Vec<(String, String)>,
    ) -> SyncPlan {
        let untouched = |p: &str| held.contains(p) || sc.is_skipped(p);
        let local: BTreeMap<String, LocalState> = sc
            .files
            .iter()
            .filter(|(p, _)| !untouched(p))
            .map(|(p, s)| (p.clone(), s.local_state()))
            .collect();
        let remote: BTreeMap<String, RemoteState> = self
            .remote
            .files
            .iter()
            .filter(|(p, _)| !untouched(p))
            .map(|(p, r)| (p.clone(), *r))
            .collect();
        let base_states: BTreeMap<String, BaseState> = base
            .iter()
            .filter(|(p, _)| !untouched(p))
            .map(|(p, b)| (p.clone(), *b))
            .collect();
        let remote_dirs: BTreeSet<String> = self
            .remote
            .dirs
            .iter()
            .filter(|d| !untouched(d))
            .cloned()
            .collect();
        let mut p = plan(
            &local,
            &remote,
            &base_states,
            &sc.dirs,
            &remote_dirs,
            self.config.strategy,
        );

        // Case/normalization clashes: a download must not land on another name's file.
        let mut taken: BTreeMap<String, String> = sc
            .files
            .keys()
            .chain(sc.dirs.iter())
            .map(|p| (fold(p), p.clone()))
            .collect();
        let mut clashing = BTreeSet::new();
        for d in p.client_download.iter().chain(p.client_create_dirs.iter()) {
            let f = fold(d);
            match taken.get(&f) {
                Some(other) if other != d => {
                    problems.push((
                        d.clone(),
                        format!(
                            "name clashes with {other:?} on case-insensitive or normalizing filesystems: \
                             not downloaded (rename one of them)"
                        ),
                    ));
                    clashing.insert(d.clone());
                }
                Some(_) => {}
                None => {
                    taken.insert(f, d.clone());
                }
            }
        }
        if !clashing.is_empty() {
            p.client_download.retain(|d| !clashing.contains(d));
            p.client_create_dirs.retain(|d| !clashing.contains(d));
        }
        p
    }

    /// Directories synced last time and gone from one side since: deleted there, so to be
    /// deleted on the other — unless the other side has new content inside (kept, re-created).
    /// Takes them out of the plan's directory creations; returns (delete remotely, locally).
    fn dir_deletions(&self, sc: &Scan, plan: &mut SyncPlan) -> (Vec<String>, Vec<String>) {
        let synced: Vec<&String> = self
            .index
            .entries
            .iter()
            .filter(|(_, e)| e.dir)
            .map(|(p, _)| p)
            .collect();
        let under = |p: &str, d: &str| p == d || is_under(p, d);
        let mut remote_del = Vec::new();
        let mut local_del = Vec::new();
        for d in synced {
            if sc.is_skipped(d) {
                continue;
            }
            let (here, there) = (sc.dirs.contains(d), self.remote.dirs.contains(d));
            if !here && there {
                let busy = plan.client_download.iter().any(|p| under(p, d))
                    || sc.files.keys().any(|p| under(p, d))
                    || plan.conflicts.iter().any(|c| under(&c.path, d));
                if !busy {
                    remote_del.push(d.clone());
                }
            } else if here && !there {
                let busy = sc
                    .files
                    .keys()
                    .any(|p| under(p, d) && !plan.client_delete.contains(p))
                    || plan.client_download.iter().any(|p| under(p, d));
                if !busy {
                    local_del.push(d.clone());
                }
            }
        }
        plan.client_create_dirs
            .retain(|c| !remote_del.iter().any(|d| under(c, d)));
        plan.server_create_dirs
            .retain(|c| !local_del.iter().any(|d| under(c, d)));
        (remote_del, local_del)
    }

    /// Deletes directories found deleted on the other side: on the server only when no file is
    /// left below (files are deleted one by one, conditionally, by the plan), locally only when
    /// empty.
    async fn delete_dirs(
        &mut self,
        mut remote: Vec<String>,
        mut local: Vec<String>,
        report: &mut PassReport,
    ) {
        // Outermost first on the server (one call covers the subtree); deepest first here.
        remote.sort();
        let mut done: Vec<String> = Vec::new();
        for d in remote {
            if done.iter().any(|o| is_under(&d, o)) {
                continue;
            }
            match self.client.get_manifest(Some(&d)).await {
                Ok(m) if m.files.values().all(|f| f.is_directory) => {
                    match self.client.delete_directory(&d).await {
                        Ok(()) => done.push(d),
                        Err(e) if e.error_code() == Some(ErrorCode::FileNotFound) => done.push(d),
                        Err(e) => report.result.errors.push((d, e.to_string())),
                    }
                }
                Ok(_) => {} // new files arrived there meanwhile: keep it
                Err(e) if e.error_code() == Some(ErrorCode::FileNotFound) => done.push(d),
                Err(e) => report.result.errors.push((d, e.to_string())),
            }
        }
        for d in &done {
            self.remote.dirs.retain(|k| k != d && !is_under(k, d));
        }
        report.dirs_deleted_remote = done;
        local.sort_by(|a, b| b.cmp(a));
        for d in local {
            match std::fs::remove_dir(local_path(&self.root, &d)) {
                Ok(()) => report.dirs_deleted_local.push(d),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.dirs_deleted_local.push(d),
                // Not empty (something new, or ignored files): keep it.
                Err(_) => {}
            }
        }
    }

    /// The server-side moves for detected renames: a directory's files as one move of the
    /// directory, and none onto a path the server has (the plan settles those).
    fn planned_moves(
        &self,
        renames: &[(String, String)],
        base: &BTreeMap<String, BaseState>,
    ) -> Vec<(String, String)> {
        collapse_dir_moves(renames, &self.remote.dirs, base)
            .into_iter()
            .filter(|(_, to)| !self.remote.files.contains_key(to) && !self.remote.dirs.contains(to))
            .collect()
    }

    /// Performs detected renames as server-side moves; returns those that happened.
    async fn apply_renames(
        &mut self,
        renames: &[(String, String)],
        base: &mut BTreeMap<String, BaseState>,
        errors: &mut Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        let mut done = Vec::new();
        for (from, to) in self.planned_moves(renames, base) {
            match self.client.move_file(&from, &to).await {
                Ok(m) => {
                    let moved: Vec<String> = base
                        .keys()
                        .filter(|p| *p == &from || is_under(p, &from))
                        .cloned()
                        .collect();
                    for old in moved {
                        if let Some(b) = base.remove(&old) {
                            let new = format!("{to}{}", &old[from.len()..]);
                            let entry = if !m.is_directory && m.xxhash3 == b.xxh3 {
                                base_of(&m)
                            } else {
                                b
                            };
                            base.insert(new, entry);
                        }
                    }
                    done.push((from, to));
                }
                Err(e)
                    if matches!(
                        e.error_code(),
                        Some(ErrorCode::FileNotFound | ErrorCode::AlreadyExists)
                    ) =>
                {
                    tracing::info!(%from, %to, error = %e, "rename not done as a move; syncing as upload + delete");
                }
                Err(e) => errors.push((from, e.to_string())),
            }
        }
        done
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

    /// A local directory the plan created on the server this pass (or that holds an uploaded file).
    fn pushed_dir(&self, d: &str, report: &PassReport) -> bool {
        !report.result.errors.iter().any(|(p, _)| p == d)
            && (report.result.uploaded.iter().any(|p| is_under(p, d))
                || report.created_remote_dirs.iter().any(|c| c == d))
    }

    /// Writes the index (scan stats + new base) and the status file.
    fn persist(
        &mut self,
        sc: &Scan,
        base: &BTreeMap<String, BaseState>,
        held: &BTreeSet<String>,
        report: &PassReport,
    ) -> Result<()> {
        let downloaded: BTreeSet<&String> = report.result.downloaded.iter().collect();
        let mut next: BTreeMap<String, Entry> = BTreeMap::new();
        for (p, s) in &sc.remember {
            next.insert(
                p.clone(),
                Entry {
                    local: Some(*s),
                    base: None,
                    dir: false,
                },
            );
        }
        // Directories now on both sides.
        if report.offline.is_none() {
            let gone: BTreeSet<&String> = report
                .dirs_deleted_local
                .iter()
                .chain(report.dirs_deleted_remote.iter())
                .collect();
            // Parents of synced files exist on both sides.
            let mut parents = BTreeSet::new();
            for p in base.keys() {
                add_parents(&mut parents, p);
            }
            for d in sc
                .dirs
                .iter()
                .chain(report.result.created_dirs.iter())
                .chain(parents.iter())
            {
                let removed = gone.iter().any(|g| *g == d || is_under(d, g));
                if !removed
                    && (parents.contains(d) || self.remote.dirs.contains(d) || self.pushed_dir(d, report))
                {
                    next.entry(d.clone()).or_default().dir = true;
                }
            }
        } else {
            for (p, e) in &self.index.entries {
                if e.dir {
                    next.entry(p.clone()).or_default().dir = true;
                }
            }
        }
        for (p, b) in base {
            let e = next.entry(p.clone()).or_default();
            e.base = Some(Base::from(*b));
            if downloaded.contains(p) {
                // Downloads carry the remote mtime: while the file keeps it, it is ours.
                e.local = std::fs::symlink_metadata(local_path(&self.root, p))
                    .ok()
                    .filter(|m| m.len() == b.size && scan::mtime_nanos(m) == b.mtime)
                    .map(|m| Stat {
                        size: b.size,
                        mtime: b.mtime,
                        inode: scan::inode(&m),
                        xxh3: b.xxh3.0,
                    });
            }
        }
        // Untouched paths keep what the index had.
        for (p, e) in &self.index.entries {
            if held.contains(p) || sc.is_skipped(p) {
                next.insert(p.clone(), *e);
            }
        }
        self.index.commit(next)?;
        let mut metrics = self.status.metrics.clone();
        let r = &report.result;
        metrics.passes += 1;
        metrics.files_synced += (r.uploaded.len() + r.downloaded.len() + report.moved.len()) as u64;
        metrics.sync_errors += r.errors.len() as u64;
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
            synced_files: base.len(),
            metrics,
        };
        state::write_status(&self.root, &status)?;
        self.status = status;
        Ok(())
    }
}

/// Renames the keys `from` and those below it to the same place below `to`.
fn move_keys<V>(map: &mut BTreeMap<String, V>, from: &str, to: &str) {
    let moved: Vec<String> = map
        .keys()
        .filter(|k| *k == from || is_under(k, from))
        .cloned()
        .collect();
    for old in moved {
        if let Some(v) = map.remove(&old) {
            map.insert(format!("{to}{}", &old[from.len()..]), v);
        }
    }
}

/// A file's parent directories exist implicitly ([docs/design.md](docs/design.md) §2).
fn add_parents(dirs: &mut BTreeSet<String>, path: &str) {
    let mut end = path.len();
    while let Some(i) = path[..end].rfind('/') {
        if !dirs.insert(path[..i].to_string()) {
            break;
        }
        end = i;
    }
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

/// Pairs (gone, new) where the new local file has exactly the content the gone one had at the
/// last sync. The same inode wins; otherwise a unique content match (empty files only by inode).
fn detect_renames(sc: &Scan, index: &BTreeMap<String, Entry>) -> Vec<(String, String)> {
    let gone: Vec<(&String, &Entry)> = index
        .iter()
        .filter(|(p, e)| e.base.is_some() && !sc.files.contains_key(*p) && !sc.is_skipped(p))
        .collect();
    if gone.is_empty() {
        return Vec::new();
    }
    let mut by_content: BTreeMap<(u64, u64), Vec<&String>> = BTreeMap::new();
    let mut by_inode: BTreeMap<u64, &String> = BTreeMap::new();
    for (p, s) in &sc.files {
        if index.get(p).is_some_and(|e| e.base.is_some()) {
            continue;
        }
        by_content.entry((s.xxh3, s.size)).or_default().push(p);
        if s.inode != 0 {
            by_inode.insert(s.inode, p);
        }
    }
    let mut used = BTreeSet::new();
    let mut out = Vec::new();
    for (old, e) in gone {
        let Some(b) = e.base else { continue };
        let Some(candidates) = by_content.get(&(b.xxh3, b.size)) else {
            continue;
        };
        let by_ino = e
            .local
            .and_then(|l| by_inode.get(&l.inode))
            .filter(|p| candidates.contains(p))
            .copied();
        let pick = by_ino.or_else(|| {
            let free: Vec<&&String> = candidates.iter().filter(|c| !used.contains(**c)).collect();
            (b.size > 0 && free.len() == 1).then(|| *free[0])
        });
        if let Some(new) = pick {
            if used.insert(new.clone()) {
                out.push((old.clone(), new.clone()));
            }
        }
    }
    out
}

/// Turns file renames that are really one directory rename into that directory's move: every
/// synced file below the old directory went to the same place below the new one.
fn collapse_dir_moves(
    renames: &[(String, String)],
    remote_dirs: &BTreeSet<String>,
    base: &BTreeMap<String, BaseState>,
) -> Vec<(String, String)> {
    let map: BTreeMap<&str, &str> = renames.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut dir_moves: BTreeMap<String, String> = BTreeMap::new();
    for (from, to) in renames {
        let (fp, tp): (Vec<&str>, Vec<&str>) = (from.split('/').collect(), to.split('/').collect());
        let common = fp
            .iter()
            .rev()
            .zip(tp.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        // The deepest directory pair with the same contents below it, if any.
        for k in (1..=common).rev() {
            let (od, nd) = (fp[..fp.len() - k].join("/"), tp[..tp.len() - k].join("/"));
            if od.is_empty() || nd.is_empty() || od == nd || is_under(&nd, &od) || is_under(&od, &nd) {
                continue;
            }
            if !remote_dirs.contains(&od) || remote_dirs.contains(&nd) {
                continue;
            }
            let all_moved = base.keys().filter(|p| is_under(p, &od)).all(|p| {
                map.get(p.as_str())
                    .is_some_and(|t| *t == format!("{nd}{}", &p[od.len()..]))
            });
            if all_moved {
                dir_moves.insert(od, nd);
                break;
            }
        }
    }
    // Keep the outermost directory moves only.
    let outer: Vec<(String, String)> = dir_moves
        .iter()
        .filter(|(od, _)| !dir_moves.keys().any(|o| is_under(od, o)))
        .map(|(a, b)| (a.clone(), b.clone()))
        .collect();
    let mut out = outer.clone();
    for (from, to) in renames {
        if !outer.iter().any(|(od, _)| is_under(from, od)) {
            out.push((from.clone(), to.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use volebarn_client::Xxh3;

    fn be(h: u64) -> BaseState {
        BaseState {
            xxh3: Xxh3(h),
            size: 1,
            mtime: 0,
            rev: 1,
        }
    }

    #[test]
    fn a_renamed_directory_becomes_one_move() {
        let renames = vec![
            ("docs/a.txt".to_string(), "papers/a.txt".to_string()),
            ("docs/sub/b.txt".to_string(), "papers/sub/b.txt".to_string()),
            ("x.txt".to_string(), "y.txt".to_string()),
        ];
        let dirs: BTreeSet<String> = ["docs", "docs/sub"].iter().map(|s| s.to_string()).collect();
        let base: BTreeMap<String, BaseState> = [("docs/a.txt", 1), ("docs/sub/b.txt", 2), ("x.txt", 3)]
            .iter()
            .map(|(p, h)| (p.to_string(), be(*h)))
            .collect();
        let moves = collapse_dir_moves(&renames, &dirs, &base);
        assert_eq!(
            moves,
            vec![
                ("docs".to_string(), "papers".to_string()),
                ("x.txt".to_string(), "y.txt".to_string())
            ]
        );
    }

    #[test]
    fn a_partly_moved_directory_stays_file_moves() {
        let renames = vec![("docs/a.txt".to_string(), "papers/a.txt".to_string())];
        let dirs: BTreeSet<String> = ["docs"].iter().map(|s| s.to_string()).collect();
        let base: BTreeMap<String, BaseState> = [("docs/a.txt", 1), ("docs/b.txt", 2)]
            .iter()
            .map(|(p, h)| (p.to_string(), be(*h)))
            .collect();
        assert_eq!(collapse_dir_moves(&renames, &dirs, &base), renames);
    }

    #[test]
    fn folding_matches_case_and_unicode_normalization() {
        assert_eq!(fold("Docs/README.md"), fold("docs/readme.md"));
        assert_eq!(fold("caf\u{e9}.txt"), fold("cafe\u{301}.txt"));
        assert_ne!(fold("a.txt"), fold("b.txt"));
    }
}
