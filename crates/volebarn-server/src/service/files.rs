//! Single files and directories: streamed upload, replace, download, delete, mkdir, rmdir,
//! listing.

use super::{
    blocking, check_if_match, dir_metadata, entry_metadata, expect_dir, expect_file, file_metadata, IfMatch,
    Service, Tx,
};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::{ChangeKind, ChunkRef, DirRecord, Entry, FileRecord, StagedChunk};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::fmt::Display;
use volebarn_core::chunking::Chunker;
use volebarn_core::hash::Xxh3Hasher;
use volebarn_core::timefmt::UnixNanos;
use volebarn_core::{ChunkId, DirectoryListing, FileMetadata, VPath, Xxh3};

/// How an upload treats an existing file.
#[derive(Debug, Clone)]
pub enum WriteMode {
    /// `POST`: the path must not exist.
    Create,
    /// `PUT`: the file must exist and match `if_match` when given.
    Replace { if_match: Option<IfMatch> },
    /// Bulk upload: create, or replace when `if_match` (if given) matches.
    Upsert { if_match: Option<IfMatch> },
}

/// Optional facts an upload carries.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    pub expected_hash: Option<Xxh3>,
    pub mtime: Option<UnixNanos>,
    pub declared_len: Option<u64>,
}

/// A body that has been chunked and staged, ready to commit.
pub struct StagedContent {
    pub staged: Vec<StagedChunk>,
    pub chunks: Vec<ChunkRef>,
    pub size: u64,
    pub hash: Xxh3,
}

impl StagedContent {
    /// The content made of `staged` chunks, in order.
    fn new(staged: Vec<StagedChunk>, size: u64, hash: Xxh3) -> Self {
        let chunks = staged
            .iter()
            .map(|s| ChunkRef {
                id: s.id.0,
                len: s.len,
            })
            .collect();
        StagedContent {
            staged,
            chunks,
            size,
            hash,
        }
    }

    /// Fails with 400 `hash_mismatch` when the client announced a different hash.
    pub fn verify(&self, path: &VPath, expected: Option<Xxh3>) -> ServiceResult<()> {
        match expected {
            Some(e) if e != self.hash => Err(ServiceError::HashMismatch {
                path: path.to_string(),
                expected: e.to_string(),
                actual: self.hash.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// Checks that a write in `mode` may happen now; returns the file it replaces (if any).
pub(crate) fn check_write(tx: &Tx<'_>, path: &VPath, mode: &WriteMode) -> ServiceResult<Option<FileRecord>> {
    let old = match (mode, tx.get(path)?) {
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
        (WriteMode::Create | WriteMode::Upsert { .. }, None) => None,
        (WriteMode::Replace { .. }, None) => {
            return Err(ServiceError::NotFound {
                path: path.to_string(),
            })
        }
        (WriteMode::Replace { if_match } | WriteMode::Upsert { if_match }, Some(Entry::File(f))) => {
            check_if_match(path, if_match.as_ref(), f.rev)?;
            Some(f)
        }
    };
    tx.check_parents(path)?;
    Ok(old)
}

/// Records `content` as the new content of `path` inside `tx` (checks included).
pub(crate) fn commit_write(
    tx: &mut Tx<'_>,
    path: &VPath,
    mode: &WriteMode,
    chunks: Vec<ChunkRef>,
    size: u64,
    hash: Xxh3,
    mtime: UnixNanos,
) -> ServiceResult<FileMetadata> {
    let old = check_write(tx, path, mode)?;
    let rev = tx.rev();
    tx.ensure_parents(path, rev)?;
    if let Some(old) = old {
        tx.archive(path, old, false)?;
    }
    let rec = FileRecord {
        size,
        xxh3: hash.0,
        mtime,
        rev,
        chunks,
    };
    tx.put_file(path.clone(), rec.clone(), true);
    tx.journal(rev, ChangeKind::Put, path, None);
    Ok(file_metadata(path, &rec))
}

impl Service {
    async fn get_entry(&self, path: &VPath) -> ServiceResult<Option<Entry>> {
        let meta = self.inner.meta.clone();
        let p = path.clone();
        blocking(move || meta.get(&p))
            .await?
            .map_err(|e| ServiceError::storage(path.as_str(), e))
    }

    /// Checks a write against committed state without taking the writer lock.
    pub(crate) async fn precheck(&self, path: &VPath, mode: &WriteMode) -> ServiceResult<()> {
        let inner = self.inner.clone();
        let (p, m) = (path.clone(), mode.clone());
        blocking(move || check_write(&Tx::new(&inner, 0), &p, &m).map(|_| ())).await?
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
        expect_file(path, self.get_entry(path).await?)
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
        self.precheck(path, &mode).await?;
        let content = self.stage_body(path, body, true).await?;
        content.verify(path, opts.expected_hash)?;
        let mtime = opts.mtime.unwrap_or_else(volebarn_core::timefmt::now_nanos);
        let path = path.clone();
        self.mutate(move |tx| {
            let StagedContent {
                staged,
                chunks,
                size,
                hash,
            } = content;
            let meta = commit_write(tx, &path, &mode, chunks, size, hash, mtime)?;
            tx.stage(staged);
            Ok(meta)
        })
        .await
    }

    /// Streams `body` through the chunker, staging every chunk (fsynced when `durable`;
    /// bulk uploads sync a whole batch at once instead).
    pub(crate) async fn stage_body<S, E>(
        &self,
        path: &VPath,
        mut body: S,
        durable: bool,
    ) -> ServiceResult<StagedContent>
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
                staged.push(self.stage_chunk(path, chunk, durable).await?);
            }
        }
        for chunk in chunker.finish() {
            staged.push(self.stage_chunk(path, chunk, durable).await?);
        }
        Ok(StagedContent::new(staged, size, hasher.finish()))
    }

    /// Stages a body already in memory (a small bulk part), without fsync: the bulk commit
    /// makes the whole batch durable at once.
    pub(crate) async fn stage_in_memory(&self, path: VPath, data: Bytes) -> ServiceResult<StagedContent> {
        let limit = self.inner.config.max_file_size;
        if data.len() as u64 > limit {
            return Err(ServiceError::TooLarge {
                path: path.to_string(),
                limit,
            });
        }
        let chunks = self.inner.chunks.clone();
        blocking(move || {
            let mut staged = Vec::new();
            for (offset, len) in volebarn_core::chunking::chunk_boundaries(&data) {
                let piece = &data[offset..offset + len];
                let s = chunks
                    .stage(ChunkId::of(piece), piece, false)
                    .map_err(|e| ServiceError::storage(path.as_str(), e))?;
                staged.push(s);
            }
            Ok(StagedContent::new(staged, data.len() as u64, Xxh3::of(&data)))
        })
        .await?
    }

    async fn stage_chunk(&self, path: &VPath, data: Vec<u8>, durable: bool) -> ServiceResult<StagedChunk> {
        let chunks = self.inner.chunks.clone();
        blocking(move || chunks.stage(ChunkId::of(&data), &data, durable))
            .await?
            .map_err(|e| ServiceError::storage(path.as_str(), e))
    }

    pub async fn delete_file(&self, path: &VPath, if_match: Option<IfMatch>) -> ServiceResult<()> {
        let path = path.clone();
        self.mutate(move |tx| delete_file_in(tx, &path, if_match.as_ref()))
            .await
    }

    pub async fn create_dir(&self, path: &VPath) -> ServiceResult<FileMetadata> {
        if path.is_root() {
            return Err(ServiceError::AlreadyExists { path: String::new() });
        }
        let path = path.clone();
        self.mutate(move |tx| {
            if tx.get(&path)?.is_some() {
                return Err(ServiceError::AlreadyExists {
                    path: path.to_string(),
                });
            }
            let rev = tx.rev();
            tx.ensure_parents(&path, rev)?;
            let rec = DirRecord { mtime: tx.now, rev };
            tx.put_dir(path.clone(), rec);
            tx.journal(rev, ChangeKind::Mkdir, &path, None);
            Ok(dir_metadata(&path, &rec))
        })
        .await
    }

    /// Deletes a directory and everything below it; files become restorable versions.
    pub async fn delete_dir(&self, path: &VPath) -> ServiceResult<()> {
        let path = path.clone();
        self.mutate(move |tx| delete_dir_in(tx, &path)).await
    }

    pub async fn list_dir(&self, path: &VPath) -> ServiceResult<DirectoryListing> {
        expect_dir(path, self.get_entry(path).await?)?;
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
}

pub(crate) fn delete_file_in(tx: &mut Tx<'_>, path: &VPath, if_match: Option<&IfMatch>) -> ServiceResult<()> {
    let old = expect_file(path, tx.get(path)?)?;
    check_if_match(path, if_match, old.rev)?;
    let rev = tx.rev();
    tx.archive(path, old, true)?;
    tx.remove_file(path.clone());
    tx.journal(rev, ChangeKind::Delete, path, None);
    Ok(())
}

pub(crate) fn delete_dir_in(tx: &mut Tx<'_>, path: &VPath) -> ServiceResult<()> {
    if path.is_root() {
        return Err(ServiceError::InvalidPath {
            path: String::new(),
            reason: "the root directory cannot be deleted".into(),
        });
    }
    expect_dir(path, tx.get(path)?)?;
    let rev = tx.rev();
    tx.clear_path(path)?;
    tx.journal(rev, ChangeKind::Rmdir, path, None);
    Ok(())
}
