//! `verify`: re-hash the synced folder and the server's copy of it and list every difference.

use super::{failed, files, opt, reason, relative, remote_path, shown, stat, PathNote, Remote, CONCURRENCY};
use crate::cli::Ctx;
use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use volebarn_client::{Client, ClientError, FileMetadata, VPath, Xxh3};
use volebarn_sync::scan::{self, covers, Scan};
use volebarn_sync::STATE_DIR;

/// `verify` re-hashes remote files up to this size in memory, bigger ones through a temp file.
const VERIFY_IN_MEMORY: u64 = 64 * 1024 * 1024;

#[derive(Debug, Serialize)]
struct VerifyReport {
    folder: String,
    path: String,
    /// Distinct file paths compared (local and remote together).
    files: u64,
    only_local: Vec<String>,
    only_remote: Vec<String>,
    differ: Vec<Difference>,
    /// Remote files whose stored bytes no longer hash to their recorded xxh3.
    corrupt: Vec<String>,
    /// Remote files the server could not deliver (it refuses to send a damaged chunk), and
    /// local files or directories the scan could not read (reason `local: …`).
    unreadable: Vec<PathNote>,
    /// Local entries sync leaves alone and verify does not compare: symlinks, names the
    /// server cannot hold. Ignored files are not listed: they are not part of the folder.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<PathNote>,
}

#[derive(Debug, Serialize)]
struct Difference {
    path: String,
    local_size: u64,
    local_xxhash3: Xxh3,
    remote_size: u64,
    remote_xxhash3: Xxh3,
}

impl VerifyReport {
    fn all_match(&self) -> bool {
        self.only_local.is_empty()
            && self.only_remote.is_empty()
            && self.differ.is_empty()
            && self.corrupt.is_empty()
            && self.unreadable.is_empty()
    }

    fn human(&self) -> String {
        let mut lines = Vec::new();
        lines.extend(self.only_local.iter().map(|p| format!("only local:  {p}")));
        lines.extend(self.only_remote.iter().map(|p| format!("only remote: {p}")));
        lines.extend(self.differ.iter().map(|d| {
            format!(
                "differs:     {} (local {} bytes {}, remote {} bytes {})",
                d.path, d.local_size, d.local_xxhash3, d.remote_size, d.remote_xxhash3
            )
        }));
        lines.extend(
            self.corrupt
                .iter()
                .map(|p| format!("corrupt:     {p} (stored bytes do not match their hash)")),
        );
        lines.extend(
            self.unreadable
                .iter()
                .map(|e| format!("unreadable:  {}: {}", e.path, e.reason)),
        );
        lines.push(if self.all_match() {
            format!("verify: {}, all match", files(self.files))
        } else {
            format!(
                "verify: {}: {} only local, {} only remote, {} differ, {} corrupt, {} unreadable",
                files(self.files),
                self.only_local.len(),
                self.only_remote.len(),
                self.differ.len(),
                self.corrupt.len(),
                self.unreadable.len()
            )
        });
        lines.join("\n")
    }
}

/// Compares the synced folder (or `path` below it) with the server, re-hashing every file on
/// both sides. Exit code 0 when everything matches, 1 otherwise.
pub(super) async fn verify(ctx: &Ctx, client: &Client, path: Option<&str>) -> anyhow::Result<ExitCode> {
    let root = ctx.settings.folder()?.to_path_buf();
    let under = remote_path("verify", path.unwrap_or(""))?;
    let what = format!("verify {}", shown(&under));
    // A missing folder is a mistake to report, not an empty folder to compare.
    let meta = tokio::fs::metadata(&root)
        .await
        .with_context(|| format!("{what}: {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{what}: {}: not a directory", root.display());
    }
    let remote: BTreeMap<String, FileMetadata> =
        match stat(client, &under).await.map_err(|e| failed(&what, e))? {
            Remote::Missing => BTreeMap::new(),
            Remote::File(m) => BTreeMap::from([(m.path.clone(), m)]),
            Remote::Dir => {
                let manifest = client
                    .get_manifest(opt(&under))
                    .await
                    .map_err(|e| failed(&what, e))?;
                let files = manifest.files.into_iter().filter(|(_, m)| !m.is_directory);
                files.filter(|(p, _)| relative(&under, p).is_some()).collect()
            }
        };
    let (r, u) = (root.clone(), under.clone());
    let local = tokio::task::spawn_blocking(move || scan_local(&r, &u))
        .await
        .context("hashing local files")?;
    for s in &local.skipped {
        ctx.out.note(format!("not compared {}: {}", s.path, s.reason));
    }

    let mut report = VerifyReport {
        folder: root.display().to_string(),
        path: shown(&under),
        files: 0,
        only_local: Vec::new(),
        only_remote: Vec::new(),
        differ: Vec::new(),
        corrupt: Vec::new(),
        unreadable: local.unreadable,
        skipped: local.skipped,
    };
    for (p, (size, hash)) in &local.files {
        match remote.get(p) {
            None => report.only_local.push(p.clone()),
            Some(m) if m.size != *size || m.xxhash3 != *hash => report.differ.push(Difference {
                path: p.clone(),
                local_size: *size,
                local_xxhash3: *hash,
                remote_size: m.size,
                remote_xxhash3: m.xxhash3,
            }),
            Some(_) => {}
        }
    }
    let remote_only: Vec<&String> = remote.keys().filter(|p| !local.files.contains_key(*p)).collect();
    report.files = (local.files.len() + remote_only.len()) as u64;
    // A file the scan could not read is not missing: it is listed as unreadable instead.
    report.only_remote = remote_only
        .into_iter()
        .filter(|p| !local.scan.is_skipped(p))
        .cloned()
        .collect();

    // Big remote files stream through a temp file in the folder's state directory (same disk
    // as the data, never synced); without one, in the system's temp directory.
    let state = root.join(STATE_DIR);
    let spill = if state.is_dir() {
        state
    } else {
        std::env::temp_dir()
    };
    let total: u64 = remote.values().map(|m| m.size).sum();
    let progress = ctx.out.progress(total, remote.len() as u64);
    let checks: Vec<_> = futures_util::stream::iter(remote.values())
        .map(|m| {
            let (spill, progress) = (&spill, &progress);
            async move {
                let r = stored_bytes_match(client, m, spill).await;
                progress.add_bytes(m.size);
                progress.file_done();
                (m, r)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    progress.finish();
    for (m, r) in checks {
        match r {
            Ok(true) => {}
            Ok(false) => report.corrupt.push(m.path.clone()),
            Err(e) => report.unreadable.push(PathNote {
                path: m.path.clone(),
                reason: reason(e),
            }),
        }
    }
    report.corrupt.sort();
    report.unreadable.sort_by(|a, b| a.path.cmp(&b.path));
    ctx.out.emit(&report, || report.human());
    Ok(if report.all_match() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Downloads `m` and tells whether its bytes still hash to the recorded xxh3.
async fn stored_bytes_match(client: &Client, m: &FileMetadata, spill: &Path) -> Result<bool, ClientError> {
    if m.size <= VERIFY_IN_MEMORY {
        return client.verify_file_integrity(&m.path, m.xxhash3.0).await;
    }
    let tmp = spill.join(format!(".volebarn-verify-{:016x}.tmp", rand::random::<u64>()));
    let got = client.download_to_meta(&m.path, &tmp).await;
    let _ = tokio::fs::remove_file(&tmp).await;
    match got {
        Ok(got) => Ok(got.xxhash3 == m.xxhash3),
        Err(ClientError::HashMismatch { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The local side of a verify: what the sync engine's scanner sees below `under`.
struct LocalSide {
    /// Size and xxh3 of every file sync would keep in step, by `/`-separated path.
    files: BTreeMap<String, (u64, Xxh3)>,
    /// Paths present but not readable (or still changing): they cannot be vouched for.
    unreadable: Vec<PathNote>,
    /// Paths sync never touches (symlinks, names the server cannot hold): not compared.
    skipped: Vec<PathNote>,
    /// What the scan could not read, to tell an unreadable path from a missing one.
    scan: Scan,
}

/// Scans the folder the way a sync does — built-in ignores and `.volebarnignore` applied,
/// symlinks not followed, `.volebarn/` left out — hashing every file (no index is trusted:
/// verify is for when the index may be wrong). Blocking.
/// Only `PATH` is read; the `.volebarnignore` files above it still apply.
fn scan_local(root: &Path, under: &VPath) -> LocalSide {
    let mut sc = scan::scan_under(root, under.as_str(), &BTreeMap::new());
    let files = std::mem::take(&mut sc.files)
        .into_iter()
        .filter(|(p, _)| covers(under.as_str(), p))
        .map(|(p, s)| (p.to_string(), (s.size, Xxh3(s.xxh3))))
        .collect();
    let (mut unreadable, mut skipped) = (Vec::new(), Vec::new());
    // A problem matters when it is below `under`, or is a directory holding it.
    let relevant = sc
        .problems
        .iter()
        .filter(|(p, _)| covers(under.as_str(), p) || covers(p, under.as_str()));
    for (p, why) in relevant {
        let path = if p.is_empty() { "/".to_string() } else { p.clone() };
        if sc.skipped.contains(p) || sc.skipped_dirs.contains(p) {
            unreadable.push(PathNote {
                path,
                reason: format!("local: {why}"),
            });
        } else {
            skipped.push(PathNote {
                path,
                reason: why.clone(),
            });
        }
    }
    LocalSide {
        files,
        unreadable,
        skipped,
        scan: Scan {
            skipped: sc.skipped,
            skipped_dirs: sc.skipped_dirs,
            ..Scan::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(files: &BTreeMap<String, (u64, Xxh3)>) -> Vec<&str> {
        files.keys().map(String::as_str).collect()
    }

    #[test]
    fn local_side_is_what_sync_sees_below_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let write = |rel: &str, content: &[u8]| {
            let p = volebarn_sync::scan::local_path(root, rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, content).expect("write");
        };
        write(".volebarn/index", b"x");
        write("a/b/c.txt", b"hello");
        write("a/b/.c.txt.swp", b"vim");
        write("a/~$budget.xlsx", b"office lock");
        write(".volebarnignore", b"*.log\n");
        write("a/debug.log", b"noise");
        write("ab.txt", b"not below a");
        std::os::unix::fs::symlink(root.join("a/b/c.txt"), root.join("a/link")).expect("symlink");

        let all = scan_local(root, &VPath::root());
        assert_eq!(names(&all.files), [".volebarnignore", "a/b/c.txt", "ab.txt"]);
        assert_eq!(all.files["a/b/c.txt"], (5, Xxh3::of(b"hello")));
        assert_eq!(all.skipped.len(), 1);
        assert_eq!(all.skipped[0].path, "a/link");
        assert!(all.unreadable.is_empty());

        let a = VPath::parse("a").expect("valid");
        assert_eq!(names(&scan_local(root, &a).files), ["a/b/c.txt"]);
        let one = VPath::parse("a/b/c.txt").expect("valid");
        assert_eq!(names(&scan_local(root, &one).files), ["a/b/c.txt"]);
        assert!(scan_local(root, &one).skipped.is_empty());
        let nope = VPath::parse("nope").expect("valid");
        assert!(scan_local(root, &nope).files.is_empty());
    }

    #[test]
    fn covers_means_the_path_itself_or_below() {
        assert!(covers("", "a"));
        assert!(covers("a", "a"));
        assert!(covers("a", "a/b"));
        assert!(!covers("a", "ab"));
        assert!(!covers("a/b", "a"));
    }
}
