//! Metadata storage: files, directories, chunk refcounts, versions, journal, indexes.

pub mod rocks;

#[cfg(test)]
pub mod conformance;

use super::records::{Change, ChunkInfo, DirRecord, FileRecord, VersionRecord};
use super::StorageResult;
use volebarn_core::{ChunkId, VPath};

/// What lives at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(FileRecord),
    Dir(DirRecord),
}

/// One change inside an atomic [`MetaBatch`].
#[derive(Debug, Clone)]
pub enum MetaOp {
    /// Create or replace a file record (indexes follow automatically).
    PutFile(VPath, FileRecord),
    DeleteFile(VPath),
    PutDir(VPath, DirRecord),
    DeleteDir(VPath),
    /// Add `delta` references to a chunk of `size` bytes; a count reaching zero removes it.
    AdjustChunk {
        id: ChunkId,
        size: u32,
        delta: i64,
    },
    PutVersion(VPath, VersionRecord),
    DeleteVersion(VPath, u64),
    /// Append to the journal; also advances the head revision to `change.rev`.
    Journal(Change),
    /// Forget journal entries with `rev <= upto` (the journal floor becomes `upto`).
    TrimJournal(u64),
}

/// Every metadata change of one operation, committed atomically and durably.
#[derive(Debug, Clone, Default)]
pub struct MetaBatch {
    pub ops: Vec<MetaOp>,
}

impl MetaBatch {
    pub fn push(&mut self, op: MetaOp) {
        self.ops.push(op);
    }
}

/// What a commit tells the caller to do next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Chunks whose refcount reached zero: their bytes may now be deleted.
    pub freed_chunks: Vec<ChunkId>,
}

/// Metadata storage. Reads may run concurrently with anything; `commit` calls are serialized
/// by the implementation, so refcount arithmetic never loses an update.
pub trait MetaStore: Send + Sync + 'static {
    fn get(&self, path: &VPath) -> StorageResult<Option<Entry>>;
    /// Direct children of `dir`, sorted by name.
    fn children(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>>;
    /// Everything below `dir` (not `dir` itself), in path order.
    fn descendants(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>>;
    fn chunk(&self, id: &ChunkId) -> StorageResult<Option<ChunkInfo>>;
    /// Kept versions of `path`, oldest first.
    fn versions(&self, path: &VPath) -> StorageResult<Vec<VersionRecord>>;
    /// The highest revision ever committed (0 for an empty store).
    fn head_rev(&self) -> StorageResult<u64>;
    /// Everything below `dir` in path order, starting after `after`, at most `limit`
    /// entries: pages of a manifest that never sits in memory whole.
    fn descendants_page(
        &self,
        dir: &VPath,
        after: Option<&VPath>,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, Entry)>>;
    /// Kept versions archived before `before`, at most `limit`, with their paths.
    fn versions_archived_before(
        &self,
        before: i64,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, VersionRecord)>>;
    /// Journal entries with `rev <= floor` have been trimmed away.
    fn journal_floor(&self) -> StorageResult<u64>;
    /// Journal entries with `rev > since`, oldest first, at most `limit`.
    fn changes_since(&self, since: u64, limit: usize) -> StorageResult<Vec<Change>>;
    /// Paths of current files whose content hash is `xxh3`.
    fn files_with_hash(&self, xxh3: u64) -> StorageResult<Vec<VPath>>;
    /// Paths of current files with `mtime >= since`, oldest first.
    fn modified_since(&self, since: i64) -> StorageResult<Vec<VPath>>;
    /// Number of files, number of chunks and bytes held by chunks.
    fn stats(&self) -> StorageResult<StoreStats>;
    fn commit(&self, batch: MetaBatch) -> StorageResult<CommitOutcome>;
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub files: u64,
    /// Sum of current file sizes (logical bytes, before dedup).
    pub file_bytes: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
}
