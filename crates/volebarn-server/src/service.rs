//! The operations of the file server, independent of HTTP.
//!
//! Write order (DESIGN.md §4): the body is chunked and every chunk staged durably in `tmp/`
//! while streaming; then, under the single writer lock, preconditions are checked again,
//! staged chunks are published, and every metadata change of the operation is committed in
//! one batch. Chunks freed by the commit are deleted last, so a crash can leave an orphan
//! chunk but never metadata pointing at missing bytes. Holding the writer lock across publish,
//! commit and delete also means a chunk being deleted can never be the one an upload just
//! found "already present".

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{
    Change, ChangeKind, ChunkRef, ChunkStore, DirRecord, Entry, FileRecord, MetaBatch, MetaOp, MetaStore,
    StagedChunk, StorageError, VersionRecord,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::fmt::Display;
use std::sync::Arc;
use volebarn_core::chunking::Chunker;
use volebarn_core::hash::Xxh3Hasher;
use volebarn_core::timefmt::{now_nanos, UnixNanos};
use volebarn_core::{ChunkId, DirectoryListing, FileMetadata, VPath, Xxh3};

/// Limits and retention the service enforces.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub max_file_size: u64,
    /// Previous versions kept per path (0 keeps none: overwritten content is freed at once).
    pub versions_keep: usize,
}

/// How an upload treats an existing file.
#[derive(Debug, Clone)]
pub enum WriteMode {
    /// `POST`: the path must not exist.
    Create,
    /// `PUT`: the file must exist and match `if_match` when given.
    Replace { if_match: Option<IfMatch> },
}

/// A parsed `If-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfMatch {
    any: bool,
    revs: Vec<u64>,
    raw: String,
}

impl IfMatch {
    /// Parses `*`, `"12"` or a comma-separated list. Weak or foreign tags are kept as
    /// never-matching, so they answer 412 rather than being ignored.
    pub fn parse(raw: &str) -> IfMatch {
        let mut m = IfMatch {
            any: false,
            revs: Vec::new(),
            raw: raw.to_string(),
        };
        for tag in raw.split(',').map(str::trim) {
            if tag == "*" {
                m.any = true;
            } else if let Some(rev) = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse().ok())
            {
                m.revs.push(rev);
            }
        }
        m
    }

    pub fn matches(&self, rev: u64) -> bool {
        self.any || self.revs.contains(&rev)
    }
}

/// Optional facts an upload carries.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    pub expected_hash: Option<Xxh3>,
    pub mtime: Option<UnixNanos>,
    pub declared_len: Option<u64>,
}

#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    meta: Arc<dyn MetaStore>,
    chunks: Arc<dyn ChunkStore>,
    config: ServiceConfig,
    writer: tokio::sync::Mutex<WriterState>,
}

struct WriterState {
    next_rev: u64,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ServiceResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))
}

pub fn file_metadata(path: &VPath, rec: &FileRecord) -> FileMetadata {
    FileMetadata {
        path: path.to_string(),
        name: path.name().to_string(),
        size: rec.size,
        modified: rec.mtime,
        is_directory: false,
        xxhash3: Xxh3(rec.xxh3),
        rev: rec.rev,
    }
}

pub fn dir_metadata(path: &VPath, rec: &DirRecord) -> FileMetadata {
    FileMetadata {
        path: path.to_string(),
        name: path.name().to_string(),
        size: 0,
        modified: rec.mtime,
        is_directory: true,
        xxhash3: Xxh3(0),
        rev: rec.rev,
    }
}

fn entry_metadata(path: &VPath, e: &Entry) -> FileMetadata {
    match e {
        Entry::File(f) => file_metadata(path, f),
        Entry::Dir(d) => dir_metadata(path, d),
    }
}

/// The directories to create so that `path`'s parent exists; fails if an ancestor is a file.
fn missing_ancestors(meta: &dyn MetaStore, path: &VPath) -> ServiceResult<Vec<VPath>> {
    let mut missing = Vec::new();
    for anc in path.ancestors() {
        match meta
            .get(&anc)
            .map_err(|e| ServiceError::storage(path.as_str(), e))?
        {
            Some(Entry::Dir(_)) => {}
            Some(Entry::File(_)) => {
                return Err(ServiceError::NotADirectory {
                    path: path.to_string(),
                    blocker: anc.to_string(),
                })
            }
            None => missing.push(anc),
        }
    }
    Ok(missing)
}

/// Checks that a write in `mode` may happen now; returns the file it replaces (if any)
/// and the parent directories it must create.
fn check_write(
    meta: &dyn MetaStore,
    path: &VPath,
    mode: &WriteMode,
) -> ServiceResult<(Option<FileRecord>, Vec<VPath>)> {
    let current = meta
        .get(path)
        .map_err(|e| ServiceError::storage(path.as_str(), e))?;
    let old = match (mode, current) {
        (_, Some(Entry::Dir(_))) => {
            return Err(ServiceError::IsADirectory {
                path: path.to_string(),
            })
        }
        (WriteMode::Create, Some(Entry::File(_))) => {
            return Err(ServiceError::AlreadyExists {
                path: path.to_string(),
            })
        }
        (WriteMode::Create, None) => None,
        (WriteMode::Replace { .. }, None) => {
            return Err(ServiceError::NotFound {
                path: path.to_string(),
            })
        }
        (WriteMode::Replace { if_match }, Some(Entry::File(f))) => {
            check_if_match(path, if_match.as_ref(), f.rev)?;
            Some(f)
        }
    };
    Ok((old, missing_ancestors(meta, path)?))
}

fn check_if_match(path: &VPath, if_match: Option<&IfMatch>, rev: u64) -> ServiceResult<()> {
    match if_match {
        Some(m) if !m.matches(rev) => Err(ServiceError::Precondition {
            path: path.to_string(),
            current: rev,
            expected: m.raw.clone(),
        }),
        _ => Ok(()),
    }
}

impl Service {
    pub fn new(
        meta: Arc<dyn MetaStore>,
        chunks: Arc<dyn ChunkStore>,
        config: ServiceConfig,
    ) -> Result<Self, StorageError> {
        let head = meta.head_rev()?;
        let cleaned = chunks.clean_temp()?;
        if cleaned > 0 {
            tracing::info!(files = cleaned, "removed temporary files left by an earlier run");
        }
        Ok(Service {
            inner: Arc::new(Inner {
                meta,
                chunks,
                config,
                writer: tokio::sync::Mutex::new(WriterState { next_rev: head + 1 }),
            }),
        })
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    async fn get_entry(&self, path: &VPath) -> ServiceResult<Option<Entry>> {
        let meta = self.inner.meta.clone();
        let p = path.clone();
        blocking(move || meta.get(&p))
            .await?
            .map_err(|e| ServiceError::storage(path.as_str(), e))
    }

    /// Metadata of a file or directory.
    pub async fn stat(&self, path: &VPath) -> ServiceResult<FileMetadata> {
        match self.get_entry(path).await? {
            Some(e) => Ok(entry_metadata(path, &e)),
            None => Err(ServiceError::NotFound {
                path: path.to_string(),
            }),
        }
    }

    /// The current record of a file (for download).
    pub async fn open_file(&self, path: &VPath) -> ServiceResult<FileRecord> {
        match self.get_entry(path).await? {
            Some(Entry::File(f)) => Ok(f),
            Some(Entry::Dir(_)) => Err(ServiceError::IsADirectory {
                path: path.to_string(),
            }),
            None => Err(ServiceError::NotFound {
                path: path.to_string(),
            }),
        }
    }

    /// The bytes of a file as a stream of verified chunks, read one at a time.
    pub fn content_stream(
        &self,
        path: &VPath,
        rec: &FileRecord,
    ) -> impl Stream<Item = ServiceResult<Bytes>> + Send + 'static {
        let chunks = self.inner.chunks.clone();
        let path = path.to_string();
        futures_util::stream::iter(rec.chunks.clone()).then(move |c| {
            let chunks = chunks.clone();
            let path = path.clone();
            async move {
                let id = c.chunk_id();
                let data = blocking(move || chunks.read(&id))
                    .await?
                    .map_err(|e| ServiceError::storage(path, e))?;
                Ok(Bytes::from(data))
            }
        })
    }

    /// Uploads (`Create`) or replaces (`Replace`) a file from a streamed body.
    pub async fn write_file<S, E>(
        &self,
        path: &VPath,
        mode: WriteMode,
        opts: UploadOptions,
        body: S,
    ) -> ServiceResult<FileMetadata>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let limit = self.inner.config.max_file_size;
        if opts.declared_len.is_some_and(|n| n > limit) {
            return Err(ServiceError::TooLarge {
                path: path.to_string(),
                limit,
            });
        }
        // Fail before reading the body when the answer is already known.
        {
            let meta = self.inner.meta.clone();
            let (p, m) = (path.clone(), mode.clone());
            blocking(move || check_write(meta.as_ref(), &p, &m)).await??;
        }
        let (staged, size, hash) = self.stage_body(path, body).await?;
        if let Some(expected) = opts.expected_hash {
            if expected != hash {
                return Err(ServiceError::HashMismatch {
                    path: path.to_string(),
                    expected: expected.to_string(),
                    actual: hash.to_string(),
                });
            }
        }
        let chunks: Vec<ChunkRef> = staged
            .iter()
            .map(|s| ChunkRef {
                id: s.id.0,
                len: s.len,
            })
            .collect();
        let mtime = opts.mtime.unwrap_or_else(now_nanos);
        let path = path.clone();
        self.mutate(move |svc, rev, batch| {
            let meta = svc.meta.as_ref();
            let (old, missing) = check_write(meta, &path, &mode)?;
            let now = now_nanos();
            for dir in missing {
                batch.push(MetaOp::PutDir(dir, DirRecord { mtime: now, rev }));
            }
            let rec = FileRecord {
                size,
                xxh3: hash.0,
                mtime,
                rev,
                chunks,
            };
            for c in &rec.chunks {
                batch.push(MetaOp::AdjustChunk {
                    id: c.chunk_id(),
                    size: c.len,
                    delta: 1,
                });
            }
            if let Some(old) = old {
                svc.archive(batch, &path, old, false, now)?;
            }
            batch.push(MetaOp::PutFile(path.clone(), rec.clone()));
            batch.push(journal(rev, ChangeKind::Put, &path, now));
            svc.chunks
                .publish(staged)
                .map_err(|e| ServiceError::storage(path.as_str(), e))?;
            Ok(file_metadata(&path, &rec))
        })
        .await
    }

    /// Streams `body` through the chunker, staging every chunk durably.
    async fn stage_body<S, E>(
        &self,
        path: &VPath,
        mut body: S,
    ) -> ServiceResult<(Vec<StagedChunk>, u64, Xxh3)>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let limit = self.inner.config.max_file_size;
        let mut chunker = Chunker::new();
        let mut hasher = Xxh3Hasher::new();
        let mut staged = Vec::new();
        let mut size: u64 = 0;
        while let Some(frame) = body.next().await {
            let data = frame.map_err(|e| ServiceError::BadRequest {
                path: path.to_string(),
                message: format!("reading the request body failed: {e}"),
            })?;
            size += data.len() as u64;
            if size > limit {
                return Err(ServiceError::TooLarge {
                    path: path.to_string(),
                    limit,
                });
            }
            hasher.update(&data);
            for chunk in chunker.push(&data) {
                staged.push(self.stage_chunk(path, chunk).await?);
            }
        }
        for chunk in chunker.finish() {
            staged.push(self.stage_chunk(path, chunk).await?);
        }
        Ok((staged, size, hasher.finish()))
    }

    async fn stage_chunk(&self, path: &VPath, data: Vec<u8>) -> ServiceResult<StagedChunk> {
        let chunks = self.inner.chunks.clone();
        blocking(move || chunks.stage(ChunkId::of(&data), &data))
            .await?
            .map_err(|e| ServiceError::storage(path.as_str(), e))
    }

    pub async fn delete_file(&self, path: &VPath, if_match: Option<IfMatch>) -> ServiceResult<()> {
        let path = path.clone();
        self.mutate(move |svc, rev, batch| {
            let old = match svc
                .meta
                .get(&path)
                .map_err(|e| ServiceError::storage(path.as_str(), e))?
            {
                Some(Entry::File(f)) => f,
                Some(Entry::Dir(_)) => {
                    return Err(ServiceError::IsADirectory {
                        path: path.to_string(),
                    })
                }
                None => {
                    return Err(ServiceError::NotFound {
                        path: path.to_string(),
                    })
                }
            };
            check_if_match(&path, if_match.as_ref(), old.rev)?;
            let now = now_nanos();
            svc.archive(batch, &path, old, true, now)?;
            batch.push(MetaOp::DeleteFile(path.clone()));
            batch.push(journal(rev, ChangeKind::Delete, &path, now));
            Ok(())
        })
        .await
    }

    pub async fn create_dir(&self, path: &VPath) -> ServiceResult<FileMetadata> {
        if path.is_root() {
            return Err(ServiceError::AlreadyExists { path: String::new() });
        }
        let path = path.clone();
        self.mutate(move |svc, rev, batch| {
            if svc
                .meta
                .get(&path)
                .map_err(|e| ServiceError::storage(path.as_str(), e))?
                .is_some()
            {
                return Err(ServiceError::AlreadyExists {
                    path: path.to_string(),
                });
            }
            let now = now_nanos();
            for dir in missing_ancestors(svc.meta.as_ref(), &path)? {
                batch.push(MetaOp::PutDir(dir, DirRecord { mtime: now, rev }));
            }
            let rec = DirRecord { mtime: now, rev };
            batch.push(MetaOp::PutDir(path.clone(), rec));
            batch.push(journal(rev, ChangeKind::Mkdir, &path, now));
            Ok(dir_metadata(&path, &rec))
        })
        .await
    }

    /// Deletes a directory and everything below it; files become restorable versions.
    pub async fn delete_dir(&self, path: &VPath) -> ServiceResult<()> {
        if path.is_root() {
            return Err(ServiceError::InvalidPath {
                path: String::new(),
                reason: "the root directory cannot be deleted".into(),
            });
        }
        let path = path.clone();
        self.mutate(move |svc, rev, batch| {
            let err = |e| ServiceError::storage(path.as_str(), e);
            match svc.meta.get(&path).map_err(err)? {
                Some(Entry::Dir(_)) => {}
                Some(Entry::File(_)) => {
                    return Err(ServiceError::NotADirectory {
                        path: path.to_string(),
                        blocker: path.to_string(),
                    })
                }
                None => {
                    return Err(ServiceError::NotFound {
                        path: path.to_string(),
                    })
                }
            }
            let now = now_nanos();
            for (p, e) in svc.meta.descendants(&path).map_err(err)? {
                match e {
                    Entry::File(f) => {
                        svc.archive(batch, &p, f, true, now)?;
                        batch.push(MetaOp::DeleteFile(p));
                    }
                    Entry::Dir(_) => batch.push(MetaOp::DeleteDir(p)),
                }
            }
            batch.push(MetaOp::DeleteDir(path.clone()));
            batch.push(journal(rev, ChangeKind::Rmdir, &path, now));
            Ok(())
        })
        .await
    }

    pub async fn list_dir(&self, path: &VPath) -> ServiceResult<DirectoryListing> {
        match self.get_entry(path).await? {
            Some(Entry::Dir(_)) => {}
            Some(Entry::File(_)) => {
                return Err(ServiceError::NotADirectory {
                    path: path.to_string(),
                    blocker: path.to_string(),
                })
            }
            None => {
                return Err(ServiceError::NotFound {
                    path: path.to_string(),
                })
            }
        }
        let meta = self.inner.meta.clone();
        let p = path.clone();
        let children = blocking(move || meta.children(&p))
            .await?
            .map_err(|e| ServiceError::storage(path.as_str(), e))?;
        Ok(DirectoryListing {
            path: path.to_string(),
            entries: children.iter().map(|(p, e)| entry_metadata(p, e)).collect(),
        })
    }

    /// Runs one mutation under the writer lock: `build` checks preconditions and fills the
    /// batch for revision `rev`; the batch is then committed and freed chunks deleted.
    async fn mutate<T: Send + 'static>(
        &self,
        build: impl FnOnce(&Inner, u64, &mut MetaBatch) -> ServiceResult<T> + Send + 'static,
    ) -> ServiceResult<T> {
        let mut writer = self.inner.writer.lock().await;
        let rev = writer.next_rev;
        let inner = self.inner.clone();
        let out = blocking(move || {
            let mut batch = MetaBatch::default();
            let out = build(&inner, rev, &mut batch)?;
            let outcome = inner
                .meta
                .commit(batch)
                .map_err(|e| ServiceError::storage("", e))?;
            for id in outcome.freed_chunks {
                if let Err(e) = inner.chunks.delete(&id) {
                    // An undeleted chunk is an orphan that GC/fsck remove; the commit stands.
                    tracing::warn!(chunk = %id, error = %e, "could not delete a freed chunk");
                }
            }
            Ok::<T, ServiceError>(out)
        })
        .await??;
        writer.next_rev = rev + 1;
        Ok(out)
    }
}

fn journal(rev: u64, kind: ChangeKind, path: &VPath, at: UnixNanos) -> MetaOp {
    MetaOp::Journal(Change {
        rev,
        kind,
        path: path.to_string(),
        to_path: None,
        at,
    })
}

impl Inner {
    /// Keeps `old` as a version of `path` (or releases its chunks when versions are off),
    /// dropping the oldest versions beyond the retention count.
    fn archive(
        &self,
        batch: &mut MetaBatch,
        path: &VPath,
        old: FileRecord,
        deleted: bool,
        now: UnixNanos,
    ) -> ServiceResult<()> {
        let keep = self.config.versions_keep;
        let release = |batch: &mut MetaBatch, rec: &FileRecord| {
            for c in &rec.chunks {
                batch.push(MetaOp::AdjustChunk {
                    id: c.chunk_id(),
                    size: c.len,
                    delta: -1,
                });
            }
        };
        if keep == 0 {
            release(batch, &old);
            return Ok(());
        }
        let existing = self
            .meta
            .versions(path)
            .map_err(|e| ServiceError::storage(path.as_str(), e))?;
        let excess = (existing.len() + 1).saturating_sub(keep);
        for v in existing.iter().take(excess) {
            release(batch, &v.file);
            batch.push(MetaOp::DeleteVersion(path.clone(), v.file.rev));
        }
        batch.push(MetaOp::PutVersion(
            path.clone(),
            VersionRecord {
                file: old,
                deleted,
                archived_at: now,
            },
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::IfMatch;

    #[test]
    fn if_match_parsing() {
        assert!(IfMatch::parse("\"5\"").matches(5));
        assert!(!IfMatch::parse("\"5\"").matches(6));
        assert!(IfMatch::parse("*").matches(99));
        assert!(IfMatch::parse("\"1\", \"7\"").matches(7));
        assert!(!IfMatch::parse("W/\"5\"").matches(5));
        assert!(!IfMatch::parse("5").matches(5));
    }
}
