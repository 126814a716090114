//! One write transaction of the service on top of a [`MetaTxn`]: reads see the transaction's
//! own changes, every change lands in one `MetaBatch`, and revisions come from the store.
//!
//! At commit, every chunk that gains its first reference is checked to exist (inline bytes
//! sent with this transaction, or bytes in the chunk store) while the transaction is still
//! open. GC deletes unreferenced bytes inside a transaction too, so a commit and a deletion
//! of the same chunk are serialized by the store: whichever comes second sees the other
//! ([docs/design.md](docs/design.md) §8). That is what lets chunk uploads run without any lock.

use super::Inner;
use crate::error::{ServiceError, ServiceResult};
use crate::storage::{
    Change, ChangeKind, ChunkInfo, Claim, DeadProps, DirRecord, Entry, FileRecord, MetaBatch, MetaOp,
    MetaStore, MetaTxn, VersionRecord,
};
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use volebarn_core::timefmt::{now_nanos, UnixNanos};
use volebarn_core::{ChunkId, VPath};

/// Something that can say what lives at a path: committed state, or a transaction's view.
pub(crate) trait Lookup {
    fn lookup(&self, path: &VPath) -> ServiceResult<Option<Entry>>;
}

/// Committed state, read without a transaction (early checks before a body is read).
pub(crate) struct Committed<'a>(pub &'a dyn MetaStore);

impl Lookup for Committed<'_> {
    fn lookup(&self, path: &VPath) -> ServiceResult<Option<Entry>> {
        self.0
            .get(path)
            .map_err(|e| ServiceError::storage(path.as_str(), e))
    }
}

pub struct Tx<'a> {
    pub(crate) inner: &'a Inner,
    txn: Box<dyn MetaTxn + 'a>,
    rt: tokio::runtime::Handle,
    batch: MetaBatch,
    overlay: HashMap<VPath, Option<Entry>>,
    /// Committed state read so far. No other writer can commit while this transaction is
    /// open, so what was read once stays true; on a networked store this saves a round trip
    /// per repeated read (a bulk upload reads the same parent directories for every file).
    read: RefCell<HashMap<VPath, Option<Entry>>>,
    /// Committed chunk refcount records read so far (same reasoning).
    chunks_read: RefCell<HashMap<ChunkId, Option<ChunkInfo>>>,
    /// Bytes of small chunks this transaction may store inline, by id.
    inline: HashMap<ChunkId, Bytes>,
    /// One clock reading per transaction, so every record of it agrees.
    pub now: UnixNanos,
}

impl<'a> Tx<'a> {
    /// Opens a store transaction (waiting while another is open). Runs on the blocking pool;
    /// `rt` lets it wait for chunk-store calls there.
    pub(crate) fn begin(inner: &'a Inner, rt: tokio::runtime::Handle) -> ServiceResult<Self> {
        let txn = inner.meta.begin().map_err(|e| ServiceError::storage("", e))?;
        Ok(Tx {
            inner,
            txn,
            rt,
            batch: MetaBatch::default(),
            overlay: HashMap::new(),
            read: RefCell::default(),
            chunks_read: RefCell::default(),
            inline: HashMap::new(),
            now: now_nanos(),
        })
    }

    /// Waits for an async storage call from inside the transaction.
    pub(crate) fn wait<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The next revision, from the store; every journal entry gets its own.
    pub fn rev(&mut self) -> u64 {
        self.txn.next_rev()
    }

    /// What lives at `path`, including this transaction's changes.
    pub fn get(&self, path: &VPath) -> ServiceResult<Option<Entry>> {
        if let Some(e) = self.overlay.get(path) {
            return Ok(e.clone());
        }
        if let Some(e) = self.read.borrow().get(path) {
            return Ok(e.clone());
        }
        let e = self
            .txn
            .get(path)
            .map_err(|e| ServiceError::storage(path.as_str(), e))?;
        self.read.borrow_mut().insert(path.clone(), e.clone());
        Ok(e)
    }

    /// Reads `paths` and all their ancestors in one go (one round trip on a networked
    /// store), so the checks that follow find them in the read cache.
    pub fn prefetch<'p>(&self, paths: impl IntoIterator<Item = &'p VPath>) -> ServiceResult<()> {
        let mut wanted: Vec<VPath> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        {
            let read = self.read.borrow();
            for p in paths {
                for q in p.ancestors().into_iter().chain(std::iter::once(p.clone())) {
                    if !self.overlay.contains_key(&q) && !read.contains_key(&q) && seen.insert(q.clone()) {
                        wanted.push(q);
                    }
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let found = self
            .txn
            .get_many(&wanted)
            .map_err(|e| ServiceError::storage("", e))?;
        self.read.borrow_mut().extend(wanted.into_iter().zip(found));
        Ok(())
    }

    /// The committed refcount record of each chunk in `ids` (cached; misses in one round trip).
    fn chunk_infos(&self, ids: &[ChunkId]) -> ServiceResult<Vec<Option<ChunkInfo>>> {
        let missing: Vec<ChunkId> = {
            let read = self.chunks_read.borrow();
            let mut seen = std::collections::HashSet::new();
            ids.iter()
                .filter(|id| !read.contains_key(id) && seen.insert(**id))
                .copied()
                .collect()
        };
        if !missing.is_empty() {
            let found = self
                .txn
                .chunk_many(&missing)
                .map_err(|e| ServiceError::storage("", e))?;
            self.chunks_read
                .borrow_mut()
                .extend(missing.into_iter().zip(found));
        }
        let read = self.chunks_read.borrow();
        Ok(ids.iter().map(|id| read.get(id).copied().flatten()).collect())
    }

    /// Everything below `dir` as committed before this transaction.
    pub fn descendants(&self, dir: &VPath) -> ServiceResult<Vec<(VPath, Entry)>> {
        self.txn
            .descendants(dir)
            .map_err(|e| ServiceError::storage(dir.as_str(), e))
    }

    /// Kept versions of `path` as committed before this transaction, oldest first.
    pub fn versions(&self, path: &VPath) -> ServiceResult<Vec<VersionRecord>> {
        self.txn
            .versions(path)
            .map_err(|e| ServiceError::storage(path.as_str(), e))
    }

    pub fn versions_archived_before(
        &self,
        before: i64,
        limit: usize,
    ) -> ServiceResult<Vec<(VPath, VersionRecord)>> {
        self.txn
            .versions_archived_before(before, limit)
            .map_err(|e| ServiceError::storage("", e))
    }

    /// Whether anything references chunk `id` (as committed before this transaction).
    pub fn is_referenced(&self, id: &ChunkId) -> ServiceResult<bool> {
        Ok(self.referenced_len(id)?.is_some())
    }

    /// The stored length of a chunk something references (as committed before this
    /// transaction); `None` when nothing does.
    pub fn referenced_len(&self, id: &ChunkId) -> ServiceResult<Option<u32>> {
        Ok(self
            .chunk_infos(std::slice::from_ref(id))?
            .pop()
            .flatten()
            .map(|c| c.size))
    }

    /// Paths of current files whose content hash is `xxh3`.
    pub fn files_with_hash(&self, xxh3: u64) -> ServiceResult<Vec<VPath>> {
        self.txn
            .files_with_hash(xxh3)
            .map_err(|e| ServiceError::storage("", e))
    }

    /// Records a claim to check in the background (see [`Claim`]).
    pub fn open_claim(&mut self, claim: Claim) {
        self.batch.push(MetaOp::PutClaim(claim));
    }

    pub fn close_claim(&mut self, key: [u8; 32]) {
        self.batch.push(MetaOp::DeleteClaim(key));
    }

    /// Replaces a kept version in place (same revision), e.g. to correct its hash.
    pub fn rewrite_version(&mut self, path: &VPath, v: VersionRecord) {
        self.batch.push(MetaOp::PutVersion(path.clone(), v));
    }

    /// Deletes the chunk-store bytes of every chunk in `ids` that nothing references (GC,
    /// and the chunks of a failed upload); returns how many. Inside the transaction, so no
    /// commit can take a reference between the check and the deletion.
    pub fn delete_unreferenced(&mut self, ids: &[ChunkId]) -> ServiceResult<usize> {
        let mut deleted = 0;
        for id in ids {
            if self.is_referenced(id)? {
                continue;
            }
            let (chunks, id) = (self.inner.chunks.clone(), *id);
            self.wait(async move { chunks.delete(&id).await })
                .map_err(|e| ServiceError::storage("", e))?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Creates every missing parent directory of `path` (with revision `rev`); fails with
    /// 409 `not_a_directory` when an ancestor is a file.
    pub fn ensure_parents(&mut self, path: &VPath, rev: u64) -> ServiceResult<()> {
        self.prefetch([path])?;
        for anc in path.ancestors() {
            match self.get(&anc)? {
                Some(Entry::Dir(_)) => {}
                Some(Entry::File(_)) => {
                    return Err(ServiceError::NotADirectory {
                        path: path.to_string(),
                        blocker: anc.to_string(),
                    })
                }
                None => self.put_dir(anc, DirRecord { mtime: self.now, rev }),
            }
        }
        Ok(())
    }

    /// Stores a file record that references chunks it adds (`add_refs`) or that already
    /// hold a reference moved over from elsewhere (`add_refs = false`, e.g. a move).
    pub fn put_file(&mut self, path: VPath, rec: FileRecord, add_refs: bool) {
        if add_refs {
            self.adjust_chunks(&rec, 1);
        }
        self.overlay.insert(path.clone(), Some(Entry::File(rec.clone())));
        self.batch.push(MetaOp::PutFile(path, rec));
    }

    /// Offers the bytes of small chunks, stored inline if this transaction gives them their
    /// first reference.
    pub fn offer_inline(&mut self, chunks: impl IntoIterator<Item = (ChunkId, Bytes)>) {
        self.inline.extend(chunks);
    }

    /// Removes a file record without touching its chunk references (the caller archives or
    /// moves them).
    pub fn remove_file(&mut self, path: VPath) {
        self.overlay.insert(path.clone(), None);
        self.batch.push(MetaOp::SetDeadProps(path.clone(), None));
        self.batch.push(MetaOp::DeleteFile(path));
    }

    pub fn put_dir(&mut self, path: VPath, rec: DirRecord) {
        self.overlay.insert(path.clone(), Some(Entry::Dir(rec)));
        self.batch.push(MetaOp::PutDir(path, rec));
    }

    pub fn remove_dir(&mut self, path: VPath) {
        self.overlay.insert(path.clone(), None);
        self.batch.push(MetaOp::SetDeadProps(path.clone(), None));
        self.batch.push(MetaOp::DeleteDir(path));
    }

    /// The committed WebDAV dead properties of `path` (none: empty). No writer can commit
    /// while this transaction is open, so committed state is this transaction's view.
    pub fn committed_dead_props(&self, path: &VPath) -> ServiceResult<DeadProps> {
        self.inner
            .meta
            .dead_props(path)
            .map(Option::unwrap_or_default)
            .map_err(|e| ServiceError::storage(path.as_str(), e))
    }

    /// The committed WebDAV dead properties of every path below `dir`.
    pub fn committed_dead_props_below(&self, dir: &VPath) -> ServiceResult<Vec<(VPath, DeadProps)>> {
        self.inner
            .meta
            .dead_props_below(dir)
            .map_err(|e| ServiceError::storage(dir.as_str(), e))
    }

    /// Replaces the WebDAV dead properties of `path` (none left: removes them).
    pub fn set_dead_props(&mut self, path: VPath, props: DeadProps) {
        let props = (!props.props.is_empty()).then_some(props);
        self.batch.push(MetaOp::SetDeadProps(path, props));
    }

    pub fn adjust_chunks(&mut self, rec: &FileRecord, delta: i64) {
        for c in &rec.chunks {
            self.batch.push(MetaOp::AdjustChunk {
                id: c.chunk_id(),
                size: c.len,
                delta,
            });
        }
    }

    pub fn journal(&mut self, rev: u64, kind: ChangeKind, path: &VPath, to_path: Option<&VPath>) {
        self.batch.push(MetaOp::Journal(Change {
            rev,
            kind,
            path: path.to_string(),
            to_path: to_path.map(ToString::to_string),
            at: self.now,
        }));
    }

    /// Keeps `old` as a version of `path` (or releases its chunks when versions are off),
    /// dropping the oldest versions beyond the retention count.
    pub fn archive(&mut self, path: &VPath, old: FileRecord, deleted: bool) -> ServiceResult<()> {
        let keep = self.inner.config.versions_keep;
        if keep == 0 {
            self.adjust_chunks(&old, -1);
            return Ok(());
        }
        let existing = self.versions(path)?;
        let excess = (existing.len() + 1).saturating_sub(keep);
        for v in existing.iter().take(excess) {
            self.adjust_chunks(&v.file, -1);
            self.batch.push(MetaOp::DeleteVersion(path.clone(), v.file.rev));
        }
        let version = VersionRecord {
            file: old,
            deleted,
            archived_at: self.now,
        };
        self.batch.push(MetaOp::PutVersion(path.clone(), version));
        Ok(())
    }

    /// Forgets one kept version and releases its chunks.
    pub fn drop_version(&mut self, path: &VPath, v: &VersionRecord) {
        self.adjust_chunks(&v.file, -1);
        self.batch.push(MetaOp::DeleteVersion(path.clone(), v.file.rev));
    }

    /// Replaces or removes whatever is at `path` so something new can take its place:
    /// files become versions, directories are removed with everything below them.
    pub fn clear_path(&mut self, path: &VPath) -> ServiceResult<()> {
        match self.get(path)? {
            None => {}
            Some(Entry::File(f)) => {
                self.archive(path, f, true)?;
                self.remove_file(path.clone());
            }
            Some(Entry::Dir(_)) => {
                for (p, e) in self.descendants(path)? {
                    match e {
                        Entry::File(f) => {
                            self.archive(&p, f, true)?;
                            self.remove_file(p);
                        }
                        Entry::Dir(_) => self.remove_dir(p),
                    }
                }
                self.remove_dir(path.clone());
            }
        }
        Ok(())
    }

    /// Chunks that gain their first reference in this transaction: id → the length the
    /// records claim.
    fn first_references(&self) -> ServiceResult<BTreeMap<ChunkId, u32>> {
        let mut net: BTreeMap<ChunkId, (i64, u32)> = BTreeMap::new();
        for op in &self.batch.ops {
            if let MetaOp::AdjustChunk { id, size, delta } = op {
                let e = net.entry(*id).or_insert((0, *size));
                e.0 += delta;
            }
        }
        let gaining: Vec<(ChunkId, u32)> = net
            .into_iter()
            .filter(|(_, (delta, _))| *delta > 0)
            .map(|(id, (_, size))| (id, size))
            .collect();
        let ids: Vec<ChunkId> = gaining.iter().map(|(id, _)| *id).collect();
        let infos = self.chunk_infos(&ids)?;
        Ok(gaining
            .into_iter()
            .zip(infos)
            .filter(|(_, info)| info.is_none())
            .map(|(c, _)| c)
            .collect())
    }

    /// Makes sure the bytes of every newly referenced chunk exist with the claimed length:
    /// offered inline bytes are added to the batch, the rest must be in the chunk store.
    fn secure_chunks(&mut self) -> ServiceResult<()> {
        let mut elsewhere: Vec<(ChunkId, u32)> = Vec::new();
        let mut not_offered: Vec<(ChunkId, u32)> = Vec::new();
        for (id, len) in self.first_references()? {
            if let Some(data) = self.inline.remove(&id) {
                if data.len() as u64 != u64::from(len) {
                    return Err(self.bad_length(&id, len, data.len() as u64));
                }
                self.batch.push(MetaOp::PutChunkData(id, data));
            } else {
                not_offered.push((id, len));
            }
        }
        if !not_offered.is_empty() {
            let ids: Vec<ChunkId> = not_offered.iter().map(|(id, _)| *id).collect();
            let inline = self
                .txn
                .has_chunk_data_many(&ids)
                .map_err(|e| ServiceError::storage("", e))?;
            elsewhere.extend(
                not_offered
                    .into_iter()
                    .zip(inline)
                    .filter(|(_, inline)| !inline)
                    .map(|(c, _)| c),
            );
        }
        if elsewhere.is_empty() {
            return Ok(());
        }
        let ids: Vec<ChunkId> = elsewhere.iter().map(|(id, _)| *id).collect();
        let chunks = self.inner.chunks.clone();
        let found = self
            .wait(async move { chunks.contains_many(&ids).await })
            .map_err(|e| ServiceError::storage("", e))?;
        let mut missing = Vec::new();
        for ((id, len), stored) in elsewhere.iter().zip(found) {
            match stored {
                None => missing.push(*id),
                Some(n) if n != u64::from(*len) => return Err(self.bad_length(id, *len, n)),
                Some(_) => {}
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(ServiceError::MissingChunks {
            path: self.path_referencing(&missing[0]),
            ids: missing.iter().map(ChunkId::to_hex).collect(),
        })
    }

    fn path_referencing(&self, id: &ChunkId) -> String {
        self.batch
            .ops
            .iter()
            .find_map(|op| match op {
                MetaOp::PutFile(p, rec) if rec.chunks.iter().any(|c| c.id == id.0) => Some(p.to_string()),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn bad_length(&self, id: &ChunkId, claimed: u32, stored: u64) -> ServiceError {
        ServiceError::BadRequest {
            path: self.path_referencing(id),
            message: format!("chunk {id} is {stored} bytes, not {claimed}"),
        }
    }

    /// Secures newly referenced chunks and commits the batch in one durable write.
    pub(crate) fn commit(mut self) -> ServiceResult<()> {
        if self.batch.ops.is_empty() {
            return Ok(());
        }
        self.secure_chunks()?;
        let floor = self
            .txn
            .journal_floor()
            .map_err(|e| ServiceError::storage("", e))?;
        let journal_keep = self.inner.config.retention.journal_keep;
        let start = std::time::Instant::now();
        let Tx { txn, mut batch, .. } = self;
        let ops = batch.ops.len();
        // The head after this commit is at most the highest revision journaled in it.
        let head = batch
            .ops
            .iter()
            .filter_map(|op| match op {
                MetaOp::Journal(c) => Some(c.rev),
                _ => None,
            })
            .max();
        if let Some(upto) = head.and_then(|h| super::history::journal_trim_target(h, floor, journal_keep)) {
            batch.push(MetaOp::TrimJournal(upto));
        }
        let outcome = txn.commit(batch).map_err(|e| ServiceError::storage("", e))?;
        tracing::debug!(
            ops,
            freed = outcome.freed_chunks.len(),
            meta_ms = start.elapsed().as_millis() as u64,
            "commit"
        );
        Ok(())
    }
}
