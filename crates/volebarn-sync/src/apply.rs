//! Applying a [`SyncPlan`] to a folder and the server: directories first, then uploads (small
//! files in bulk requests of up to 1,000 files or 32 MiB, larger ones streamed or chunked, 8 at
//! a time, each conditional on the revision the plan saw), verified downloads (bulk, then one
//! by one for whatever a bulk request could not deliver), deletions on both sides (a local file
//! only if it still holds what the base says), adoptions, and conflicts (the losing side kept as
//! a conflict copy on both sides). A failing path is reported and never stops the rest.

use crate::scan::{local_path, mtime_nanos};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use volebarn_client::{
    BulkUploadResponse, Client, ClientError, ConditionalUpload, ErrorCode, FileMetadata, OperationError,
    Result, SyncPlan, UploadCondition,
};
use volebarn_core::sync::{conflict_copy_name, BaseState, ConflictKind, ConflictResolution, LocalState};
use volebarn_core::timefmt::now_nanos;

/// Transfers in flight while applying a plan.
const CONCURRENCY: usize = 8;
/// Files up to this size are uploaded in bulk requests.
const SMALL_FILE: u64 = 1024 * 1024;
/// Limits of one bulk upload request.
const BATCH_BYTES: u64 = 32 * 1024 * 1024;
const BATCH_FILES: usize = 1000;
/// Bulk uploads in flight while applying a plan.
const BATCHES_IN_FLIGHT: usize = 4;

/// The seed's `SyncResult`, plus deletions on the server and unresolved conflicts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResult {
    pub uploaded: Vec<String>,
    pub downloaded: Vec<String>,
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

/// Applies plans with `client` (whose transfer observer hears every file).
pub(crate) struct Executor<'a> {
    pub client: &'a Client,
}

impl Executor<'_> {
    /// Performs `plan` on the folder at `root` with bounded concurrency, updating `base`;
    /// `local` is what the scan behind the plan saw. A failing path is reported in
    /// `result.errors`.
    pub async fn apply_plan(
        &self,
        root: &Path,
        plan: &SyncPlan,
        local: &BTreeMap<String, LocalState>,
        base: &mut BTreeMap<String, BaseState>,
        result: &mut SyncResult,
    ) {
        for d in &plan.client_create_dirs {
            match std::fs::create_dir_all(local_path(root, d)) {
                Ok(()) => result.created_dirs.push(d.clone()),
                Err(e) => result.errors.push((d.clone(), e.to_string())),
            }
        }
        for d in &plan.server_create_dirs {
            match self.client.create_directory(d).await {
                Ok(_) => {}
                Err(e) if e.error_code() == Some(volebarn_core::ErrorCode::AlreadyExists) => {}
                Err(e) => result.errors.push((d.clone(), e.to_string())),
            }
        }
        self.upload_planned(root, plan, local, base, result).await;
        self.download_planned(root, &plan.client_download, base, result)
            .await;
        for p in &plan.client_delete {
            // Delete only what the plan saw: an edit made since then is kept.
            let target = local_path(root, p);
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
        for p in &plan.server_delete {
            let r = match plan.if_match.get(p) {
                Some(rev) => self.client.delete_file_if(p, *rev).await,
                None => self.client.delete_file(p).await,
            };
            match r {
                Ok(()) => {
                    base.remove(p);
                    result.deleted_remote.push(p.clone());
                }
                Err(e) if e.error_code() == Some(volebarn_core::ErrorCode::FileNotFound) => {
                    base.remove(p);
                }
                Err(e) => result.errors.push((p.clone(), e.to_string())),
            }
        }
        for p in &plan.adopt {
            match self.client.get_file_metadata(p).await {
                Ok(m) if local.get(p).map(|l| l.xxh3) == Some(m.xxhash3) => {
                    base.insert(p.clone(), base_of(&m));
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
                .resolve_conflict(root, &c.path, c.resolution, c.remote_rev, base)
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
    }

    /// Uploads the plan's files: small ones in bulk requests (a few MiB each), large ones
    /// streamed or chunked, 8 at a time; every upload conditional on what the plan saw.
    async fn upload_planned(
        &self,
        root: &Path,
        plan: &SyncPlan,
        local: &BTreeMap<String, LocalState>,
        base: &mut BTreeMap<String, BaseState>,
        result: &mut SyncResult,
    ) {
        let (small, large): (Vec<&String>, Vec<&String>) = plan
            .client_upload
            .iter()
            .partition(|p| local.get(*p).is_some_and(|f| f.size <= SMALL_FILE));
        // Batches of up to BATCH_FILES files / BATCH_BYTES bytes, a few in flight; each batch's
        // files are read on a blocking thread just before it goes.
        let mut batches: Vec<Vec<(String, PathBuf, UploadCondition)>> = Vec::new();
        let mut batch_bytes = 0u64;
        for p in small {
            let condition = match plan.if_match.get(p) {
                Some(rev) => UploadCondition::IfMatch(*rev),
                None => UploadCondition::Create,
            };
            let size = local.get(p).map_or(0, |f| f.size);
            match batches.last_mut() {
                Some(b) if b.len() < BATCH_FILES && batch_bytes + size <= BATCH_BYTES => {
                    batch_bytes += size;
                    b.push((p.clone(), local_path(root, p), condition));
                }
                _ => {
                    batch_bytes = size;
                    batches.push(vec![(p.clone(), local_path(root, p), condition)]);
                }
            }
        }
        type Sent = (Vec<String>, Vec<OperationError>, Result<BulkUploadResponse>);
        let sent: Vec<Sent> = futures_util::stream::iter(batches)
            .map(|batch| async move {
                let (uploads, unreadable) = match tokio::task::spawn_blocking(move || read_batch(batch)).await
                {
                    Ok(read) => read,
                    Err(e) => {
                        return (
                            Vec::new(),
                            Vec::new(),
                            Err(ClientError::Protocol(format!("read task: {e}"))),
                        )
                    }
                };
                let paths: Vec<String> = uploads.iter().map(|u| u.path.clone()).collect();
                let r = if uploads.is_empty() {
                    Ok(BulkUploadResponse::default())
                } else {
                    self.client.bulk_upload_conditional(uploads).await
                };
                (paths, unreadable, r)
            })
            .buffer_unordered(BATCHES_IN_FLIGHT)
            .collect()
            .await;
        for (paths, unreadable, r) in sent {
            result
                .errors
                .extend(unreadable.into_iter().map(|f| (f.path, f.error)));
            self.settle_batch(paths, r, local, base, result).await;
        }
        // Owned paths: a closure over `&String` makes the future non-`Send` for spawners.
        let large: Vec<String> = large.into_iter().cloned().collect();
        let uploads: Vec<(String, Result<FileMetadata>)> = futures_util::stream::iter(large)
            .map(|p: String| async move {
                let r = self
                    .upload_conditional(root, &p, plan.if_match.get(&p).copied())
                    .await;
                (p, r)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        record(
            self.client,
            uploads,
            base,
            &mut result.uploaded,
            &mut result.errors,
        );
    }

    /// Records one bulk upload's outcome: stored files become the new base; a refusal that is
    /// our own earlier attempt (same content on the server) counts as stored.
    async fn settle_batch(
        &self,
        paths: Vec<String>,
        sent: Result<BulkUploadResponse>,
        local: &BTreeMap<String, LocalState>,
        base: &mut BTreeMap<String, BaseState>,
        result: &mut SyncResult,
    ) {
        match sent {
            Ok(resp) => {
                for m in resp.files {
                    self.client.report_file_done(&m.path);
                    base.insert(m.path.clone(), base_of(&m));
                    result.uploaded.push(m.path);
                }
                for f in resp.failed {
                    // A retried request may meet its own first attempt: same content is done.
                    let landed = match f.error_code {
                        ErrorCode::AlreadyExists | ErrorCode::PreconditionFailed => {
                            match self.client.get_file_metadata(&f.path).await {
                                Ok(m) if local.get(&f.path).map(|l| l.xxh3) == Some(m.xxhash3) => Some(m),
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    match landed {
                        Some(m) => {
                            self.client.report_file_done(&m.path);
                            base.insert(m.path.clone(), base_of(&m));
                            result.uploaded.push(m.path);
                        }
                        None => result.errors.push((f.path, f.error)),
                    }
                }
            }
            Err(e) => result
                .errors
                .extend(paths.into_iter().map(|p| (p, e.to_string()))),
        }
    }

    /// Downloads the plan's files in bulk requests of up to 1,000 files, streamed straight to
    /// disk; whatever a bulk request could not deliver is fetched one by one (with retries).
    async fn download_planned(
        &self,
        root: &Path,
        paths: &[String],
        base: &mut BTreeMap<String, BaseState>,
        result: &mut SyncResult,
    ) {
        let mut leftover: Vec<String> = Vec::new();
        for batch in paths.chunks(BATCH_FILES) {
            match self.client.bulk_download_into(root, batch).await {
                Ok((written, failed)) => {
                    for m in written {
                        self.client.report_file_done(&m.path);
                        base.insert(m.path.clone(), base_of(&m));
                        result.downloaded.push(m.path);
                    }
                    leftover.extend(failed.into_iter().map(|f| f.path));
                }
                Err(e) => {
                    tracing::warn!(error = %e, files = batch.len(), "bulk download failed; fetching one by one");
                    let done: BTreeSet<&String> = result.downloaded.iter().collect();
                    leftover.extend(batch.iter().filter(|p| !done.contains(p)).cloned());
                }
            }
        }
        let singles: Vec<(String, Result<FileMetadata>)> = futures_util::stream::iter(leftover)
            .map(|p| async move {
                let r = self.download_into(root, &p).await;
                (p, r)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        record(
            self.client,
            singles,
            base,
            &mut result.downloaded,
            &mut result.errors,
        );
    }

    /// Uploads a local file: as a create (`if_match` None) or conditional on the server's rev;
    /// the client streams it, or sends it as chunks above its large-file threshold.
    async fn upload_conditional(
        &self,
        root: &Path,
        rel: &str,
        if_match: Option<u64>,
    ) -> Result<FileMetadata> {
        let path = local_path(root, rel);
        match if_match {
            Some(rev) => self.client.upload_path_if(rel, &path, rev).await,
            None => self.client.upload_path(rel, &path, false).await,
        }
    }

    /// Downloads `rel` into the folder (parents created, verified, atomic).
    async fn download_into(&self, root: &Path, rel: &str) -> Result<FileMetadata> {
        let target = local_path(root, rel);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io(parent))?;
        }
        self.client.download_to_meta(rel, &target).await
    }

    /// Settles a content conflict; the losing side is kept as a conflict copy on both sides.
    async fn resolve_conflict(
        &self,
        root: &Path,
        rel: &str,
        resolution: ConflictResolution,
        remote_rev: Option<u64>,
        base: &mut BTreeMap<String, BaseState>,
    ) -> Result<String> {
        let copy = free_copy_name(root, rel);
        match resolution {
            ConflictResolution::UseLocal => {
                // Keep the remote version as the copy (locally and on the server), then put
                // ours in place, conditional on the remote rev we saw.
                self.client
                    .download_to_meta(rel, &local_path(root, &copy))
                    .await?;
                let uploaded_copy = self.upload_conditional(root, &copy, None).await?;
                base.insert(copy.clone(), base_of(&uploaded_copy));
                let ours = self.upload_conditional(root, rel, remote_rev).await?;
                base.insert(rel.to_string(), base_of(&ours));
            }
            ConflictResolution::UseRemote | ConflictResolution::UseNewer | ConflictResolution::Manual => {
                // Move ours aside as the copy, take theirs, and share our copy.
                let from = local_path(root, rel);
                let to = local_path(root, &copy);
                std::fs::rename(&from, &to).map_err(io(&from))?;
                let uploaded_copy = self.upload_conditional(root, &copy, None).await?;
                base.insert(copy.clone(), base_of(&uploaded_copy));
                let theirs = self.download_into(root, rel).await?;
                base.insert(rel.to_string(), base_of(&theirs));
            }
        }
        Ok(copy)
    }
}

/// Records transfer outcomes: what arrived becomes the new base and is listed in `done`.
fn record(
    client: &Client,
    outcomes: Vec<(String, Result<FileMetadata>)>,
    base: &mut BTreeMap<String, BaseState>,
    done: &mut Vec<String>,
    errors: &mut Vec<(String, String)>,
) {
    for (p, r) in outcomes {
        match r {
            Ok(m) => {
                client.report_file_done(&p);
                base.insert(p.clone(), base_of(&m));
                done.push(p);
            }
            Err(e) => errors.push((p, e.to_string())),
        }
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

/// Reads one bulk upload's files (blocking): the uploads, and the files that could not be read.
fn read_batch(
    batch: Vec<(String, PathBuf, UploadCondition)>,
) -> (Vec<ConditionalUpload>, Vec<OperationError>) {
    let mut uploads = Vec::with_capacity(batch.len());
    let mut unreadable = Vec::new();
    for (rel, path, condition) in batch {
        match std::fs::read(&path) {
            Ok(content) => uploads.push(ConditionalUpload {
                path: rel,
                content: content.into(),
                condition,
                mtime: std::fs::metadata(&path).ok().map(|m| mtime_nanos(&m)),
            }),
            Err(e) => unreadable.push(OperationError::new(rel, ErrorCode::Unknown, e.to_string())),
        }
    }
    (uploads, unreadable)
}
