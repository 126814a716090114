//! Large files as content-defined chunks (the seed's "large file upload strategy"): cut the
//! file with the server's FastCDC parameters, ask which chunks the server lacks, send only
//! those (3 at a time, each retried on its own), then commit the chunk list. An interrupted
//! upload resumes by asking again, and an edit re-sends only the chunks it touched.

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::resilience::RetryConfig;
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::Read;
use std::path::{Path, PathBuf};
use volebarn_core::chunking::Chunker;
use volebarn_core::hash::Xxh3Hasher;
use volebarn_core::types::{ChunkSpec, ChunkedCommit};
use volebarn_core::{ChunkId, FileMetadata, Xxh3};

/// When and how files are uploaded in chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct LargeFileConfig {
    /// Files larger than this go through the chunked upload (seed: 10 MB).
    pub threshold: u64,
    /// Chunk uploads in flight.
    pub concurrency: usize,
    /// Attempts per chunk before the upload gives up (it can be resumed later).
    pub chunk_attempts: u32,
}

impl Default for LargeFileConfig {
    fn default() -> Self {
        LargeFileConfig {
            threshold: 10_000_000,
            concurrency: 3,
            chunk_attempts: 3,
        }
    }
}

/// A file cut into chunks: where each chunk lies, and the whole-file hash.
struct ChunkPlan {
    chunks: Vec<(ChunkId, u64, u32)>,
    size: u64,
    hash: Xxh3,
}

/// Reads the file once, cutting and hashing it; keeps no chunk bytes in memory.
fn plan_chunks(path: &Path) -> std::io::Result<ChunkPlan> {
    let mut file = std::fs::File::open(path)?;
    let mut chunker = Chunker::new();
    let mut hasher = Xxh3Hasher::new();
    let mut chunks = Vec::new();
    let mut offset = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut record = |data: Vec<u8>, chunks: &mut Vec<(ChunkId, u64, u32)>| {
        let len = data.len() as u64;
        chunks.push((ChunkId::of(&data), offset, len as u32));
        offset += len;
    };
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        for c in chunker.push(&buf[..n]) {
            record(c, &mut chunks);
        }
    }
    for c in chunker.finish() {
        record(c, &mut chunks);
    }
    let size = chunks.iter().map(|c| u64::from(c.2)).sum();
    Ok(ChunkPlan {
        chunks,
        size,
        hash: hasher.finish(),
    })
}

/// Reads one chunk back and checks it is still what was planned (the file may have changed).
fn read_chunk(path: &Path, id: ChunkId, offset: u64, len: u32) -> Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let io = |source| ClientError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut data = vec![0u8; len as usize];
    file.read_exact_at(&mut data, offset).map_err(io)?;
    if ChunkId::of(&data) != id {
        return Err(ClientError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other("the file changed while it was being uploaded"),
        });
    }
    Ok(Bytes::from(data))
}

impl Client {
    /// Uploads a file as chunks, sending only those the server does not have. Returns the
    /// committed metadata, whose hash has been checked against the local file.
    pub async fn upload_large(&self, remote: &str, local: &Path, replace: bool) -> Result<FileMetadata> {
        self.upload_large_if(remote, local, replace, None).await
    }

    /// [`Client::upload_large`] that commits only if the server's file is still at `if_match`.
    pub async fn upload_large_if(
        &self,
        remote: &str,
        local: &Path,
        replace: bool,
        if_match: Option<u64>,
    ) -> Result<FileMetadata> {
        let local_buf: PathBuf = local.to_path_buf();
        let io = |source| ClientError::Io {
            path: local.display().to_string(),
            source,
        };
        let mtime = crate::client::file_mtime(local).await.map_err(io)?;
        let plan = tokio::task::spawn_blocking(move || plan_chunks(&local_buf))
            .await
            .map_err(|e| ClientError::Protocol(format!("chunking task: {e}")))?
            .map_err(io)?;
        let ids: Vec<ChunkId> = plan.chunks.iter().map(|c| c.0).collect();
        let mut missing = std::collections::HashSet::new();
        for batch in ids.chunks(10_000) {
            missing.extend(self.missing_chunks(batch).await?);
        }
        let mut to_send: Vec<(ChunkId, u64, u32)> = Vec::new();
        for c in &plan.chunks {
            if missing.remove(&c.0) {
                to_send.push(*c);
            } else {
                // Already on the server: as good as sent.
                self.observer.bytes(u64::from(c.2));
            }
        }
        tracing::debug!(
            path = remote,
            chunks = plan.chunks.len(),
            sending = to_send.len(),
            "chunked upload"
        );
        let cfg = self.resilience.large.clone();
        let chunk_retry = RetryConfig {
            max_retries: cfg.chunk_attempts.saturating_sub(1),
            ..self.resilience.retry.clone()
        };
        let results: Vec<Result<()>> = futures_util::stream::iter(to_send)
            .map(|(id, offset, len)| {
                let chunk_retry = &chunk_retry;
                async move {
                    let path = local.to_path_buf();
                    let data = tokio::task::spawn_blocking(move || read_chunk(&path, id, offset, len))
                        .await
                        .map_err(|e| ClientError::Protocol(format!("read task: {e}")))??;
                    self.call_with(chunk_retry, "put_chunk", || self.put_chunk_once(id, data.clone()))
                        .await
                }
            })
            .buffer_unordered(cfg.concurrency.max(1))
            .collect()
            .await;
        for r in results {
            r?;
        }
        let commit = ChunkedCommit {
            size: plan.size,
            xxhash3: plan.hash,
            chunks: plan
                .chunks
                .iter()
                .map(|(id, _, len)| ChunkSpec { id: *id, len: *len })
                .collect(),
        };
        let meta = self
            .call("commit_chunks", || {
                self.commit_chunks_once(remote, &commit, replace, Some(mtime), if_match)
            })
            .await?;
        if meta.xxhash3 != plan.hash || meta.size != plan.size {
            return Err(ClientError::HashMismatch {
                path: remote.to_string(),
                expected: plan.hash.to_string(),
                actual: meta.xxhash3.to_string(),
            });
        }
        Ok(meta)
    }
}
