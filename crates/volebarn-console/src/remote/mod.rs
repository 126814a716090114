//! Remote commands: work with the server's files directly, like rclone. `get` and `put` move
//! whole trees (small files in bulk requests, big ones streamed or chunked, every download
//! verified by hash); `verify` re-hashes both sides of a synced folder. Nothing here decides
//! what to sync: that is the sync engine's job.
//!
//! This module holds the command line, the dispatch, the shared error and path helpers and
//! the small one-request commands; `transfer` moves trees, `verify` compares a folder.

mod transfer;
mod verify;

use crate::cli::Ctx;
use anyhow::{anyhow, bail};
use clap::Subcommand;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;
use volebarn_client::{Client, ClientError, DirectoryListing, ErrorCode, FileManifest, FileMetadata, VPath};
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

/// Single-file transfers (or `verify` downloads) in flight.
const CONCURRENCY: usize = 4;

pub async fn run(ctx: &Ctx, cmd: RemoteCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match cmd {
        RemoteCommand::Ls { path, recursive } => ls(ctx, &client, path.as_deref(), recursive).await,
        RemoteCommand::Get { remote, local } => transfer::get(ctx, &client, &remote, local).await,
        RemoteCommand::Put { local, remote } => transfer::put(ctx, &client, &local, remote.as_deref()).await,
        RemoteCommand::Rm { path, recursive } => rm(ctx, &client, &path, recursive).await,
        RemoteCommand::Mv { from, to } => relocate(ctx, &client, &from, &to, false).await,
        RemoteCommand::Cp { from, to } => relocate(ctx, &client, &from, &to, true).await,
        RemoteCommand::Mkdir { path } => mkdir(ctx, &client, &path).await,
        RemoteCommand::Search { pattern } => search(ctx, &client, &pattern).await,
        RemoteCommand::Versions { path } => versions(ctx, &client, &path).await,
        RemoteCommand::Restore { path, rev } => restore(ctx, &client, &path, rev).await,
        RemoteCommand::Verify { path, .. } => verify::verify(ctx, &client, path.as_deref()).await,
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

/// A path given to `cmd` on the command line, validated once ([docs/design.md](docs/design.md) §2); `/` or nothing
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

/// The part of a manifest key below `base` (`None` for `base` itself or paths outside it).
fn relative<'a>(base: &VPath, path: &'a str) -> Option<&'a str> {
    if base.is_root() {
        return Some(path).filter(|p| !p.is_empty());
    }
    path.strip_prefix(base.as_str())?
        .strip_prefix('/')
        .filter(|r| !r.is_empty())
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

/// One path in a per-file list (skipped, failed, unreadable) and why.
#[derive(Debug, Serialize)]
struct PathNote {
    path: String,
    reason: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_below_their_base() {
        let docs = VPath::parse("docs").expect("valid");
        assert_eq!(relative(&docs, "docs/a/b.txt"), Some("a/b.txt"));
        assert_eq!(relative(&docs, "docs"), None);
        assert_eq!(relative(&docs, "docsx/a"), None);
        assert_eq!(relative(&VPath::root(), "a"), Some("a"));
    }
}
