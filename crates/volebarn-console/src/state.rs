//! Small state files under `<folder>/.volebarn/`: the root marker, the status of the last pass
//! (read by `volebarn status` while `volebarn watch` holds the index), and the conflicts list.
//! Each is rewritten atomically (temp file, fsync, rename).

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use volebarn_client::STATE_DIR;

use crate::engine::Pending;

fn state_file(root: &Path, name: &str) -> PathBuf {
    root.join(STATE_DIR).join(name)
}

fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("corrupt {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The root marker: proof that this is the folder that was synced, not an empty mount point
/// or a recreated directory.
pub fn marker_exists(root: &Path) -> bool {
    state_file(root, "marker").is_file()
}

pub fn write_marker(root: &Path) -> anyhow::Result<()> {
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
}

pub fn write_status(root: &Path, s: &StatusFile) -> anyhow::Result<()> {
    write_atomic(&state_file(root, "status.json"), &serde_json::to_vec_pretty(s)?)
}

pub fn read_status(root: &Path) -> anyhow::Result<Option<StatusFile>> {
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

pub fn read_conflicts(root: &Path) -> anyhow::Result<Vec<ConflictRecord>> {
    Ok(read_json(&state_file(root, "conflicts.json"))?.unwrap_or_default())
}

/// Read-modify-write of the conflicts list under an exclusive file lock, so `volebarn conflicts
/// resolve` and a running `volebarn watch` never lose each other's updates.
pub fn update_conflicts(root: &Path, f: impl FnOnce(&mut Vec<ConflictRecord>)) -> anyhow::Result<()> {
    let dir = root.join(STATE_DIR);
    std::fs::create_dir_all(&dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("conflicts.lock"))?;
    lock.lock().context("locking the conflicts list")?;
    let mut list = read_conflicts(root)?;
    f(&mut list);
    let r = write_atomic(
        &state_file(root, "conflicts.json"),
        &serde_json::to_vec_pretty(&list)?,
    );
    let _ = lock.unlock();
    r
}
