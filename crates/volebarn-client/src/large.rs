//! Large files as content-defined chunks (the seed's "large file upload strategy"): cut the
//! file with the server's FastCDC parameters, ask which chunks the server lacks, send only
//! those (3 at a time), then commit the chunk list. A chunk is retried for as long as the
//! upload makes progress (other chunks land; see [`crate::resilience::run_while_progressing`]),
//! and an interrupted upload resumes by asking again, so it sends only what is missing; an
//! edit re-sends only the chunks it touched.
//!
//! The file is read once, in a pipeline whose stages overlap:
//!
//! 1. a reader thread reads the file and cuts it into chunks ([`Chunker`]);
//! 2. a hasher thread feeds each chunk to the whole-file xxh3 (in file order) and computes its
//!    BLAKE3 id — cutting and hashing cost about the same, so each gets a core;
//! 3. ids are asked about in batches (`POST /chunks/missing`) as they come;
//! 4. the missing chunks are sent from memory, `concurrency` at a time, while cutting goes on.
//!
//! Memory is bounded by a budget of chunk bytes (`memory_budget`): the reader takes a share
//! for every byte it reads, and a chunk gives its share back when it is dropped — sent, or
//! found on the server. So however the stages run, at most that many bytes of the file are
//! held, and reading waits when the network is the slower part.
//!
//! Since each byte is read once, the chunk ids, the whole-file hash and the bytes sent are
//! always the same bytes; what remains is to make sure they are one version of the file, not
//! a mix of before and after a concurrent write. That is checked on the file's metadata
//! ([`Version`]) before the first read and after the last one.

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::resilience::Progress;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use volebarn_core::chunking::{Chunker, MAX_CHUNK};
use volebarn_core::hash::Xxh3Hasher;
use volebarn_core::types::{ChunkSpec, ChunkedCommit};
use volebarn_core::{ChunkId, FileMetadata, Xxh3};

/// When and how files are uploaded in chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct LargeFileConfig {
    /// Files larger than this go through the chunked upload (seed: 10 MB).
    pub threshold: u64,
    /// Chunk uploads in flight. Chunk bytes held in memory grow with it (see the module doc).
    pub concurrency: usize,
    /// Attempts of one chunk in a row with no chunk of the upload landing in between before
    /// the upload gives up. Any chunk landing starts the count again, so an upload goes on
    /// for as long as it makes progress, however often the link drops.
    pub chunk_attempts: u32,
    /// The upload also gives up when no chunk landed for this long.
    pub stall_timeout: Duration,
    /// Times a failed upload that made progress starts again, asking which chunks the
    /// server still lacks and sending only those (an upload that made no progress is not
    /// restarted).
    pub resumes: u32,
}

impl Default for LargeFileConfig {
    fn default() -> Self {
        LargeFileConfig {
            threshold: 10_000_000,
            concurrency: 3,
            chunk_attempts: 6,
            stall_timeout: Duration::from_secs(300),
            resumes: 10,
        }
    }
}

/// Bytes per `read` of the file: large enough that syscalls do not count, small enough to
/// stay in the CPU cache on its way into a chunk.
const READ_SIZE: usize = 256 * 1024;
/// Most ids asked about in one `POST /chunks/missing`.
const QUERY_BATCH: usize = 64;
/// How long a batch waits for more ids once it has one. Hashing 1 GiB makes ~1,000 chunks at
/// about one per millisecond; asking in batches of a few ms keeps that to ~200 requests
/// instead of ~1,000, and costs the first upload ~5 ms of idle link at the start.
const BATCH_WAIT: Duration = Duration::from_millis(5);
/// `/chunks/missing` requests in flight; their answers are used in file order.
const QUERIES_IN_FLIGHT: usize = 2;
/// How often the upload waits for a file that was modified just now (see [`Version`]).
const SETTLE_ATTEMPTS: u32 = 3;

/// Chunk bytes the upload may hold at once: what the uploads in flight hold, plus room for
/// the reader and hasher to run ahead and for the batches being asked about. Never less than
/// a chunk plus a read, which the reader holds while it looks for a chunk's end.
fn memory_budget(concurrency: usize) -> usize {
    (concurrency + 5) * MAX_CHUNK as usize
}

/// A chunk cut from the file, holding its share of the memory budget.
struct Cut {
    data: Vec<u8>,
    held: OwnedSemaphorePermit,
}

/// A chunk with its id, holding its share of the memory budget until it is dropped.
struct Hashed {
    id: ChunkId,
    data: Bytes,
    _held: OwnedSemaphorePermit,
}

/// What the reader learnt about the file: the version it read, by metadata.
struct ReadFile {
    /// Unix nanoseconds, sent with the commit.
    mtime: i64,
}

/// One version of a file's contents, told apart without reading them.
///
/// Every write through the filesystem sets ctime to the current time, and ctime cannot be
/// set back (unlike mtime, which `touch -r` or `rsync -t` restore); replacing the file
/// changes the inode. So if these are equal before the first read and after the last, no
/// write happened in between — with one gap: timestamps come from a clock that advances in
/// ticks (a few ms on Linux; 2 s on FAT), and a write in the same tick as the one before it
/// leaves ctime unchanged. A file whose ctime is within that window of now is therefore
/// waited on until the window has passed ([`Version::unsettled_for`]), after which any
/// write gets a later ctime. Writes through a shared writable `mmap` update the times only
/// when pages are first dirtied or written back, so they can go unseen, as they can by any
/// reader that is not a filesystem snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// A clock tick, with margin: Linux stamps files from a clock updated every 1–10 ms.
const TICK: Duration = Duration::from_millis(20);
/// Filesystems without sub-second times (FAT has 2 s) show whole seconds.
const COARSE_TICK: Duration = Duration::from_secs(2);

impl Version {
    fn of(m: &std::fs::Metadata) -> Version {
        Version {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// How long to wait before a write is sure to move ctime; `None` when it already is.
    fn unsettled_for(&self, now: SystemTime) -> Option<Duration> {
        let tick = if self.ctime.1 == 0 && self.mtime.1 == 0 {
            COARSE_TICK
        } else {
            TICK
        };
        let ctime = u64::try_from(self.ctime.0).ok().and_then(|s| {
            UNIX_EPOCH.checked_add(Duration::new(s, self.ctime.1.clamp(0, 999_999_999) as u32))
        });
        match ctime.map(|c| now.duration_since(c)) {
            Some(Ok(age)) if age >= tick => None,
            Some(Ok(age)) => Some(tick - age),
            // In the future (the clock was set back) or before 1970: wait a whole tick.
            _ => Some(tick),
        }
    }
}

fn changed() -> std::io::Error {
    std::io::Error::other("the file changed while it was being uploaded")
}

/// The reader stopped because the rest of the upload did (its error is the one reported).
fn stopped() -> std::io::Error {
    std::io::Error::other("the upload stopped")
}

/// Opens the file once its last write is more than a clock tick ago (see [`Version`]).
fn open_settled(path: &Path) -> std::io::Result<(File, Version, std::fs::Metadata)> {
    let mut waited = 0;
    loop {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let version = Version::of(&meta);
        match version.unsettled_for(SystemTime::now()) {
            None => return Ok((file, version, meta)),
            Some(wait) if waited < SETTLE_ATTEMPTS => {
                waited += 1;
                tracing::debug!(path = %path.display(), ?wait, "file modified just now: waiting a clock tick");
                std::thread::sleep(wait);
            }
            // Still being written: an upload now would be refused at the end anyway.
            Some(_) => return Err(changed()),
        }
    }
}

/// Stage 1 (a blocking thread): reads the file once and cuts it, taking a share of `budget`
/// for every byte before it is kept. Checks at the end that the file did not change.
fn read_and_cut(
    path: &Path,
    budget: &Arc<Semaphore>,
    rt: &tokio::runtime::Handle,
    out: &std_mpsc::Sender<Cut>,
) -> std::io::Result<ReadFile> {
    let (mut file, before, meta) = open_settled(path)?;
    let mtime = crate::client::time_nanos(meta.modified()?);
    let mut chunker = Chunker::new();
    let mut buf = vec![0u8; READ_SIZE];
    let mut read = 0u64;
    let mut held: Option<OwnedSemaphorePermit> = None;
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunks = if n == 0 {
            std::mem::take(&mut chunker).finish()
        } else {
            // `n` ≤ READ_SIZE, so it fits.
            let share = rt
                .block_on(budget.clone().acquire_many_owned(n as u32))
                .map_err(|_| stopped())?;
            match held.as_mut() {
                Some(h) => h.merge(share),
                None => held = Some(share),
            }
            read += n as u64;
            chunker.push(&buf[..n])
        };
        for data in chunks {
            // The reader holds a share for every byte read and not yet handed on.
            let share = held
                .as_mut()
                .and_then(|h| h.split(data.len()))
                .ok_or_else(|| std::io::Error::other("chunk memory accounting is off"))?;
            out.send(Cut { data, held: share }).map_err(|_| stopped())?;
        }
        if n == 0 {
            break;
        }
    }
    let after = Version::of(&file.metadata()?);
    let at_path = Version::of(&std::fs::metadata(path)?);
    if after != before || read != before.size || (at_path.dev, at_path.ino) != (before.dev, before.ino) {
        tracing::debug!(path = %path.display(), ?before, ?after, read, "file changed during the upload");
        return Err(changed());
    }
    Ok(ReadFile { mtime })
}

/// Stage 2 (a blocking thread): the whole-file xxh3 (in file order) and each chunk's BLAKE3.
/// Returns the hash and size of exactly the bytes passed on.
fn hash_chunks(cuts: std_mpsc::Receiver<Cut>, out: mpsc::UnboundedSender<Hashed>) -> (Xxh3, u64) {
    let mut whole = Xxh3Hasher::new();
    let mut size = 0u64;
    for cut in cuts {
        whole.update(&cut.data);
        size += cut.data.len() as u64;
        let hashed = Hashed {
            id: ChunkId::of(&cut.data),
            data: Bytes::from(cut.data),
            _held: cut.held,
        };
        if out.send(hashed).is_err() {
            break;
        }
    }
    (whole.finish(), size)
}

/// Batches of the chunks that are ready: one, then whatever else arrives within
/// [`BATCH_WAIT`], up to [`QUERY_BATCH`]. A batch never waits for chunks that cannot come
/// (the budget may be spent), only for the deadline.
fn batches(rx: mpsc::UnboundedReceiver<Hashed>) -> impl Stream<Item = Vec<Hashed>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < QUERY_BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(h)) => batch.push(h),
                Ok(None) | Err(_) => break,
            }
        }
        Some((batch, rx))
    })
}

/// Closes the budget when the upload ends, so a reader waiting for memory stops at once.
struct CloseOnDrop(Arc<Semaphore>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Client {
    /// Uploads a file as chunks, sending only those the server does not have. Returns the
    /// committed metadata, whose hash has been checked against the local file.
    pub async fn upload_large(&self, remote: &str, local: &Path, replace: bool) -> Result<FileMetadata> {
        self.upload_large_if(remote, local, replace, None).await
    }

    /// [`Client::upload_large`] that commits only if the server's file is still at `if_match`.
    ///
    /// A failed upload that got some chunks onto the server starts again (up to
    /// [`LargeFileConfig::resumes`] times): it reads the file again, asks which chunks are
    /// still missing and sends only those. The server keeps chunks nothing references yet
    /// for `chunks.orphan_grace` (24 h), so running the same upload again later resumes it
    /// the same way.
    pub async fn upload_large_if(
        &self,
        remote: &str,
        local: &Path,
        replace: bool,
        if_match: Option<u64>,
    ) -> Result<FileMetadata> {
        let attempts = crate::api::Attempts::default();
        let mut resumes = 0;
        loop {
            let progress = Progress::default();
            let err = match self
                .upload_large_round(remote, local, replace, if_match, &progress, &attempts)
                .await
            {
                Ok(meta) => return Ok(meta),
                Err(e) => e,
            };
            if !err.is_transient() || progress.count() == 0 || resumes >= self.resilience.large.resumes {
                return Err(err);
            }
            resumes += 1;
            tracing::warn!(path = remote, landed = progress.count(), resume = resumes, error = %err,
                "chunked upload interrupted after progress: resuming with the missing chunks");
        }
    }

    /// One pass of [`Client::upload_large_if`]: every request that lands counts in `progress`.
    async fn upload_large_round(
        &self,
        remote: &str,
        local: &Path,
        replace: bool,
        if_match: Option<u64>,
        progress: &Progress,
        commits: &crate::api::Attempts,
    ) -> Result<FileMetadata> {
        let io = |source| ClientError::Io {
            path: local.display().to_string(),
            source,
        };
        let task = |e: tokio::task::JoinError| ClientError::Protocol(format!("chunking task: {e}"));
        let concurrency = self.resilience.large.concurrency.max(1);
        let budget = Arc::new(Semaphore::new(memory_budget(concurrency)));
        let close = CloseOnDrop(budget.clone());
        let (cut_tx, cut_rx) = std_mpsc::channel();
        let (hashed_tx, hashed_rx) = mpsc::unbounded_channel();
        let reader = tokio::task::spawn_blocking({
            let path: PathBuf = local.to_path_buf();
            let rt = tokio::runtime::Handle::current();
            move || read_and_cut(&path, &budget, &rt, &cut_tx)
        });
        let hasher = tokio::task::spawn_blocking(move || hash_chunks(cut_rx, hashed_tx));
        let sent = self.send_missing(remote, hashed_rx, concurrency, progress).await;
        // On failure the reader and hasher stop at their next step (the budget is closed and
        // the channels are gone); wait for them so nothing reads the file after we return.
        drop(close);
        let read = reader.await.map_err(task)?;
        let (hash, size) = hasher.await.map_err(task)?;
        let chunks = sent?;
        let read = read.map_err(io)?;

        let commit = ChunkedCommit {
            size,
            xxhash3: Some(hash),
            chunks,
        };
        let result = self
            .call("commit_chunks", || {
                commits.next();
                self.commit_chunks_once(remote, &commit, replace, Some(read.mtime), if_match)
            })
            .await;
        // A commit whose answer was lost and that is sent again finds its own file there.
        let meta = self.settle_write(remote, hash, commits, result).await?;
        if meta.xxhash3 != hash || meta.size != size {
            return Err(ClientError::HashMismatch {
                path: remote.to_string(),
                expected: hash.to_string(),
                actual: meta.xxhash3.to_string(),
            });
        }
        Ok(meta)
    }

    /// Stages 3 and 4: asks about the chunks as they are hashed and sends the missing ones
    /// while the next are read. Returns the file's chunk list, in order.
    async fn send_missing(
        &self,
        remote: &str,
        hashed: mpsc::UnboundedReceiver<Hashed>,
        concurrency: usize,
        progress: &Progress,
    ) -> Result<Vec<ChunkSpec>> {
        let (upload_tx, mut upload_rx) = mpsc::unbounded_channel::<Hashed>();
        let mut chunks = Vec::new();
        // Ids being sent by this upload: a chunk repeated in the file goes once.
        let mut sending = HashSet::new();
        let mut sending_bytes = 0u64;
        let asking = async {
            let mut answers = std::pin::pin!(batches(hashed)
                .map(|batch| async move {
                    let ids: Vec<ChunkId> = batch.iter().map(|h| h.id).collect();
                    let missing: HashSet<ChunkId> = self
                        .call_progressing(progress, "missing_chunks", || self.missing_chunks_once(&ids))
                        .await?
                        .into_iter()
                        .collect();
                    Ok::<_, ClientError>((batch, missing))
                })
                .buffered(QUERIES_IN_FLIGHT));
            while let Some(answer) = answers.next().await {
                let (batch, missing) = answer?;
                for h in batch {
                    let len = h.data.len() as u32;
                    chunks.push(ChunkSpec { id: h.id, len });
                    if missing.contains(&h.id) && sending.insert(h.id) {
                        sending_bytes += u64::from(len);
                        // Fails only once the uploads stopped, whose error is returned.
                        upload_tx
                            .send(h)
                            .map_err(|_| ClientError::Protocol("chunk uploads stopped".into()))?;
                    } else {
                        // Already on the server: as good as sent.
                        self.observer.bytes(u64::from(len));
                    }
                }
            }
            drop(upload_tx);
            Ok::<(), ClientError>(())
        };
        let uploading = futures_util::stream::poll_fn(|cx| upload_rx.poll_recv(cx))
            .map(|h: Hashed| {
                async move {
                    let tries = std::sync::atomic::AtomicU32::new(0);
                    self.call_progressing(progress, "put_chunk", || {
                        let retry = tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0;
                        let data = h.data.clone();
                        async move {
                            // A retry first asks whether the chunk arrived and only its
                            // answer was lost (the connection dropped after the last byte).
                            if retry && self.missing_chunks_once(&[h.id]).await?.is_empty() {
                                return Ok(());
                            }
                            self.put_chunk_once(h.id, data).await
                        }
                    })
                    .await?;
                    progress.landed();
                    Ok(())
                    // `h` is dropped here, giving its memory back to the reader.
                }
            })
            .buffer_unordered(concurrency)
            .try_for_each(|()| std::future::ready(Ok(())));
        futures_util::future::try_join(asking, uploading).await?;
        tracing::debug!(
            path = remote,
            chunks = chunks.len(),
            sent = sending.len(),
            sent_bytes = sending_bytes,
            "chunked upload"
        );
        Ok(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(ctime: (i64, i64)) -> Version {
        Version {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: ctime,
            ctime,
        }
    }

    #[test]
    fn a_file_written_within_a_tick_is_waited_on() {
        let now = UNIX_EPOCH + Duration::new(1_000_000, 500_000_000);
        assert_eq!(version((1_000_000, 1)).unsettled_for(now), None, "0.5 s ago");
        assert_eq!(
            version((1_000_000, 490_000_000)).unsettled_for(now),
            Some(Duration::from_millis(10)),
            "10 ms ago: wait out the rest of the tick"
        );
        assert_eq!(
            version((1_000_001, 1)).unsettled_for(now),
            Some(TICK),
            "in the future: a whole tick"
        );
        // Whole seconds only: a filesystem with 2 s timestamps.
        assert_eq!(
            version((999_999, 0)).unsettled_for(now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(version((999_998, 0)).unsettled_for(now), None);
    }

    #[test]
    fn the_budget_holds_a_chunk_and_a_read_and_every_upload() {
        for c in [1, 3, 16] {
            assert!(memory_budget(c) >= MAX_CHUNK as usize + READ_SIZE);
            assert!(memory_budget(c) >= c * MAX_CHUNK as usize);
        }
    }
}
