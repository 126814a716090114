//! The open files of the WebDAV filesystem: a reader that streams a file's verified chunks
//! (seekable, for ranges) and a writer that streams a `PUT` body into the service as it
//! arrives and commits it when dav-server closes (flushes) the file.

use super::fs::{fs_error, DavMeta};
use crate::error::ServiceError;
use crate::service::{Service, UploadOptions, WriteMode};
use crate::storage::FileRecord;
use bytes::{Buf, Bytes};
use dav_server::fs::{DavFile, DavMetaData, FsError, FsFuture, FsResult};
use futures_util::FutureExt;
use std::io::SeekFrom;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use volebarn_core::{FileMetadata, VPath};

/// Body pieces queued between dav-server and the service's chunker (bounds memory).
const QUEUED_PIECES: usize = 4;

/// A file opened for reading: its record at open time, read chunk by chunk.
pub(super) struct Reader {
    service: Service,
    path: VPath,
    rec: FileRecord,
    pos: u64,
    /// The chunk last read: `(offset in the file, bytes)`.
    current: Option<(u64, Bytes)>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("pos", &self.pos)
            .finish()
    }
}

impl Reader {
    pub(super) fn new(service: Service, path: VPath, rec: FileRecord) -> Self {
        Reader {
            service,
            path,
            rec,
            pos: 0,
            current: None,
        }
    }

    async fn read(&mut self, count: usize) -> FsResult<Bytes> {
        if self.pos >= self.rec.size || count == 0 {
            return Ok(Bytes::new());
        }
        let cached = self
            .current
            .as_ref()
            .is_some_and(|(start, b)| *start <= self.pos && self.pos < start + b.len() as u64);
        if !cached {
            let mut start = 0u64;
            let mut found = None;
            for c in &self.rec.chunks {
                let end = start + u64::from(c.len);
                if self.pos < end {
                    found = Some((start, *c));
                    break;
                }
                start = end;
            }
            let (start, chunk) = found.ok_or(FsError::GeneralFailure)?;
            let data = self
                .service
                .read_chunk(self.path.as_str(), chunk)
                .await
                .map_err(|e| {
                    tracing::error!(path = %self.path, error = %e, "WebDAV read failed");
                    fs_error(&e)
                })?;
            self.current = Some((start, data));
        }
        let (start, data) = self.current.as_ref().ok_or(FsError::GeneralFailure)?;
        // Both offsets lie inside this chunk, which is at most a few MiB long.
        let from = (self.pos - start) as usize;
        let to = data.len().min(from.saturating_add(count));
        self.pos += (to - from) as u64;
        Ok(data.slice(from..to))
    }
}

/// A file opened for writing: the body goes to a service upload running beside the request;
/// the upload commits only when [`Writer::finish`] marks the body complete, so a request
/// that breaks off leaves nothing written.
pub(super) struct Writer {
    path: VPath,
    pieces: Option<tokio::sync::mpsc::Sender<Bytes>>,
    complete: Arc<AtomicBool>,
    upload: Option<tokio::task::JoinHandle<Result<FileMetadata, ServiceError>>>,
    committed: Option<FileMetadata>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("path", &self.path).finish()
    }
}

impl Writer {
    pub(super) fn start(service: Service, path: VPath, mode: WriteMode, opts: UploadOptions) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUED_PIECES);
        let complete = Arc::new(AtomicBool::new(false));
        let done = complete.clone();
        let body = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|piece| match piece {
                Some(b) => Some(Ok(b)),
                None if done.load(Ordering::Acquire) => None,
                // The sender went away without finishing: the request broke off.
                None => Some(Err("the request body ended before the upload was complete")),
            })
        });
        let p = path.clone();
        let upload = tokio::spawn(async move { service.write_file(&p, mode, opts, Box::pin(body)).await });
        Writer {
            path,
            pieces: Some(tx),
            complete,
            upload: Some(upload),
            committed: None,
        }
    }

    /// The upload's outcome once it has ended (its error when it failed early).
    async fn outcome(&mut self) -> FsResult<FileMetadata> {
        if let Some(meta) = &self.committed {
            return Ok(meta.clone());
        }
        let upload = self.upload.take().ok_or(FsError::GeneralFailure)?;
        let meta = match upload.await {
            Ok(Ok(meta)) => meta,
            Ok(Err(e)) => {
                tracing::info!(path = %self.path, error = %e, "WebDAV upload refused");
                return Err(fs_error(&e));
            }
            Err(e) => {
                tracing::error!(path = %self.path, error = %e, "WebDAV upload task failed");
                return Err(FsError::GeneralFailure);
            }
        };
        self.committed = Some(meta.clone());
        Ok(meta)
    }

    async fn write(&mut self, data: Bytes) -> FsResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        let sent = match &self.pieces {
            Some(tx) => tx.send(data).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The upload stopped reading: it failed (too large, storage); report why.
        self.pieces = None;
        self.outcome().await.and(Err(FsError::GeneralFailure))
    }

    /// Marks the body complete and waits for the commit.
    async fn finish(&mut self) -> FsResult<()> {
        self.complete.store(true, Ordering::Release);
        self.pieces = None;
        self.outcome().await.map(|_| ())
    }
}

/// What dav-server holds for an open file.
#[derive(Debug)]
pub(super) enum OpenFile {
    Read(Reader),
    Write(Writer),
    /// An empty file created by opening it (a LOCK of an unmapped URL); nothing to read or write.
    Created(DavMeta),
}

impl DavFile for OpenFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            let meta: Box<dyn DavMetaData> = match self {
                OpenFile::Read(r) => Box::new(DavMeta::of_file(&r.rec)),
                OpenFile::Write(w) => Box::new(DavMeta::of(&w.outcome().await?)),
                OpenFile::Created(m) => Box::new(m.clone()),
            };
            Ok(meta)
        }
        .boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        let data = buf.copy_to_bytes(buf.remaining());
        self.write_bytes(data)
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move {
            match self {
                OpenFile::Write(w) => w.write(buf).await,
                OpenFile::Read(_) | OpenFile::Created(_) => Err(FsError::Forbidden),
            }
        }
        .boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            match self {
                OpenFile::Read(r) => r.read(count).await,
                OpenFile::Write(_) | OpenFile::Created(_) => Err(FsError::Forbidden),
            }
        }
        .boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let result = match self {
            OpenFile::Read(r) => {
                let target = match pos {
                    SeekFrom::Start(n) => Some(n),
                    SeekFrom::End(d) => r.rec.size.checked_add_signed(d),
                    SeekFrom::Current(d) => r.pos.checked_add_signed(d),
                };
                match target {
                    Some(n) => {
                        r.pos = n;
                        Ok(n)
                    }
                    None => Err(FsError::GeneralFailure),
                }
            }
            // Uploads are written front to back: partial PUTs are not supported.
            OpenFile::Write(_) | OpenFile::Created(_) => match pos {
                SeekFrom::Start(0) | SeekFrom::Current(0) => Ok(0),
                _ => Err(FsError::NotImplemented),
            },
        };
        futures_util::future::ready(result).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move {
            match self {
                OpenFile::Write(w) => w.finish().await,
                OpenFile::Read(_) | OpenFile::Created(_) => Ok(()),
            }
        }
        .boxed()
    }
}
