//! Trees of files: deterministic content, writing it, reading folders back the way a user
//! sees them, and waiting for a condition.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use volebarn_client::Client;
use volebarn_core::hash::{Xxh3, Xxh3Hasher};

/// Deterministic, incompressible bytes (xorshift64), as a stream: any split of the stream
/// into [`PseudoRandom::fill`] calls gives the same bytes as [`pseudo_random`].
pub struct PseudoRandom {
    x: u64,
    word: [u8; 8],
    /// Bytes of `word` already handed out (8: none left).
    used: usize,
}

impl PseudoRandom {
    pub fn new(seed: u64) -> PseudoRandom {
        PseudoRandom {
            x: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x.to_le_bytes()
    }

    pub fn fill(&mut self, mut buf: &mut [u8]) {
        while !buf.is_empty() {
            if self.used == 8 {
                if buf.len() >= 8 {
                    let (head, rest) = buf.split_at_mut(8);
                    head.copy_from_slice(&self.next_word());
                    buf = rest;
                    continue;
                }
                self.word = self.next_word();
                self.used = 0;
            }
            let n = buf.len().min(8 - self.used);
            let (head, rest) = buf.split_at_mut(n);
            head.copy_from_slice(&self.word[self.used..self.used + n]);
            self.used += n;
            buf = rest;
        }
    }
}

/// `len` deterministic incompressible bytes; another `seed` gives other bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    PseudoRandom::new(seed).fill(&mut out);
    out
}

/// Writes `pseudo_random(len, seed)` to `path` without holding it in memory; returns its hash.
pub fn write_pseudo_random(path: &Path, len: u64, seed: u64) -> Xxh3 {
    let mut f = std::fs::File::create(path).expect("create");
    let mut gen = PseudoRandom::new(seed);
    let mut hasher = Xxh3Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < len {
        let n = (len - written).min(buf.len() as u64) as usize;
        gen.fill(&mut buf[..n]);
        std::io::Write::write_all(&mut f, &buf[..n]).expect("write");
        hasher.update(&buf[..n]);
        written += n as u64;
    }
    hasher.finish()
}

/// The XXH3 of a file's content, read in pieces.
pub fn file_hash(path: &Path) -> Xxh3 {
    let mut f = std::fs::File::open(path).expect("open");
    let mut hasher = Xxh3Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).expect("read");
        if n == 0 {
            return hasher.finish();
        }
        hasher.update(&buf[..n]);
    }
}

/// Writes `content` to `root/rel`, creating the directories on the way.
pub fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, content).expect("write");
}

/// Writes every `(relative path, content)` below `root`; the inverse of [`tree`].
pub fn write_tree<P: AsRef<str>, C: AsRef<[u8]>>(root: &Path, files: impl IntoIterator<Item = (P, C)>) {
    for (rel, content) in files {
        write(root, rel.as_ref(), content.as_ref());
    }
}

/// Every regular file below `root` (outside `.volebarn/` at the root) with its content.
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    tree_and_dirs(root).0
}

/// Every regular file below `root` with its bytes, and every directory (no symlinks, no
/// `.volebarn/` at the root). Entries that vanish during the walk are left out.
pub fn tree_and_dirs(root: &Path) -> (BTreeMap<String, Vec<u8>>, BTreeSet<String>) {
    let (mut files, mut dirs) = (BTreeMap::new(), BTreeSet::new());
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if rel.is_empty() && name == ".volebarn" {
                continue;
            }
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                dirs.insert(path.clone());
                stack.push((e.path(), path));
            } else if ft.is_file() {
                if let Ok(b) = std::fs::read(e.path()) {
                    files.insert(path, b);
                }
            }
        }
    }
    (files, dirs)
}

/// Every file (not directory) below `dir`, sorted; nothing when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Sets every file's mtime below `root` a minute back: files that existed before the sync
/// started, rather than files written in the very moment a scan reads them (which the
/// console's scan reads once more on the next pass).
pub fn age(root: &Path) {
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    for p in tree(root).keys() {
        let f = std::fs::File::options()
            .write(true)
            .open(root.join(p))
            .expect("open");
        f.set_modified(past).expect("set mtime");
    }
}

/// Every file on the server with its content, as the client downloads it.
pub async fn server_tree(c: &Client) -> BTreeMap<String, Vec<u8>> {
    let m = c.get_manifest(None).await.expect("manifest");
    let mut out = BTreeMap::new();
    for (p, f) in m.files {
        if !f.is_directory {
            out.insert(p.clone(), c.download_file(&p).await.expect("download").to_vec());
        }
    }
    out
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
/// For effects that happen after an answer (a server noticing a dropped connection, a
/// watcher syncing): tests wait on a condition with a deadline, never on a bare sleep.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`wait_for`], for a condition that must itself await (a request to a server, say).
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_random_is_the_same_stream_however_it_is_split() {
        let whole = pseudo_random(10_007, 42);
        let mut gen = PseudoRandom::new(42);
        let mut pieces = Vec::new();
        for len in [3, 8, 1, 13, 4096, 5886] {
            let mut buf = vec![0; len];
            gen.fill(&mut buf);
            pieces.extend_from_slice(&buf);
        }
        assert_eq!(pieces, whole);
        assert_ne!(pseudo_random(64, 43), whole[..64], "another seed, other bytes");
    }

    #[test]
    fn a_written_file_has_the_bytes_and_hash_of_pseudo_random() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let hash = write_pseudo_random(&path, 3 << 20 | 5, 7);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes, pseudo_random(3 << 20 | 5, 7));
        assert_eq!((hash, file_hash(&path)), (Xxh3::of(&bytes), Xxh3::of(&bytes)));
    }
}
