//! [`ChunkStore`] on a local filesystem: `<data>/chunks/ab/cd/ef/<blake3-hex>`, staged through
//! `<data>/tmp/` on the same filesystem so publishing is a rename.

use super::{ChunkStore, StagedChunk};
use crate::storage::{StorageError, StorageResult};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use volebarn_core::ChunkId;

pub struct FsChunkStore {
    root: PathBuf,
    tmp: PathBuf,
}

/// Above this many touched directories one `syncfs` is cheaper than an fsync per directory.
const MAX_DIR_FSYNCS: usize = 8;

impl FsChunkStore {
    pub fn open(chunks_dir: &Path, tmp_dir: &Path) -> StorageResult<Self> {
        fs::create_dir_all(chunks_dir)?;
        fs::create_dir_all(tmp_dir)?;
        Ok(FsChunkStore {
            root: chunks_dir.to_path_buf(),
            tmp: tmp_dir.to_path_buf(),
        })
    }

    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(&hex[4..6])
            .join(hex)
    }

    fn temp_path(&self) -> PathBuf {
        self.tmp.join(format!("{:032x}.chunk", rand::random::<u128>()))
    }
}

impl FsChunkStore {
    /// Renames staged chunks into place; returns the directories whose entries changed
    /// (to be made durable by the caller).
    ///
    /// A chunk already present is simply replaced: same name, same bytes (content
    /// addressing), and `rename` is atomic, so readers see one or the other copy.
    fn place_all(&self, staged: Vec<StagedChunk>) -> StorageResult<Vec<PathBuf>> {
        let mut touched = Vec::new();
        for mut chunk in staged {
            let Some(tmp) = chunk.take_tmp() else { continue };
            let dest = self.chunk_path(&chunk.id);
            let parent = dest.parent().map(Path::to_path_buf).unwrap_or_default();
            let placed = match fs::rename(&tmp, &dest) {
                Err(e) if e.kind() == ErrorKind::NotFound && tmp.exists() => {
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
                    fs::create_dir_all(&parent).and_then(|()| fs::rename(&tmp, &dest))
                }
                other => other,
            };
            if let Err(e) = placed {
                let _ = fs::remove_file(&tmp);
                return Err(e.into());
            }
            touched.push(parent);
        }
        Ok(touched)
    }
}

/// Threads renaming a large batch of chunks into place.
const PUBLISH_THREADS: usize = 4;

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl ChunkStore for FsChunkStore {
    fn stage(&self, id: ChunkId, data: &[u8], durable: bool) -> StorageResult<StagedChunk> {
        let tmp = self.temp_path();
        let staged = StagedChunk {
            id,
            len: u32::try_from(data.len())
                .map_err(|_| StorageError::Corrupt("chunk larger than 4 GiB".into()))?,
            tmp: Some(tmp.clone()),
        };
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_data()?;
        }
        Ok(staged)
    }

    fn sync_staged(&self) -> StorageResult<()> {
        let dir = File::open(&self.tmp)?;
        rustix::fs::syncfs(&dir).map_err(std::io::Error::from)?;
        Ok(())
    }

    fn publish(&self, staged: Vec<StagedChunk>) -> StorageResult<()> {
        // Renames are latency-bound: spread a large batch over a few threads.
        let groups = if staged.len() >= 64 { PUBLISH_THREADS } else { 1 };
        let per_group = staged.len().div_ceil(groups).max(1);
        let mut staged = staged;
        let mut parts = Vec::new();
        while !staged.is_empty() {
            let rest = staged.split_off(per_group.min(staged.len()));
            parts.push(std::mem::replace(&mut staged, rest));
        }
        let results: Vec<StorageResult<Vec<PathBuf>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .into_iter()
                .map(|part| scope.spawn(move || self.place_all(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("publish thread panicked").into()))
                })
                .collect()
        });
        let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
        for r in results {
            touched.extend(r?);
        }
        if touched.len() > MAX_DIR_FSYNCS {
            let dir = File::open(&self.root)?;
            rustix::fs::syncfs(&dir).map_err(std::io::Error::from)?;
        } else {
            for dir in &touched {
                fsync_dir(dir)?;
            }
        }
        Ok(())
    }

    fn contains(&self, id: &ChunkId) -> StorageResult<bool> {
        Ok(self.chunk_path(id).exists())
    }

    fn read(&self, id: &ChunkId) -> StorageResult<Vec<u8>> {
        let data = match fs::read(self.chunk_path(id)) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::MissingChunk(*id)),
            Err(e) => return Err(e.into()),
        };
        if ChunkId::of(&data) != *id {
            return Err(StorageError::Corrupt(format!(
                "chunk {id} does not match its hash"
            )));
        }
        Ok(data)
    }

    fn delete(&self, id: &ChunkId) -> StorageResult<()> {
        match fs::remove_file(self.chunk_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn modified(&self, id: &ChunkId) -> StorageResult<Option<i64>> {
        match fs::metadata(self.chunk_path(id)) {
            Ok(m) => {
                let t = m.modified()?;
                let nanos = match t.duration_since(std::time::UNIX_EPOCH) {
                    Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
                    Err(_) => 0,
                };
                Ok(Some(nanos))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self) -> StorageResult<Vec<ChunkId>> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    stack.push(entry.path());
                } else if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                    out.push(id);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn clean_temp(&self) -> StorageResult<usize> {
        let mut n = 0;
        for entry in fs::read_dir(&self.tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        super::super::conformance::run_all(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store =
                FsChunkStore::open(&dir.path().join("chunks"), &dir.path().join("tmp")).expect("open");
            (store, dir)
        });
    }

    #[test]
    fn layout_is_three_level_fan_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsChunkStore::open(&dir.path().join("chunks"), &dir.path().join("tmp")).expect("open");
        let id = ChunkId::of(b"x");
        let hex = id.to_hex();
        store
            .publish(vec![store.stage(id, b"x", true).expect("stage")])
            .expect("publish");
        let expected = dir
            .path()
            .join("chunks")
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(&hex[4..6])
            .join(&hex);
        assert_eq!(fs::read(expected).expect("chunk file"), b"x");
        // Bit rot is detected, not served.
        fs::write(store.chunk_path(&id), b"y").expect("corrupt");
        assert!(matches!(store.read(&id), Err(StorageError::Corrupt(_))));
    }
}
