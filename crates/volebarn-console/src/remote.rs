//! Remote commands: work with the server's files directly, like rclone. `get` and `put` move
//! whole trees (small files in bulk requests, big ones streamed or chunked, every download
//! verified by hash); `verify` re-hashes both sides of a synced folder. Nothing here decides
//! what to sync: that is the sync engine's job.

use crate::cli::Ctx;
use crate::output::Progress;
use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use futures_util::StreamExt;
use indicatif::HumanBytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use volebarn_client::{
    Client, ClientError, ConditionalUpload, DirectoryListing, ErrorCode, FileManifest, FileMetadata,
    UploadCondition, VPath, Xxh3, STATE_DIR,
};
use volebarn_core::hash::Xxh3Hasher;
use volebarn_core::timefmt::format_rfc3339;

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// List a remote directory (the root by default).
    Ls {
        path: Option<String>,
        /// Whole tree below PATH
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Download a remote file or directory (recursively) to LOCAL [default: its name, here].
    Get { remote: String, local: Option<PathBuf> },
    /// Upload a local file or directory (recursively) to REMOTE [default: its name, at the root].
    Put { local: PathBuf, remote: Option<String> },
    /// Delete a remote file, or a directory with -r (recoverable from versions).
    Rm {
        path: String,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Move or rename a remote file or directory.
    Mv { from: String, to: String },
    /// Copy a remote file or directory (no data is re-sent).
    Cp { from: String, to: String },
    /// Create a remote directory (and its parents).
    Mkdir { path: String },
    /// Find remote files by glob pattern, e.g. '**/*.pdf'.
    Search { pattern: String },
    /// List the kept versions of a remote file.
    Versions { path: String },
    /// Bring back version REV of a remote file (the current one is kept as a version).
    Restore {
        path: String,
        #[arg(long)]
        rev: u64,
    },
    /// Re-hash local and remote files and report every difference.
    Verify {
        /// Only this path (file or directory) below the folder
        path: Option<String>,
        /// The synced folder [default: local_folder from the config]
        #[arg(long, value_name = "DIR")]
        folder: Option<PathBuf>,
    },
}

impl RemoteCommand {
    /// The `--folder` the command was given, if it takes one.
    pub fn folder(&self) -> Option<&PathBuf> {
        match self {
            RemoteCommand::Verify { folder, .. } => folder.as_ref(),
            _ => None,
        }
    }
}

/// Files up to this size travel in bulk requests; bigger ones one by one, streamed (and over
/// the client's large-file threshold, as resumable chunks).
const SMALL_FILE: u64 = 1024 * 1024;
/// Limits of one bulk request; small enough that the progress bar moves.
const BATCH_BYTES: u64 = 16 * 1024 * 1024;
const BATCH_FILES: usize = 1000;
/// Single-file transfers in flight.
const CONCURRENCY: usize = 4;
/// `verify` re-hashes remote files up to this size in memory, bigger ones through a temp file.
const VERIFY_IN_MEMORY: u64 = 64 * 1024 * 1024;

pub async fn run(ctx: &Ctx, cmd: RemoteCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match cmd {
        RemoteCommand::Ls { path, recursive } => ls(ctx, &client, path.as_deref(), recursive).await,
        RemoteCommand::Get { remote, local } => get(ctx, &client, &remote, local).await,
        RemoteCommand::Put { local, remote } => put(ctx, &client, &local, remote.as_deref()).await,
        RemoteCommand::Rm { path, recursive } => rm(ctx, &client, &path, recursive).await,
        RemoteCommand::Mv { from, to } => relocate(ctx, &client, &from, &to, false).await,
        RemoteCommand::Cp { from, to } => relocate(ctx, &client, &from, &to, true).await,
        RemoteCommand::Mkdir { path } => mkdir(ctx, &client, &path).await,
        RemoteCommand::Search { pattern } => search(ctx, &client, &pattern).await,
        RemoteCommand::Versions { path } => versions(ctx, &client, &path).await,
        RemoteCommand::Restore { path, rev } => restore(ctx, &client, &path, rev).await,
        RemoteCommand::Verify { path, .. } => verify(ctx, &client, path.as_deref()).await,
    }
}

// ---- errors, paths, formatting ----

/// `what: error_code: message` for a server's answer; the whole cause chain otherwise (a
/// refused connection says why).
fn failed(what: impl Display, e: ClientError) -> anyhow::Error {
    let message = match &e {
        ClientError::FileNotFound { .. } => Some("not found on the server".to_string()),
        ClientError::Server { message, .. } => Some(message.clone()),
        ClientError::InvalidPath { reason, .. } => Some(reason.clone()),
        ClientError::HashMismatch { expected, actual, .. } => Some(format!(
            "received bytes hash to {actual}, the server recorded {expected}"
        )),
        _ => None,
    };
    match (message, e.error_code(), e) {
        (Some(m), Some(code), _) => anyhow!("{what}: {code}: {m}"),
        // These print their cause in their own message; the chain would say it twice.
        (_, _, ClientError::Network(source)) => {
            anyhow::Error::new(source).context(format!("{what}: {}", ErrorCode::NetworkError))
        }
        (_, _, ClientError::Io { path, source }) => anyhow!("{what}: {path}: {source}"),
        (_, _, e) => anyhow::Error::new(e).context(what.to_string()),
    }
}

/// Why one file failed, for a per-file list.
fn reason(e: ClientError) -> String {
    crate::one_line(&failed("", e))
        .trim_start_matches(": ")
        .to_string()
}

/// A path given to `cmd` on the command line, validated once (DESIGN.md §2); `/` or nothing
/// is the root.
fn remote_path(cmd: &str, raw: &str) -> anyhow::Result<VPath> {
    VPath::parse(raw).map_err(|e| anyhow!("{cmd} {raw}: invalid_path: {e}"))
}

/// `None` for the root, as the client's listing calls want it.
fn opt(p: &VPath) -> Option<&str> {
    (!p.is_root()).then_some(p.as_str())
}

/// How a remote path is shown: the root as `/`.
fn shown(p: &VPath) -> String {
    if p.is_root() {
        "/".to_string()
    } else {
        p.to_string()
    }
}

/// `rel` below `base`; `rel` is already a valid relative path.
fn below(base: &VPath, rel: &str) -> anyhow::Result<VPath> {
    let joined = if base.is_root() {
        rel.to_string()
    } else {
        format!("{base}/{rel}")
    };
    remote_path("put", &joined)
}

/// The part of a manifest key below `base` (`None` for `base` itself or paths outside it).
fn relative<'a>(base: &VPath, path: &'a str) -> Option<&'a str> {
    if base.is_root() {
        return Some(path).filter(|p| !p.is_empty());
    }
    path.strip_prefix(base.as_str())?
        .strip_prefix('/')
        .filter(|r| !r.is_empty())
}

/// A relative `/`-separated path below a local directory.
fn local_path(root: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(root.to_path_buf(), |p, c| p.join(c))
}

/// `2024-05-01 12:00:03` (UTC), seconds precision.
fn short_time(nanos: i64) -> String {
    let s = format_rfc3339(nanos);
    s.get(..19).map_or(s.clone(), |t| t.replace('T', " "))
}

/// `1 file`, `2 files`.
fn files(n: u64) -> String {
    match n {
        1 => "1 file".to_string(),
        n => format!("{n} files"),
    }
}

/// `size  modified  name` with directories marked by a trailing `/`.
fn entry_line(m: &FileMetadata, name: &str) -> String {
    let (size, slash) = if m.is_directory {
        ("-".to_string(), "/")
    } else {
        (m.size.to_string(), "")
    };
    format!("{size:>12}  {}  {name}{slash}", short_time(m.modified))
}

fn mtime_nanos(m: &std::fs::Metadata) -> Option<i64> {
    let d = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_nanos()).ok()
}

/// What lives at a remote path.
enum Remote {
    File(FileMetadata),
    Dir,
    Missing,
}

async fn stat(client: &Client, p: &VPath) -> Result<Remote, ClientError> {
    if p.is_root() {
        return Ok(Remote::Dir);
    }
    match client.get_file_metadata(p.as_str()).await {
        Ok(m) => Ok(Remote::File(m)),
        Err(e) => match e.error_code() {
            Some(ErrorCode::IsADirectory) => Ok(Remote::Dir),
            Some(ErrorCode::FileNotFound) => Ok(Remote::Missing),
            _ => Err(e),
        },
    }
}

// ---- ls, search, versions ----

async fn ls(ctx: &Ctx, client: &Client, path: Option<&str>, recursive: bool) -> anyhow::Result<ExitCode> {
    let p = remote_path("ls", path.unwrap_or(""))?;
    let what = format!("ls {}", shown(&p));
    let listed = if recursive {
        client.get_manifest(opt(&p)).await.map(|manifest| {
            ctx.out.emit(&manifest, || {
                let lines = manifest
                    .files
                    .iter()
                    .filter_map(|(path, m)| Some(entry_line(m, relative(&p, path)?)));
                lines.collect::<Vec<_>>().join("\n")
            });
        })
    } else {
        client.list_directory(opt(&p)).await.map(|listing| {
            ctx.out.emit(&listing, || {
                let lines = listing.entries.iter().map(|m| entry_line(m, &m.name));
                lines.collect::<Vec<_>>().join("\n")
            });
        })
    };
    match listed {
        Ok(()) => return Ok(ExitCode::SUCCESS),
        Err(e) if e.error_code() == Some(ErrorCode::NotADirectory) => {}
        Err(e) => return Err(failed(what, e)),
    }
    // A file: shown as a listing of itself, in the same JSON shape.
    let m = client
        .get_file_metadata(p.as_str())
        .await
        .map_err(|e| failed(&what, e))?;
    let line = entry_line(&m, p.as_str());
    if recursive {
        let manifest = FileManifest {
            files: BTreeMap::from([(m.path.clone(), m)]),
        };
        ctx.out.emit(&manifest, || line);
    } else {
        let listing = DirectoryListing {
            path: m.path.clone(),
            entries: vec![m],
        };
        ctx.out.emit(&listing, || line);
    }
    Ok(ExitCode::SUCCESS)
}

async fn search(ctx: &Ctx, client: &Client, pattern: &str) -> anyhow::Result<ExitCode> {
    let found = client
        .search_files(pattern, None)
        .await
        .map_err(|e| failed(format!("search {pattern:?}"), e))?;
    if found.is_empty() {
        ctx.out.note(format!("no remote file matches {pattern:?}"));
    }
    ctx.out.emit(&found, || {
        let lines = found.iter().map(|m| entry_line(m, &m.path));
        lines.collect::<Vec<_>>().join("\n")
    });
    Ok(ExitCode::SUCCESS)
}

async fn versions(ctx: &Ctx, client: &Client, path: &str) -> anyhow::Result<ExitCode> {
    let p = remote_path("versions", path)?;
    let list = client
        .versions(p.as_str())
        .await
        .map_err(|e| failed(format!("versions {}", shown(&p)), e))?;
    ctx.out.emit(&list, || {
        let mut lines = vec![format!(
            "{:>8}  {:>12}  {:<16}  {}",
            "rev", "size", "xxh3", "modified"
        )];
        for v in &list.versions {
            let state = match (v.current, v.deleted) {
                (true, _) => "  current",
                (false, true) => "  deleted after this",
                (false, false) => "",
            };
            lines.push(format!(
                "{:>8}  {:>12}  {}  {}{state}",
                v.rev,
                v.size,
                v.xxhash3,
                short_time(v.modified)
            ));
        }
        lines.join("\n")
    });
    Ok(ExitCode::SUCCESS)
}

async fn restore(ctx: &Ctx, client: &Client, path: &str, rev: u64) -> anyhow::Result<ExitCode> {
    let p = remote_path("restore", path)?;
    let what = format!("restore {} --rev {rev}", shown(&p));
    let m = match client.restore_version(p.as_str(), rev).await {
        Ok(m) => m,
        // The client keeps only the code of a 404; say which of the two is missing.
        Err(e) if e.error_code() == Some(ErrorCode::FileNotFound) => {
            match client.versions(p.as_str()).await {
                Ok(list) if !list.versions.iter().any(|v| v.rev == rev) => {
                    bail!("{what}: file_not_found: {p} has no version {rev} (`volebarn versions {p}` lists them)")
                }
                _ => return Err(failed(what, e)),
            }
        }
        Err(e) => return Err(failed(what, e)),
    };
    ctx.out.emit(&m, || {
        format!(
            "restored {} from rev {rev}: now rev {}, {} bytes, xxh3 {}",
            m.path, m.rev, m.size, m.xxhash3
        )
    });
    Ok(ExitCode::SUCCESS)
}

// ---- rm, mv, cp, mkdir ----

#[derive(Serialize)]
struct Deleted {
    path: String,
    directory: bool,
}

async fn rm(ctx: &Ctx, client: &Client, path: &str, recursive: bool) -> anyhow::Result<ExitCode> {
    let p = remote_path("rm", path)?;
    let what = format!("rm {}", shown(&p));
    if p.is_root() {
        bail!("{what}: invalid_path: the root directory cannot be deleted");
    }
    let directory = match client.delete_file(p.as_str()).await {
        Ok(()) => false,
        Err(e) if e.error_code() == Some(ErrorCode::IsADirectory) => {
            if !recursive {
                bail!("{what}: is_a_directory: use `volebarn rm -r {p}` to delete it and everything in it");
            }
            client
                .delete_directory(p.as_str())
                .await
                .map_err(|e| failed(&what, e))?;
            true
        }
        Err(e) => return Err(failed(what, e)),
    };
    let result = Deleted {
        path: p.to_string(),
        directory,
    };
    ctx.out.emit(&result, || {
        if directory {
            format!("deleted {p}/ and everything in it (each file keeps its versions: `volebarn versions {p}/FILE`)")
        } else {
            format!("deleted {p} (recoverable: `volebarn versions {p}`, then `volebarn restore {p} --rev N`)")
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// `mv`/`cp`: onto an existing directory means into it, as with `mv` and `cp`.
async fn relocate(ctx: &Ctx, client: &Client, from: &str, to: &str, copy: bool) -> anyhow::Result<ExitCode> {
    let verb = if copy { "cp" } else { "mv" };
    let from = remote_path(verb, from)?;
    let mut to = remote_path(verb, to)?;
    let what = format!("{verb} {} {}", shown(&from), shown(&to));
    if !from.is_root() {
        if let Remote::Dir = stat(client, &to).await.map_err(|e| failed(&what, e))? {
            to = to
                .join(from.name())
                .map_err(|e| anyhow!("{what}: invalid_path: {e}"))?;
        }
    }
    let result = if copy {
        client.copy_file(from.as_str(), to.as_str()).await
    } else {
        client.move_file(from.as_str(), to.as_str()).await
    };
    let m = result.map_err(|e| failed(&what, e))?;
    ctx.out.emit(&m, || {
        let done = if copy { "copied" } else { "moved" };
        let slash = if m.is_directory { "/" } else { "" };
        format!("{done} {from}{slash} → {}{slash}", m.path)
    });
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct Made {
    path: String,
    created: bool,
}

/// Like `mkdir -p`: parents are created, and an existing directory is fine.
async fn mkdir(ctx: &Ctx, client: &Client, path: &str) -> anyhow::Result<ExitCode> {
    let p = remote_path("mkdir", path)?;
    let what = format!("mkdir {}", shown(&p));
    let created = ensure_dir(client, &p).await.map_err(|e| failed(&what, e))?;
    let result = Made {
        path: p.to_string(),
        created,
    };
    ctx.out.emit(&result, || {
        if created {
            format!("created {p}/")
        } else {
            format!("{p}/ already exists")
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// Creates `p` (and its parents) unless it is already a directory; true when created.
async fn ensure_dir(client: &Client, p: &VPath) -> Result<bool, ClientError> {
    if p.is_root() {
        return Ok(false);
    }
    match client.create_directory(p.as_str()).await {
        Ok(_) => Ok(true),
        Err(e) if e.error_code() == Some(ErrorCode::AlreadyExists) => match stat(client, p).await? {
            Remote::Dir => Ok(false),
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

// ---- get and put ----

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

#[derive(Debug, Serialize)]
struct PathNote {
    path: String,
    reason: String,
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

async fn get(ctx: &Ctx, client: &Client, remote: &str, local: Option<PathBuf>) -> anyhow::Result<ExitCode> {
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
    for batch in batches(small, |(_, m)| m.size) {
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

/// Splits `items` into bulk requests of at most `BATCH_FILES` files and about `BATCH_BYTES`.
fn batches<T>(items: &[T], size: impl Fn(&T) -> u64) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, item) in items.iter().enumerate() {
        bytes += size(item);
        if bytes >= BATCH_BYTES || i + 1 - start >= BATCH_FILES || i + 1 == items.len() {
            out.push(&items[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    out
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

async fn put(ctx: &Ctx, client: &Client, local: &Path, remote: Option<&str>) -> anyhow::Result<ExitCode> {
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
    for batch in batches(&small, |f| f.size) {
        put_batch(client, base, batch, &progress, &mut report).await?;
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
        let read = async {
            let content = tokio::fs::read(path).await?;
            let mtime = tokio::fs::metadata(path)
                .await
                .ok()
                .as_ref()
                .and_then(mtime_nanos);
            Ok::<_, std::io::Error>((content, mtime))
        };
        match read.await {
            Ok((content, mtime)) => {
                let dest = below(base, rel)?.to_string();
                rel_of.insert(dest.clone(), rel.clone());
                parts.push(ConditionalUpload {
                    path: dest,
                    content: content.into(),
                    condition: UploadCondition::Any,
                    mtime,
                });
            }
            Err(e) => report.fail(progress, rel.as_str(), format!("reading: {e}")),
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    let rel = |p: &str| rel_of.get(p).cloned().unwrap_or_else(|| p.to_string());
    match client.bulk_upload_conditional(parts).await {
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

// ---- verify ----

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
    /// Remote files the server could not deliver (it refuses to send a damaged chunk).
    unreadable: Vec<PathNote>,
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
async fn verify(ctx: &Ctx, client: &Client, path: Option<&str>) -> anyhow::Result<ExitCode> {
    let root = ctx.settings.folder()?.to_path_buf();
    let under = remote_path("verify", path.unwrap_or(""))?;
    let what = format!("verify {}", shown(&under));
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
    let (r, u) = (root.clone(), opt(&under).map(str::to_string));
    let local = tokio::task::spawn_blocking(move || local_files(&r, u.as_deref()))
        .await
        .context("hashing local files")??;

    let mut report = VerifyReport {
        folder: root.display().to_string(),
        path: shown(&under),
        files: 0,
        only_local: Vec::new(),
        only_remote: Vec::new(),
        differ: Vec::new(),
        corrupt: Vec::new(),
        unreadable: Vec::new(),
    };
    for (p, (size, hash)) in &local {
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
    report.only_remote = remote
        .keys()
        .filter(|p| !local.contains_key(*p))
        .cloned()
        .collect();
    report.files = (local.len() + report.only_remote.len()) as u64;

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

/// Size and xxh3 of every regular file below `root` (or below `root/under`, which may also be
/// a single file), keyed by `/`-separated path relative to `root`. Skips `.volebarn/` at the
/// root and symlinks. The sync engine's scanner, which knows ignore rules, can replace it.
fn local_files(root: &Path, under: Option<&str>) -> anyhow::Result<BTreeMap<String, (u64, Xxh3)>> {
    let mut out = BTreeMap::new();
    let start_rel = under.unwrap_or("").to_string();
    let start = local_path(root, &start_rel);
    let meta = match std::fs::symlink_metadata(&start) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", start.display())),
    };
    if meta.is_file() {
        out.insert(start_rel, hash_file(&start)?);
        return Ok(out);
    }
    if !meta.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![(start, start_rel)];
    while let Some((dir, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if rel.is_empty() && name == STATE_DIR {
                continue;
            }
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry
                .file_type()
                .with_context(|| format!("reading {}", entry.path().display()))?;
            if ft.is_dir() {
                stack.push((entry.path(), path));
            } else if ft.is_file() {
                out.insert(path, hash_file(&entry.path())?);
            }
        }
    }
    Ok(out)
}

/// Size and xxh3 of a local file, read in 1 MiB pieces.
fn hash_file(path: &Path) -> anyhow::Result<(u64, Xxh3)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Xxh3Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok((size, hasher.finish()));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_file_and_byte_limits() {
        let sizes = vec![SMALL_FILE; 40];
        let b = batches(&sizes, |s| *s);
        assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![16, 16, 8]);
        let many = vec![1u64; BATCH_FILES + 1];
        let b = batches(&many, |s| *s);
        assert_eq!(
            b.iter().map(|b| b.len()).collect::<Vec<_>>(),
            vec![BATCH_FILES, 1]
        );
        assert!(batches(&Vec::<u64>::new(), |s| *s).is_empty());
    }

    #[test]
    fn relative_paths_stay_below_their_base() {
        let docs = VPath::parse("docs").expect("valid");
        assert_eq!(relative(&docs, "docs/a/b.txt"), Some("a/b.txt"));
        assert_eq!(relative(&docs, "docs"), None);
        assert_eq!(relative(&docs, "docsx/a"), None);
        assert_eq!(relative(&VPath::root(), "a"), Some("a"));
    }

    #[test]
    fn local_walk_skips_state_dir_and_symlinks_and_takes_one_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join(".volebarn")).expect("mkdir");
        std::fs::write(root.join(".volebarn/index"), b"x").expect("write");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/b/c.txt"), b"hello").expect("write");
        std::os::unix::fs::symlink(root.join("a/b/c.txt"), root.join("a/link")).expect("symlink");
        let all = local_files(root, None).expect("walk");
        assert_eq!(all.keys().collect::<Vec<_>>(), vec!["a/b/c.txt"]);
        assert_eq!(all["a/b/c.txt"], (5, Xxh3::of(b"hello")));
        assert_eq!(local_files(root, Some("a/b/c.txt")).expect("file").len(), 1);
        assert!(local_files(root, Some("nope")).expect("missing").is_empty());
    }
}
