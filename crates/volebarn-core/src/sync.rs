//! The three-way sync planner ([docs/design.md](docs/design.md) §6).
//!
//! It owns the decision "what must happen to each path so that client and server agree again",
//! made from three manifests: what the client has, what the server has, and the *base* — what both
//! agreed on at the last successful sync. The base is what tells "deleted here" from "new there",
//! which the seed's two-way compare cannot.
//!
//! Plan, then execute: [`plan`] is a pure function and the [`SyncPlan`] it returns is plain data
//! (it is also the body of `POST /bulk/sync`). This module must not know how the plan is applied:
//! no I/O, no HTTP, no index format. The server computes plans; the client computes or receives
//! them and applies them.
//!
//! Guarantees, checked by the property tests in `sync/tests.rs` against a simulated client:
//! - no strategy destroys a version: a side's content is only deleted or overwritten when it
//!   equals the base (the other side holds or held it, and the server keeps history), and the
//!   loser of a conflict is kept as a conflict copy ([`conflict_copy_name`]);
//! - applying a plan and planning again yields an empty plan ([`SyncPlan::is_empty`]);
//! - after applying, both sides hold the same files with the same content.

use crate::hash::Xxh3;
use crate::timefmt::{rfc3339_nanos, UnixNanos};
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

/// How to settle a path changed differently on both sides (the seed's `conflict_resolution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConflictStrategy {
    /// The local version wins; the remote one is kept as a conflict copy.
    PreferLocal,
    /// The remote version wins; the local one is kept as a conflict copy.
    PreferRemote,
    /// The version with the later mtime wins (ties go to the remote). The default: unattended
    /// syncs (daemon, cron) need a strategy that never stops for a human, and since the loser is
    /// always kept as a conflict copy, picking a winner never loses data.
    #[default]
    PreferNewer,
    /// Both versions are kept and the path is reported for the user to settle.
    Manual,
}

/// What the client must do about one conflict (the seed's `resolution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConflictResolution {
    /// Upload the local version (`If-Match: remote_rev`); save the remote one as a conflict copy.
    UseLocal,
    /// Download the remote version; save the local one as a conflict copy first.
    UseRemote,
    /// Never produced by [`plan`], which decides the winner itself and says `use_local` or
    /// `use_remote`; kept so the seed's JSON still parses.
    UseNewer,
    /// Keep both: move the local version to a conflict copy, download the remote one, and tell
    /// the user. For a [`ConflictKind::FileDirectory`] clash: touch nothing, only report.
    Manual,
}

/// Why a path is in conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// Both sides have a file there, with different content.
    #[default]
    Content,
    /// One side has a file where the other has a directory. Always `manual`; nothing at or under
    /// the path is planned until the user removes one of them.
    FileDirectory,
}

/// One conflict: the seed's `SyncConflict` plus the remote rev to condition an upload on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncConflict {
    pub path: String,
    /// The local file's mtime; the Unix epoch when the local side is a directory.
    #[serde(with = "rfc3339_nanos")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub local_modified: UnixNanos,
    /// The remote file's mtime; the Unix epoch when the remote side is a directory.
    #[serde(with = "rfc3339_nanos")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub remote_modified: UnixNanos,
    pub resolution: ConflictResolution,
    /// The remote file's current rev (`None` when the remote side is a directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_rev: Option<u64>,
    #[serde(default)]
    pub kind: ConflictKind,
}

/// A file as the client's scanner sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LocalState {
    pub xxh3: Xxh3,
    pub size: u64,
    #[serde(with = "rfc3339_nanos")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub mtime: UnixNanos,
}

/// Whatever holds a local file's state: the planner reads the client's own records (a scan's
/// stats) without a copy of the whole folder as [`LocalState`]s.
pub trait AsLocalState {
    fn local_state(&self) -> LocalState;
}

impl AsLocalState for LocalState {
    fn local_state(&self) -> LocalState {
        *self
    }
}

/// Whatever holds a path's base (if it has one): the planner reads the client's own records
/// (its index) without a copy of the whole folder as [`BaseState`]s.
pub trait AsBaseState {
    fn base_state(&self) -> Option<BaseState>;
}

impl AsBaseState for BaseState {
    fn base_state(&self) -> Option<BaseState> {
        Some(*self)
    }
}

/// A file as the server holds it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RemoteState {
    pub xxh3: Xxh3,
    pub size: u64,
    #[serde(with = "rfc3339_nanos")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub mtime: UnixNanos,
    pub rev: u64,
}

/// A file as both sides held it at the last successful sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BaseState {
    pub xxh3: Xxh3,
    pub size: u64,
    #[serde(with = "rfc3339_nanos")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub mtime: UnixNanos,
    pub rev: u64,
}

impl From<RemoteState> for BaseState {
    /// What the client records as the base once a path is in sync at this remote state.
    fn from(r: RemoteState) -> Self {
        BaseState {
            xxh3: r.xxh3,
            size: r.size,
            mtime: r.mtime,
            rev: r.rev,
        }
    }
}

/// What to do, per path. Every list is sorted by path and a path appears in at most one of the
/// file lists (`client_upload` … `forget`, `conflicts`). Missing fields deserialize as empty, so
/// the seed's four-field `SyncResponse` parses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct SyncPlan {
    /// Upload the local file; condition it on `if_match[path]`, or on absence when not there.
    pub client_upload: Vec<String>,
    /// Download the remote file; record it as the base.
    pub client_download: Vec<String>,
    /// Delete the local file (it equals the base and the server deleted it); drop the base.
    pub client_delete: Vec<String>,
    /// Delete the remote file with `If-Match: if_match[path]`; drop the base.
    pub server_delete: Vec<String>,
    /// Create these (possibly empty) directories locally.
    pub client_create_dirs: Vec<String>,
    /// Create these (possibly empty) directories on the server.
    pub server_create_dirs: Vec<String>,
    /// Both sides already hold the same content: record the remote state as the base.
    pub adopt: Vec<String>,
    /// Gone on both sides: drop the base entry. A stale base is dangerous: a file later re-created
    /// with the old content would look "unchanged locally" and be deleted to match the server.
    pub forget: Vec<String>,
    pub conflicts: Vec<SyncConflict>,
    /// The rev to send as `If-Match` for a path in `client_upload`, `server_delete`, or a
    /// `use_local` conflict. Absent for an upload: the path must not exist on the server.
    pub if_match: BTreeMap<String, u64>,
}

impl SyncPlan {
    /// True when there is nothing at all to do, bookkeeping (`adopt`, `forget`) included.
    pub fn is_empty(&self) -> bool {
        self.total_ops() == 0
    }

    /// Number of planned operations (each path in each list counts once; `if_match` does not).
    pub fn total_ops(&self) -> usize {
        self.client_upload.len()
            + self.client_download.len()
            + self.client_delete.len()
            + self.server_delete.len()
            + self.client_create_dirs.len()
            + self.server_create_dirs.len()
            + self.adopt.len()
            + self.forget.len()
            + self.conflicts.len()
    }
}

/// Computes what to do so that both sides hold the same files again ([docs/design.md](docs/design.md) §6).
///
/// Paths are relative, `/`-separated, already validated (see [`crate::VPath`]); the root (`""`)
/// is ignored in the directory sets. `local_dirs` and `remote_dirs` need not list the parents of
/// files: those are implied. Content equality is `xxh3` and `size`. The remote counts as unchanged
/// when its rev is the base rev *or* its content equals the base's (a re-upload of the same bytes).
///
/// Directory deletions are not planned: a directory missing on one side is re-created from the
/// other, and only directories that would not exist after the file operations are listed.
pub fn plan<K: Ord + Borrow<str>, L: AsLocalState, B: AsBaseState>(
    local: &BTreeMap<K, L>,
    remote: &BTreeMap<K, RemoteState>,
    base: &BTreeMap<K, B>,
    local_dirs: &BTreeSet<String>,
    remote_dirs: &BTreeSet<String>,
    strategy: ConflictStrategy,
) -> SyncPlan {
    let local_tree = tree(local_dirs.iter(), local.keys().map(Borrow::borrow));
    let remote_tree = tree(remote_dirs.iter(), remote.keys().map(Borrow::borrow));
    // A file facing a directory: no table row applies, and any transfer at or under the path
    // would fail (docs/design.md §2: a path is a file or a directory, never both).
    let (mut in_remote_tree, mut in_local_tree) = (
        crate::sorted::Cursor::new(remote_tree.iter().copied()),
        crate::sorted::Cursor::new(local_tree.iter().copied()),
    );
    let clashes: BTreeSet<&str> = local
        .keys()
        .map(Borrow::borrow)
        .filter(|p| in_remote_tree.contains(p))
        .chain(
            remote
                .keys()
                .map(Borrow::borrow)
                .filter(|p| in_local_tree.contains(p)),
        )
        .collect();

    let mut out = SyncPlan::default();
    for (path, l, r, b) in crate::sorted::join3(local, remote, base) {
        let path: &str = path.borrow();
        if clashes.contains(path) {
            out.conflicts.push(SyncConflict {
                path: path.to_string(),
                local_modified: l.map_or(0, |l| l.local_state().mtime),
                remote_modified: r.map_or(0, |r| r.mtime),
                resolution: ConflictResolution::Manual,
                remote_rev: r.map(|r| r.rev),
                kind: ConflictKind::FileDirectory,
            });
        } else if !under_any(path, &clashes) {
            let (l, b) = (
                l.map(AsLocalState::local_state),
                b.and_then(AsBaseState::base_state),
            );
            plan_file(path, l.as_ref(), r, b.as_ref(), strategy, &mut out);
        }
    }
    plan_dirs(local, remote, local_dirs, remote_dirs, &clashes, &mut out);
    out
}

/// One side of a path compared with the base.
enum Delta<'a, T> {
    /// Present and equal to the base.
    Same(&'a T),
    /// Present and different from the base, or new (no base).
    Changed(&'a T),
    /// Absent (deleted, or never there).
    Gone,
}

fn same_content(a: (Xxh3, u64), b: (Xxh3, u64)) -> bool {
    a == b
}

/// Applies the docs/design.md §6 table to one path that is a file (or nothing) on both sides.
fn plan_file(
    path: &str,
    local: Option<&LocalState>,
    remote: Option<&RemoteState>,
    base: Option<&BaseState>,
    strategy: ConflictStrategy,
    out: &mut SyncPlan,
) {
    use Delta::{Changed, Gone, Same};
    let base_content = base.map(|b| (b.xxh3, b.size));
    let l = match local {
        None => Gone,
        Some(l) if base_content.is_some_and(|b| same_content((l.xxh3, l.size), b)) => Same(l),
        Some(l) => Changed(l),
    };
    let r = match (remote, base) {
        (None, _) => Gone,
        (Some(r), Some(b)) if r.rev == b.rev || same_content((r.xxh3, r.size), (b.xxh3, b.size)) => Same(r),
        (Some(r), _) => Changed(r),
    };
    if let (Same(r), Same(_)) = (&r, &l) {
        // Same bytes under a newer rev (a re-upload elsewhere): refresh the base so later
        // uploads are conditioned on the rev the server actually has.
        if base.is_some_and(|b| b.rev != r.rev) {
            out.adopt.push(path.to_string());
        }
        return;
    }
    let path = path.to_string();
    match (l, r) {
        (Same(_), Same(_)) => {}
        // Condition on the remote's current rev rather than the base rev: they are equal unless
        // the same bytes were re-uploaded, and then only the current rev passes `If-Match`.
        (Changed(_), Same(r)) => {
            out.if_match.insert(path.clone(), r.rev);
            out.client_upload.push(path);
        }
        (Gone, Same(r)) => {
            out.if_match.insert(path.clone(), r.rev);
            out.server_delete.push(path);
        }
        // A remote edit beats a local delete.
        (Same(_) | Gone, Changed(_)) => out.client_download.push(path),
        (Same(_), Gone) => out.client_delete.push(path),
        // A local edit beats a remote delete; the path is gone on the server, so no `If-Match`.
        (Changed(_), Gone) => out.client_upload.push(path),
        (Changed(l), Changed(r)) => {
            if same_content((l.xxh3, l.size), (r.xxh3, r.size)) {
                out.adopt.push(path);
            } else {
                let resolution = resolve(strategy, l, r);
                if resolution == ConflictResolution::UseLocal {
                    out.if_match.insert(path.clone(), r.rev);
                }
                out.conflicts.push(SyncConflict {
                    path,
                    local_modified: l.mtime,
                    remote_modified: r.mtime,
                    resolution,
                    remote_rev: Some(r.rev),
                    kind: ConflictKind::Content,
                });
            }
        }
        (Gone, Gone) => {
            if base.is_some() {
                out.forget.push(path);
            }
        }
    }
}

/// The strategy's verdict for one content conflict; `prefer_newer` is decided here.
fn resolve(strategy: ConflictStrategy, l: &LocalState, r: &RemoteState) -> ConflictResolution {
    match strategy {
        ConflictStrategy::PreferLocal => ConflictResolution::UseLocal,
        ConflictStrategy::PreferRemote => ConflictResolution::UseRemote,
        // Ties go to the server: it is the seed's source of truth, and the local loser is kept.
        ConflictStrategy::PreferNewer if l.mtime > r.mtime => ConflictResolution::UseLocal,
        ConflictStrategy::PreferNewer => ConflictResolution::UseRemote,
        ConflictStrategy::Manual => ConflictResolution::Manual,
    }
}

/// Lists the directories each side must create, judged against the state *after* the file
/// operations: a directory implied by a downloaded file needs no entry, and one emptied by a
/// delete must still be listed, or the next plan would not be empty.
fn plan_dirs<K: Borrow<str>, L>(
    local: &BTreeMap<K, L>,
    remote: &BTreeMap<K, RemoteState>,
    local_dirs: &BTreeSet<String>,
    remote_dirs: &BTreeSet<String>,
    clashes: &BTreeSet<&str>,
    out: &mut SyncPlan,
) {
    let client_deleted: BTreeSet<&str> = out.client_delete.iter().map(String::as_str).collect();
    let server_deleted: BTreeSet<&str> = out.server_delete.iter().map(String::as_str).collect();
    let local_after = tree(
        local_dirs.iter(),
        local
            .keys()
            .map(Borrow::borrow)
            .filter(|p| !client_deleted.contains(p))
            .chain(out.client_download.iter().map(String::as_str)),
    );
    let remote_after = tree(
        remote_dirs.iter(),
        remote
            .keys()
            .map(Borrow::borrow)
            .filter(|p| !server_deleted.contains(p))
            .chain(out.client_upload.iter().map(String::as_str)),
    );
    let missing = |dirs: &BTreeSet<String>, other: &BTreeSet<&str>| -> Vec<String> {
        dirs.iter()
            .filter(|d| !d.is_empty() && !other.contains(d.as_str()))
            .filter(|d| !clashes.contains(d.as_str()) && !under_any(d, clashes))
            .cloned()
            .collect()
    };
    out.client_create_dirs = missing(remote_dirs, &local_after);
    out.server_create_dirs = missing(local_dirs, &remote_after);
}

/// Every directory that exists on a side: the listed ones, their parents, and files' parents.
fn tree<'a>(
    dirs: impl Iterator<Item = &'a String>,
    files: impl Iterator<Item = &'a str>,
) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    for d in dirs.filter(|d| !d.is_empty()) {
        if out.insert(d.as_str()) {
            crate::sorted::add_ancestors(&mut out, [d.as_str()]);
        }
    }
    crate::sorted::add_ancestors(&mut out, files);
    out
}

/// Proper ancestors of a path, nearest last: `a/b/c` → `a`, `a/b`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

fn under_any(path: &str, roots: &BTreeSet<&str>) -> bool {
    !roots.is_empty() && ancestors(path).any(|a| roots.contains(a))
}

/// The name a conflict's loser is kept under: `dir/name (conflict YYYY-MM-DD HHMMSS).ext`, in UTC.
///
/// The extension is what follows the last `.` of the final component, except for a leading dot
/// (`.bashrc` has none), so `archive.tar.gz` becomes `archive.tar (conflict …).gz`. `at` is the
/// moment the copy is made; two copies of one path within the same second get the same name, so
/// the applier must check that the name is free.
pub fn conflict_copy_name(path: &str, at: UnixNanos) -> String {
    let (dir, name) = match path.rfind('/') {
        Some(i) => path.split_at(i + 1),
        None => ("", path),
    };
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    // Every i64 of nanoseconds (years 1677..2262) is in `time`'s range; the fallback is unreachable.
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{dir}{stem} (conflict {:04}-{:02}-{:02} {:02}{:02}{:02}){ext}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests;
