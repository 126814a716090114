//! Executing a [`Plan`] on the folder and the server, in the plan's order: server-side moves
//! (the base follows them), directories, uploads (small files in bulk requests of up to 1,000
//! files or 32 MiB, larger ones streamed or chunked, 8 at a time, each conditional on the
//! revision the plan saw), verified downloads (bulk, then one by one for whatever a bulk request
//! could not deliver), deletions on both sides (a local file only if it still holds what the
//! base says), adoptions, conflicts (the losing side kept as a conflict copy on both sides), and
//! directory deletions (only when nothing is left below). A failing path is reported and never
//! stops the rest.

use crate::engine::PassReport;
use crate::index::{held_key, Key, PassBase, Stat};
use crate::plan::{is_under, Move, Plan};
use crate::scan::local_path;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use volebarn_client::{
    bulk_batches, BulkUploadResponse, Client, ClientError, ErrorCode, FileMetadata, LocalUpload, Result,
    UploadCondition,
};
use volebarn_core::sync::{
    conflict_copy_name, AsLocalState, BaseState, ConflictKind, ConflictResolution, RemoteState,
};
use volebarn_core::timefmt::now_nanos;

/// Transfers in flight while applying a plan.
const CONCURRENCY: usize = 8;
/// Files up to this size are uploaded in bulk requests.
const SMALL_FILE: u64 = 1024 * 1024;
/// Limits of one bulk request.
const BATCH_BYTES: u64 = 4 * 1024 * 1024;
const BATCH_FILES: usize = 1000;
/// Bytes of one bulk download request: its response is read as fast as it arrives, so this
/// bounds what waits in memory for the disk.
const DOWNLOAD_BATCH_BYTES: u64 = 2 * 1024 * 1024;
/// Bulk uploads in flight while applying a plan. Each holds its files' bytes: with 4, the first
/// sync of 10,000 files peaked at 55 MB; with 2, at 49 MB, and took no longer (the server's
/// durable writes, not the client, set the pace).
const BATCHES_IN_FLIGHT: usize = 2;

/// The seed's `SyncResult`, plus deletions on the server and unresolved conflicts.
///
/// The transferred paths are [`Key`]s, shared with the engine's maps rather than copied: a
/// first sync lists the whole folder here (at 100,000 files, 4.5 MB as `String`s). Each of the
/// two lists is in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResult {
    #[serde(with = "crate::index::key_list")]
    pub uploaded: Vec<Key>,
    #[serde(with = "crate::index::key_list")]
    pub downloaded: Vec<Key>,
    pub deleted_local: Vec<String>,
    pub deleted_remote: Vec<String>,
    pub created_dirs: Vec<String>,
    /// Conflicts settled by the strategy; the losing side was kept as a conflict copy.
    pub conflicts_resolved: Vec<String>,
    /// The copy kept for each settled conflict, and which side it holds.
    pub conflict_copies: Vec<ConflictCopy>,
    /// Conflicts left for the user (file vs directory).
    pub conflicts: Vec<String>,
    /// Per-path failures; the rest of the sync went on.
    pub errors: Vec<(String, String)>,
}

/// A conflict settled during a sync: `copy` (beside `path`) holds the losing side's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictCopy {
    pub path: String,
    pub copy: String,
    /// True when the copy holds the local version (the remote one now sits at `path`).
    pub copy_is_local: bool,
    pub resolution: ConflictResolution,
}

/// The base a file on the server becomes once both sides hold it.
pub(crate) fn base_of(m: &FileMetadata) -> BaseState {
    BaseState {
        xxh3: m.xxhash3,
        size: m.size,
        mtime: m.modified,
        rev: m.rev,
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Executes plans with `client` (whose transfer observer hears every file) on the folder at
/// `root`. It decides nothing: every operation is in the [`Plan`]; what it checks at the last
/// moment (a local file still holds what the plan saw, a directory to delete is still empty,
/// every server write is conditional on the revision the plan saw) only ever keeps data.
pub(crate) struct Executor<'a> {
    pub client: &'a Client,
    pub root: &'a Path,
    /// The server's files as the plan saw them (the sizes batch the downloads).
    pub remote: &'a BTreeMap<Key, RemoteState>,
    /// The folder's files as the scan behind the plan saw them.
    pub local: &'a BTreeMap<Key, Stat>,
}

impl Executor<'_> {
    /// Performs `plan` with bounded concurrency, updating `base` (keyed as before the moves).
    /// A failing path is reported in `report.result.errors` and never stops the rest.
    pub async fn apply(&self, plan: &Plan, base: &mut PassBase, report: &mut PassReport) {
        let local = self.local;
        report.moved = self.apply_moves(&plan.moves, base, &mut report.result).await;
        let result = &mut report.result;
        for d in &plan.create_dirs_local {
            match std::fs::create_dir_all(local_path(self.root, d)) {
                Ok(()) => result.created_dirs.push(d.clone()),
                Err(e) => result.errors.push((d.clone(), e.to_string())),
            }
        }
        for d in &plan.create_dirs_remote {
            match self.client.create_directory(d).await {
                Ok(m) => report.own_revs.push(m.rev),
                Err(e) => {
                    if let Err(e) = tolerate(Err(e), ErrorCode::AlreadyExists) {
                        result.errors.push((d.clone(), e.to_string()));
                    }
                }
            }
        }
        self.upload_planned(plan, base, result).await;
        self.download_planned(&plan.downloads, base, result).await;
        // The journal revisions of the uploads (see `past_own_writes` in engine.rs).
        report
            .own_revs
            .extend(result.uploaded.iter().filter_map(|k| base.get(k).map(|b| b.rev)));
        // The transfers in path order, as `SyncResult` says (persist walks them in order).
        result.uploaded.sort_unstable();
        result.downloaded.sort_unstable();
        for p in &plan.deletes_local {
            // Delete only what the plan saw: an edit made since then is kept.
            let target = local_path(self.root, p);
            let unchanged = volebarn_client::hash_file(&target, |_| {}).ok().map(|(h, _)| h)
                == base.get(p).map(|b| b.xxh3);
            if !unchanged {
                result
                    .errors
                    .push((p.clone(), "changed locally during the sync; kept".into()));
                continue;
            }
            match std::fs::remove_file(&target) {
                Ok(()) => {
                    base.remove(p);
                    result.deleted_local.push(p.clone());
                }
                Err(e) => result.errors.push((p.clone(), e.to_string())),
            }
        }
        // Each deletion is its own conditional request: several in flight, answers in order.
        // (Owned paths and revisions: a closure over `&String` makes the future non-`Send`.)
        let items: Vec<(String, Option<u64>)> = plan
            .deletes_remote
            .iter()
            .map(|p| (p.clone(), plan.if_match.get(p).copied()))
            .collect();
        let deletions: Vec<_> = futures_util::stream::iter(items)
            .map(|(p, rev): (String, Option<u64>)| async move {
                match rev {
                    Some(rev) => self.client.delete_file_if(&p, rev).await,
                    None => self.client.delete_file(&p).await,
                }
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        for (p, r) in plan.deletes_remote.iter().zip(deletions) {
            match r {
                Ok(()) => {
                    base.remove(p);
                    result.deleted_remote.push(p.clone());
                }
                Err(e) if e.error_code() == Some(ErrorCode::FileNotFound) => {
                    base.remove(p);
                }
                Err(e) => result.errors.push((p.clone(), e.to_string())),
            }
        }
        for p in &plan.adopt {
            match self.client.get_file_metadata(p).await {
                Ok(m) if local.get(p.as_str()).map(|l| l.local_state().xxh3) == Some(m.xxhash3) => {
                    base.insert(self.key(p, base), base_of(&m));
                }
                Ok(_) => result.errors.push((p.clone(), "changed during the sync".into())),
                Err(e) => result.errors.push((p.clone(), e.to_string())),
            }
        }
        for p in &plan.forget {
            base.remove(p);
        }
        for c in &plan.conflicts {
            if c.kind == ConflictKind::FileDirectory {
                result.conflicts.push(c.path.clone());
                continue;
            }
            match self
                .resolve_conflict(&c.path, c.resolution, c.remote_rev, base)
                .await
            {
                Ok(copy) => {
                    result.conflicts_resolved.push(c.path.clone());
                    result.conflict_copies.push(ConflictCopy {
                        path: c.path.clone(),
                        copy,
                        copy_is_local: c.resolution != ConflictResolution::UseLocal,
                        resolution: c.resolution,
                    });
                }
                Err(e) => result.errors.push((c.path.clone(), e.to_string())),
            }
        }
        self.delete_dirs(plan, report).await;
    }

    /// Performs the plan's moves on the server; returns those that happened. The base follows
    /// each move; a move that fails is reported and the next pass, planning afresh, syncs the
    /// renamed paths some other way.
    async fn apply_moves(
        &self,
        moves: &[Move],
        base: &mut PassBase,
        result: &mut SyncResult,
    ) -> Vec<(String, String)> {
        let mut done = Vec::new();
        for m in moves {
            match self.client.move_file(&m.from, &m.to).await {
                Ok(meta) => {
                    base.move_keys(&m.from, &m.to);
                    if m.directory {
                        self.rebase_below(&m.to, base).await;
                    } else if base.get(&m.to).is_some_and(|b| b.xxh3 == meta.xxhash3) {
                        base.insert(base.key(&m.to), base_of(&meta));
                    }
                    done.push((m.from.clone(), m.to.clone()));
                }
                Err(e) => result.errors.push((
                    m.from.clone(),
                    format!(
                        "not moved to {} on the server ({e}); the next pass syncs it",
                        m.to
                    ),
                )),
            }
        }
        done
    }

    /// After a directory move: the moved files' base takes the revisions the server gave them
    /// (same content), so the next pass has nothing to adopt.
    async fn rebase_below(&self, dir: &str, base: &mut PassBase) {
        let Ok(m) = self.client.get_manifest(Some(dir)).await else {
            return; // the next pass adopts them
        };
        for (p, f) in m.files.iter().filter(|(_, f)| !f.is_directory) {
            if base
                .get(p)
                .is_some_and(|b| (b.xxh3, b.size) == (f.xxhash3, f.size))
            {
                base.insert(base.key(p), base_of(f));
            }
        }
    }

    /// Deletes the plan's directories: on the server only when no file is left below (files
    /// are deleted one by one, conditionally, before), here only when empty.
    async fn delete_dirs(&self, plan: &Plan, report: &mut PassReport) {
        // Outermost first on the server (one call covers the subtree); deepest first here.
        let mut remote = plan.dir_deletes_remote.clone();
        remote.sort();
        let mut done: Vec<String> = Vec::new();
        for d in remote {
            if done.iter().any(|o| is_under(&d, o)) {
                continue;
            }
            let r = match self.client.get_manifest(Some(&d)).await {
                Ok(m) if m.files.values().all(|f| f.is_directory) => {
                    tolerate(self.client.delete_directory(&d).await, ErrorCode::FileNotFound).map(|()| true)
                }
                Ok(_) => Ok(false), // new files arrived there meanwhile: keep it
                Err(e) => tolerate(Err(e), ErrorCode::FileNotFound).map(|()| true),
            };
            match r {
                Ok(true) => done.push(d),
                Ok(false) => {}
                Err(e) => report.result.errors.push((d, e.to_string())),
            }
        }
        report.dirs_deleted_remote = done;
        let mut local = plan.dir_deletes_local.clone();
        local.sort_by(|a, b| b.cmp(a));
        for d in local {
            match std::fs::remove_dir(local_path(self.root, &d)) {
                Ok(()) => report.dirs_deleted_local.push(d),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.dirs_deleted_local.push(d),
                // Not empty (something new, or ignored files): keep it.
                Err(_) => {}
            }
        }
    }

    /// Uploads the plan's files: small ones in bulk requests (a few MiB each), large ones
    /// streamed or chunked, 8 at a time; every upload conditional on what the plan saw.
    async fn upload_planned(&self, plan: &Plan, base: &mut PassBase, result: &mut SyncResult) {
        let (root, local) = (self.root, self.local);
        result.uploaded.reserve(plan.uploads.len());
        let (small, large): (Vec<&String>, Vec<&String>) = plan
            .uploads
            .iter()
            .partition(|p| local.get(p.as_str()).is_some_and(|f| f.size <= SMALL_FILE));
        // Batches of up to BATCH_FILES files / BATCH_BYTES bytes, a few in flight; each batch's
        // files are read from disk while its request is sent.
        // Owned paths: the batches are gathered while the requests are in flight, and a
        // closure over `&String` held across an await makes the future non-`Send`.
        let uploads = small.into_iter().cloned().map(|p: String| LocalUpload {
            local: local_path(root, &p),
            condition: match plan.if_match.get(&p) {
                Some(rev) => UploadCondition::IfMatch(*rev),
                None => UploadCondition::Create,
            },
            path: p,
        });
        let size = |u: &LocalUpload| local.get(u.path.as_str()).map_or(0, |f| f.size);
        // Gathered as they are sent, and settled as they come back: neither the requests nor
        // the answers of a whole first sync are held at once.
        let batches = bulk_batches(uploads, size, BATCH_FILES, BATCH_BYTES);
        let mut sent = std::pin::pin!(futures_util::stream::iter(batches)
            .map(|batch| async move {
                let paths: Vec<String> = batch.iter().map(|u| u.path.clone()).collect();
                (paths, self.client.bulk_upload_files(batch).await)
            })
            .buffer_unordered(BATCHES_IN_FLIGHT));
        while let Some((paths, r)) = sent.next().await {
            self.settle_batch(paths, r, base, result).await;
        }
        // Owned paths: a closure over `&String` makes the future non-`Send` for spawners.
        let large: Vec<String> = large.into_iter().cloned().collect();
        let uploads: Vec<(String, Result<FileMetadata>)> = futures_util::stream::iter(large)
            .map(|p: String| async move {
                let r = self.upload_conditional(&p, plan.if_match.get(&p).copied()).await;
                (p, r)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (p, r) in uploads {
            match r {
                Ok(m) => self.landed(&m, base, &mut result.uploaded),
                Err(e) => result.errors.push((p, e.to_string())),
            }
        }
    }

    /// Records one bulk upload's outcome: stored files become the new base; a refusal that is
    /// our own earlier attempt (same content on the server) counts as stored.
    async fn settle_batch(
        &self,
        paths: Vec<String>,
        sent: Result<BulkUploadResponse>,
        base: &mut PassBase,
        result: &mut SyncResult,
    ) {
        match sent {
            Ok(resp) => {
                for m in resp.files {
                    self.landed(&m, base, &mut result.uploaded);
                }
                for f in resp.failed {
                    // A retried request may meet its own first attempt: same content is done.
                    let landed = match f.error_code {
                        ErrorCode::AlreadyExists | ErrorCode::PreconditionFailed => {
                            match self.client.get_file_metadata(&f.path).await {
                                Ok(m)
                                    if self.local.get(f.path.as_str()).map(|l| l.xxh3)
                                        == Some(m.xxhash3.0) =>
                                {
                                    Some(m)
                                }
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    match landed {
                        Some(m) => self.landed(&m, base, &mut result.uploaded),
                        None => result.errors.push((f.path, f.error)),
                    }
                }
            }
            Err(e) => result
                .errors
                .extend(paths.into_iter().map(|p| (p, e.to_string()))),
        }
    }

    /// Downloads the plan's small files in bulk requests (up to 1,000 files and 2 MiB),
    /// streamed straight to disk; large files, and whatever a bulk request could
    /// not deliver, are fetched one by one (with retries). A bulk response is read as fast as
    /// it arrives, whatever the disk's pace, so its size bounds what the client holds.
    async fn download_planned(&self, paths: &[String], base: &mut PassBase, result: &mut SyncResult) {
        let size = |p: &&String| self.remote.get(p.as_str()).map_or(0, |r| r.size);
        let (small, large): (Vec<&String>, Vec<&String>) = paths.iter().partition(|p| size(p) <= SMALL_FILE);
        let mut leftover: Vec<String> = large.into_iter().cloned().collect();
        for batch in bulk_batches(small, size, BATCH_FILES, DOWNLOAD_BATCH_BYTES) {
            let batch: Vec<String> = batch.into_iter().cloned().collect();
            match self.client.bulk_download_into(self.root, &batch).await {
                Ok((written, failed)) => {
                    for m in written {
                        self.landed(&m, base, &mut result.downloaded);
                    }
                    leftover.extend(failed.into_iter().map(|f| f.path));
                }
                Err(e) => {
                    tracing::warn!(error = %e, files = batch.len(), "bulk download failed; fetching one by one");
                    let done: BTreeSet<&str> = result.downloaded.iter().map(|k| &**k).collect();
                    leftover.extend(batch.iter().filter(|p| !done.contains(p.as_str())).cloned());
                }
            }
        }
        let singles: Vec<(String, Result<FileMetadata>)> = futures_util::stream::iter(leftover)
            .map(|p| async move {
                let r = self.download_into(&p).await;
                (p, r)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (p, r) in singles {
            match r {
                Ok(m) => self.landed(&m, base, &mut result.downloaded),
                Err(e) => result.errors.push((p, e.to_string())),
            }
        }
    }

    /// A file that reached its destination: the observer hears of it, it becomes the new base
    /// and is listed in `done`.
    fn landed(&self, m: &FileMetadata, base: &mut PassBase, done: &mut Vec<Key>) {
        self.client.report_file_done(&m.path);
        let key = self.key(&m.path, base);
        base.insert(Key::clone(&key), base_of(m));
        done.push(key);
    }

    /// `path` as a [`Key`]: the one the scan, the mirror or the base holds already, so a
    /// path is held once however many maps have it.
    fn key(&self, path: &str, base: &PassBase) -> Key {
        held_key(self.local, path)
            .or_else(|| held_key(self.remote, path))
            .unwrap_or_else(|| base.key(path))
    }

    /// Uploads a local file: as a create (`if_match` None) or conditional on the server's rev;
    /// the client streams it, or sends it as chunks above its large-file threshold.
    async fn upload_conditional(&self, rel: &str, if_match: Option<u64>) -> Result<FileMetadata> {
        let path = local_path(self.root, rel);
        match if_match {
            Some(rev) => self.client.upload_path_if(rel, &path, rev).await,
            None => self.client.upload_path(rel, &path, false).await,
        }
    }

    /// Downloads `rel` into the folder (parents created, verified, atomic).
    async fn download_into(&self, rel: &str) -> Result<FileMetadata> {
        let target = local_path(self.root, rel);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io(parent))?;
        }
        self.client.download_to_meta(rel, &target).await
    }

    /// Settles a content conflict; the losing side is kept as a conflict copy on both sides.
    async fn resolve_conflict(
        &self,
        rel: &str,
        resolution: ConflictResolution,
        remote_rev: Option<u64>,
        base: &mut PassBase,
    ) -> Result<String> {
        let copy = free_copy_name(self.root, rel);
        let (copy_path, rel_path) = (local_path(self.root, &copy), local_path(self.root, rel));
        let use_local = resolution == ConflictResolution::UseLocal;
        if use_local {
            // Keep the remote version as the copy (locally and on the server), then put ours
            // in place, conditional on the remote rev we saw.
            self.client.download_to_meta(rel, &copy_path).await?;
        } else {
            // Move ours aside as the copy, take theirs, and share our copy.
            std::fs::rename(&rel_path, &copy_path).map_err(io(&rel_path))?;
        }
        let uploaded_copy = self.upload_conditional(&copy, None).await?;
        base.insert(Key::from(copy.as_str()), base_of(&uploaded_copy));
        let winner = if use_local {
            self.upload_conditional(rel, remote_rev).await?
        } else {
            self.download_into(rel).await?
        };
        base.insert(self.key(rel, base), base_of(&winner));
        Ok(copy)
    }
}

/// A conflict-copy name for `rel` that is free locally.
fn free_copy_name(root: &Path, rel: &str) -> String {
    let now = now_nanos();
    let mut name = conflict_copy_name(rel, now);
    let mut n = 2;
    while local_path(root, &name).exists() {
        let stem = conflict_copy_name(rel, now);
        name = match stem.rsplit_once(')') {
            Some((head, tail)) => format!("{head} {n}){tail}"),
            None => format!("{stem} {n}"),
        };
        n += 1;
    }
    name
}

/// `r`, with the error `code` counted as success (already done, or nothing left to do).
fn tolerate(r: Result<()>, code: ErrorCode) -> Result<()> {
    match r {
        Err(e) if e.error_code() == Some(code) => Ok(()),
        r => r,
    }
}
