//! Chunk storage: immutable blobs addressed by their BLAKE3 [`ChunkId`].
//!
//! The trait speaks the domain, not the medium (object_store is the model): no paths, temp
//! files or `fsync`s in its contract. A backend stages and syncs however it likes inside
//! [`ChunkStore::put_many`]; what it promises is that the bytes are durable when the call
//! returns. Chunks are content-addressed, so every call is idempotent and two servers may
//! put the same chunk at the same time.

pub mod fs;
pub mod s3;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use super::StorageResult;
use bytes::Bytes;
use volebarn_core::timefmt::UnixNanos;
use volebarn_core::ChunkId;

/// A stored chunk as [`ChunkStore::list`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredChunk {
    pub id: ChunkId,
    pub len: u64,
    /// When the bytes were last stored (a repeated put refreshes it): GC's orphan grace
    /// counts from here, so a chunk uploaded for a commit still in flight is never collected.
    pub stored_at: UnixNanos,
}

#[async_trait::async_trait]
pub trait ChunkStore: Send + Sync + 'static {
    /// Stores every chunk (each `data` hashes to its `id`; the caller has checked). Durable
    /// when it returns; storing a chunk that is already there keeps one copy.
    async fn put_many(&self, chunks: Vec<(ChunkId, Bytes)>) -> StorageResult<()>;
    /// The chunk's bytes, verified against its id; `MissingChunk` when absent, `Corrupt`
    /// when the stored bytes no longer match.
    async fn get(&self, id: &ChunkId) -> StorageResult<Bytes>;
    /// For each id in order, the stored length, or `None` when the chunk is absent.
    async fn contains_many(&self, ids: &[ChunkId]) -> StorageResult<Vec<Option<u64>>>;
    /// Removes a chunk; removing an absent chunk is not an error.
    async fn delete(&self, id: &ChunkId) -> StorageResult<()>;
    /// Every stored chunk (for GC and fsck), in id order.
    async fn list(&self) -> StorageResult<Vec<StoredChunk>>;
}
