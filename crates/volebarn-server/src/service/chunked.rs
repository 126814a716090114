//! Server side of the chunked ("large file") upload: ask which chunks are missing, upload
//! only those (each verified against its BLAKE3 id), then commit a chunk list atomically.

use super::files::commit_write;
use super::{blocking, Service, WriteMode};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::ChunkRef;
use bytes::Bytes;
use volebarn_core::chunking::MAX_CHUNK;
use volebarn_core::hash::Xxh3Hasher;
use volebarn_core::timefmt::UnixNanos;
use volebarn_core::types::ChunkedCommit;
use volebarn_core::{ChunkId, FileMetadata, VPath};

impl Service {
    /// The ids among `ids` that the server does not store.
    pub async fn missing_chunks(&self, ids: Vec<ChunkId>) -> ServiceResult<Vec<ChunkId>> {
        let chunks = self.inner.chunks.clone();
        blocking(move || {
            let mut missing = Vec::new();
            for id in ids {
                if !chunks.contains(&id).map_err(|e| ServiceError::storage("", e))? && !missing.contains(&id)
                {
                    missing.push(id);
                }
            }
            Ok(missing)
        })
        .await?
    }

    /// Stores one chunk after checking that `data` hashes to `id`. Idempotent.
    pub async fn put_chunk(&self, id: ChunkId, data: Bytes) -> ServiceResult<()> {
        let path = format!("chunks/{id}");
        if data.len() > MAX_CHUNK as usize {
            return Err(ServiceError::TooLarge {
                path,
                limit: u64::from(MAX_CHUNK),
            });
        }
        let chunks = self.inner.chunks.clone();
        let p = path.clone();
        let staged = blocking(move || {
            let actual = ChunkId::of(&data);
            if actual != id {
                return Err(ServiceError::HashMismatch {
                    path: p,
                    expected: id.to_hex(),
                    actual: actual.to_hex(),
                });
            }
            chunks
                .stage(id, &data, true)
                .map_err(|e| ServiceError::storage(p, e))
        })
        .await??;
        // Published under the writer lock so it cannot race a deletion of the same chunk.
        let _writer = self.writer_lock().await;
        let chunks = self.inner.chunks.clone();
        blocking(move || chunks.publish(vec![staged]))
            .await?
            .map_err(|e| ServiceError::storage(path, e))
    }

    /// Commits a file whose chunks are already stored. Fails with 400 `missing_chunks`
    /// (listing them) when any is absent and with `hash_mismatch` when the chunks do not
    /// add up to the announced size and xxh3; nothing changes in either case.
    pub async fn commit_chunks(
        &self,
        path: &VPath,
        mode: WriteMode,
        commit: ChunkedCommit,
        mtime: Option<UnixNanos>,
    ) -> ServiceResult<FileMetadata> {
        let limit = self.inner.config.max_file_size;
        if commit.size > limit {
            return Err(ServiceError::TooLarge {
                path: path.to_string(),
                limit,
            });
        }
        self.precheck(path, &mode).await?;
        // Verify the whole-file hash by reading the chunks once, outside the writer lock.
        let chunks = self.inner.chunks.clone();
        let (p, c) = (path.clone(), commit.clone());
        blocking(move || verify_chunk_list(chunks.as_ref(), &p, &c)).await??;
        let path = path.clone();
        let mtime = mtime.unwrap_or_else(volebarn_core::timefmt::now_nanos);
        self.mutate(move |tx| {
            // Re-check under the lock: a chunk could only vanish through GC of orphans.
            let missing = absent(tx.inner.chunks.as_ref(), &commit)?;
            if !missing.is_empty() {
                return Err(ServiceError::MissingChunks {
                    path: path.to_string(),
                    ids: missing,
                });
            }
            let refs = commit
                .chunks
                .iter()
                .map(|c| ChunkRef {
                    id: c.id.0,
                    len: c.len,
                })
                .collect();
            commit_write(tx, &path, &mode, refs, commit.size, commit.xxhash3, mtime)
        })
        .await
    }
}

fn absent(chunks: &dyn crate::storage::ChunkStore, commit: &ChunkedCommit) -> ServiceResult<Vec<String>> {
    let mut missing: Vec<String> = Vec::new();
    for c in &commit.chunks {
        if !chunks.contains(&c.id).map_err(|e| ServiceError::storage("", e))? {
            let hex = c.id.to_hex();
            if !missing.contains(&hex) {
                missing.push(hex);
            }
        }
    }
    Ok(missing)
}

fn verify_chunk_list(
    chunks: &dyn crate::storage::ChunkStore,
    path: &VPath,
    commit: &ChunkedCommit,
) -> ServiceResult<()> {
    let missing = absent(chunks, commit)?;
    if !missing.is_empty() {
        return Err(ServiceError::MissingChunks {
            path: path.to_string(),
            ids: missing,
        });
    }
    let mut hasher = Xxh3Hasher::new();
    let mut size = 0u64;
    for c in &commit.chunks {
        let data = chunks
            .read(&c.id)
            .map_err(|e| ServiceError::storage(path.as_str(), e))?;
        if data.len() != c.len as usize {
            return Err(ServiceError::BadRequest {
                path: path.to_string(),
                message: format!("chunk {} is {} bytes, not {}", c.id, data.len(), c.len),
            });
        }
        size += data.len() as u64;
        hasher.update(&data);
    }
    let actual = hasher.finish();
    if size != commit.size || actual != commit.xxhash3 {
        return Err(ServiceError::HashMismatch {
            path: path.to_string(),
            expected: format!("{} ({} bytes)", commit.xxhash3, commit.size),
            actual: format!("{actual} ({size} bytes)"),
        });
    }
    Ok(())
}
