//! [`ChunkStore`] on a local (or shared) filesystem: `<chunks>/ab/<blake3-hex>`, written
//! through `<tmp>/` on the same filesystem so that placing a chunk is a rename.
//!
//! One level of 256 directories, all made when the store opens, so placing a chunk never
//! creates a directory and makes exactly one directory durable. (The seed's three levels,
//! `ab/cd/ef/`, made a new directory — two inodes and two more directory fsyncs — for
//! almost every chunk of a store under 16 million chunks; see docs/storage.md.) Chunks a
//! server wrote in those three levels are still found, listed and deleted there.
//!
//! Write order inside [`ChunkStore::put_many`] ([docs/design.md](docs/design.md) §4): write every chunk to a temp
//! file → make the batch durable (one `syncfs` for a large batch, else an `fdatasync` per
//! file, in parallel) → rename into place → make the touched directories durable (one
//! `syncfs`, or an fsync per directory when there are few). Nothing is visible under a
//! chunk's id before its bytes are on disk, and a crash leaves at most temp files, which
//! are removed when the store is next opened.

use super::{ChunkStore, StoredChunk};
use crate::storage::{StorageError, StorageResult};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use volebarn_core::ChunkId;

#[derive(Clone)]
pub struct FsChunkStore {
    inner: Arc<Dirs>,
}

struct Dirs {
    root: PathBuf,
    tmp: PathBuf,
}

/// From this many chunks in one call, one `syncfs` beats an `fdatasync` per file.
const SYNCFS_FROM: usize = 8;
/// Above this many touched directories one `syncfs` is cheaper than an fsync per directory.
const MAX_DIR_FSYNCS: usize = 8;
/// Threads writing and renaming a large batch (file creation is latency-bound).
const IO_THREADS: usize = 4;
/// Temp files older than this are leftovers of a crash. Younger ones may belong to another
/// server sharing the directory, mid-`put_many`, so they are left alone.
const STALE_TEMP: Duration = Duration::from_secs(15 * 60);

impl FsChunkStore {
    /// Opens (creating) the store and removes temp files a crash left behind.
    pub fn open(chunks_dir: &Path, tmp_dir: &Path) -> StorageResult<Self> {
        fs::create_dir_all(chunks_dir)?;
        fs::create_dir_all(tmp_dir)?;
        let store = FsChunkStore {
            inner: Arc::new(Dirs {
                root: chunks_dir.to_path_buf(),
                tmp: tmp_dir.to_path_buf(),
            }),
        };
        store.inner.make_fan_out()?;
        let cleaned = store.inner.clean_stale_temp(STALE_TEMP)?;
        if cleaned > 0 {
            tracing::info!(files = cleaned, "removed temporary files left by an earlier run");
        }
        Ok(store)
    }

    /// Where a chunk's bytes live (tests and fsck look at the files themselves).
    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        self.inner.chunk_path(id)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Dirs) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(format!("chunk I/O task failed: {e}"))))?
    }
}

/// Splits `items` into at most `parts` groups of about equal size.
fn split<T>(mut items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let per = items.len().div_ceil(parts.max(1)).max(1);
    let mut out = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(per.min(items.len()));
        out.push(std::mem::replace(&mut items, rest));
    }
    out
}

/// Runs `f` on every group on its own thread and gathers the results.
fn in_parallel<T: Send, R: Send>(
    groups: Vec<Vec<T>>,
    f: impl Fn(Vec<T>) -> StorageResult<R> + Sync,
) -> StorageResult<Vec<R>> {
    if groups.len() <= 1 {
        return groups.into_iter().map(&f).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| {
                let f = &f;
                scope.spawn(move || f(g))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("chunk I/O thread panicked").into()))
            })
            .collect()
    })
}

fn syncfs(dir: &Path) -> std::io::Result<()> {
    let f = File::open(dir)?;
    rustix::fs::syncfs(&f).map_err(std::io::Error::from)
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A chunk written to a temp file, not yet under its id. Dropping it removes the file, so
/// a failed batch leaves nothing behind.
struct Staged {
    id: ChunkId,
    tmp: PathBuf,
    file: Option<File>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp.exists() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Dirs {
    fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[0..2]).join(hex)
    }

    /// Where a server before the flat layout put the chunk (`ab/cd/ef/<hex>`).
    fn legacy_path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(&hex[4..6])
            .join(hex)
    }

    /// Makes the 256 fan-out directories that are missing, durably.
    fn make_fan_out(&self) -> StorageResult<()> {
        let mut made = false;
        for b in 0..=255u8 {
            let dir = self.root.join(format!("{b:02x}"));
            match fs::create_dir(&dir) {
                Ok(()) => made = true,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        if made {
            fsync_dir(&self.root)?;
        }
        Ok(())
    }

    /// Runs `op` on the chunk's file, and on its pre-flat-layout file when the first is absent.
    fn at_either<T>(&self, id: &ChunkId, op: impl Fn(&Path) -> std::io::Result<T>) -> std::io::Result<T> {
        match op(&self.chunk_path(id)) {
            Err(e) if e.kind() == ErrorKind::NotFound => op(&self.legacy_path(id)),
            other => other,
        }
    }

    fn stage(&self, id: ChunkId, data: &[u8]) -> StorageResult<Staged> {
        let mut staged = Staged {
            id,
            tmp: self.tmp.join(format!("{:032x}.chunk", rand::random::<u128>())),
            file: None,
        };
        let mut f = File::create(&staged.tmp)?;
        staged.file = Some(f.try_clone()?);
        f.write_all(data)?;
        Ok(staged)
    }

    /// Renames one staged chunk into place; returns the directories whose entries changed.
    fn place(&self, mut staged: Staged, touched: &mut Vec<PathBuf>) -> StorageResult<()> {
        let dest = self.chunk_path(&staged.id);
        let parent = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        staged.file = None;
        let placed = match fs::rename(&staged.tmp, &dest) {
            Err(e) if e.kind() == ErrorKind::NotFound && staged.tmp.exists() => {
                // New fan-out directories must reach the disk too: each new level's
                // parent directory changed.
                let mut level = parent.clone();
                while !level.exists() && level != self.root {
                    match level.parent() {
                        Some(up) => {
                            touched.push(up.to_path_buf());
                            level = up.to_path_buf();
                        }
                        None => break,
                    }
                }
                fs::create_dir_all(&parent).and_then(|()| fs::rename(&staged.tmp, &dest))
            }
            other => other,
        };
        placed?;
        touched.push(parent);
        Ok(())
    }

    /// The whole `put_many` on a blocking thread (see the module header for the order).
    /// Replacing a present chunk is harmless: same name, same bytes, and `rename` is atomic,
    /// so readers see one copy or the other — and its stored time is refreshed.
    fn put_many(&self, chunks: Vec<(ChunkId, Bytes)>) -> StorageResult<()> {
        let n = chunks.len();
        if n == 0 {
            return Ok(());
        }
        let threads = if n >= 16 { IO_THREADS } else { n.min(IO_THREADS) };
        let by_syncfs = n >= SYNCFS_FROM;
        let staged: Vec<Staged> = in_parallel(split(chunks, threads), |group| {
            let mut out = Vec::with_capacity(group.len());
            for (id, data) in group {
                let s = self.stage(id, &data)?;
                if !by_syncfs {
                    if let Some(f) = &s.file {
                        f.sync_data()?;
                    }
                }
                out.push(s);
            }
            Ok(out)
        })?
        .into_iter()
        .flatten()
        .collect();
        if by_syncfs {
            syncfs(&self.tmp)?;
        }
        let touched: Vec<Vec<PathBuf>> = in_parallel(split(staged, threads), |group| {
            let mut touched = Vec::new();
            for s in group {
                self.place(s, &mut touched)?;
            }
            Ok(touched)
        })?;
        let touched: BTreeSet<PathBuf> = touched.into_iter().flatten().collect();
        if touched.len() > MAX_DIR_FSYNCS {
            syncfs(&self.root)?;
        } else {
            for dir in &touched {
                fsync_dir(dir)?;
            }
        }
        Ok(())
    }

    fn get(&self, id: &ChunkId) -> StorageResult<Bytes> {
        let data = match self.at_either(id, |p| fs::read(p)) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::MissingChunk(*id)),
            Err(e) => return Err(e.into()),
        };
        if ChunkId::of(&data) != *id {
            return Err(StorageError::Corrupt(format!(
                "chunk {id} does not match its hash"
            )));
        }
        Ok(Bytes::from(data))
    }

    fn len_of(&self, id: &ChunkId) -> StorageResult<Option<u64>> {
        match self.at_either(id, |p| fs::metadata(p)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self) -> StorageResult<Vec<StoredChunk>> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    stack.push(entry.path());
                    continue;
                }
                let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Deleted between the listing and the stat: not stored any more.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                out.push(StoredChunk {
                    id,
                    len: meta.len(),
                    stored_at: unix_nanos(meta.modified()?),
                });
            }
        }
        out.sort_by_key(|c| c.id);
        // A chunk put again after the layout changed is in both places: one chunk, stored
        // when it was last put.
        out.dedup_by(|later, kept| {
            let same = later.id == kept.id;
            if same {
                kept.stored_at = kept.stored_at.max(later.stored_at);
            }
            same
        });
        Ok(out)
    }

    /// Removes temp files older than `age`; returns how many.
    fn clean_stale_temp(&self, age: Duration) -> StorageResult<usize> {
        let mut n = 0;
        let now = SystemTime::now();
        for entry in fs::read_dir(&self.tmp)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let old = now
                .duration_since(meta.modified()?)
                .is_ok_and(|elapsed| elapsed >= age);
            if meta.is_file() && old {
                fs::remove_file(entry.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[async_trait::async_trait]
impl ChunkStore for FsChunkStore {
    async fn put_many(&self, chunks: Vec<(ChunkId, Bytes)>) -> StorageResult<()> {
        self.run(move |d| d.put_many(chunks)).await
    }

    async fn get(&self, id: &ChunkId) -> StorageResult<Bytes> {
        let id = *id;
        self.run(move |d| d.get(&id)).await
    }

    async fn contains_many(&self, ids: &[ChunkId]) -> StorageResult<Vec<Option<u64>>> {
        let ids = ids.to_vec();
        self.run(move |d| ids.iter().map(|id| d.len_of(id)).collect())
            .await
    }

    async fn delete(&self, id: &ChunkId) -> StorageResult<()> {
        let id = *id;
        self.run(move |d| {
            for path in [d.chunk_path(&id), d.legacy_path(&id)] {
                match fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })
        .await
    }

    async fn list(&self) -> StorageResult<Vec<StoredChunk>> {
        self.run(|d| d.list()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> FsChunkStore {
        FsChunkStore::open(&dir.join("chunks"), &dir.join("tmp")).expect("open")
    }

    #[tokio::test]
    async fn conformance() {
        crate::storage::chunks::conformance::run_all(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            (open(dir.path()), dir)
        })
        .await;
    }

    #[tokio::test]
    async fn layout_is_one_level_fan_out_and_bit_rot_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let id = ChunkId::of(b"x");
        let hex = id.to_hex();
        store
            .put_many(vec![(id, Bytes::from_static(b"x"))])
            .await
            .expect("put");
        let expected = dir.path().join("chunks").join(&hex[0..2]).join(&hex);
        assert_eq!(fs::read(&expected).expect("chunk file"), b"x");
        assert_eq!(
            fs::read_dir(dir.path().join("chunks")).expect("chunks").count(),
            256,
            "the fan-out directories exist from the start"
        );
        assert_eq!(fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0);
        fs::write(&expected, b"y").expect("corrupt");
        assert!(matches!(store.get(&id).await, Err(StorageError::Corrupt(_))));
    }

    #[tokio::test]
    async fn a_large_batch_lands_whole_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let chunks: Vec<(ChunkId, Bytes)> = (0..100u32)
            .map(|i| {
                let data = Bytes::from(format!("chunk {i}").into_bytes());
                (ChunkId::of(&data), data)
            })
            .collect();
        store.put_many(chunks.clone()).await.expect("put");
        for (id, data) in &chunks {
            assert_eq!(&store.get(id).await.expect("get"), data);
        }
        assert_eq!(store.list().await.expect("list").len(), 100);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0);
    }

    #[tokio::test]
    async fn chunks_in_the_three_level_layout_are_read_listed_and_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = Bytes::from_static(b"written by an older server");
        let old_id = ChunkId::of(&old);
        let both = Bytes::from_static(b"written before and again after");
        let both_id = ChunkId::of(&both);
        for (id, data) in [(old_id, &old), (both_id, &both)] {
            let hex = id.to_hex();
            let legacy = dir
                .path()
                .join("chunks")
                .join(&hex[0..2])
                .join(&hex[2..4])
                .join(&hex[4..6]);
            fs::create_dir_all(&legacy).expect("mkdir");
            fs::write(legacy.join(&hex), data).expect("write");
        }
        let store = open(dir.path());
        store.put_many(vec![(both_id, both.clone())]).await.expect("put");
        assert_eq!(store.get(&old_id).await.expect("get"), old);
        assert_eq!(store.get(&both_id).await.expect("get"), both);
        assert_eq!(
            store.contains_many(&[old_id, both_id]).await.expect("contains"),
            vec![Some(old.len() as u64), Some(both.len() as u64)]
        );
        let listed: Vec<ChunkId> = store.list().await.expect("list").iter().map(|c| c.id).collect();
        let mut expected = vec![old_id, both_id];
        expected.sort();
        assert_eq!(listed, expected, "each chunk listed once");
        store.delete(&both_id).await.expect("delete");
        store.delete(&old_id).await.expect("delete");
        assert!(matches!(
            store.get(&both_id).await,
            Err(StorageError::MissingChunk(_))
        ));
        assert!(matches!(
            store.get(&old_id).await,
            Err(StorageError::MissingChunk(_))
        ));
        assert!(store.list().await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn only_stale_temp_files_are_cleaned_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let fresh = dir.path().join("tmp").join("fresh.chunk");
        fs::write(&fresh, b"in flight").expect("write");
        assert_eq!(store.inner.clean_stale_temp(STALE_TEMP).expect("clean"), 0);
        assert!(fresh.exists(), "another server's in-flight file is kept");
        assert_eq!(store.inner.clean_stale_temp(Duration::ZERO).expect("clean"), 1);
        assert!(!fresh.exists());
    }
}
