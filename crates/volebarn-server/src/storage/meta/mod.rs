//! Metadata storage: files, directories, chunk refcounts, versions, journal, indexes.

pub mod postgres;
pub mod resolve;
pub mod rocks;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use super::records::{Change, ChunkInfo, Claim, DeadProps, DirRecord, FileRecord, VersionRecord};
use super::StorageResult;
use bytes::Bytes;
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
    /// Add `delta` references to a chunk of `size` bytes; a count reaching zero removes it
    /// (and its inline bytes, if it has any).
    AdjustChunk {
        id: ChunkId,
        size: u32,
        delta: i64,
    },
    /// The bytes of a small chunk, kept in the metadata store itself and committed with the
    /// records that reference it ([docs/design.md](docs/design.md) §8): no file, rename or fsync of its own. Sent
    /// together with the chunk's first reference.
    PutChunkData(ChunkId, Bytes),
    PutVersion(VPath, VersionRecord),
    DeleteVersion(VPath, u64),
    /// Records a claim to check later (idempotent: keyed by [`Claim::key`]).
    PutClaim(Claim),
    /// The claim with this key has been checked.
    DeleteClaim([u8; 32]),
    /// Append to the journal (`change.rev` comes from [`MetaTxn::next_rev`]).
    Journal(Change),
    /// Forget journal entries with `rev <= upto` (the journal floor becomes `upto`).
    TrimJournal(u64),
    /// Replace (`Some`) or remove (`None`) the WebDAV dead properties of a path.
    SetDeadProps(VPath, Option<DeadProps>),
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

/// What a commit tells the caller.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Chunks whose refcount reached zero. Inline bytes went with the commit; bytes in the
    /// chunk store are now orphans, which GC deletes after the grace period if nothing has
    /// referenced them again by then (never right away: another server may have just found
    /// them present and be about to commit a reference).
    pub freed_chunks: Vec<ChunkId>,
    /// The head revision after the commit.
    pub head: u64,
}

/// Metadata storage. Its methods block (call them from the blocking pool); a backend that
/// talks to a database over the network bridges with `Handle::block_on` there.
///
/// Reads outside a transaction see committed state and may run concurrently with anything.
/// Every mutation is one [`MetaTxn`]: read, check preconditions, write, commit — and
/// transactions are serializable, so refcount arithmetic never loses an update and no
/// revision is handed out twice, even with several servers sharing the store.
pub trait MetaStore: Send + Sync + 'static {
    fn get(&self, path: &VPath) -> StorageResult<Option<Entry>>;
    /// Direct children of `dir`, sorted by name.
    fn children(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>>;
    /// Everything below `dir` (not `dir` itself), in path order.
    fn descendants(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>>;
    fn chunk(&self, id: &ChunkId) -> StorageResult<Option<ChunkInfo>>;
    /// Kept versions of `path`, oldest first.
    fn versions(&self, path: &VPath) -> StorageResult<Vec<VersionRecord>>;
    /// Kept versions of the paths below `dir` — only its direct children when `direct_only`
    /// — in path-key order, each path's oldest first: the web UI's trash lists the deleted ones.
    fn versions_below(&self, dir: &VPath, direct_only: bool) -> StorageResult<Vec<(VPath, VersionRecord)>>;
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
    /// The bytes of a chunk kept inline (see [`MetaOp::PutChunkData`]), if this store has them.
    fn chunk_data(&self, id: &ChunkId) -> StorageResult<Option<Bytes>>;
    /// Claims not yet checked, at most `limit`.
    fn claims(&self, limit: usize) -> StorageResult<Vec<Claim>>;
    /// Whether the claim with this key is still unchecked.
    fn has_claim(&self, key: &[u8; 32]) -> StorageResult<bool>;
    /// The WebDAV dead properties of `path`, if any were set.
    fn dead_props(&self, path: &VPath) -> StorageResult<Option<DeadProps>>;
    /// The WebDAV dead properties of every path below `dir` (not `dir` itself), in path order.
    fn dead_props_below(&self, dir: &VPath) -> StorageResult<Vec<(VPath, DeadProps)>>;
    /// Reference records of chunks with ids above `after`, in id order, at most `limit`:
    /// fsck walks every record in pages instead of holding them all.
    fn chunks_page(&self, after: Option<&ChunkId>, limit: usize) -> StorageResult<Vec<(ChunkId, ChunkInfo)>>;
    /// Inline chunk bytes (see [`MetaOp::PutChunkData`]) with ids above `after`, in id order,
    /// at most `limit`: fsck re-hashes them.
    fn chunk_data_page(&self, after: Option<&ChunkId>, limit: usize) -> StorageResult<Vec<(ChunkId, Bytes)>>;
    /// Kept versions after `after` (a path and revision) in path-key, then revision order, at
    /// most `limit`, with their paths and revisions: fsck counts their chunk references.
    fn versions_page(
        &self,
        after: Option<&(VPath, u64)>,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, u64, VersionRecord)>>;
    /// Starts a write transaction; it waits while another one is open.
    fn begin(&self) -> StorageResult<Box<dyn MetaTxn + '_>>;
    /// Sees the head revision after every commit — by any server sharing the store — so
    /// long-polls wake without a channel of their own.
    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// One write transaction. Reads see the state committed before it began (the caller keeps
/// its own overlay of what it is about to write); nothing is visible to anyone until
/// [`MetaTxn::commit`], and dropping the transaction discards it.
pub trait MetaTxn {
    fn get(&self, path: &VPath) -> StorageResult<Option<Entry>>;
    fn descendants(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>>;
    fn versions(&self, path: &VPath) -> StorageResult<Vec<VersionRecord>>;
    fn versions_archived_before(
        &self,
        before: i64,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, VersionRecord)>>;
    fn chunk(&self, id: &ChunkId) -> StorageResult<Option<ChunkInfo>>;
    fn has_chunk_data(&self, id: &ChunkId) -> StorageResult<bool>;
    /// [`MetaTxn::get`] of many paths, in order: one round trip on a networked store.
    fn get_many(&self, paths: &[VPath]) -> StorageResult<Vec<Option<Entry>>> {
        paths.iter().map(|p| self.get(p)).collect()
    }
    /// [`MetaTxn::chunk`] of many chunks, in order.
    fn chunk_many(&self, ids: &[ChunkId]) -> StorageResult<Vec<Option<ChunkInfo>>> {
        ids.iter().map(|id| self.chunk(id)).collect()
    }
    /// [`MetaTxn::has_chunk_data`] of many chunks, in order.
    fn has_chunk_data_many(&self, ids: &[ChunkId]) -> StorageResult<Vec<bool>> {
        ids.iter().map(|id| self.has_chunk_data(id)).collect()
    }
    fn files_with_hash(&self, xxh3: u64) -> StorageResult<Vec<VPath>>;
    fn journal_floor(&self) -> StorageResult<u64>;
    /// The next revision, allocated by the store inside this transaction: revisions are
    /// unique and increase in commit order. The head becomes the last one allocated.
    fn next_rev(&mut self) -> u64;
    /// Applies every op atomically and durably.
    fn commit(self: Box<Self>, batch: MetaBatch) -> StorageResult<CommitOutcome>;
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub files: u64,
    /// Sum of current file sizes (logical bytes, before dedup).
    pub file_bytes: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
}
