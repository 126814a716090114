//! Small state files under `<folder>/.volebarn/`: the root marker, the status of the last pass
//! (read by `volebarn status` while `volebarn watch` holds the index), and the conflicts list.
//! Each is rewritten with `volebarn_client::durable::atomic_write` (temp file, fsync, rename,
//! fsync of the directory).

use crate::engine::Pending;
use crate::error::{Result, SyncError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The folder holding sync state inside a synced folder; never synced itself.
pub const STATE_DIR: &str = ".volebarn";

fn state_file(root: &Path, name: &str) -> PathBuf {
    root.join(STATE_DIR).join(name)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    // Plain structs with string keys: encoding cannot fail.
    let data = serde_json::to_vec_pretty(value).map_err(|e| SyncError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &data)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    volebarn_client::durable::atomic_write(path, data).map_err(SyncError::io("writing", path))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| {
            SyncError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SyncError::io("reading", path)(e)),
    }
}

/// The root marker: proof that this is the folder that was synced, not an empty mount point
/// or a recreated directory.
pub fn marker_exists(root: &Path) -> bool {
    state_file(root, "marker").is_file()
}

pub fn write_marker(root: &Path) -> Result<()> {
    let id: u64 = rand::random();
    write_atomic(
        &state_file(root, "marker"),
        format!("volebarn sync root {id:016x}\nDo not delete: without it, volebarn refuses to sync this folder.\n").as_bytes(),
    )
}

/// What `volebarn status` shows about the last pass.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StatusFile {
    pub last_pass: String,
    /// The last pass that reached the server.
    pub last_sync: Option<String>,
    pub offline: Option<String>,
    pub refused: Option<String>,
    pub pending: Pending,
    pub held_deletions: Vec<String>,
    pub held_reason: Option<String>,
    pub problems: Vec<(String, String)>,
    pub errors: Vec<(String, String)>,
    pub synced_files: usize,
    #[serde(default)]
    pub metrics: SyncMetrics,
}

/// The seed's `SyncMetrics` for this folder: totals over every pass that reached the apply
/// step, by `sync` and `watch` alike (dry runs are not counted).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMetrics {
    pub passes: u64,
    /// Files uploaded, downloaded or moved.
    pub files_synced: u64,
    /// Paths that failed in a pass (each listed by that pass).
    pub sync_errors: u64,
    /// Time spent in passes, for the average.
    pub pass_ms_total: u64,
    #[serde(flatten)]
    pub transfer: volebarn_client::TransferMetrics,
}

impl SyncMetrics {
    pub fn average_pass_ms(&self) -> Option<u64> {
        self.pass_ms_total.checked_div(self.passes)
    }
}

pub fn write_status(root: &Path, s: &StatusFile) -> Result<()> {
    write_json(&state_file(root, "status.json"), s)
}

pub fn read_status(root: &Path) -> Result<Option<StatusFile>> {
    read_json(&state_file(root, "status.json"))
}

/// A conflict left for the user (strategy `manual`, or a file facing a directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    pub path: String,
    /// The conflict copy beside `path`, when one was made.
    pub copy: Option<String>,
    /// The copy holds the local version (the remote one is at `path`).
    pub copy_is_local: bool,
    /// `content` or `file_directory`.
    pub kind: String,
    pub detected: String,
}

pub fn read_conflicts(root: &Path) -> Result<Vec<ConflictRecord>> {
    Ok(read_json(&state_file(root, "conflicts.json"))?.unwrap_or_default())
}

/// Read-modify-write of the conflicts list under an exclusive file lock, so `volebarn conflicts
/// resolve` and a running `volebarn watch` never lose each other's updates.
pub fn update_conflicts(root: &Path, f: impl FnOnce(&mut Vec<ConflictRecord>)) -> Result<()> {
    let dir = root.join(STATE_DIR);
    std::fs::create_dir_all(&dir).map_err(SyncError::io("creating", &dir))?;
    let lock_path = dir.join("conflicts.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(SyncError::io("opening", &lock_path))?;
    lock.lock().map_err(SyncError::io("locking", &lock_path))?;
    let r = read_conflicts(root).and_then(|mut list| {
        f(&mut list);
        write_json(&state_file(root, "conflicts.json"), &list)
    });
    let _ = lock.unlock();
    r
}

/// A pass that `volebarn sync` asks of the `volebarn watch` holding the folder's index (the
/// index has one owner at a time). The request is a file the watch picks up; it answers with
/// the pass's report in `answer-<id>.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassRequest {
    pub id: u64,
    pub dry_run: bool,
    pub force: bool,
}

/// A running watch's answer to a [`PassRequest`].
#[derive(Debug, Deserialize)]
pub struct PassAnswer {
    pub report: Option<crate::engine::PassReport>,
    pub error: Option<String>,
}

const REQUEST_PREFIX: &str = "request-";

fn request_file(root: &Path, id: u64) -> PathBuf {
    state_file(root, &format!("{REQUEST_PREFIX}{id:016x}.json"))
}

fn answer_file(root: &Path, id: u64) -> PathBuf {
    state_file(root, &format!("answer-{id:016x}.json"))
}

/// Leaves a request for the running watch.
pub fn request_pass(root: &Path, dry_run: bool, force: bool) -> Result<PassRequest> {
    let r = PassRequest {
        id: rand::random(),
        dry_run,
        force,
    };
    write_json(&request_file(root, r.id), &r)?;
    Ok(r)
}

/// Whether `path` is a pass request (for the watcher, which ignores the rest of `.volebarn/`).
pub fn is_request(root: &Path, path: &Path) -> bool {
    path.parent() == Some(root.join(STATE_DIR).as_path())
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(REQUEST_PREFIX) && n.ends_with(".json"))
}

/// The waiting requests' files.
fn request_files(root: &Path) -> impl Iterator<Item = std::fs::DirEntry> + '_ {
    std::fs::read_dir(root.join(STATE_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter(move |e| is_request(root, &e.path()))
}

/// Whether a request is waiting.
pub fn has_requests(root: &Path) -> bool {
    request_files(root).next().is_some()
}

/// Takes every waiting request (oldest first); an unreadable one is dropped.
pub fn take_requests(root: &Path) -> Vec<PassRequest> {
    let mut found: Vec<(std::time::SystemTime, PassRequest)> = Vec::new();
    for e in request_files(root) {
        let path = e.path();
        let when = e
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if let Ok(Some(r)) = read_json::<PassRequest>(&path) {
            found.push((when, r));
        }
        let _ = std::fs::remove_file(&path);
    }
    found.sort_by_key(|(when, _)| *when);
    found.into_iter().map(|(_, r)| r).collect()
}

/// Withdraws a request nobody took; false when it was already taken.
pub fn withdraw(root: &Path, id: u64) -> bool {
    std::fs::remove_file(request_file(root, id)).is_ok()
}

/// Answers request `id` with the pass's report or the error that ended it (on one line).
pub fn answer(root: &Path, id: u64, result: Result<&crate::engine::PassReport, String>) -> Result<()> {
    let body = match result {
        Ok(report) => serde_json::json!({ "report": report, "error": null }),
        Err(e) => serde_json::json!({ "report": null, "error": e }),
    };
    write_json(&answer_file(root, id), &body)
}

/// The answer to request `id`, once there is one (taken: the file is removed).
pub fn take_answer(root: &Path, id: u64) -> Result<Option<PassAnswer>> {
    let path = answer_file(root, id);
    let a = read_json(&path)?;
    if a.is_some() {
        let _ = std::fs::remove_file(&path);
    }
    Ok(a)
}
