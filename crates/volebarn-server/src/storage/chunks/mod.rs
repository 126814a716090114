//! Chunk storage: immutable blobs addressed by their BLAKE3 [`ChunkId`].

pub mod fs;

#[cfg(test)]
pub mod conformance;

use super::StorageResult;
use std::path::PathBuf;
use volebarn_core::ChunkId;

/// A chunk written durably to a temporary place, not yet visible under its id.
/// Dropping it without publishing removes the temporary copy, so an aborted upload
/// (client disconnect, hash mismatch, size limit) leaves nothing behind.
#[derive(Debug)]
pub struct StagedChunk {
    pub id: ChunkId,
    pub len: u32,
    tmp: Option<PathBuf>,
}

impl StagedChunk {
    fn take_tmp(&mut self) -> Option<PathBuf> {
        self.tmp.take()
    }
}

impl Drop for StagedChunk {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            if let Err(e) = std::fs::remove_file(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %e, "could not remove staged chunk");
            }
        }
    }
}

pub trait ChunkStore: Send + Sync + 'static {
    /// Writes `data` (whose BLAKE3 is `id`) to a temporary place; with `durable`, fsyncs it.
    /// Without, the caller must call [`ChunkStore::sync_staged`] before publishing.
    fn stage(&self, id: ChunkId, data: &[u8], durable: bool) -> StorageResult<StagedChunk>;
    /// Makes every chunk staged so far durable at once (one `syncfs` instead of one fsync
    /// per chunk: the batched durability of DESIGN.md §4).
    fn sync_staged(&self) -> StorageResult<()>;
    /// Makes staged chunks visible under their ids (keeping any copy already there) and
    /// durable, so metadata may reference them once this returns.
    fn publish(&self, staged: Vec<StagedChunk>) -> StorageResult<()>;
    fn contains(&self, id: &ChunkId) -> StorageResult<bool>;
    /// The chunk's bytes, verified against its id; `MissingChunk` when absent.
    fn read(&self, id: &ChunkId) -> StorageResult<Vec<u8>>;
    /// Removes a chunk; removing an absent chunk is not an error.
    fn delete(&self, id: &ChunkId) -> StorageResult<()>;
    /// When the chunk was stored (Unix nanoseconds); `None` when absent.
    fn modified(&self, id: &ChunkId) -> StorageResult<Option<i64>>;
    /// Every stored chunk (for fsck, GC and tests).
    fn list(&self) -> StorageResult<Vec<ChunkId>>;
    /// Removes temporary files a crash left behind; returns how many.
    fn clean_temp(&self) -> StorageResult<usize>;
}
