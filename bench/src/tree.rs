//! The benchmarks' data: a deterministic tree of small incompressible files, and a
//! deterministic set of edits, adds and deletes on it. One xorshift generator makes both, so
//! every run, and every tool within a run, sees the same bytes.

use anyhow::Context;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Seeds: one for the tree, one for the changes made to it later.
const TREE_SEED: u64 = 0x9E37_79B9_7F4A_7C15;
const CHANGE_SEED: u64 = 0xD1B5_4A32_D192_ED03;
/// Seed of the large file.
const LARGE_SEED: u64 = 0x2545_F491_4F6C_DD1D;

/// Marsaglia's xorshift64: fast, deterministic, and incompressible enough for a benchmark.
pub struct Xorshift(u64);

impl Xorshift {
    /// `seed` must not be 0 (xorshift stays at 0 forever).
    pub fn new(seed: u64) -> Xorshift {
        Xorshift(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A small file's content: 1–16 KiB of random bytes.
    pub fn small_file(&mut self) -> Vec<u8> {
        let size = 1024 + (self.next_u64() % (15 * 1024 + 1)) as usize;
        let mut data = Vec::with_capacity(size + 8);
        while data.len() < size {
            data.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        data.truncate(size);
        data
    }
}

/// The relative path of file number `i`: 100 directories, files spread round-robin.
pub fn rel_path(i: usize) -> String {
    format!("d{:02}/f{i:05}.bin", i % 100)
}

/// Writes `content` at `root/rel`, creating parent directories; `mtime` when given.
fn write_file(root: &Path, rel: &str, content: &[u8], mtime: Option<SystemTime>) -> anyhow::Result<()> {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content)?;
    if let Some(t) = mtime {
        f.set_modified(t)?;
    }
    Ok(())
}

/// Deterministic tree: `d{i % 100}/f{i}.bin` for `i` in `0..n`, sizes 1–16 KiB, incompressible.
///
/// Every file's mtime is set a minute back: the tree stands for a folder that existed before
/// the sync started, not for files written in the very moment a scan reads them (which the
/// console's scan deliberately reads again on the next pass, so a no-op pass would not be one).
pub fn make_tree(root: &Path, n: usize) -> anyhow::Result<Vec<(String, Bytes)>> {
    let past = SystemTime::now() - Duration::from_secs(60);
    let mut rng = Xorshift::new(TREE_SEED);
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let data = rng.small_file();
        let rel = rel_path(i);
        write_file(root, &rel, &data, Some(past))?;
        files.push((rel, Bytes::from(data)));
    }
    Ok(files)
}

/// Writes `bytes` of incompressible pseudo-random data to `path` (mtime a minute back, as for
/// the tree) and fsyncs it.
pub fn make_large(path: &Path, bytes: u64) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut rng = Xorshift::new(LARGE_SEED);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.set_modified(SystemTime::now() - Duration::from_secs(60))?;
    f.sync_all()?;
    Ok(())
}

/// What `change_tree` did, by relative path.
#[derive(Debug, Default)]
pub struct Changes {
    pub edited: Vec<String>,
    pub added: Vec<String>,
    pub deleted: Vec<String>,
}

/// On a tree from `make_tree(root, n)`: rewrites `each` files with new content (new size too),
/// adds `each` new files (numbers `n..n + each`) and deletes `each` other files. The files
/// touched are picked by the generator, so every run changes the same ones. New and edited
/// files get the current time as mtime, as an editor would leave them.
pub fn change_tree(root: &Path, n: usize, each: usize) -> anyhow::Result<Changes> {
    anyhow::ensure!(
        2 * each <= n,
        "{each} edits and {each} deletes need at least {} files",
        2 * each
    );
    let mut rng = Xorshift::new(CHANGE_SEED);
    let mut picked = BTreeSet::new();
    let mut order = Vec::with_capacity(2 * each);
    while order.len() < 2 * each {
        let i = (rng.next_u64() % n as u64) as usize;
        if picked.insert(i) {
            order.push(i);
        }
    }
    let mut changes = Changes::default();
    for &i in &order[..each] {
        let rel = rel_path(i);
        write_file(root, &rel, &rng.small_file(), None)?;
        changes.edited.push(rel);
    }
    for i in n..n + each {
        let rel = rel_path(i);
        write_file(root, &rel, &rng.small_file(), None)?;
        changes.added.push(rel);
    }
    for &i in &order[each..] {
        let rel = rel_path(i);
        std::fs::remove_file(root.join(&rel)).with_context(|| format!("deleting {rel}"))?;
        changes.deleted.push(rel);
    }
    Ok(changes)
}

/// Every regular file below `root` with its content, leaving out the top-level directory
/// `skip` (a sync tool's own state), to check that two folders ended up the same.
pub fn read_tree(root: &Path, skip: &str) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && name == skip {
                continue;
            }
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push((e.path(), path));
            } else if ft.is_file() {
                files.insert(path, std::fs::read(e.path())?);
            }
        }
    }
    Ok(files)
}
