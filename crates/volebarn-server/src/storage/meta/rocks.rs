//! [`MetaStore`] on RocksDB ([docs/design.md](docs/design.md) §4).
//!
//! Keys: a path is stored with `/` replaced by `0x00`, so that the children of a directory
//! are one prefix and the whole subtree sorts together. Versions append `0xFF ‖ rev` (0xFF
//! never occurs in UTF-8). Journal and revision keys are big-endian `u64`.

use super::resolve::resolve;
use super::{CommitOutcome, Entry, MetaBatch, MetaStore, MetaTxn, StoreStats};
use crate::storage::codec::{decode, encode};
use crate::storage::records::{Change, ChunkInfo, Claim, DeadProps, DirRecord, FileRecord, VersionRecord};
use crate::storage::{StorageError, StorageResult};
use bytes::Bytes;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use volebarn_core::{ChunkId, VPath};

const CF_FILES: &str = "files";
const CF_DIRS: &str = "directories";
const CF_HASH: &str = "hash_index";
const CF_MODIFIED: &str = "modified_index";
const CF_CHUNKS: &str = "chunks";
const CF_VERSIONS: &str = "versions";
const CF_JOURNAL: &str = "journal";
const CF_META: &str = "meta";
/// Inline bytes of small chunks ([docs/design.md](docs/design.md) §8), in blob files: values stay out of the LSM
/// tree's compactions, keys stay small.
const CF_CHUNK_DATA: &str = "chunk_data";
/// Chunked commits whose whole-file hash is not checked yet: `Claim::key` → `Claim`.
const CF_CLAIMS: &str = "claims";
/// WebDAV dead properties by path key (added without a schema bump: a missing column family
/// is created at open and starts empty).
const CF_DEAD_PROPS: &str = "dead_props";
const ALL_CFS: [&str; 11] = [
    CF_FILES,
    CF_DIRS,
    CF_HASH,
    CF_MODIFIED,
    CF_CHUNKS,
    CF_VERSIONS,
    CF_JOURNAL,
    CF_META,
    CF_CHUNK_DATA,
    CF_CLAIMS,
    CF_DEAD_PROPS,
];

const KEY_HEAD_REV: &[u8] = b"head_rev";
const KEY_SCHEMA: &[u8] = b"schema_version";
const KEY_STATS: &[u8] = b"stats";
const KEY_JOURNAL_FLOOR: &[u8] = b"journal_floor";
/// 2 added `chunk_data` and `claims`; a version-1 directory opens as is (the new column families start
/// empty, and chunks written before live in the chunk store, where reads fall back to).
const SCHEMA_VERSION: u32 = 2;

pub struct RocksMetaStore {
    db: DB,
    /// The single writer: one transaction at a time, so the read-check-write of a mutation
    /// and its revisions are serialized ([docs/design.md](docs/design.md) §8). Readers never take it.
    writer: Mutex<()>,
    head: tokio::sync::watch::Sender<u64>,
    /// Group commit: the WAL sequence number known to be on disk. A transaction writes its
    /// batch under the writer lock, releases the lock, then makes the WAL durable up to its
    /// own write; one thread fsyncs at a time and the others usually find their write
    /// already covered, so concurrent commits share fsyncs instead of queueing for one each.
    synced: Mutex<u64>,
}

fn db_err(e: rocksdb::Error) -> StorageError {
    StorageError::Db(e.into_string())
}

/// `a/b/c` → `a\0b\0c`.
pub fn path_key(p: &VPath) -> Vec<u8> {
    p.as_str()
        .bytes()
        .map(|b| if b == b'/' { 0 } else { b })
        .collect()
}

pub(super) fn key_path(k: &[u8]) -> StorageResult<VPath> {
    let s: Vec<u8> = k.iter().map(|&b| if b == 0 { b'/' } else { b }).collect();
    let s = String::from_utf8(s).map_err(|_| StorageError::Corrupt("non-UTF-8 key".into()))?;
    VPath::parse(&s).map_err(|e| StorageError::Corrupt(format!("bad stored path {s:?}: {e}")))
}

/// Prefix of every key strictly below `dir`.
pub(super) fn subtree_prefix(dir: &VPath) -> Vec<u8> {
    let mut k = path_key(dir);
    if !dir.is_root() {
        k.push(0);
    }
    k
}

fn version_prefix(p: &VPath) -> Vec<u8> {
    let mut k = path_key(p);
    k.push(0xFF);
    k
}

fn version_key(p: &VPath, rev: u64) -> Vec<u8> {
    let mut k = version_prefix(p);
    k.extend_from_slice(&rev.to_be_bytes());
    k
}

/// Where the path ends in a version key, `path 0xFF rev`: a path key is UTF-8 and never
/// holds 0xFF, so exactly nine bytes from the end — the revision's own bytes may be 0xFF
/// (revision 255), so searching for the last 0xFF would split inside it.
fn version_split(k: &[u8]) -> StorageResult<usize> {
    k.len()
        .checked_sub(9)
        .filter(|&i| k[i] == 0xFF)
        .ok_or_else(|| StorageError::Corrupt("bad version key".into()))
}

fn hash_key(xxh3: u64, p: &VPath) -> Vec<u8> {
    let mut k = xxh3.to_be_bytes().to_vec();
    k.extend_from_slice(&path_key(p));
    k
}

/// mtime as an order-preserving unsigned key (flip the sign bit).
fn mtime_key(mtime: i64, p: &VPath) -> Vec<u8> {
    let mut k = ((mtime as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    k.extend_from_slice(&path_key(p));
    k
}

fn be_u64(b: &[u8]) -> StorageResult<u64> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| StorageError::Corrupt("bad u64 value".into()))?;
    Ok(u64::from_be_bytes(arr))
}

#[derive(bitcode::Encode, bitcode::Decode, Default, Clone, Copy)]
struct StatsRecord {
    files: u64,
    file_bytes: u64,
    chunks: u64,
    chunk_bytes: u64,
}

impl RocksMetaStore {
    pub fn open(dir: &Path) -> StorageResult<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.increase_parallelism(2);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf_opts = Options::default();
            if *name == CF_CHUNK_DATA {
                cf_opts.set_enable_blob_files(true);
                cf_opts.set_min_blob_size(4096);
            }
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(db_err)?;
        let mut store = RocksMetaStore {
            db,
            writer: Mutex::new(()),
            head: tokio::sync::watch::Sender::new(0),
            synced: Mutex::new(0),
        };
        let stored = store.db.get_cf(store.cf(CF_META), KEY_SCHEMA).map_err(db_err)?;
        let version = match stored {
            None => 0,
            Some(v) => u32::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("bad schema version".into()))?,
            ),
        };
        if version > SCHEMA_VERSION {
            return Err(StorageError::Corrupt(format!(
                "metadata schema version {version} is newer than this server's {SCHEMA_VERSION}"
            )));
        }
        if version < SCHEMA_VERSION {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            store
                .db
                .put_cf_opt(store.cf(CF_META), KEY_SCHEMA, SCHEMA_VERSION.to_be_bytes(), &wo)
                .map_err(db_err)?;
        }
        store.head = tokio::sync::watch::Sender::new(store.head_rev()?);
        Ok(store)
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        // Every name in ALL_CFS is created at open, so the handle always exists.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| unreachable!("column family {name} opened with the DB"))
    }

    fn get_decoded<T: bitcode::DecodeOwned>(&self, cf: &str, key: &[u8]) -> StorageResult<Option<T>> {
        match self.db.get_pinned_cf(self.cf(cf), key).map_err(db_err)? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Entries of one CF below `dir`; with `direct_only`, skips whole subtrees by seeking past
    /// them, so a listing costs O(children), not O(descendants).
    fn scan_below(
        &self,
        cf_name: &str,
        dir: &VPath,
        direct_only: bool,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = subtree_prefix(dir);
        let mut it = self.db.raw_iterator_cf(self.cf(cf_name));
        it.seek(&prefix);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            if direct_only {
                let rest = &k[prefix.len()..];
                if let Some(i) = rest.iter().position(|&b| b == 0) {
                    // `child\0…` all sort before `child\x01`: jump over the whole subtree.
                    let mut skip = k[..prefix.len() + i].to_vec();
                    skip.push(1);
                    it.seek(&skip);
                    continue;
                }
            }
            out.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status().map_err(db_err)?;
        Ok(out)
    }

    fn entries_below(&self, dir: &VPath, direct_only: bool) -> StorageResult<Vec<(VPath, Entry)>> {
        let mut out = Vec::new();
        for (k, v) in self.scan_below(CF_FILES, dir, direct_only)? {
            out.push((key_path(&k)?, Entry::File(decode(&v)?)));
        }
        for (k, v) in self.scan_below(CF_DIRS, dir, direct_only)? {
            out.push((key_path(&k)?, Entry::Dir(decode(&v)?)));
        }
        out.sort_by_cached_key(|(p, _)| path_key(p));
        Ok(out)
    }

    /// Raw values of a column family keyed by chunk id, after `after`, at most `limit`.
    fn id_page(
        &self,
        cf: &str,
        after: Option<&ChunkId>,
        limit: usize,
    ) -> StorageResult<Vec<(ChunkId, Vec<u8>)>> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf));
        match after {
            Some(id) => it.seek(id.0),
            None => it.seek_to_first(),
        }
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if out.len() == limit {
                break;
            }
            if after.is_none_or(|a| a.0 != k) {
                let id: [u8; 32] = k
                    .try_into()
                    .map_err(|_| StorageError::Corrupt(format!("bad chunk key in {cf}")))?;
                out.push((ChunkId(id), v.to_vec()));
            }
            it.next();
        }
        it.status().map_err(db_err)?;
        Ok(out)
    }

    fn stats_record(&self) -> StorageResult<StatsRecord> {
        Ok(self.get_decoded(CF_META, KEY_STATS)?.unwrap_or_default())
    }
}

impl MetaStore for RocksMetaStore {
    fn chunk_data(&self, id: &ChunkId) -> StorageResult<Option<Bytes>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_CHUNK_DATA), id.0)
            .map_err(db_err)?
            .map(Bytes::from))
    }

    fn claims(&self, limit: usize) -> StorageResult<Vec<Claim>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_CLAIMS), rocksdb::IteratorMode::Start)
            .take(limit)
        {
            let (_, v) = item.map_err(db_err)?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    fn has_claim(&self, key: &[u8; 32]) -> StorageResult<bool> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_CLAIMS), key)
            .map_err(db_err)?
            .is_some())
    }

    fn dead_props(&self, path: &VPath) -> StorageResult<Option<DeadProps>> {
        self.get_decoded(CF_DEAD_PROPS, &path_key(path))
    }

    fn dead_props_below(&self, dir: &VPath) -> StorageResult<Vec<(VPath, DeadProps)>> {
        let prefix = subtree_prefix(dir);
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_DEAD_PROPS), &prefix) {
            let (k, v) = item.map_err(db_err)?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push((key_path(&k)?, decode(&v)?));
        }
        Ok(out)
    }

    fn chunks_page(&self, after: Option<&ChunkId>, limit: usize) -> StorageResult<Vec<(ChunkId, ChunkInfo)>> {
        self.id_page(CF_CHUNKS, after, limit)?
            .into_iter()
            .map(|(id, v)| Ok((id, decode(&v)?)))
            .collect()
    }

    fn chunk_data_page(&self, after: Option<&ChunkId>, limit: usize) -> StorageResult<Vec<(ChunkId, Bytes)>> {
        Ok(self
            .id_page(CF_CHUNK_DATA, after, limit)?
            .into_iter()
            .map(|(id, v)| (id, Bytes::from(v)))
            .collect())
    }

    fn versions_page(
        &self,
        after: Option<&(VPath, u64)>,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, u64, VersionRecord)>> {
        let start = after.map(|(p, rev)| version_key(p, *rev));
        let mut it = self.db.raw_iterator_cf(self.cf(CF_VERSIONS));
        match &start {
            Some(k) => it.seek(k),
            None => it.seek_to_first(),
        }
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if out.len() == limit {
                break;
            }
            if start.as_deref() != Some(k) {
                let i = version_split(k)?;
                out.push((key_path(&k[..i])?, be_u64(&k[i + 1..])?, decode(v)?));
            }
            it.next();
        }
        it.status().map_err(db_err)?;
        Ok(out)
    }

    fn begin(&self) -> StorageResult<Box<dyn MetaTxn + '_>> {
        let guard = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let head = self.head_rev()?;
        Ok(Box::new(RocksTxn {
            store: self,
            _writer: guard,
            head,
            next: head + 1,
        }))
    }

    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.subscribe()
    }

    fn get(&self, path: &VPath) -> StorageResult<Option<Entry>> {
        if path.is_root() {
            return Ok(Some(Entry::Dir(DirRecord { mtime: 0, rev: 0 })));
        }
        let key = path_key(path);
        if let Some(f) = self.get_decoded::<FileRecord>(CF_FILES, &key)? {
            return Ok(Some(Entry::File(f)));
        }
        Ok(self.get_decoded::<DirRecord>(CF_DIRS, &key)?.map(Entry::Dir))
    }

    fn children(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>> {
        self.entries_below(dir, true)
    }

    fn descendants(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>> {
        self.entries_below(dir, false)
    }

    fn chunk(&self, id: &ChunkId) -> StorageResult<Option<ChunkInfo>> {
        self.get_decoded(CF_CHUNKS, &id.0)
    }

    fn versions(&self, path: &VPath) -> StorageResult<Vec<VersionRecord>> {
        let prefix = version_prefix(path);
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_VERSIONS), &prefix) {
            let (k, v) = item.map_err(db_err)?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    fn versions_below(&self, dir: &VPath, direct_only: bool) -> StorageResult<Vec<(VPath, VersionRecord)>> {
        let prefix = subtree_prefix(dir);
        let mut it = self.db.raw_iterator_cf(self.cf(CF_VERSIONS));
        it.seek(&prefix);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            let split = version_split(k)?;
            if split < prefix.len() {
                return Err(StorageError::Corrupt("bad version key".into()));
            }
            let rest = &k[prefix.len()..split];
            if let Some(i) = rest.iter().position(|&b| b == 0).filter(|_| direct_only) {
                // A deeper path: `child\0…` all sort before `child\x01`; jump over them.
                let mut skip = k[..prefix.len() + i].to_vec();
                skip.push(1);
                it.seek(&skip);
                continue;
            }
            out.push((key_path(&k[..split])?, decode::<VersionRecord>(v)?));
            it.next();
        }
        it.status().map_err(db_err)?;
        // `a 0xFF` sorts after `ab 0xFF`: put the paths back in path-key order.
        out.sort_by_cached_key(|(p, v)| (path_key(p), v.file.rev));
        Ok(out)
    }

    fn head_rev(&self) -> StorageResult<u64> {
        match self.db.get_cf(self.cf(CF_META), KEY_HEAD_REV).map_err(db_err)? {
            Some(v) => be_u64(&v),
            None => Ok(0),
        }
    }

    fn descendants_page(
        &self,
        dir: &VPath,
        after: Option<&VPath>,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, Entry)>> {
        let prefix = subtree_prefix(dir);
        let start = match after {
            Some(a) if path_key(a) > prefix => path_key(a),
            _ => prefix.clone(),
        };
        let mut out = Vec::new();
        for (cf_name, is_file) in [(CF_FILES, true), (CF_DIRS, false)] {
            let mut it = self.db.raw_iterator_cf(self.cf(cf_name));
            it.seek(&start);
            let mut taken = 0;
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if !k.starts_with(&prefix) || taken == limit {
                    break;
                }
                if after.is_none() || k != start.as_slice() {
                    let entry = if is_file {
                        Entry::File(decode(v)?)
                    } else {
                        Entry::Dir(decode(v)?)
                    };
                    out.push((k.to_vec(), key_path(k)?, entry));
                    taken += 1;
                }
                it.next();
            }
            it.status().map_err(db_err)?;
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.truncate(limit);
        Ok(out.into_iter().map(|(_, p, e)| (p, e)).collect())
    }

    fn versions_archived_before(
        &self,
        before: i64,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, VersionRecord)>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_VERSIONS), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item.map_err(db_err)?;
            let rec: VersionRecord = decode(&v)?;
            if rec.archived_at < before {
                let i = version_split(&k)?;
                out.push((key_path(&k[..i])?, rec));
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn journal_floor(&self) -> StorageResult<u64> {
        match self
            .db
            .get_cf(self.cf(CF_META), KEY_JOURNAL_FLOOR)
            .map_err(db_err)?
        {
            Some(v) => be_u64(&v),
            None => Ok(0),
        }
    }

    fn changes_since(&self, since: u64, limit: usize) -> StorageResult<Vec<Change>> {
        let start = since.saturating_add(1).to_be_bytes();
        let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_JOURNAL), mode).take(limit) {
            let (_, v) = item.map_err(db_err)?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    fn files_with_hash(&self, xxh3: u64) -> StorageResult<Vec<VPath>> {
        let prefix = xxh3.to_be_bytes();
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_HASH), prefix) {
            let (k, _) = item.map_err(db_err)?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(key_path(&k[8..])?);
        }
        Ok(out)
    }

    fn modified_since(&self, since: i64) -> StorageResult<Vec<VPath>> {
        let start = ((since as u64) ^ (1 << 63)).to_be_bytes();
        let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_MODIFIED), mode) {
            let (k, _) = item.map_err(db_err)?;
            out.push(key_path(&k[8..])?);
        }
        Ok(out)
    }

    fn stats(&self) -> StorageResult<StoreStats> {
        let s = self.stats_record()?;
        Ok(StoreStats {
            files: s.files,
            file_bytes: s.file_bytes,
            chunks: s.chunks,
            chunk_bytes: s.chunk_bytes,
        })
    }
}

/// The open transaction: holds the writer lock until committed or dropped.
struct RocksTxn<'a> {
    store: &'a RocksMetaStore,
    _writer: MutexGuard<'a, ()>,
    head: u64,
    next: u64,
}

impl MetaTxn for RocksTxn<'_> {
    fn get(&self, path: &VPath) -> StorageResult<Option<Entry>> {
        self.store.get(path)
    }

    fn descendants(&self, dir: &VPath) -> StorageResult<Vec<(VPath, Entry)>> {
        self.store.descendants(dir)
    }

    fn versions(&self, path: &VPath) -> StorageResult<Vec<VersionRecord>> {
        self.store.versions(path)
    }

    fn versions_archived_before(
        &self,
        before: i64,
        limit: usize,
    ) -> StorageResult<Vec<(VPath, VersionRecord)>> {
        self.store.versions_archived_before(before, limit)
    }

    fn chunk(&self, id: &ChunkId) -> StorageResult<Option<ChunkInfo>> {
        self.store.chunk(id)
    }

    fn has_chunk_data(&self, id: &ChunkId) -> StorageResult<bool> {
        Ok(self
            .store
            .db
            .get_pinned_cf(self.store.cf(CF_CHUNK_DATA), id.0)
            .map_err(db_err)?
            .is_some())
    }

    fn journal_floor(&self) -> StorageResult<u64> {
        self.store.journal_floor()
    }

    fn files_with_hash(&self, xxh3: u64) -> StorageResult<Vec<VPath>> {
        self.store.files_with_hash(xxh3)
    }

    fn next_rev(&mut self) -> u64 {
        let r = self.next;
        self.next += 1;
        r
    }

    fn commit(self: Box<Self>, batch: MetaBatch) -> StorageResult<CommitOutcome> {
        let head = self.next - 1;
        let advanced = head > self.head;
        let store = self.store;
        let (mut outcome, seq) = store.apply(batch, advanced.then_some(head))?;
        outcome.head = head;
        // The batch is visible; the next transaction may start while this one waits for
        // the disk. It is acknowledged (and long-polls woken) only once durable — and the
        // WAL is sequential, so anything a later transaction read is durable before it is.
        drop(self);
        store.make_durable(seq)?;
        if advanced {
            store.head.send_if_modified(|h| {
                let newer = head > *h;
                if newer {
                    *h = head;
                }
                newer
            });
        }
        Ok(outcome)
    }
}

impl RocksMetaStore {
    /// Makes the WAL durable at least up to sequence number `seq` (see `synced`).
    fn make_durable(&self, seq: u64) -> StorageResult<()> {
        let mut synced = self
            .synced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *synced >= seq {
            return Ok(());
        }
        let upto = self.db.latest_sequence_number();
        self.db.flush_wal(true).map_err(db_err)?;
        *synced = upto;
        Ok(())
    }

    /// Writes one batch (the caller holds the writer lock), setting the head to `head`;
    /// returns the outcome and the batch's WAL sequence number, not yet synced.
    fn apply(&self, batch: MetaBatch, head: Option<u64>) -> StorageResult<(CommitOutcome, u64)> {
        let r = resolve(
            batch,
            |p| self.get_decoded(CF_FILES, &path_key(p)),
            |id| self.chunk(id),
            self.stats()?,
        )?;
        let mut wb = WriteBatch::default();
        for (path, d) in &r.files {
            let key = path_key(path);
            if let Some(old) = &d.old {
                wb.delete_cf(self.cf(CF_HASH), hash_key(old.xxh3, path));
                wb.delete_cf(self.cf(CF_MODIFIED), mtime_key(old.mtime, path));
            }
            match &d.new {
                Some(rec) => {
                    wb.put_cf(self.cf(CF_HASH), hash_key(rec.xxh3, path), []);
                    wb.put_cf(self.cf(CF_MODIFIED), mtime_key(rec.mtime, path), []);
                    wb.put_cf(self.cf(CF_FILES), &key, encode(rec));
                }
                None => wb.delete_cf(self.cf(CF_FILES), &key),
            }
        }
        for (path, d) in &r.dirs {
            match d {
                Some(rec) => wb.put_cf(self.cf(CF_DIRS), path_key(path), encode(rec)),
                None => wb.delete_cf(self.cf(CF_DIRS), path_key(path)),
            }
        }
        for (id, d) in &r.chunks {
            match &d.new {
                Some(info) => wb.put_cf(self.cf(CF_CHUNKS), id.0, encode(info)),
                None => {
                    wb.delete_cf(self.cf(CF_CHUNKS), id.0);
                    wb.delete_cf(self.cf(CF_CHUNK_DATA), id.0);
                }
            }
        }
        for (id, data) in &r.chunk_data {
            wb.put_cf(self.cf(CF_CHUNK_DATA), id.0, data);
        }
        for ((path, rev), v) in &r.versions {
            match v {
                Some(v) => wb.put_cf(self.cf(CF_VERSIONS), version_key(path, *rev), encode(v)),
                None => wb.delete_cf(self.cf(CF_VERSIONS), version_key(path, *rev)),
            }
        }
        for (key, claim) in &r.claims {
            match claim {
                Some(c) => wb.put_cf(self.cf(CF_CLAIMS), key, encode(c)),
                None => wb.delete_cf(self.cf(CF_CLAIMS), key),
            }
        }
        for (path, props) in &r.dead_props {
            match props {
                Some(p) => wb.put_cf(self.cf(CF_DEAD_PROPS), path_key(path), encode(p)),
                None => wb.delete_cf(self.cf(CF_DEAD_PROPS), path_key(path)),
            }
        }
        if let Some(upto) = r.trim {
            let end = upto.saturating_add(1).to_be_bytes();
            wb.delete_range_cf(self.cf(CF_JOURNAL), 0u64.to_be_bytes(), end);
            let floor = upto.max(self.journal_floor()?);
            wb.put_cf(self.cf(CF_META), KEY_JOURNAL_FLOOR, floor.to_be_bytes());
        }
        for change in &r.journal {
            wb.put_cf(self.cf(CF_JOURNAL), change.rev.to_be_bytes(), encode(change));
        }
        if let Some(h) = head {
            wb.put_cf(self.cf(CF_META), KEY_HEAD_REV, h.to_be_bytes());
        }
        let s = r.stats;
        let stats = StatsRecord {
            files: s.files,
            file_bytes: s.file_bytes,
            chunks: s.chunks,
            chunk_bytes: s.chunk_bytes,
        };
        wb.put_cf(self.cf(CF_META), KEY_STATS, encode(&stats));
        self.db.write(wb).map_err(db_err)?;
        let seq = self.db.latest_sequence_number();
        Ok((
            CommitOutcome {
                freed_chunks: r.freed(),
                head: 0,
            },
            seq,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MetaOp;

    #[test]
    fn conformance() {
        super::super::conformance::run_all(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = RocksMetaStore::open(&dir.path().join("meta")).expect("open");
            (store, dir)
        });
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = VPath::parse("a/b.txt").expect("path");
        let rev = {
            let s = RocksMetaStore::open(&dir.path().join("meta")).expect("open");
            let mut tx = s.begin().expect("begin");
            let rev = tx.next_rev();
            let mut b = MetaBatch::default();
            b.push(MetaOp::PutFile(
                p.clone(),
                FileRecord {
                    size: 1,
                    xxh3: 2,
                    mtime: 3,
                    rev,
                    chunks: vec![],
                },
            ));
            b.push(MetaOp::Journal(Change {
                rev,
                kind: crate::storage::ChangeKind::Put,
                path: p.to_string(),
                to_path: None,
                at: 3,
            }));
            tx.commit(b).expect("commit");
            rev
        };
        let s = RocksMetaStore::open(&dir.path().join("meta")).expect("reopen");
        assert!(matches!(s.get(&p).expect("get"), Some(Entry::File(f)) if f.rev == rev));
        assert_eq!(s.head_rev().expect("head"), rev);
        assert_eq!(*s.watch_head().borrow(), rev);
        assert_eq!(s.stats().expect("stats").files, 1);
    }

    #[test]
    fn a_version_1_data_directory_opens_and_keeps_its_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta");
        let p = VPath::parse("old/file.txt").expect("path");
        let rec = FileRecord {
            size: 5,
            xxh3: 6,
            mtime: 7,
            rev: 3,
            chunks: vec![crate::storage::ChunkRef { id: [1; 32], len: 5 }],
        };
        {
            // What an earlier server left: the eight original column families, schema 1.
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let old_cfs = &ALL_CFS[..8];
            let db = DB::open_cf(&opts, &path, old_cfs).expect("old db");
            let cf = |n: &str| db.cf_handle(n).expect("cf");
            db.put_cf(cf(CF_META), KEY_SCHEMA, 1u32.to_be_bytes())
                .expect("schema");
            db.put_cf(cf(CF_META), KEY_HEAD_REV, 3u64.to_be_bytes())
                .expect("head");
            db.put_cf(cf(CF_FILES), path_key(&p), encode(&rec)).expect("file");
        }
        let s = RocksMetaStore::open(&path).expect("opens the old directory");
        assert_eq!(s.get(&p).expect("get"), Some(Entry::File(rec)));
        assert_eq!(s.head_rev().expect("head"), 3);
        let mut tx = s.begin().expect("begin");
        assert_eq!(tx.next_rev(), 4, "revisions continue after the old head");
        drop(tx);
        let schema =
            s.db.get_cf(s.cf(CF_META), KEY_SCHEMA)
                .expect("read")
                .expect("schema");
        assert_eq!(schema, SCHEMA_VERSION.to_be_bytes());
    }
}
