//! The public methods: each runs its one-shot request (`*_once`) through the retry loop and
//! the circuit breaker (see [`crate::resilience`]). Writes are made safe to retry: a retried
//! upload that finds its own earlier attempt already applied (409/412 with the same content
//! on the server) counts as done; a retried delete that finds nothing counts as done.

use crate::bulk::{BulkDownload, ConditionalUpload, FileUpload, LocalUpload, UploadCondition};
use crate::client::Client;
use crate::error::{ClientError, Result};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use volebarn_core::sync::SyncPlan;
use volebarn_core::types::{
    BulkDeleteResponse, BulkUploadResponse, ChangesResponse, ChunkedCommit, FileManifest, SyncRequest,
    VersionList,
};
use volebarn_core::{ChunkId, DirectoryListing, ErrorCode, FileMetadata, Xxh3};

/// Counts attempts so a wrapper knows whether a "conflict" may be its own earlier attempt.
#[derive(Default)]
pub(crate) struct Attempts(AtomicU32);

impl Attempts {
    pub(crate) fn next(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    pub(crate) fn retried(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 1
    }
}

/// One attempt of a request, counted in the metrics (with its duration when `timed`).
async fn counted<T>(
    metrics: &crate::metrics::Metrics,
    timed: bool,
    attempt: impl Future<Output = Result<T>>,
) -> Result<T> {
    let start = std::time::Instant::now();
    let r = attempt.await;
    metrics.attempt(timed.then(|| start.elapsed()), r.as_ref().err());
    r
}

fn code_is(e: &ClientError, codes: &[ErrorCode]) -> bool {
    e.error_code().is_some_and(|c| codes.contains(&c))
}

impl Client {
    /// Runs `op` with this client's retry policy and circuit breaker.
    pub(crate) async fn call<T, F, Fut>(&self, operation: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.call_with(&self.resilience.retry, operation, op).await
    }

    /// [`Client::call`] with another retry policy; every attempt is counted in the metrics.
    pub(crate) async fn call_with<T, F, Fut>(
        &self,
        retry: &crate::resilience::RetryConfig,
        operation: &str,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let metrics = &self.resilience.metrics;
        // A long-poll waits on purpose: its time says nothing about the server's speed.
        let timed = operation != "changes";
        let counted = || counted(metrics, timed, op());
        crate::resilience::run(retry, &self.resilience.breaker, operation, counted).await
    }

    /// One request of a multi-request operation, retried while the operation makes progress
    /// ([`crate::resilience::run_while_progressing`]); every attempt is counted in the metrics.
    pub(crate) async fn call_progressing<T, F, Fut>(
        &self,
        progress: &crate::resilience::Progress,
        operation: &str,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let metrics = &self.resilience.metrics;
        let counted = || counted(metrics, true, op());
        let large = &self.resilience.large;
        let stall = crate::resilience::StallLimit {
            attempts: large.chunk_attempts,
            timeout: large.stall_timeout,
        };
        crate::resilience::run_while_progressing(
            &self.resilience.retry,
            &self.resilience.breaker,
            &stall,
            progress,
            operation,
            counted,
        )
        .await
    }

    /// After a retried write: if the server already holds exactly `expected`, our earlier
    /// attempt landed and the write is done.
    pub(crate) async fn settle_write(
        &self,
        path: &str,
        expected: Xxh3,
        attempts: &Attempts,
        result: Result<FileMetadata>,
    ) -> Result<FileMetadata> {
        match result {
            Err(e)
                if attempts.retried()
                    && code_is(&e, &[ErrorCode::AlreadyExists, ErrorCode::PreconditionFailed]) =>
            {
                match self.get_file_metadata(path).await {
                    Ok(m) if m.xxhash3 == expected => Ok(m),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    async fn write_bytes(
        &self,
        operation: &str,
        path: &str,
        content: Bytes,
        condition: UploadCondition,
    ) -> Result<FileMetadata> {
        let attempts = Attempts::default();
        let hash = Xxh3::of(&content);
        let result = self
            .call(operation, || {
                attempts.next();
                let content = content.clone();
                async move {
                    match condition {
                        UploadCondition::Create => self.upload_file_once(path, content).await,
                        // A single-file PUT replaces an existing file (404 when absent).
                        UploadCondition::Any => self.update_file_once(path, content).await,
                        UploadCondition::IfMatch(rev) => self.update_file_if_once(path, content, rev).await,
                    }
                }
            })
            .await;
        self.settle_write(path, hash, &attempts, result).await
    }

    /// Creates a new file (409 `already_exists` if present).
    pub async fn upload_file(&self, path: &str, content: Bytes) -> Result<FileMetadata> {
        self.write_bytes("upload_file", path, content, UploadCondition::Create)
            .await
    }

    /// Replaces an existing file (404 if absent).
    pub async fn update_file(&self, path: &str, content: Bytes) -> Result<FileMetadata> {
        self.write_bytes("update_file", path, content, UploadCondition::Any)
            .await
    }

    /// Replaces a file only if its current revision is `rev` (else 412 `precondition_failed`).
    pub async fn update_file_if(&self, path: &str, content: Bytes, rev: u64) -> Result<FileMetadata> {
        self.write_bytes("update_file_if", path, content, UploadCondition::IfMatch(rev))
            .await
    }

    /// Downloads a whole file into memory and verifies its xxh3 (re-fetched on mismatch).
    pub async fn download_file(&self, path: &str) -> Result<Bytes> {
        self.call("download_file", || self.download_file_once(path)).await
    }

    async fn delete_settled(&self, operation: &str, path: &str, rev: Option<u64>, dir: bool) -> Result<()> {
        let attempts = Attempts::default();
        let result = self
            .call(operation, || {
                attempts.next();
                async move {
                    match (dir, rev) {
                        (true, _) => self.delete_directory_once(path).await,
                        (false, None) => self.delete_file_once(path).await,
                        (false, Some(r)) => self.delete_file_if_once(path, r).await,
                    }
                }
            })
            .await;
        match result {
            Err(e) if attempts.retried() && code_is(&e, &[ErrorCode::FileNotFound]) => Ok(()),
            other => other,
        }
    }

    pub async fn delete_file(&self, path: &str) -> Result<()> {
        self.delete_settled("delete_file", path, None, false).await
    }

    /// Deletes a file only if its current revision is `rev`.
    pub async fn delete_file_if(&self, path: &str, rev: u64) -> Result<()> {
        self.delete_settled("delete_file_if", path, Some(rev), false)
            .await
    }

    /// Metadata from `HEAD /files/{path}`.
    pub async fn get_file_metadata(&self, path: &str) -> Result<FileMetadata> {
        self.call("get_file_metadata", || self.get_file_metadata_once(path))
            .await
    }

    pub async fn create_directory(&self, path: &str) -> Result<FileMetadata> {
        let attempts = Attempts::default();
        let result = self
            .call("create_directory", || {
                attempts.next();
                self.create_directory_once(path)
            })
            .await;
        match result {
            Err(e) if attempts.retried() && code_is(&e, &[ErrorCode::AlreadyExists]) => {
                self.stat_any(path).await.filter(|m| m.is_directory).ok_or(e)
            }
            other => other,
        }
    }

    /// Deletes a directory and everything in it.
    pub async fn delete_directory(&self, path: &str) -> Result<()> {
        self.delete_settled("delete_directory", path, None, true).await
    }

    /// Direct children of a directory (`None` = the root).
    pub async fn list_directory(&self, path: Option<&str>) -> Result<DirectoryListing> {
        self.call("list_directory", || self.list_directory_once(path))
            .await
    }

    /// Streams a local file to the server, creating (`replace = false`) or replacing it.
    /// The file is hashed first so the server can refuse a body that changed in flight;
    /// its mtime travels as `X-Modified-Time`. A retry re-reads the file. Files over the
    /// large-file threshold (10 MB) go as resumable chunks ([`Client::upload_large`]).
    pub async fn upload_path(&self, remote: &str, local: &Path, replace: bool) -> Result<FileMetadata> {
        self.upload_path_cond(remote, local, replace, None).await
    }

    /// [`Client::upload_path`] that replaces only if the server's file is still at `rev`.
    pub async fn upload_path_if(&self, remote: &str, local: &Path, rev: u64) -> Result<FileMetadata> {
        self.upload_path_cond(remote, local, true, Some(rev)).await
    }

    pub(crate) async fn upload_path_cond(
        &self,
        remote: &str,
        local: &Path,
        replace: bool,
        if_match: Option<u64>,
    ) -> Result<FileMetadata> {
        let size = tokio::fs::metadata(local)
            .await
            .map_err(|source| ClientError::Io {
                path: local.display().to_string(),
                source,
            })?
            .len();
        if size > self.resilience.large.threshold {
            return self.upload_large_if(remote, local, replace, if_match).await;
        }
        let attempts = Attempts::default();
        let result = self
            .call("upload_path", || {
                attempts.next();
                self.upload_path_once(remote, local, replace, if_match)
            })
            .await;
        match &result {
            Err(e)
                if attempts.retried()
                    && code_is(e, &[ErrorCode::AlreadyExists, ErrorCode::PreconditionFailed]) =>
            {
                let (hash, _) =
                    crate::client::hash_file_async(local)
                        .await
                        .map_err(|source| ClientError::Io {
                            path: local.display().to_string(),
                            source,
                        })?;
                self.settle_write(remote, hash, &attempts, result).await
            }
            _ => result,
        }
    }

    /// Streams a file to `local`, verified before it appears there (see `download_to_once`).
    pub async fn download_to(&self, remote: &str, local: &Path) -> Result<Xxh3> {
        Ok(self.download_to_meta(remote, local).await?.xxhash3)
    }

    /// Like [`Client::download_to`], returning the metadata of exactly the bytes received
    /// (rev from their `ETag`); the local file gets the remote modification time.
    pub async fn download_to_meta(&self, remote: &str, local: &Path) -> Result<FileMetadata> {
        self.call("download_to", || self.download_to_once(remote, local))
            .await
    }

    /// Uploads many files in one request; existing files are replaced (so a retry is safe).
    pub async fn bulk_upload(&self, files: Vec<FileUpload>) -> Result<BulkUploadResponse> {
        let files: Vec<ConditionalUpload> = files.into_iter().map(Into::into).collect();
        self.call("bulk_upload", || self.bulk_upload_once(files.clone()))
            .await
    }

    /// Bulk upload where each file carries its own condition and mtime. A retried request
    /// may report `already_exists`/`precondition_failed` for parts its first attempt stored;
    /// callers compare the server's hash (as `volebarn-sync` does) before calling it a conflict.
    pub async fn bulk_upload_conditional(&self, files: Vec<ConditionalUpload>) -> Result<BulkUploadResponse> {
        self.call("bulk_upload", || self.bulk_upload_once(files.clone()))
            .await
    }

    /// Bulk upload of local files, each read from disk while the request is sent (the client
    /// holds a few 64 KiB pieces of the body, not all of it); a retry reads them again. A
    /// file that cannot be read is not sent and is listed in `failed`. Retries meet their own
    /// first attempts as [`Client::bulk_upload_conditional`] describes.
    pub async fn bulk_upload_files(&self, files: Vec<LocalUpload>) -> Result<BulkUploadResponse> {
        self.call("bulk_upload", || self.bulk_upload_files_once(files.clone()))
            .await
    }

    /// Downloads many files in one request, verifying every file's xxh3.
    pub async fn bulk_download(&self, paths: &[String]) -> Result<BulkDownload> {
        self.call("bulk_download", || self.bulk_download_once(paths))
            .await
    }

    /// Deletes files and directories (recursively); each path succeeds or fails alone.
    pub async fn bulk_delete(&self, paths: &[String]) -> Result<BulkDeleteResponse> {
        self.call("bulk_delete", || self.bulk_delete_once(paths)).await
    }

    /// Every file and directory below `path` (`None` = everything).
    pub async fn get_manifest(&self, path: Option<&str>) -> Result<FileManifest> {
        Ok(self.get_manifest_at(path).await?.0)
    }

    /// The manifest plus the journal revision it is current as of: `changes(rev, …)` then
    /// reports every write the listing may not show.
    pub async fn get_manifest_at(&self, path: Option<&str>) -> Result<(FileManifest, u64)> {
        let (files, rev) = self
            .fold_manifest(path, BTreeMap::new, |files, p, f| {
                files.insert(p, f);
            })
            .await?;
        Ok((FileManifest { files }, rev))
    }

    /// The manifest's entries (path, metadata), in path order, each handed to `each` with
    /// the accumulator `init()` made, as the body arrives: a whole tree's listing is never
    /// held, only what `each` keeps of it. Returns the accumulator and the journal revision
    /// the listing is current as of. A retry starts again from a new `init()`.
    pub async fn fold_manifest<T, F>(
        &self,
        path: Option<&str>,
        init: impl Fn() -> T,
        each: F,
    ) -> Result<(T, u64)>
    where
        T: Send + 'static,
        F: FnMut(&mut T, String, FileMetadata) + Clone + Send + 'static,
    {
        self.call("get_manifest", || {
            self.fold_manifest_once(path, init(), each.clone())
        })
        .await
    }

    /// Asks the server for the three-way sync plan of a local manifest (with base revs).
    pub async fn sync_plan(&self, request: &SyncRequest) -> Result<SyncPlan> {
        self.call("sync_plan", || self.sync_plan_once(request)).await
    }

    async fn relocate_settled(
        &self,
        operation: &str,
        copy: bool,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<FileMetadata> {
        let attempts = Attempts::default();
        let result = self
            .call(operation, || {
                attempts.next();
                async move {
                    match (copy, overwrite) {
                        (_, true) => self.move_or_copy_overwrite_once(copy, from, to).await,
                        (true, false) => self.copy_file_once(from, to).await,
                        (false, false) => self.move_file_once(from, to).await,
                    }
                }
            })
            .await;
        // A retried move whose source is gone (or copy whose target exists) may have landed.
        match result {
            Err(e)
                if attempts.retried()
                    && code_is(&e, &[ErrorCode::FileNotFound, ErrorCode::AlreadyExists]) =>
            {
                self.stat_any(to).await.ok_or(e)
            }
            other => other,
        }
    }

    /// Metadata of a file or directory, if it exists (used to settle retried writes).
    async fn stat_any(&self, path: &str) -> Option<FileMetadata> {
        if let Ok(m) = self.get_file_metadata(path).await {
            return Some(m);
        }
        let want = path.trim_matches('/');
        let parent = want.rsplit_once('/').map(|(p, _)| p);
        let listing = self.list_directory(parent).await.ok()?;
        listing.entries.into_iter().find(|m| m.path == want)
    }

    /// Moves a file or directory on the server (metadata only); 409 if `to` exists.
    pub async fn move_file(&self, from: &str, to: &str) -> Result<FileMetadata> {
        self.relocate_settled("move_file", false, from, to, false).await
    }

    /// Copies a file or directory on the server without copying bytes; 409 if `to` exists.
    pub async fn copy_file(&self, from: &str, to: &str) -> Result<FileMetadata> {
        self.relocate_settled("copy_file", true, from, to, false).await
    }

    /// Move or copy that replaces an existing target (kept as a version).
    pub async fn move_or_copy_overwrite(&self, copy: bool, from: &str, to: &str) -> Result<FileMetadata> {
        self.relocate_settled("move_or_copy_overwrite", copy, from, to, true)
            .await
    }

    /// Files and directories whose name matches the glob `pattern`, below `path`
    /// (recursively), sorted by path.
    pub async fn search_files(&self, pattern: &str, path: Option<&str>) -> Result<Vec<FileMetadata>> {
        self.call("search_files", || self.search_files_once(pattern, path))
            .await
    }

    /// Files modified at or after `since` (Unix nanoseconds).
    pub async fn search_modified_since(&self, since: i64) -> Result<Vec<FileMetadata>> {
        self.call("search_modified_since", || self.search_modified_since_once(since))
            .await
    }

    /// Files whose content hash is `hash`.
    pub async fn search_hash(&self, hash: Xxh3) -> Result<Vec<FileMetadata>> {
        self.call("search_hash", || self.search_hash_once(hash)).await
    }

    /// Journal entries after `since`, waiting up to `wait_secs` (max 60) for one. A
    /// `ClientError::Server` with code `gone` means `since` is too old: re-read the manifest.
    pub async fn changes(&self, since: u64, wait_secs: u64) -> Result<ChangesResponse> {
        self.call("changes", || self.changes_once(since, wait_secs)).await
    }

    /// Kept versions of a file, newest (current) first.
    pub async fn versions(&self, path: &str) -> Result<VersionList> {
        self.call("versions", || self.versions_once(path)).await
    }

    /// Makes version `rev` of `path` current again (as a new revision).
    pub async fn restore_version(&self, path: &str, rev: u64) -> Result<FileMetadata> {
        self.call("restore_version", || self.restore_version_once(path, rev))
            .await
    }

    /// The ids the server does not have yet.
    pub async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        self.call("missing_chunks", || self.missing_chunks_once(ids))
            .await
    }

    /// Stores one chunk (the server verifies its BLAKE3 id); idempotent.
    pub async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<()> {
        self.call("put_chunk", || self.put_chunk_once(id, data.clone()))
            .await
    }

    /// Commits a file from stored chunks; `replace` chooses PUT (existing file) over POST.
    pub async fn commit_chunks(
        &self,
        path: &str,
        commit: &ChunkedCommit,
        replace: bool,
    ) -> Result<FileMetadata> {
        let attempts = Attempts::default();
        let result = self
            .call("commit_chunks", || {
                attempts.next();
                self.commit_chunks_once(path, commit, replace, None, None)
            })
            .await;
        match commit.xxhash3 {
            Some(hash) => self.settle_write(path, hash, &attempts, result).await,
            // Without a hash of its own the commit cannot tell its retried write apart.
            None => result,
        }
    }

    /// Does the server hold `path` with content hash `expected_hash` (xxh3)? Downloads the
    /// file and hashes what arrives, so it checks the stored bytes, not only the metadata.
    pub async fn verify_file_integrity(&self, path: &str, expected_hash: u64) -> Result<bool> {
        match self.download_file(path).await {
            Ok(bytes) => Ok(Xxh3::of(&bytes) == Xxh3(expected_hash)),
            // Stored bytes that do not match their own recorded hash, even after re-fetching.
            Err(ClientError::HashMismatch { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
