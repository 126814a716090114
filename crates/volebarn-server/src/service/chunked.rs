//! Server side of the chunked ("large file") upload: ask which chunks are missing, upload
//! only those (each verified against its BLAKE3 id), then commit a chunk list atomically.

use super::files::commit_write;
use super::{blocking, Service, WriteMode};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::{ChunkRef, Claim};
use bytes::Bytes;
use volebarn_core::chunking::MAX_CHUNK;
use volebarn_core::hash::Xxh3Hasher;
use volebarn_core::timefmt::UnixNanos;
use volebarn_core::types::{ChunkSpec, ChunkedCommit};
use volebarn_core::{ChunkId, FileMetadata, VPath, Xxh3};

impl Service {
    /// The ids among `ids` that the server does not store (each reported once). A chunk
    /// something references is present (its bytes cannot go while it is referenced); the
    /// others are asked of the chunk store.
    pub async fn missing_chunks(&self, ids: Vec<ChunkId>) -> ServiceResult<Vec<ChunkId>> {
        let mut unique = Vec::with_capacity(ids.len());
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            if seen.insert(id) {
                unique.push(id);
            }
        }
        let meta = self.inner.meta.clone();
        let unreferenced = blocking(move || {
            let mut out = Vec::new();
            for id in unique {
                if meta.chunk(&id)?.is_none() {
                    out.push(id);
                }
            }
            Ok::<_, crate::storage::StorageError>(out)
        })
        .await?
        .map_err(|e| ServiceError::storage("", e))?;
        let present = self
            .inner
            .chunks
            .contains_many(&unreferenced)
            .await
            .map_err(|e| ServiceError::storage("", e))?;
        Ok(unreferenced
            .into_iter()
            .zip(present)
            .filter_map(|(id, p)| p.is_none().then_some(id))
            .collect())
    }

    /// Stores one chunk after checking that `data` hashes to `id`. Idempotent, and lock-free:
    /// concurrent chunk uploads proceed in parallel.
    pub async fn put_chunk(&self, id: ChunkId, data: Bytes) -> ServiceResult<()> {
        let path = format!("chunks/{id}");
        if data.len() > MAX_CHUNK as usize {
            return Err(ServiceError::TooLarge {
                path,
                limit: u64::from(MAX_CHUNK),
            });
        }
        let d = data.clone();
        let actual = blocking(move || ChunkId::of(&d)).await?;
        if actual != id {
            return Err(ServiceError::HashMismatch {
                path,
                expected: id.to_hex(),
                actual: actual.to_hex(),
            });
        }
        self.inner
            .chunks
            .put_many(vec![(id, data)])
            .await
            .map_err(|e| ServiceError::storage(path, e))
    }

    /// Commits a file whose chunks are already stored. Fails with 400 `missing_chunks`
    /// (listing them) when any is absent and with 400 `bad_request` when the chunk lengths
    /// are not those stored or do not add up to the size; nothing changes then.
    ///
    /// The whole-file xxh3 is the client's claim: the file is not read back here (that would
    /// read every byte of a 1 GiB file for a 1-byte edit). The claim is recorded with the
    /// commit and checked in the background; a file whose claim is still open is checked
    /// before it is served, so no `X-File-Hash` leaves the server unverified.
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
        let total: u64 = commit.chunks.iter().map(|c| u64::from(c.len)).sum();
        if total != commit.size {
            return Err(ServiceError::BadRequest {
                path: path.to_string(),
                message: format!("the chunks add up to {total} bytes, not {}", commit.size),
            });
        }
        let xxh3 = match commit.xxhash3 {
            Some(h) => h,
            None => self.hash_of_chunks(path, &commit.chunks).await?,
        };
        let path = path.clone();
        let mtime = mtime.unwrap_or_else(volebarn_core::timefmt::now_nanos);
        // The transaction checks that every chunk it newly references exists with the
        // claimed length, and answers `missing_chunks` listing the absent ones.
        self.mutate(move |tx| {
            let refs: Vec<ChunkRef> = commit
                .chunks
                .iter()
                .map(|c| ChunkRef {
                    id: c.id.0,
                    len: c.len,
                })
                .collect();
            for c in &refs {
                match tx.referenced_len(&c.chunk_id())? {
                    Some(len) if len != c.len => {
                        return Err(ServiceError::BadRequest {
                            path: path.to_string(),
                            message: format!("chunk {} is {len} bytes, not {}", c.chunk_id(), c.len),
                        })
                    }
                    _ => {}
                }
            }
            let claim = Claim {
                size: commit.size,
                xxh3: xxh3.0,
                chunks: refs.clone(),
                path: path.to_string(),
            };
            let meta = commit_write(tx, &path, &mode, refs, commit.size, xxh3, mtime)?;
            tx.open_claim(claim);
            Ok(meta)
        })
        .await
    }

    /// The xxh3 of the content the chunks make, read back from storage (a commit that
    /// brings no hash of its own). Absent chunks: 400 `missing_chunks`, as the commit would.
    async fn hash_of_chunks(&self, path: &VPath, chunks: &[ChunkSpec]) -> ServiceResult<Xxh3> {
        let missing = self.missing_chunks(chunks.iter().map(|c| c.id).collect()).await?;
        if !missing.is_empty() {
            return Err(ServiceError::MissingChunks {
                path: path.to_string(),
                ids: missing.iter().map(ChunkId::to_hex).collect(),
            });
        }
        let mut hasher = Xxh3Hasher::new();
        for c in chunks {
            let data = self
                .read_chunk(
                    path.as_str(),
                    ChunkRef {
                        id: c.id.0,
                        len: c.len,
                    },
                )
                .await?;
            if data.len() != c.len as usize {
                return Err(ServiceError::BadRequest {
                    path: path.to_string(),
                    message: format!("chunk {} is {} bytes, not {}", c.id, data.len(), c.len),
                });
            }
            hasher.update(&data);
        }
        Ok(hasher.finish())
    }
}
