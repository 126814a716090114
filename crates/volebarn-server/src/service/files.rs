//! Single files and directories: streamed upload, replace, download, delete, mkdir, rmdir,
//! listing.

use super::{
    blocking, check_if_match, dir_metadata, entry_metadata, expect_dir, expect_file, file_metadata,
    Committed, IfMatch, Lookup, Service, Tx,
};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::{ChangeKind, ChunkRef, DirRecord, Entry, FileRecord, INLINE_MAX};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::fmt::Display;
use std::sync::Arc;
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

/// A body cut into chunks, ready to commit: small chunks in memory (the commit stores them
/// inline), larger ones durable in the chunk store or still `unstored` (a bulk upload puts
/// those of a whole batch at once).
pub struct StagedContent {
    pub chunks: Vec<ChunkRef>,
    pub inline: Vec<(ChunkId, Bytes)>,
    pub unstored: Vec<(ChunkId, Bytes)>,
    /// Chunks this upload wrote to the chunk store that were not there before: removed
    /// again if the upload fails, so a refused upload leaves nothing behind.
    pub written: Vec<ChunkId>,
    pub size: u64,
    pub hash: Xxh3,
}

impl StagedContent {
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

    /// Bytes held in memory that still have to go to the chunk store.
    pub fn pending_bytes(&self) -> usize {
        self.unstored.iter().map(|(_, b)| b.len()).sum()
    }
}

/// Where the bytes of one chunk of a body being streamed are.
enum Slot {
    Ready(ChunkRef),
    /// Being put into the chunk store: `(ref, whether this upload wrote it)`.
    Putting(tokio::task::JoinHandle<ServiceResult<(ChunkRef, bool)>>),
}

/// Chunk puts in flight while a body streams in (bounds memory to this many chunks).
const PUTS_IN_FLIGHT: usize = 4;

/// Checks that a write in `mode` may happen now; returns the file it replaces (if any).
pub(crate) fn check_write(
    l: &impl Lookup,
    path: &VPath,
    mode: &WriteMode,
) -> ServiceResult<Option<FileRecord>> {
    let old = match (mode, l.lookup(path)?) {
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
    for anc in path.ancestors() {
        if let Some(Entry::File(_)) = l.lookup(&anc)? {
            return Err(ServiceError::NotADirectory {
                path: path.to_string(),
                blocker: anc.to_string(),
            });
        }
    }
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

impl Lookup for Tx<'_> {
    fn lookup(&self, path: &VPath) -> ServiceResult<Option<Entry>> {
        self.get(path)
    }
}

impl Service {
    pub(crate) async fn get_entry(&self, path: &VPath) -> ServiceResult<Option<Entry>> {
        let meta = self.inner.meta.clone();
        let p = path.clone();
        blocking(move || meta.get(&p))
            .await?
            .map_err(|e| ServiceError::storage(path.as_str(), e))
    }

    /// Checks a write against committed state without taking the writer lock.
    pub(crate) async fn precheck(&self, path: &VPath, mode: &WriteMode) -> ServiceResult<()> {
        let meta = self.inner.meta.clone();
        let (p, m) = (path.clone(), mode.clone());
        blocking(move || check_write(&Committed(meta.as_ref()), &p, &m).map(|_| ())).await?
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

    /// The bytes of a file as a stream of verified chunks, read one at a time.
    pub fn content_stream(
        &self,
        path: &VPath,
        rec: &FileRecord,
    ) -> impl Stream<Item = ServiceResult<Bytes>> + Send + 'static {
        let service = self.clone();
        let path = path.to_string();
        futures_util::stream::iter(rec.chunks.clone()).then(move |c| {
            let service = service.clone();
            let path = path.clone();
            async move { service.read_chunk(&path, c).await }
        })
    }

    /// One chunk's bytes, verified: inline in the metadata store when small (falling back
    /// to the chunk store, where small chunks of older data directories and of the chunked
    /// upload API live), else from the chunk store.
    pub(crate) async fn read_chunk(&self, path: &str, c: ChunkRef) -> ServiceResult<Bytes> {
        let id = c.chunk_id();
        let err = |e| ServiceError::storage(path, e);
        if c.len <= INLINE_MAX {
            let meta = self.inner.meta.clone();
            let inline = blocking(move || {
                meta.chunk_data(&id).map(|d| {
                    d.map(|data| {
                        let ok = ChunkId::of(&data) == id;
                        (data, ok)
                    })
                })
            })
            .await?
            .map_err(err)?;
            match inline {
                Some((data, true)) => return Ok(data),
                Some((_, false)) => {
                    return Err(err(crate::storage::StorageError::Corrupt(format!(
                        "inline chunk {id} does not match its hash"
                    ))))
                }
                None => {}
            }
        }
        self.inner.chunks.get(&id).await.map_err(err)
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
        let content = self.store_body(path, body).await?;
        let written = content.written.clone();
        if let Err(e) = content.verify(path, opts.expected_hash) {
            self.discard(written).await;
            return Err(e);
        }
        let mtime = opts.mtime.unwrap_or_else(volebarn_core::timefmt::now_nanos);
        let p = path.clone();
        let result = self
            .mutate(move |tx| {
                let StagedContent {
                    chunks,
                    inline,
                    size,
                    hash,
                    ..
                } = content;
                tx.offer_inline(inline);
                commit_write(tx, &p, &mode, chunks, size, hash, mtime)
            })
            .await;
        if result.is_err() {
            self.discard(written).await;
        }
        result
    }

    /// Removes chunks an upload wrote when the upload did not commit — unless something
    /// references them by now (checked inside a transaction, like GC).
    pub(crate) async fn discard(&self, written: Vec<ChunkId>) {
        if written.is_empty() {
            return;
        }
        let n = written.len();
        let result = self.mutate(move |tx| tx.delete_unreferenced(&written)).await;
        if let Err(e) = result {
            // Left as orphans: GC removes them after the grace period.
            tracing::warn!(chunks = n, error = %e, "could not remove the chunks of a failed upload");
        }
    }

    /// Streams `body` through the chunker: small chunks stay in memory for an inline
    /// commit, larger ones are put into the chunk store as they come (a few in flight, each
    /// skipped when already stored). On any failure, chunks written so far are discarded.
    pub(crate) async fn store_body<S, E>(&self, path: &VPath, body: S) -> ServiceResult<StagedContent>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let mut slots = Vec::new();
        let streamed = self.stream_chunks(path, body, &mut slots).await;
        let mut chunks = Vec::with_capacity(slots.len());
        let mut written = Vec::new();
        let (streamed, mut failure) = match streamed {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        for slot in slots {
            match slot {
                Slot::Ready(c) => chunks.push(c),
                Slot::Putting(task) => match task.await {
                    Ok(Ok((c, wrote))) => {
                        if wrote {
                            written.push(c.chunk_id());
                        }
                        chunks.push(c);
                    }
                    Ok(Err(e)) => failure = failure.or(Some(e)),
                    Err(e) => {
                        failure = failure.or(Some(ServiceError::Internal(format!("chunk put task: {e}"))))
                    }
                },
            }
        }
        let (size, hash, inline) = match (streamed, failure) {
            (Some(v), None) => v,
            (_, e) => {
                self.discard(written).await;
                return Err(e.unwrap_or_else(|| ServiceError::Internal("upload failed".into())));
            }
        };
        Ok(StagedContent {
            chunks,
            inline,
            unstored: Vec::new(),
            written,
            size,
            hash,
        })
    }

    /// The streaming half of [`Service::store_body`]: fills `slots` in order; returns the
    /// size, hash and inline chunks.
    async fn stream_chunks<S, E>(
        &self,
        path: &VPath,
        mut body: S,
        slots: &mut Vec<Slot>,
    ) -> ServiceResult<(u64, Xxh3, Vec<(ChunkId, Bytes)>)>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let limit = self.inner.config.max_file_size;
        let permits = Arc::new(tokio::sync::Semaphore::new(PUTS_IN_FLIGHT));
        let mut chunker = Some(Chunker::new());
        let mut hasher = Xxh3Hasher::new();
        let mut inline = Vec::new();
        let mut size: u64 = 0;
        while let Some(open) = chunker.as_mut() {
            let pieces = match body.next().await {
                Some(frame) => {
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
                    open.push(&data)
                }
                None => chunker.take().map(Chunker::finish).unwrap_or_default(),
            };
            for piece in pieces {
                let len = u32::try_from(piece.len())
                    .map_err(|_| ServiceError::Internal("chunk over 4 GiB".into()))?;
                if len <= INLINE_MAX {
                    let id = ChunkId::of(&piece);
                    inline.push((id, Bytes::from(piece)));
                    slots.push(Slot::Ready(ChunkRef { id: id.0, len }));
                    continue;
                }
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                let chunks = self.inner.chunks.clone();
                let p = path.to_string();
                slots.push(Slot::Putting(tokio::spawn(async move {
                    let data = Bytes::from(piece);
                    let d = data.clone();
                    let id = blocking(move || ChunkId::of(&d)).await?;
                    let err = |e| ServiceError::storage(p.as_str(), e);
                    let present = chunks.contains_many(&[id]).await.map_err(err)?;
                    let wrote = present.first().is_none_or(Option::is_none);
                    if wrote {
                        chunks.put_many(vec![(id, data)]).await.map_err(err)?;
                    }
                    drop(permit);
                    Ok((ChunkRef { id: id.0, len }, wrote))
                })));
            }
        }
        Ok((size, hasher.finish(), inline))
    }

    /// Cuts a body already in memory (a small bulk part) into chunks without storing any:
    /// small ones are committed inline, the others are put for the whole batch at once.
    pub(crate) async fn stage_in_memory(&self, path: VPath, data: Bytes) -> ServiceResult<StagedContent> {
        let limit = self.inner.config.max_file_size;
        if data.len() as u64 > limit {
            return Err(ServiceError::TooLarge {
                path: path.to_string(),
                limit,
            });
        }
        blocking(move || {
            let mut content = StagedContent {
                chunks: Vec::new(),
                inline: Vec::new(),
                unstored: Vec::new(),
                written: Vec::new(),
                size: data.len() as u64,
                hash: Xxh3::of(&data),
            };
            for (offset, len) in volebarn_core::chunking::chunk_boundaries(&data) {
                let piece = data.slice(offset..offset + len);
                let id = ChunkId::of(&piece);
                let len = len as u32;
                content.chunks.push(ChunkRef { id: id.0, len });
                if len <= INLINE_MAX {
                    content.inline.push((id, piece));
                } else {
                    content.unstored.push((id, piece));
                }
            }
            content
        })
        .await
    }

    /// Puts the `unstored` chunks of `items` into the chunk store in one batch (skipping any
    /// already there), so they are durable together; each item remembers what it wrote.
    pub(crate) async fn store_pending(&self, items: &mut [&mut StagedContent]) -> ServiceResult<()> {
        let mut ids = Vec::new();
        for item in items.iter() {
            ids.extend(item.unstored.iter().map(|(id, _)| *id));
        }
        if ids.is_empty() {
            return Ok(());
        }
        let err = |e| ServiceError::storage("", e);
        let present = self.inner.chunks.contains_many(&ids).await.map_err(err)?;
        let absent: std::collections::HashSet<ChunkId> = ids
            .iter()
            .zip(present)
            .filter_map(|(id, p)| p.is_none().then_some(*id))
            .collect();
        let mut batch = Vec::new();
        let mut queued = std::collections::HashSet::new();
        for item in items.iter_mut() {
            for (id, data) in std::mem::take(&mut item.unstored) {
                if absent.contains(&id) {
                    item.written.push(id);
                    if queued.insert(id) {
                        batch.push((id, data));
                    }
                }
            }
        }
        self.inner.chunks.put_many(batch).await.map_err(err)
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
