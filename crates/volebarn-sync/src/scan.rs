//! The local scan: walk the folder (no symlinks followed, ignore rules applied), stat every
//! file, and hash only those whose size, mtime or inode differ from the index — so a no-op
//! scan reads no file contents. A file that changes while it is read is re-read once it
//! settles; one that keeps changing, or cannot be read, is left out of this pass (never
//! mistaken for a deletion).

use crate::index::{Entry, Key, Stat};
use crate::rules::{self, IGNORE_FILE};
use crate::state::STATE_DIR;
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use volebarn_client::VPath;
use volebarn_core::sorted::MapBuilder;

/// Threads hashing changed files.
const HASH_THREADS: usize = 4;
/// Reads of a file that keeps changing before it is left for the next pass.
const SETTLE_ATTEMPTS: u32 = 3;
/// A file modified less than this before it was read may change again within the same mtime
/// tick (coarse clocks, filesystems with 1–2 s timestamps): its hash is used but not trusted
/// by the next scan, which reads it once more (git's "racily clean" rule).
const RACY_NANOS: i64 = 2_000_000_000;

#[derive(Debug, Default, Clone)]
pub struct Scan {
    /// Files with their stat and content hash.
    pub files: BTreeMap<Key, Stat>,
    /// Files modified so shortly before they were read that their stat does not vouch for
    /// their content: the index remembers them with an impossible mtime, so they are re-read.
    pub racy: BTreeSet<String>,
    pub dirs: BTreeSet<String>,
    /// Paths present but not usable this pass (unreadable, still changing): left untouched.
    pub skipped: BTreeSet<String>,
    /// Directories that could not be read: nothing below them is touched.
    pub skipped_dirs: BTreeSet<String>,
    /// One line per problem: unreadable, symlink, invalid name, still changing.
    pub problems: Vec<(String, String)>,
    /// Files whose content was read this scan, and the bytes read.
    pub hashed: u64,
    pub bytes_read: u64,
    /// Files this scan looked at (stat): the whole folder, or the changed paths of a partial
    /// rescan ([`rescan`]).
    pub examined: u64,
}

impl Scan {
    /// Whether any path was not usable this pass ([`Scan::is_skipped`] is false for all
    /// paths otherwise).
    pub fn skips_any(&self) -> bool {
        !self.skipped.is_empty() || !self.skipped_dirs.is_empty()
    }

    /// True when `path` or a parent was not usable this pass.
    pub fn is_skipped(&self, path: &str) -> bool {
        self.skipped.contains(path)
            || self
                .skipped_dirs
                .iter()
                .any(|d| d.is_empty() || path.strip_prefix(d.as_str()).is_some_and(|r| r.starts_with('/')))
    }
}

pub fn local_path(root: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(root.to_path_buf(), |p, c| p.join(c))
}

pub fn mtime_nanos(m: &std::fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(unix)]
pub fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
pub fn inode(_m: &std::fs::Metadata) -> u64 {
    0
}

/// The stat of a file with content hash `xxh3`.
pub fn stat_of(m: &std::fs::Metadata, xxh3: u64) -> Stat {
    Stat {
        size: m.len(),
        mtime: mtime_nanos(m),
        inode: inode(m),
        xxh3,
    }
}

enum HashError {
    /// Deleted since the walk saw it: simply not there.
    Vanished,
    Failed(String),
}

impl From<std::io::Error> for HashError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            HashError::Vanished
        } else {
            HashError::Failed(e.to_string())
        }
    }
}

/// Reads and hashes `path` until two stats around the read agree.
fn hash_settled(path: &Path, bytes: &AtomicU64) -> Result<Stat, HashError> {
    for _ in 0..SETTLE_ATTEMPTS {
        let before = std::fs::symlink_metadata(path)?;
        let (xxh3, _) = volebarn_client::hash_file(path, |n| {
            bytes.fetch_add(n, Ordering::Relaxed);
        })?;
        let stat = stat_of(&std::fs::symlink_metadata(path)?, xxh3.0);
        if stat.same_file(&stat_of(&before, 0)) {
            return Ok(stat);
        }
        std::thread::yield_now();
    }
    Err(HashError::Failed(
        "still changing while being read; it will be synced once it settles".into(),
    ))
}

/// Scans `root` against the index's last-seen stats. Blocking: run it on a blocking thread.
pub fn scan(root: &Path, previous: &BTreeMap<Key, Entry>) -> Scan {
    scan_under(root, "", previous)
}

/// True when `path` is `dir` or below it; `""` is the root and covers everything.
pub fn covers(dir: &str, path: &str) -> bool {
    dir.is_empty() || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// [`scan`] of the part of the folder at `under` (a relative path; `""` for all of it). The
/// walk still starts at `root` and enters only the directories leading to `under`, so every
/// `.volebarnignore` above it applies exactly as in a full scan.
pub fn scan_under(root: &Path, under: &str, previous: &BTreeMap<Key, Entry>) -> Scan {
    let mut out = Scan::default();
    let mut runs: Vec<Vec<(Key, Stat)>> = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    let mut to_hash: Vec<String> = Vec::new();
    for found in walk(root, under, previous) {
        out.examined += (found.same.len() + found.to_hash.len()) as u64;
        runs.push(found.same);
        to_hash.extend(found.to_hash);
        for other in found.other {
            match other {
                Found::Dir(rel) => dirs.push(rel),
                Found::File(rel, stat) => {
                    out.examined += 1;
                    if let Err(why) = stat {
                        out.skipped.insert(rel.clone());
                        out.problems.push((rel, why));
                    }
                }
                Found::Problem { rel, why, skip } => {
                    match skip {
                        Skip::Dir => {
                            out.skipped_dirs.insert(rel.clone());
                        }
                        Skip::Path => {
                            out.skipped.insert(rel.clone());
                        }
                        Skip::Nothing => {}
                    }
                    out.problems.push((rel, why));
                }
            }
        }
    }
    runs.push(hash_all(root, to_hash, &mut out));
    dirs.sort_unstable();
    out.files = merge_runs(runs);
    out.dirs = dirs.into_iter().collect();
    out.problems.sort();
    out
}

/// The map of `runs` (in no order, each holding distinct paths), built as one sorted merge:
/// inserting path by path leaves the map's nodes half full (twice the memory) and costs more
/// time. Each run is sorted backwards and taken from its end, shrinking as it goes, so the
/// entries are not all held twice (in the runs and in the map) at the end.
fn merge_runs(mut runs: Vec<Vec<(Key, Stat)>>) -> BTreeMap<Key, Stat> {
    for r in &mut runs {
        r.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    }
    let mut out = MapBuilder::default();
    loop {
        let next = runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.last().map(|(k, _)| (i, k)))
            .min_by(|a, b| a.1.cmp(b.1))
            .map(|(i, _)| i);
        let Some(i) = next else {
            return out.finish();
        };
        let run = &mut runs[i];
        let (k, v) = run.pop().expect("not empty");
        if run.len().is_multiple_of(4096) && run.capacity() > 2 * run.len() {
            run.shrink_to_fit();
        }
        out.push(k, v);
    }
}

/// One walking thread's findings, sorted out as they come: a file whose size, mtime and
/// inode are as the index last saw them keeps the index's stat (and hash); a new or changed
/// one is to be read; the rest (directories, problems) as found.
#[derive(Default)]
struct Findings {
    /// With the index's key: the path is not held twice.
    same: Vec<(Key, Stat)>,
    to_hash: Vec<String>,
    other: Vec<Found>,
}

impl Findings {
    fn add(&mut self, found: Found, previous: &BTreeMap<Key, Entry>) {
        match found {
            Found::File(rel, Ok(stat)) => match previous.get_key_value(rel.as_str()) {
                Some((k, Entry { local: Some(s), .. })) if s.same_file(&stat) => {
                    self.same.push((Key::clone(k), *s))
                }
                _ => self.to_hash.push(rel),
            },
            other => self.other.push(other),
        }
    }
}

/// What the walk found, one entry at a time.
enum Found {
    Dir(String),
    /// A regular file with its stat (`xxh3` not yet known), or why it could not be read.
    File(String, Result<Stat, String>),
    Problem {
        rel: String,
        why: String,
        skip: Skip,
    },
}

/// What of the folder a problem leaves untouched.
enum Skip {
    Dir,
    Path,
    Nothing,
}

/// Threads walking the folder (stat is most of a no-op pass: the kernel's path lookups run
/// side by side).
const WALK_THREADS: usize = 2;

/// Walks the part of `root` at `under` (see [`scan_under`]) with the ignore rules, on
/// [`WALK_THREADS`] threads, in no particular order; each thread's findings are sorted out
/// against `previous` as they come.
fn walk(root: &Path, under: &str, previous: &BTreeMap<Key, Entry>) -> Vec<Findings> {
    let defaults = rules::defaults(root);
    let (walk_root, under_owned) = (root.to_path_buf(), under.to_string());
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(false)
        .threads(WALK_THREADS)
        .add_custom_ignore_filename(IGNORE_FILE)
        .filter_entry(move |e| {
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            let wanted = under_owned.is_empty() || {
                let rel = e
                    .path()
                    .strip_prefix(&walk_root)
                    .map(rel_string)
                    .unwrap_or_default();
                covers(&under_owned, &rel) || (is_dir && covers(&rel, &under_owned))
            };
            wanted && !defaults.matched(e.path(), is_dir).is_ignore()
        })
        .build_parallel();
    let (tx, rx) = std::sync::mpsc::channel::<Findings>();
    walker.run(|| {
        let tx = tx.clone();
        let mut mine = Batch {
            found: Findings::default(),
            tx,
        };
        Box::new(move |item| {
            if let Some(found) = visit(root, item) {
                mine.found.add(found, previous);
            }
            ignore::WalkState::Continue
        })
    });
    drop(tx);
    rx.into_iter().collect()
}

/// One walking thread's findings, handed over when the thread is done with them.
struct Batch {
    found: Findings,
    tx: std::sync::mpsc::Sender<Findings>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        let _ = self.tx.send(std::mem::take(&mut self.found));
    }
}

/// What the walk found at `item`, if anything to sync.
fn visit(root: &Path, item: Result<ignore::DirEntry, ignore::Error>) -> Option<Found> {
    let entry = match item {
        Ok(e) => e,
        Err(e) => {
            let rel = error_path(&e)
                .and_then(|p| p.strip_prefix(root).ok().map(rel_string))
                .unwrap_or_default();
            let skip = if rel.is_empty()
                || std::fs::symlink_metadata(local_path(root, &rel)).is_ok_and(|m| m.is_dir())
            {
                Skip::Dir
            } else {
                Skip::Path
            };
            return Some(Found::Problem {
                rel,
                why: e.to_string(),
                skip,
            });
        }
    };
    if entry.depth() == 0 {
        return None;
    }
    let Ok(rel_path) = entry.path().strip_prefix(root) else {
        return None;
    };
    let Some(rel) = rel_path
        .to_str()
        .map(|s| s.replace(std::path::MAIN_SEPARATOR, "/"))
    else {
        return Some(Found::Problem {
            rel: rel_path.to_string_lossy().to_string(),
            why: "name is not UTF-8: not synced".into(),
            skip: Skip::Nothing,
        });
    };
    if rel == STATE_DIR {
        return None;
    }
    if VPath::parse_non_root(&rel).is_err() {
        return Some(Found::Problem {
            rel,
            why: "name is not a valid Volebarn path: not synced".into(),
            skip: Skip::Nothing,
        });
    }
    let ft = entry.file_type()?;
    if ft.is_symlink() {
        tracing::warn!(path = rel, "skipping symlink (symlinks are not followed)");
        Some(Found::Problem {
            rel,
            why: "symlink: skipped".into(),
            skip: Skip::Nothing,
        })
    } else if ft.is_dir() {
        Some(Found::Dir(rel))
    } else if ft.is_file() {
        let stat = entry
            .metadata()
            .map(|m| stat_of(&m, 0))
            .map_err(|e| e.to_string());
        Some(Found::File(rel, stat))
    } else {
        None
    }
}

/// `last` (the folder as an earlier scan saw it) with only the `dirty` paths scanned again:
/// everything at or below each of them is dropped from `last` and read afresh by
/// [`scan_under`], so a path created, changed, renamed or deleted since is as a full scan
/// would see it. Paths not in `dirty` are taken from `last` unread: the caller vouches that
/// nothing else changed (a watcher that lost no event).
pub fn rescan(root: &Path, last: Scan, dirty: &BTreeSet<String>, previous: &BTreeMap<Key, Entry>) -> Scan {
    let mut out = Scan {
        files: last.files,
        racy: last.racy,
        dirs: last.dirs,
        skipped: last.skipped,
        skipped_dirs: last.skipped_dirs,
        ..Scan::default()
    };
    // Only the outermost dirty paths: one below another is read with it.
    let outermost: Vec<&String> = dirty
        .iter()
        .filter(|d| !dirty.contains("") || d.is_empty())
        .filter(|d| !d.match_indices('/').any(|(i, _)| dirty.contains(&d[..i])))
        .collect();
    for d in outermost {
        let files: Vec<Key> = covered(&out.files, d).map(|(k, _)| Key::clone(k)).collect();
        for p in files {
            out.files.remove(&p);
            out.racy.remove(&*p);
        }
        let dirs: Vec<String> = covered_in(&out.dirs, d).cloned().collect();
        for p in dirs {
            out.dirs.remove(&p);
        }
        out.skipped.retain(|p| !covers(d, p));
        out.skipped_dirs.retain(|p| !covers(d, p));
        let part = scan_under(root, d, previous);
        out.files.extend(part.files);
        out.racy.extend(part.racy);
        out.dirs.extend(part.dirs);
        out.skipped.extend(part.skipped);
        out.skipped_dirs.extend(part.skipped_dirs);
        out.problems.extend(part.problems);
        out.hashed += part.hashed;
        out.bytes_read += part.bytes_read;
        out.examined += part.examined;
    }
    out
}

/// The entries of `map` that `dir` covers ([`covers`]), found without a walk over all of them:
/// they are among the run of keys that start with `dir`.
pub fn covered<'a, K: Ord + Borrow<str>, V>(
    map: &'a BTreeMap<K, V>,
    dir: &'a str,
) -> impl Iterator<Item = (&'a K, &'a V)> {
    map.range::<str, _>((Bound::Included(dir), Bound::Unbounded))
        .take_while(move |(k, _)| (*k).borrow().starts_with(dir))
        .filter(move |(k, _)| covers(dir, (*k).borrow()))
}

/// [`covered`] for a set.
pub(crate) fn covered_in<'a, K: Ord + Borrow<str>>(
    set: &'a BTreeSet<K>,
    dir: &'a str,
) -> impl Iterator<Item = &'a K> {
    set.range::<str, _>((Bound::Included(dir), Bound::Unbounded))
        .take_while(move |k| (*k).borrow().starts_with(dir))
        .filter(move |k| covers(dir, (*k).borrow()))
}

/// Reads and hashes the files at `rels` (on [`HASH_THREADS`] threads): returns those read; one
/// that cannot be read is a problem of `out`.
fn hash_all(root: &Path, mut rels: Vec<String>, out: &mut Scan) -> Vec<(Key, Stat)> {
    let bytes = AtomicU64::new(0);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Vec<(usize, Result<Stat, HashError>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..HASH_THREADS.min(rels.len()).max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(rel) = rels.get(i) else { break };
                        mine.push((i, hash_settled(&local_path(root, rel), &bytes)));
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut files = Vec::with_capacity(rels.len());
    for (i, r) in results.into_iter().flatten() {
        let rel = std::mem::take(&mut rels[i]);
        match r {
            Ok(stat) => {
                out.hashed += 1;
                if volebarn_core::timefmt::now_nanos() - stat.mtime < RACY_NANOS {
                    out.racy.insert(rel.clone());
                }
                files.push((Key::from(rel), stat));
            }
            Err(HashError::Vanished) => {}
            Err(HashError::Failed(e)) => {
                out.skipped.insert(rel.clone());
                out.problems.push((rel, e));
            }
        }
    }
    out.bytes_read += bytes.load(Ordering::Relaxed);
    files
}

fn rel_string(p: &Path) -> String {
    p.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/")
}

fn error_path(e: &ignore::Error) -> Option<&Path> {
    match e {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => error_path(err),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, content: &[u8]) {
        let p = local_path(root, rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    #[test]
    fn a_partial_scan_reads_only_its_part_with_the_rules_from_above() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        put(root, IGNORE_FILE, b"*.log\n");
        put(root, &format!("docs/{IGNORE_FILE}"), b"!keep.log\n");
        put(root, "docs/a.txt", b"a");
        put(root, "docs/b.log", b"ignored from above");
        put(root, "docs/keep.log", b"let back in below");
        put(root, "docs/deep/c.txt", b"c");
        put(root, "docs/.c.txt.swp", b"editor scratch");
        put(root, "docsx/d.txt", b"a sibling with the same prefix");
        put(root, "other/e.txt", b"elsewhere");
        put(root, "top.txt", b"top");

        let sc = scan_under(root, "docs", &BTreeMap::new());
        let files: Vec<&str> = sc.files.keys().map(|k| &**k).collect();
        assert_eq!(
            files,
            [
                "docs/.volebarnignore",
                "docs/a.txt",
                "docs/deep/c.txt",
                "docs/keep.log"
            ]
        );
        assert_eq!(sc.hashed, 4, "nothing outside docs/ is read");

        let all = scan(root, &BTreeMap::new());
        for f in files {
            assert_eq!(all.files.get(f), sc.files.get(f), "{f}: same as a full scan");
        }
        assert_eq!(all.files.len(), 8, "{:?}", all.files.keys());
        assert_eq!(scan_under(root, "top.txt", &BTreeMap::new()).files.len(), 1);
        assert!(scan_under(root, "docs/b.log", &BTreeMap::new()).files.is_empty());
    }
}
