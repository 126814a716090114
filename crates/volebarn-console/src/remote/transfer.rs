//! `get` and `put`: whole trees in both directions, small files in bulk requests, big ones
//! streamed (chunked over the client's large-file threshold), with a progress bar and a
//! per-file report.

use super::{
    ensure_dir, failed, files, opt, reason, relative, remote_path, shown, stat, PathNote, Remote, CONCURRENCY,
};
use crate::cli::Ctx;
use crate::output::Progress;
use anyhow::{anyhow, bail, Context};
use futures_util::StreamExt;
use indicatif::HumanBytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use volebarn_client::{
    bulk_batches, Client, ClientError, ErrorCode, FileMetadata, LocalUpload, UploadCondition, VPath,
};
use volebarn_sync::STATE_DIR;

/// Files up to this size travel in bulk requests; bigger ones one by one, streamed (and over
/// the client's large-file threshold, as resumable chunks).
const SMALL_FILE: u64 = 1024 * 1024;
/// Limits of one bulk request ([`bulk_batches`]); small enough that the progress bar moves.
const BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// Bulk downloads hold less: the response is read as fast as it arrives, whatever pace the
/// disk writes at, so a whole response can sit in memory (the same bound as sync's).
const GET_BATCH_BYTES: u64 = 2 * 1024 * 1024;
const BATCH_FILES: usize = 1000;

/// `rel` below `base`; `rel` is already a valid relative path.
fn below(base: &VPath, rel: &str) -> anyhow::Result<VPath> {
    let joined = if base.is_root() {
        rel.to_string()
    } else {
        format!("{base}/{rel}")
    };
    remote_path("put", &joined)
}

/// A relative `/`-separated path below a local directory.
fn local_path(root: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(root.to_path_buf(), |p, c| p.join(c))
}

/// What a `get` or `put` did.
#[derive(Debug, Default, Serialize)]
struct Transfer {
    from: String,
    to: String,
    files: u64,
    bytes: u64,
    /// Local entries not sent: symlinks, special files, names the server cannot hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<PathNote>,
    failed: Vec<PathNote>,
}

impl Transfer {
    fn done(&mut self, progress: &Progress, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
        progress.add_bytes(bytes);
        progress.file_done();
    }

    fn fail(&mut self, progress: &Progress, path: impl Into<String>, reason: String) {
        self.failed.push(PathNote {
            path: path.into(),
            reason,
        });
        progress.file_done();
    }

    /// Prints the report; any failure makes the command fail after it.
    fn finish(self, ctx: &Ctx, cmd: &str, verb: &str) -> anyhow::Result<ExitCode> {
        for s in &self.skipped {
            ctx.out.note(format!("skipped {}: {}", s.path, s.reason));
        }
        if !ctx.out.json {
            for f in &self.failed {
                eprintln!("failed {}: {}", f.path, f.reason);
            }
        }
        ctx.out.emit(&self, || {
            let skipped = match self.skipped.len() {
                0 => String::new(),
                n => format!(", skipped {n}"),
            };
            format!(
                "{verb} {} ({}) from {} to {}{skipped}",
                files(self.files),
                HumanBytes(self.bytes),
                self.from,
                self.to
            )
        });
        if !self.failed.is_empty() {
            bail!("{cmd} {}: {} failed (listed above)", self.from, self.failed.len());
        }
        Ok(ExitCode::SUCCESS)
    }
}

pub(super) async fn get(
    ctx: &Ctx,
    client: &Client,
    remote: &str,
    local: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let p = remote_path("get", remote)?;
    let what = format!("get {}", shown(&p));
    match stat(client, &p).await.map_err(|e| failed(&what, e))? {
        Remote::Missing => bail!("{what}: file_not_found: not found on the server"),
        Remote::File(m) => {
            let target = match local {
                None => PathBuf::from(p.name()),
                Some(l) if l.is_dir() => l.join(p.name()),
                Some(l) => l,
            };
            let mut report = Transfer {
                from: p.to_string(),
                to: target.display().to_string(),
                ..Transfer::default()
            };
            let progress = ctx.out.progress(m.size, 1);
            let got = client.download_to_meta(p.as_str(), &target).await;
            progress.finish();
            report.done(&progress, got.map_err(|e| failed(&what, e))?.size);
            report.finish(ctx, "get", "downloaded")
        }
        Remote::Dir => {
            let target = match local {
                Some(l) => l,
                None if p.is_root() => bail!("{what}: give a LOCAL directory to download everything into"),
                None => PathBuf::from(p.name()),
            };
            get_tree(ctx, client, &p, &target).await
        }
    }
}

/// Recreates the remote directory `dir` as the local directory `target`.
async fn get_tree(ctx: &Ctx, client: &Client, dir: &VPath, target: &Path) -> anyhow::Result<ExitCode> {
    let what = format!("get {}", shown(dir));
    let manifest = client
        .get_manifest(opt(dir))
        .await
        .map_err(|e| failed(&what, e))?;
    let mut files: Vec<(&str, &FileMetadata)> = Vec::new();
    let mut dirs = vec![target.to_path_buf()];
    for (path, m) in &manifest.files {
        let Some(rel) = relative(dir, path) else { continue };
        if m.is_directory {
            dirs.push(local_path(target, rel));
        } else {
            files.push((rel, m));
        }
    }
    for d in &dirs {
        tokio::fs::create_dir_all(d)
            .await
            .with_context(|| format!("{what}: creating {}", d.display()))?;
    }
    let mut report = Transfer {
        from: shown(dir),
        to: target.display().to_string(),
        ..Transfer::default()
    };
    let total: u64 = files.iter().map(|(_, m)| m.size).sum();
    let progress = ctx.out.progress(total, files.len() as u64);
    let (small, large): (Vec<_>, Vec<_>) = files.into_iter().partition(|(_, m)| m.size <= SMALL_FILE);
    let mut singles = large;
    singles.extend(get_in_bulk(client, dir, target, &small, &progress, &mut report).await);
    let results: Vec<_> = futures_util::stream::iter(singles)
        .map(|(rel, m)| async move {
            let r = client.download_to_meta(&m.path, &local_path(target, rel)).await;
            (rel, r)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (rel, r) in results {
        match r {
            Ok(got) => report.done(&progress, got.size),
            Err(e) => report.fail(&progress, rel, reason(e)),
        }
    }
    progress.finish();
    report.finish(ctx, "get", "downloaded")
}

/// Downloads small files in bulk requests, streamed to disk and verified by the client.
/// Returns the files a bulk request could not deliver, to be fetched one by one.
///
/// The client writes bulk parts at `root/<remote path>`; unless `dir` is the root, they land
/// in a staging directory inside `target` (same filesystem) and are renamed into place.
async fn get_in_bulk<'a>(
    client: &Client,
    dir: &VPath,
    target: &Path,
    small: &[(&'a str, &'a FileMetadata)],
    progress: &Progress,
    report: &mut Transfer,
) -> Vec<(&'a str, &'a FileMetadata)> {
    let stage = if dir.is_root() {
        target.to_path_buf()
    } else {
        target.join(format!(".volebarn-get-{:016x}", rand::random::<u64>()))
    };
    let by_path: BTreeMap<&str, (&str, &FileMetadata)> = small
        .iter()
        .map(|(rel, m)| (m.path.as_str(), (*rel, *m)))
        .collect();
    let mut leftover = Vec::new();
    for batch in bulk_batches(
        small.iter().copied(),
        |(_, m)| m.size,
        BATCH_FILES,
        GET_BATCH_BYTES,
    ) {
        let paths: Vec<String> = batch.iter().map(|(_, m)| m.path.clone()).collect();
        match client.bulk_download_into(&stage, &paths).await {
            Ok((written, _missing)) => {
                let mut delivered = std::collections::BTreeSet::new();
                for m in written {
                    delivered.insert(m.path.clone());
                    let Some(&(rel, _)) = by_path.get(m.path.as_str()) else {
                        continue;
                    };
                    if stage == target {
                        report.done(progress, m.size);
                        continue;
                    }
                    let to = local_path(target, rel);
                    match tokio::fs::rename(local_path(&stage, &m.path), &to).await {
                        Ok(()) => report.done(progress, m.size),
                        Err(e) => report.fail(progress, rel, format!("moving into place: {e}")),
                    }
                }
                // Whatever did not arrive (the report says why) is fetched again on its own.
                leftover.extend(
                    batch
                        .iter()
                        .filter(|(_, m)| !delivered.contains(&m.path))
                        .copied(),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, files = batch.len(), "bulk download failed; fetching one by one");
                leftover.extend(batch.iter().copied());
            }
        }
    }
    if stage != target {
        // Only empty directories (or a torn temp file) are left in it.
        let _ = tokio::fs::remove_dir_all(&stage).await;
    }
    leftover
}

/// Creates a remote file or replaces the one there (which is kept as a version).
async fn upload_one(client: &Client, remote: &str, local: &Path) -> Result<FileMetadata, ClientError> {
    match client.upload_path(remote, local, false).await {
        Err(e) if e.error_code() == Some(ErrorCode::AlreadyExists) => {
            client.upload_path(remote, local, true).await
        }
        other => other,
    }
}

/// The last component of a local path, resolving `.` and `..`.
fn local_name(local: &Path) -> Option<String> {
    let name = match local.file_name() {
        Some(n) => n.to_os_string(),
        None => local.canonicalize().ok()?.file_name()?.to_os_string(),
    };
    name.into_string().ok()
}

pub(super) async fn put(
    ctx: &Ctx,
    client: &Client,
    local: &Path,
    remote: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let what = format!("put {}", local.display());
    let meta = std::fs::symlink_metadata(local).with_context(|| what.clone())?;
    let default_name = || -> anyhow::Result<VPath> {
        let name = local_name(local).ok_or_else(|| anyhow!("{what}: no name to use; give a REMOTE path"))?;
        remote_path("put", &name)
    };
    if meta.is_symlink() {
        bail!("{what}: is a symbolic link; links are never followed");
    }
    if meta.is_dir() {
        let base = match remote {
            Some(r) => remote_path("put", r)?,
            None => default_name()?,
        };
        return put_tree(ctx, client, local, &base).await;
    }
    if !meta.is_file() {
        bail!("{what}: not a regular file or directory");
    }
    let dest = match remote {
        None => default_name()?,
        Some(r) => {
            let r = remote_path("put", r)?;
            match stat(client, &r).await.map_err(|e| failed(&what, e))? {
                Remote::Dir => below(&r, default_name()?.as_str())?,
                _ => r,
            }
        }
    };
    let mut report = Transfer {
        from: local.display().to_string(),
        to: dest.to_string(),
        ..Transfer::default()
    };
    let progress = ctx.out.progress(meta.len(), 1);
    let sent = upload_one(client, dest.as_str(), local).await;
    progress.finish();
    report.done(&progress, sent.map_err(|e| failed(&what, e))?.size);
    report.finish(ctx, "put", "uploaded")
}

/// A local tree to upload: regular files, directories with nothing to upload inside, and
/// what was left out.
#[derive(Default)]
struct UploadTree {
    files: Vec<LocalFile>,
    empty_dirs: Vec<String>,
    skipped: Vec<PathNote>,
}

/// A regular file found below the directory being uploaded.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LocalFile {
    /// `/`-separated, relative to that directory; a valid API path.
    rel: String,
    path: PathBuf,
    size: u64,
}

/// Walks `root` without following symlinks, leaving out every `.volebarn` directory.
fn walk_for_upload(root: &Path) -> anyhow::Result<UploadTree> {
    let mut tree = UploadTree::default();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let read = std::fs::read_dir(&dir).and_then(|rd| rd.collect::<Result<Vec<_>, _>>());
        let mut entries = match read {
            Ok(entries) => entries,
            Err(e) if rel.is_empty() => return Err(e).with_context(|| format!("reading {}", dir.display())),
            Err(e) => {
                tree.skipped.push(PathNote {
                    path: rel,
                    reason: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        entries.sort_by_key(std::fs::DirEntry::file_name);
        let mut holds_something = false;
        for entry in entries {
            let name = entry.file_name().to_string_lossy().to_string();
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let mut skip = |reason: &str| {
                tree.skipped.push(PathNote {
                    path: path.clone(),
                    reason: reason.to_string(),
                })
            };
            let Ok(ft) = entry.file_type() else {
                skip("cannot read its type");
                continue;
            };
            if ft.is_dir() && name == STATE_DIR {
                continue;
            }
            if entry.file_name().to_str().is_none() || VPath::parse_non_root(&path).is_err() {
                skip("name is not a valid Volebarn path");
            } else if ft.is_symlink() {
                skip("symbolic link (not followed)");
            } else if ft.is_dir() {
                holds_something = true;
                stack.push((entry.path(), path));
            } else if ft.is_file() {
                holds_something = true;
                let size = entry.metadata().map_or(0, |m| m.len());
                tree.files.push(LocalFile {
                    rel: path,
                    path: entry.path(),
                    size,
                });
            } else {
                skip("not a regular file");
            }
        }
        if !holds_something && !rel.is_empty() {
            tree.empty_dirs.push(rel);
        }
    }
    tree.files.sort();
    tree.empty_dirs.sort();
    Ok(tree)
}

/// Uploads the local directory `root` as the remote directory `base`, merging into what is
/// there (replaced files are kept as versions).
async fn put_tree(ctx: &Ctx, client: &Client, root: &Path, base: &VPath) -> anyhow::Result<ExitCode> {
    let what = format!("put {}", root.display());
    let r = root.to_path_buf();
    let tree = tokio::task::spawn_blocking(move || walk_for_upload(&r))
        .await
        .context("walking the local tree")?
        .with_context(|| what.clone())?;
    match stat(client, base).await.map_err(|e| failed(&what, e))? {
        Remote::File(_) => bail!("{what}: not_a_directory: {base} is a file on the server"),
        Remote::Missing => {
            ensure_dir(client, base).await.map_err(|e| failed(&what, e))?;
        }
        Remote::Dir => {}
    }
    let mut report = Transfer {
        from: root.display().to_string(),
        to: shown(base),
        skipped: tree.skipped,
        ..Transfer::default()
    };
    for d in &tree.empty_dirs {
        if let Err(e) = ensure_dir(client, &below(base, d)?).await {
            report.failed.push(PathNote {
                path: d.clone(),
                reason: reason(e),
            });
        }
    }
    let total: u64 = tree.files.iter().map(|f| f.size).sum();
    let progress = ctx.out.progress(total, tree.files.len() as u64);
    let (small, large): (Vec<_>, Vec<_>) = tree.files.iter().partition(|f| f.size <= SMALL_FILE);
    for batch in bulk_batches(small, |f| f.size, BATCH_FILES, BATCH_BYTES) {
        put_batch(client, base, &batch, &progress, &mut report).await?;
    }
    let results: Vec<_> = futures_util::stream::iter(large)
        .map(|f| async move {
            let r = match below(base, &f.rel) {
                Ok(dest) => upload_one(client, dest.as_str(), &f.path).await.map_err(reason),
                Err(e) => Err(e.to_string()),
            };
            (&f.rel, r)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (rel, r) in results {
        match r {
            Ok(m) => report.done(&progress, m.size),
            Err(e) => report.fail(&progress, rel.as_str(), e),
        }
    }
    progress.finish();
    report.finish(ctx, "put", "uploaded")
}

/// One bulk upload request: create or replace, each file with its own mtime.
async fn put_batch(
    client: &Client,
    base: &VPath,
    batch: &[&LocalFile],
    progress: &Progress,
    report: &mut Transfer,
) -> anyhow::Result<()> {
    let mut parts = Vec::with_capacity(batch.len());
    let mut rel_of = BTreeMap::new();
    for LocalFile { rel, path, .. } in batch.iter().copied() {
        let dest = below(base, rel)?.to_string();
        rel_of.insert(dest.clone(), rel.clone());
        parts.push(LocalUpload {
            path: dest,
            local: path.clone(),
            condition: UploadCondition::Any,
        });
    }
    if parts.is_empty() {
        return Ok(());
    }
    let rel = |p: &str| rel_of.get(p).cloned().unwrap_or_else(|| p.to_string());
    match client.bulk_upload_files(parts).await {
        Ok(resp) => {
            for m in &resp.files {
                report.done(progress, m.size);
            }
            for f in resp.failed {
                report.fail(progress, rel(&f.path), format!("{}: {}", f.error_code, f.error));
            }
        }
        Err(e) => {
            let reason = reason(e);
            for p in rel_of.values() {
                report.fail(progress, p.as_str(), reason.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_file_and_byte_limits() {
        let batches =
            |items: Vec<u64>| bulk_batches(items, |s| *s, BATCH_FILES, BATCH_BYTES).collect::<Vec<_>>();
        let b = batches(vec![SMALL_FILE; 40]);
        assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![16, 16, 8]);
        let b = batches(vec![1u64; BATCH_FILES + 1]);
        assert_eq!(
            b.iter().map(|b| b.len()).collect::<Vec<_>>(),
            vec![BATCH_FILES, 1]
        );
        assert!(batches(Vec::new()).is_empty());
        // Downloads: two of the largest small files per request at most.
        let b: Vec<_> = bulk_batches(vec![SMALL_FILE; 5], |s| *s, BATCH_FILES, GET_BATCH_BYTES).collect();
        assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
    }
}
