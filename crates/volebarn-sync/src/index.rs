//! The `FileIndex`: per path, what the last scan saw locally (stat + hash, so an unchanged file
//! is never read again) and the base both sides agreed on at the last sync ([docs/design.md](docs/design.md) §6).
//! Held in memory while the engine runs and persisted in RocksDB under `<folder>/.volebarn/index`;
//! each pass writes only the entries that changed, in one synced batch (a pass that changes
//! more than [`BATCH_ENTRIES`] writes them to a table file that is ingested whole, see
//! [`FileIndex::stage`]).

use crate::error::{Result, SyncError};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use volebarn_client::Xxh3;
use volebarn_core::sorted::{MapBuilder, TieredMap};
use volebarn_core::sync::BaseState;

/// A folder-relative path as the engine's maps hold it: one allocation shared by the index, the
/// scan, the mirror of the server and a pass's base, instead of a `String` in each (at 100,000
/// files each copy was 5-6 MB). `triomphe`'s `Arc` counts references with one word where the
/// standard one keeps two (it has no weak references): a 14-byte path then fits a 32-byte
/// allocator chunk instead of a 48-byte one (1.6 MB at 100,000 files).
pub type Key = triomphe::Arc<str>;

/// Serde for a list of [`Key`]s, as strings (`#[serde(with = "crate::index::key_list")]`).
pub mod key_list {
    use super::Key;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(keys: &[Key], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(|k| &**k))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Key>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        Ok(names.into_iter().map(Key::from).collect())
    }
}

/// The key `map` holds for `path`, to share rather than copy.
pub fn held_key<V>(map: &BTreeMap<Key, V>, path: &str) -> Option<Key> {
    map.get_key_value(path).map(|(k, _)| Key::clone(k))
}

/// A local file as stat + hash: the hash is valid while size, mtime and inode are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bitcode::Encode, bitcode::Decode)]
pub struct Stat {
    pub size: u64,
    pub mtime: i64,
    pub inode: u64,
    pub xxh3: u64,
}

impl Stat {
    /// The same file as last seen, by size, mtime and inode: then its hash still holds.
    pub fn same_file(&self, other: &Stat) -> bool {
        (self.size, self.mtime, self.inode) == (other.size, other.mtime, other.inode)
    }
}

/// The file's state for the planner.
impl volebarn_core::sync::AsLocalState for Stat {
    fn local_state(&self) -> volebarn_core::sync::LocalState {
        volebarn_core::sync::LocalState {
            xxh3: Xxh3(self.xxh3),
            size: self.size,
            mtime: self.mtime,
        }
    }
}

/// The agreed state at the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bitcode::Encode, bitcode::Decode)]
pub struct Base {
    pub xxh3: u64,
    pub size: u64,
    pub mtime: i64,
    pub rev: u64,
}

impl From<BaseState> for Base {
    fn from(b: BaseState) -> Self {
        Base {
            xxh3: b.xxh3.0,
            size: b.size,
            mtime: b.mtime,
            rev: b.rev,
        }
    }
}

impl From<Base> for BaseState {
    fn from(b: Base) -> Self {
        BaseState {
            xxh3: Xxh3(b.xxh3),
            size: b.size,
            mtime: b.mtime,
            rev: b.rev,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bitcode::Encode, bitcode::Decode)]
pub struct Entry {
    /// What the last scan saw (None: not there).
    pub local: Option<Stat>,
    pub base: Option<Base>,
    /// A directory that existed on both sides at the last sync: gone from one side since
    /// means deleted there, not new on the other.
    pub dir: bool,
}

impl volebarn_core::sync::AsBaseState for Entry {
    fn base_state(&self) -> Option<BaseState> {
        self.base.map(BaseState::from)
    }
}

/// The base of every synced path of `entries`, in path order.
pub fn bases(entries: &BTreeMap<Key, Entry>) -> impl Iterator<Item = (&Key, BaseState)> {
    use volebarn_core::sync::AsBaseState;
    entries.iter().filter_map(|(p, e)| e.base_state().map(|b| (p, b)))
}

/// A pass's base: the index's bases, with what the pass changed on top of them (a path's new
/// base, or `None`: no longer synced). A pass that changes a few files copies nothing of the
/// folder's base; at 100,000 files the copy was 13 MB. The changes are held in a
/// [`TieredMap`], so a first sync's 100,000 new bases, recorded one by one as uploads land,
/// fill their nodes (6 MB where a plain map took 10.8).
pub struct PassBase {
    index: Arc<BTreeMap<Key, Entry>>,
    changed: TieredMap<Key, Option<BaseState>>,
}

impl PassBase {
    /// The index's bases as they are.
    pub fn new(index: Arc<BTreeMap<Key, Entry>>) -> PassBase {
        PassBase {
            index,
            changed: TieredMap::default(),
        }
    }

    pub fn get(&self, path: &str) -> Option<BaseState> {
        match self.changed.get(path) {
            Some(b) => *b,
            None => self.index.get(path).and_then(|e| e.base).map(BaseState::from),
        }
    }

    pub fn insert(&mut self, path: Key, base: BaseState) {
        self.changed.insert(path, Some(base));
    }

    pub fn remove(&mut self, path: &str) {
        if self.get(path).is_some() {
            self.changed.insert(self.key(path), None);
        }
    }

    /// `path` as a [`Key`]: the one this base or the index holds already, if any (so it is
    /// not copied).
    pub fn key(&self, path: &str) -> Key {
        self.changed
            .get_key_value(path)
            .map(|(k, _)| Key::clone(k))
            .or_else(|| held_key(&self.index, path))
            .unwrap_or_else(|| Key::from(path))
    }

    /// Moves the base of `from` and of everything below it to the same place below `to`.
    pub fn move_keys(&mut self, from: &str, to: &str) {
        let changed = self
            .changed
            .range_from(from)
            .take_while(|(p, _)| p.starts_with(from))
            .filter(|(p, _)| crate::scan::covers(from, p));
        let moved: Vec<(Key, BaseState)> = volebarn_core::sorted::join(
            crate::scan::covered(&self.index, from).map(|(p, e)| (&**p, (p, e.base))),
            changed.map(|(p, b)| (&**p, (p, *b))),
        )
        .filter_map(|(_, was, now)| match now {
            Some((k, now)) => now.map(|b| (Key::clone(k), b)),
            None => was.and_then(|(k, b)| b.map(|b| (Key::clone(k), BaseState::from(b)))),
        })
        .collect();
        for (p, b) in moved {
            let to_key = Key::from(format!("{to}{}", &p[from.len()..]));
            self.changed.insert(p, None);
            self.changed.insert(to_key, Some(b));
        }
    }

    /// Every synced path's base, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, BaseState)> + '_ {
        volebarn_core::sorted::join(
            bases(&self.index).map(|(p, b)| (&**p, (p, b))),
            self.changed.iter().map(|(p, b)| (&**p, (p, *b))),
        )
        .filter_map(|(_, was, now)| match now {
            Some((k, now)) => now.map(|b| (k, b)),
            None => was,
        })
    }

    /// The paths whose base differs from the index's, with the new one (`None`: no longer
    /// synced), in path order; the base is freed as they are read.
    pub fn into_changes(self) -> impl Iterator<Item = (Key, Option<BaseState>)> {
        let index = self.index;
        self.changed
            .into_iter()
            .filter(move |(p, now)| index.get(&**p).and_then(|e| e.base).map(BaseState::from) != *now)
    }
}

const FILE_PREFIX: u8 = b'f';
/// Changes up to this many go in one synced write batch; more go in a table file that is
/// ingested whole (see [`FileIndex::stage`]).
pub const BATCH_ENTRIES: usize = 4096;
/// RocksDB's memtable: flushed to disk (and freed) once it holds this much, instead of
/// RocksDB's 64 MiB, which after a first sync would stay in memory for the life of a watch.
const WRITE_BUFFER: usize = 2 << 20;
const META_PREFIX: u8 = b'm';

/// The index's options: one set for the database and for the table files its large changes
/// are written to.
fn options() -> &'static rocksdb::Options {
    static OPTIONS: std::sync::LazyLock<rocksdb::Options> = std::sync::LazyLock::new(|| {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_max_open_files(64);
        opts.set_keep_log_file_num(2);
        opts.set_compression_type(rocksdb::DBCompressionType::Snappy);
        // A client process writes one batch per pass: its log buffer and memtable blocks need
        // not be RocksDB's server-sized defaults (1 MiB each, held at a first sync's peak).
        opts.set_writable_file_max_buffer_size(64 * 1024);
        opts.set_arena_block_size(64 * 1024);
        opts.set_write_buffer_size(WRITE_BUFFER);
        opts
    });
    &OPTIONS
}

/// A sorted table file that a large change is written to, beside the index, and then
/// ingested into it whole; removed if it never is.
struct Table {
    writer: rocksdb::SstFileWriter<'static>,
    path: std::path::PathBuf,
}

impl Table {
    fn create(path: std::path::PathBuf) -> std::result::Result<Table, rocksdb::Error> {
        let writer = rocksdb::SstFileWriter::create(options());
        writer.open(&path)?;
        Ok(Table { writer, path })
    }

    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> std::result::Result<(), rocksdb::Error> {
        match value {
            Some(v) => self.writer.put(key, v),
            None => self.writer.delete(key),
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // Ingested (moved into the index) or abandoned: either way not left behind.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies a write batch's puts and deletes, in order, into a table.
struct Replay<'a> {
    table: &'a mut Table,
    error: Option<rocksdb::Error>,
}

impl rocksdb::WriteBatchIterator for Replay<'_> {
    fn put(&mut self, key: Box<[u8]>, value: Box<[u8]>) {
        if self.error.is_none() {
            self.error = self.table.write(&key, Some(&value)).err();
        }
    }

    fn delete(&mut self, key: Box<[u8]>) {
        if self.error.is_none() {
            self.error = self.table.write(&key, None).err();
        }
    }
}

/// A pass's changes to the index, found and written aside by [`FileIndex::stage`].
pub struct Staged {
    /// The changes as RocksDB writes them, while they fit in one batch.
    batch: rocksdb::WriteBatch,
    /// The changes as RocksDB writes them, once they do not.
    table: Option<Table>,
    written: usize,
    /// The changes as entries for the index's map, while they are few (else `rebuilt`).
    changes: Vec<(Key, Option<Entry>)>,
    /// The new entries, once they are many.
    rebuilt: Option<BTreeMap<Key, Entry>>,
}

impl Staged {
    /// The index as it will be, every entry in path order (`old`: as given to
    /// [`FileIndex::stage`]).
    pub fn next<'a>(
        &'a self,
        old: &'a BTreeMap<Key, Entry>,
    ) -> Box<dyn Iterator<Item = (&'a str, Entry)> + 'a> {
        match &self.rebuilt {
            Some(next) => Box::new(next.iter().map(|(p, e)| (&**p, *e))),
            None => Box::new(
                volebarn_core::sorted::join(
                    old.iter().map(|(p, e)| (&**p, *e)),
                    self.changes.iter().map(|(p, e)| (&**p, *e)),
                )
                .filter_map(|(p, old, change)| change.unwrap_or(old).map(|e| (p, e))),
            ),
        }
    }
}

pub struct FileIndex {
    db: rocksdb::DB,
    dir: std::path::PathBuf,
    /// The persisted state, as last written; shared (not copied) with the scan that reads it
    /// on another thread.
    pub entries: Arc<BTreeMap<Key, Entry>>,
}

/// Every entry of the index in `db` (at `dir`), in path order.
fn read_entries(db: &rocksdb::DB, dir: &Path) -> Result<BTreeMap<Key, Entry>> {
    let corrupt = |reason: String| SyncError::Corrupt {
        path: dir.to_path_buf(),
        reason,
    };
    // Keys come sorted: the map is built with full nodes. Read once, so not kept in RocksDB's
    // block cache (at 100,000 files that cache held 7 MB for the rest of the process).
    let mut read = rocksdb::ReadOptions::default();
    read.fill_cache(false);
    read.set_prefix_same_as_start(true);
    let mut entries = MapBuilder::default();
    for item in db.iterator_opt(
        rocksdb::IteratorMode::From(&[FILE_PREFIX], rocksdb::Direction::Forward),
        read,
    ) {
        let (k, v) = item.map_err(|source| SyncError::Index {
            path: dir.to_path_buf(),
            source,
        })?;
        if k.first() != Some(&FILE_PREFIX) {
            break;
        }
        let path = std::str::from_utf8(&k[1..]).map_err(|_| corrupt("a key is not UTF-8".into()))?;
        let entry: Entry = bitcode::decode(&v).map_err(|e| corrupt(format!("entry {path:?}: {e}")))?;
        entries.push(Key::from(path), entry);
    }
    Ok(entries.finish())
}

/// Where a large change is written before it is ingested: beside the index, on the same
/// filesystem, so that ingesting it is a link.
fn table_path(dir: &Path) -> std::path::PathBuf {
    dir.with_extension("table")
}

fn key(prefix: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1);
    k.push(prefix);
    k.extend_from_slice(name.as_bytes());
    k
}

impl FileIndex {
    /// Opens (or creates) the index in `dir`; fails clearly when another process holds it.
    pub fn open(dir: &Path) -> Result<FileIndex> {
        // What a pass that was stopped left of a large change (see FileIndex::stage).
        let _ = std::fs::remove_file(table_path(dir));
        let index_error = |source| SyncError::Index {
            path: dir.to_path_buf(),
            source,
        };
        let db = rocksdb::DB::open(options(), dir).map_err(|e| {
            if e.to_string().contains("lock") {
                SyncError::InUse(dir.to_path_buf())
            } else {
                index_error(e)
            }
        })?;
        let entries = read_entries(&db, dir)?;
        Ok(FileIndex {
            db,
            dir: dir.to_path_buf(),
            entries: Arc::new(entries),
        })
    }

    /// Persists `next` as the new state, writing only what differs ([`FileIndex::apply`]).
    pub fn commit(&mut self, next: BTreeMap<Key, Entry>) -> Result<usize> {
        self.commit_with(next, &[])
    }

    /// [`FileIndex::commit`], with metadata written (`Some`) or deleted (`None`) in the same
    /// batch, so the two cannot disagree after a crash.
    pub fn commit_with(
        &mut self,
        next: BTreeMap<Key, Entry>,
        meta: &[(&str, Option<&[u8]>)],
    ) -> Result<usize> {
        // Both maps are sorted: one merge finds what was added, changed or removed.
        let changes: Vec<(Key, Option<Entry>)> = volebarn_core::sorted::join(self.entries.iter(), &next)
            .filter(|(_, old, new)| old != new)
            .map(|(p, _, new)| (Key::clone(p), new.copied()))
            .collect();
        self.apply(changes, meta)
    }

    /// Persists `changes` (each path once, in path order: its new entry, or `None` to remove
    /// it) and `meta` (written, or deleted with `None`), and applies them to `entries`
    /// ([`FileIndex::stage`], then [`FileIndex::commit_staged`]).
    pub fn apply(
        &mut self,
        changes: Vec<(Key, Option<Entry>)>,
        meta: &[(&str, Option<&[u8]>)],
    ) -> Result<usize> {
        let old = Arc::clone(&self.entries);
        let staged = self.stage(&old, changes)?;
        drop(old);
        self.commit_staged(staged, meta)
    }

    /// Writes `changes` aside as they come (each path once, in path order: its new entry, or
    /// `None` to remove it), against `old`, the index's entries as they are (shared with the
    /// caller, who finds the changes by walking them). Nothing is in the index and `entries`
    /// is unchanged until [`FileIndex::commit_staged`].
    ///
    /// Up to [`BATCH_ENTRIES`] changes go in one write batch. More go to a sorted table file
    /// beside the index as they are found, which `commit_staged` ingests whole, with the
    /// metadata: neither a batch, nor RocksDB's memtable and its log, nor a list of the
    /// changes holds a whole folder, a crash leaves the index as it was or as it is to be,
    /// and a first sync's index lands as one table in RocksDB's last level, which nothing
    /// compacts again.
    ///
    /// The new entries are kept as a list while they are few; past an eighth of the index they
    /// are merged with `old` into a new map as they come.
    pub fn stage(
        &mut self,
        old: &BTreeMap<Key, Entry>,
        changes: impl IntoIterator<Item = (Key, Option<Entry>)>,
    ) -> Result<Staged> {
        let mut st = Staged {
            batch: rocksdb::WriteBatch::default(),
            table: None,
            written: 0,
            changes: Vec::new(),
            rebuilt: None,
        };
        let few = (old.len() / 8).max(BATCH_ENTRIES);
        let mut rest = old.iter().peekable();
        let mut builder: Option<MapBuilder<Key, Entry>> = None;
        // The entries of `old` before `path`, then `path`'s new entry in place of its old one.
        let mut feed = |b: &mut MapBuilder<Key, Entry>, path: Key, e: Option<Entry>| {
            while let Some((k, o)) = rest.next_if(|(k, _)| **k < path) {
                b.push(Key::clone(k), *o);
            }
            rest.next_if(|(k, _)| **k == path);
            if let Some(e) = e {
                b.push(path, e);
            }
        };
        for (p, e) in changes {
            let k = key(FILE_PREFIX, &p);
            let value = e.map(|e| bitcode::encode(&e));
            match (&mut st.table, &value) {
                (Some(t), v) => t.write(&k, v.as_deref()).map_err(|e| self.error(e))?,
                (None, Some(v)) => st.batch.put(k, v),
                (None, None) => st.batch.delete(k),
            }
            st.written += 1;
            if st.table.is_none() && st.batch.len() > BATCH_ENTRIES {
                let mut table = Table::create(table_path(&self.dir)).map_err(|e| self.error(e))?;
                let mut replay = Replay {
                    table: &mut table,
                    error: None,
                };
                std::mem::take(&mut st.batch).iterate(&mut replay);
                if let Some(e) = replay.error {
                    return Err(self.error(e));
                }
                st.table = Some(table);
            }
            if builder.is_none() && st.changes.len() >= few {
                // Many: from here on the new map is built as the changes come.
                let mut b = MapBuilder::default();
                for (k, e) in std::mem::take(&mut st.changes) {
                    feed(&mut b, k, e);
                }
                builder = Some(b);
            }
            match &mut builder {
                Some(b) => feed(b, p, e),
                None => st.changes.push((p, e)),
            }
        }
        if let Some(mut b) = builder {
            for (k, o) in rest {
                b.push(Key::clone(k), *o);
            }
            st.rebuilt = Some(b.finish());
        }
        Ok(st)
    }

    /// Writes `staged` with `meta` (written, or deleted with `None`) in one synced batch, or
    /// ingests its table with `meta` added, and applies the changes to `entries`.
    pub fn commit_staged(&mut self, staged: Staged, meta: &[(&str, Option<&[u8]>)]) -> Result<usize> {
        let Staged {
            mut batch,
            table,
            written,
            changes,
            rebuilt,
        } = staged;
        match table {
            Some(mut table) => {
                // A table's keys go in order: the metadata's prefix sorts after the files'.
                let mut meta: Vec<_> = meta
                    .iter()
                    .map(|(name, v)| (key(META_PREFIX, name), *v))
                    .collect();
                meta.sort_by(|a, b| a.0.cmp(&b.0));
                for (k, v) in &meta {
                    table.write(k, *v).map_err(|e| self.error(e))?;
                }
                table.writer.finish().map_err(|e| self.error(e))?;
                let mut opts = rocksdb::IngestExternalFileOptions::default();
                // Linked into the index, not copied; RocksDB syncs it and its log of files.
                opts.set_move_files(true);
                self.db
                    .ingest_external_file_opts(&opts, vec![&table.path])
                    .map_err(|e| self.failed(e))?;
            }
            None => {
                for (name, value) in meta {
                    match value {
                        Some(v) => batch.put(key(META_PREFIX, name), v),
                        None => batch.delete(key(META_PREFIX, name)),
                    }
                }
                if !batch.is_empty() {
                    let mut w = rocksdb::WriteOptions::default();
                    w.set_sync(true);
                    self.db.write_opt(batch, &w).map_err(|e| self.failed(e))?;
                }
            }
        }
        match rebuilt {
            Some(next) => self.entries = Arc::new(next),
            None if !changes.is_empty() => {
                volebarn_core::sorted::apply_changes(Arc::make_mut(&mut self.entries), changes);
            }
            None => {}
        }
        Ok(written + meta.len())
    }

    /// A write that failed may still have reached the index (a sync or an ingestion that
    /// failed after its data was in): the entries are read back, so they hold what the index
    /// on disk says.
    fn failed(&mut self, source: rocksdb::Error) -> SyncError {
        if let Ok(entries) = read_entries(&self.db, &self.dir) {
            self.entries = Arc::new(entries);
        }
        self.error(source)
    }

    pub fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.db.get(key(META_PREFIX, name)).map_err(|e| self.error(e))
    }

    pub fn put_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        let mut w = rocksdb::WriteOptions::default();
        w.set_sync(true);
        self.db
            .put_opt(key(META_PREFIX, name), value, &w)
            .map_err(|e| self.error(e))
    }

    fn error(&self, source: rocksdb::Error) -> SyncError {
        SyncError::Index {
            path: self.dir.clone(),
            source,
        }
    }

    /// Paths with a base: what was in sync last time.
    pub fn base_count(&self) -> usize {
        self.entries.values().filter(|e| e.base.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_persists_only_changes_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let stat = Stat {
            size: 5,
            mtime: 7,
            inode: 9,
            xxh3: 11,
        };
        let base = Base {
            xxh3: 11,
            size: 5,
            mtime: 7,
            rev: 3,
        };
        {
            let mut idx = FileIndex::open(dir.path()).unwrap();
            assert!(idx.entries.is_empty());
            let mut next = BTreeMap::new();
            next.insert(
                Key::from("a/b.txt"),
                Entry {
                    local: Some(stat),
                    base: Some(base),
                    dir: false,
                },
            );
            next.insert(
                Key::from("c"),
                Entry {
                    local: Some(stat),
                    base: None,
                    dir: false,
                },
            );
            assert_eq!(idx.commit(next.clone()).unwrap(), 2);
            assert_eq!(
                idx.commit(next.clone()).unwrap(),
                0,
                "nothing changed, nothing written"
            );
            next.remove("c");
            assert_eq!(idx.commit(next).unwrap(), 1);
            // Changes applied in place; a scan still holding the old state keeps it.
            let held_by_a_scan = Arc::clone(&idx.entries);
            let changed = Entry {
                local: None,
                ..held_by_a_scan["a/b.txt"]
            };
            let changes = vec![(Key::from("a/b.txt"), Some(changed)), (Key::from("d"), None)];
            assert_eq!(idx.apply(changes, &[("m", Some(b"1"))]).unwrap(), 3);
            assert_eq!(idx.entries["a/b.txt"], changed);
            assert_eq!(held_by_a_scan["a/b.txt"].local, Some(stat));
            assert_eq!(idx.apply(Vec::new(), &[]).unwrap(), 0);
            idx.put_meta("cursor", b"42").unwrap();
            assert!(FileIndex::open(dir.path()).is_err(), "a second opener is refused");
        }
        let idx = FileIndex::open(dir.path()).unwrap();
        assert_eq!(idx.entries.len(), 1);
        assert_eq!(idx.entries["a/b.txt"].base, Some(base));
        assert_eq!(idx.entries["a/b.txt"].local, None);
        assert_eq!(idx.get_meta("m").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(idx.get_meta("cursor").unwrap().as_deref(), Some(&b"42"[..]));
        assert_eq!(idx.base_count(), 1);
    }

    /// A synced entry with base `n` (every field), a directory when `dir`.
    fn synced(n: u64, dir: bool) -> Entry {
        Entry {
            local: None,
            base: Some(Base {
                xxh3: n,
                size: n,
                mtime: 1,
                rev: n,
            }),
            dir,
        }
    }

    #[test]
    fn a_large_change_is_ingested_whole_and_all_of_it_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |n: u64| synced(n, false);
        let n = BATCH_ENTRIES * 2 + 5;
        let paths: Vec<Key> = (0..n).map(|i| Key::from(format!("d/{i:06}"))).collect();
        {
            let mut idx = FileIndex::open(dir.path()).unwrap();
            idx.put_meta("cursor", b"old").unwrap();
            let changes = paths
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), Some(entry(i as u64))))
                .collect();
            assert_eq!(idx.apply(changes, &[("cursor", Some(b"new"))]).unwrap(), n + 1);
            assert_eq!(idx.entries.len(), n);
            assert_eq!(idx.get_meta("cursor").unwrap().as_deref(), Some(&b"new"[..]));
            assert!(
                !table_path(dir.path()).exists(),
                "the table is moved into the index"
            );
            // Then most of them removed again, through a table too (the map is rebuilt).
            let removed = paths[..n - 3].iter().map(|p| (p.clone(), None)).collect();
            assert_eq!(idx.apply(removed, &[("cursor", None)]).unwrap(), n - 3 + 1);
            assert_eq!(
                idx.entries.keys().collect::<Vec<_>>(),
                paths[n - 3..].iter().collect::<Vec<_>>()
            );
        }
        let idx = FileIndex::open(dir.path()).unwrap();
        assert_eq!(
            idx.entries.keys().collect::<Vec<_>>(),
            paths[n - 3..].iter().collect::<Vec<_>>()
        );
        assert_eq!(idx.entries[&*paths[n - 1]], entry(n as u64 - 1));
        assert_eq!(idx.get_meta("cursor").unwrap(), None);
    }

    #[test]
    fn a_large_change_stopped_before_its_commit_leaves_the_index_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let index_dir = dir.path().join("index");
        let entry = |n: u64| synced(n, false);
        let old: Vec<(Key, Option<Entry>)> = (0..10)
            .map(|i| (Key::from(format!("a{i:02}")), Some(entry(i))))
            .collect();
        {
            let mut idx = FileIndex::open(&index_dir).unwrap();
            idx.apply(old.clone(), &[("cursor", Some(b"7"))]).unwrap();
            let before = Arc::clone(&idx.entries);
            let changes = (0..BATCH_ENTRIES * 2).map(|i| (Key::from(format!("b{i:06}")), Some(entry(1))));
            let staged = idx.stage(&before, changes).unwrap();
            assert!(
                table_path(&index_dir).exists(),
                "the changes went to a table, not the index"
            );
            assert_eq!(idx.entries, before, "nothing is in the index before the commit");
            // The process dies here: the table stays on disk, half-made.
            std::mem::forget(staged);
        }
        let idx = FileIndex::open(&index_dir).unwrap();
        assert!(
            !table_path(&index_dir).exists(),
            "what the stopped pass left is removed"
        );
        assert_eq!(
            idx.entries
                .iter()
                .map(|(k, e)| (k.clone(), Some(*e)))
                .collect::<Vec<_>>(),
            old
        );
        assert_eq!(idx.get_meta("cursor").unwrap().as_deref(), Some(&b"7"[..]));
    }

    #[test]
    fn many_changes_among_unchanged_entries_give_the_same_index_as_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |n: u64| synced(n, n.is_multiple_of(3));
        let n = BATCH_ENTRIES * 3;
        let paths: Vec<Key> = (0..n).map(|i| Key::from(format!("p{i:06}"))).collect();
        let mut idx = FileIndex::open(dir.path()).unwrap();
        idx.apply(
            paths
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), Some(entry(i as u64))))
                .collect(),
            &[],
        )
        .unwrap();
        // Every other path changed or removed, and new paths between the old ones: far more
        // than an eighth of the index, so the new map is built as the changes come.
        let mut changes: Vec<(Key, Option<Entry>)> = paths
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(i, p)| (p.clone(), (i % 4 != 0).then(|| entry(i as u64 + 7))))
            .collect();
        changes.extend(
            (0..n)
                .step_by(5)
                .map(|i| (Key::from(format!("p{i:06}x")), Some(entry(1)))),
        );
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected = (*idx.entries).clone();
        for (p, e) in &changes {
            match e {
                Some(e) => expected.insert(p.clone(), *e),
                None => expected.remove(&**p),
            };
        }
        let written = changes.len();
        assert_eq!(
            idx.apply(changes, &[("cursor", Some(b"9"))]).unwrap(),
            written + 1
        );
        assert_eq!(*idx.entries, expected);
        drop(idx);
        let idx = FileIndex::open(dir.path()).unwrap();
        assert_eq!(*idx.entries, expected, "the same on disk");
        assert_eq!(idx.get_meta("cursor").unwrap().as_deref(), Some(&b"9"[..]));
    }

    #[test]
    fn a_pass_base_reads_through_to_the_index_and_moves_and_forgets_on_top() {
        let base = |n: u64| BaseState::from(synced(n, false).base.unwrap());
        let index: BTreeMap<Key, Entry> = [
            ("a/x", Some(synced(1, false))),
            ("a/y", Some(synced(2, false))),
            ("a", Some(synced(0, true))),
            ("b", Some(synced(3, false))),
            ("n", Some(Entry::default())),
        ]
        .into_iter()
        .map(|(p, e)| (Key::from(p), e.unwrap()))
        .collect();
        let index = Arc::new(index);
        let mut pb = PassBase::new(Arc::clone(&index));
        assert_eq!(pb.get("b"), Some(base(3)));
        assert_eq!(pb.get("n"), None, "a path never synced has no base");
        assert_eq!(PassBase::new(Arc::clone(&index)).into_changes().count(), 0);
        pb.insert("c".into(), base(4));
        pb.remove("b");
        pb.remove("nothing");
        pb.insert("a/x".into(), base(1));
        pb.move_keys("a", "z/a");
        let all: Vec<(&str, BaseState)> = pb.iter().map(|(p, b)| (&**p, b)).collect();
        // The directory entry "a" itself has a base in this index, so it moves along.
        assert_eq!(
            all,
            [
                ("c", base(4)),
                ("z/a", base(0)),
                ("z/a/x", base(1)),
                ("z/a/y", base(2))
            ]
        );
        assert_eq!(pb.iter().count(), 4);
        let changes: Vec<(String, Option<BaseState>)> =
            pb.into_changes().map(|(p, b)| (p.to_string(), b)).collect();
        let changes: Vec<(&str, Option<BaseState>)> = changes.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        assert_eq!(
            changes,
            [
                ("a", None),
                ("a/x", None),
                ("a/y", None),
                ("b", None),
                ("c", Some(base(4))),
                ("z/a", Some(base(0))),
                ("z/a/x", Some(base(1))),
                ("z/a/y", Some(base(2))),
            ]
        );
        assert_eq!(index.len(), 5, "the index itself is untouched");
    }

    #[test]
    fn a_pass_base_with_thousands_of_changes_in_any_order_reads_like_one_map() {
        let base = |n: u64| BaseState {
            xxh3: Xxh3(n),
            size: n,
            mtime: 7,
            rev: n,
        };
        let index: BTreeMap<Key, Entry> = (0..3000u64)
            .map(|i| (Key::from(format!("d{}/f{i:05}", i % 7)), synced(i, false)))
            .collect();
        let index = Arc::new(index);
        // What the pass's base should read as, kept in a plain map.
        let mut model: BTreeMap<String, BaseState> = bases(&index).map(|(p, b)| (p.to_string(), b)).collect();
        let mut pb = PassBase::new(Arc::clone(&index));
        // New paths and new bases for old ones, landing out of order, as uploads do.
        for i in (0..6000u64).rev().filter(|i| i % 3 != 0) {
            let p = format!("d{}/f{i:05}", i % 7);
            pb.insert(Key::from(p.as_str()), base(i + 10_000));
            model.insert(p, base(i + 10_000));
        }
        for i in (0..6000u64).step_by(11) {
            let p = format!("d{}/f{i:05}", i % 7);
            pb.remove(&p);
            model.remove(&p);
        }
        pb.move_keys("d3", "moved/d3");
        let below: Vec<(String, BaseState)> = model
            .range("d3/".to_string().."d30".to_string())
            .map(|(p, b)| (p.clone(), *b))
            .collect();
        assert!(below.len() > 500);
        for (p, b) in below {
            model.remove(&p);
            model.insert(format!("moved/{p}"), b);
        }
        assert_eq!(pb.get("d2/f00002"), model.get("d2/f00002").copied());
        assert_eq!(pb.get("moved/d3/f00003"), model.get("moved/d3/f00003").copied());
        assert_eq!(pb.get("d3/f00003"), None);
        let all: Vec<(String, BaseState)> = pb.iter().map(|(p, b)| (p.to_string(), b)).collect();
        let want: Vec<(String, BaseState)> = model.iter().map(|(p, b)| (p.clone(), *b)).collect();
        assert_eq!(all, want);
        // The changes, applied to the index's bases, give the same.
        let mut applied: BTreeMap<String, BaseState> =
            bases(&index).map(|(p, b)| (p.to_string(), b)).collect();
        let read: Vec<(String, Option<BaseState>)> =
            pb.into_changes().map(|(p, b)| (p.to_string(), b)).collect();
        for (p, b) in &read {
            match b {
                Some(b) => applied.insert(p.clone(), *b),
                None => applied.remove(p),
            };
        }
        assert_eq!(applied, model);
    }
}
