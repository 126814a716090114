//! The offline queue: mutations made while the server is unreachable are recorded on disk
//! and replayed, in order, when it is back. Consecutive operations on one path are merged
//! (two edits → one upload of the latest content; create then delete → nothing). Replay is
//! conditional on the revision each operation was based on, so a change made on the server
//! meanwhile surfaces as a conflict, never as a silent overwrite.
//!
//! Layout under the directory the caller gives: `queue.json` (the operations, rewritten
//! atomically: temp file, fsync, rename) and `blobs/<id>` (content of queued uploads).

use crate::client::Client;
use crate::error::{ClientError, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use volebarn_core::{ErrorCode, FileMetadata, Xxh3};

/// Most operations kept (the seed's `max_queue_size`).
pub const DEFAULT_MAX_OPERATIONS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PendingOperation {
    /// Put `blob`'s content at `path`; `base_rev` is the server revision the edit was based
    /// on (`None`: the file did not exist on the server).
    Upload {
        id: u64,
        timestamp: i64,
        path: String,
        base_rev: Option<u64>,
        blob: String,
        xxhash3: Xxh3,
    },
    Delete {
        id: u64,
        timestamp: i64,
        path: String,
        base_rev: Option<u64>,
    },
    Move {
        id: u64,
        timestamp: i64,
        from: String,
        to: String,
    },
}

impl PendingOperation {
    fn touches(&self, p: &str) -> bool {
        match self {
            PendingOperation::Upload { path, .. } | PendingOperation::Delete { path, .. } => path == p,
            PendingOperation::Move { from, to, .. } => from == p || to == p,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct QueueFile {
    next_id: u64,
    operations: Vec<PendingOperation>,
}

/// A persistent queue of mutations, safe to share between tasks.
pub struct OfflineQueue {
    dir: PathBuf,
    max: usize,
    state: Mutex<QueueFile>,
}

/// A queued operation that could not be applied because the server changed meanwhile.
#[derive(Debug)]
pub struct QueueConflict {
    pub operation: PendingOperation,
    /// The content the operation would have written (for an upload), so the caller can keep
    /// it, e.g. as a conflict copy.
    pub content: Option<Bytes>,
    pub error: ClientError,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub applied: Vec<PendingOperation>,
    pub conflicts: Vec<QueueConflict>,
    /// Operations still queued because the server became unreachable again.
    pub remaining: usize,
}

/// Whether a call went through now or was queued for later.
#[derive(Debug)]
pub enum Queued<T> {
    Done(T),
    Queued,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn now_nanos() -> i64 {
    volebarn_core::timefmt::now_nanos()
}

/// The server could not be reached: queue instead of failing.
fn unreachable(e: &ClientError) -> bool {
    e.is_transient() || matches!(e, ClientError::CircuitOpen { .. })
}

impl OfflineQueue {
    /// Opens (or creates) the queue stored in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::with_capacity(dir, DEFAULT_MAX_OPERATIONS)
    }

    pub fn with_capacity(dir: impl Into<PathBuf>, max: usize) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join("blobs")).map_err(io(&dir))?;
        let file = dir.join("queue.json");
        let state = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Config(format!("corrupt offline queue {}: {e}", file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => QueueFile::default(),
            Err(e) => return Err(io(&file)(e)),
        };
        Ok(OfflineQueue {
            dir,
            max,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueFile> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queued operations, oldest first.
    pub fn operations(&self) -> Vec<PendingOperation> {
        self.lock().operations.clone()
    }

    pub fn len(&self) -> usize {
        self.lock().operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn persist(&self, state: &QueueFile) -> Result<()> {
        let path = self.dir.join("queue.json");
        let data = serde_json::to_vec_pretty(state).map_err(|e| ClientError::Protocol(e.to_string()))?;
        crate::durable::atomic_write(&path, &data).map_err(io(&path))
    }

    fn blob_path(&self, blob: &str) -> PathBuf {
        self.dir.join("blobs").join(blob)
    }

    fn read_blob(&self, blob: &str) -> Result<Bytes> {
        let p = self.blob_path(blob);
        std::fs::read(&p).map(Bytes::from).map_err(io(&p))
    }

    fn remove_blob(&self, op: &PendingOperation) {
        if let PendingOperation::Upload { blob, .. } = op {
            let _ = std::fs::remove_file(self.blob_path(blob));
        }
    }

    /// Queues an upload of `content` to `path`, based on server revision `base_rev`.
    pub fn push_upload(&self, path: &str, content: &[u8], base_rev: Option<u64>) -> Result<()> {
        let mut state = self.lock();
        let id = state.next_id;
        let blob = format!("{id:016x}");
        let blob_path = self.blob_path(&blob);
        let mut f = std::fs::File::create(&blob_path).map_err(io(&blob_path))?;
        std::io::Write::write_all(&mut f, content).map_err(io(&blob_path))?;
        f.sync_all().map_err(io(&blob_path))?;
        let op = PendingOperation::Upload {
            id,
            timestamp: now_nanos(),
            path: path.to_string(),
            base_rev,
            blob,
            xxhash3: Xxh3::of(content),
        };
        self.push_locked(&mut state, op)
    }

    /// Queues a delete of `path`, based on server revision `base_rev`.
    pub fn push_delete(&self, path: &str, base_rev: Option<u64>) -> Result<()> {
        let mut state = self.lock();
        let op = PendingOperation::Delete {
            id: state.next_id,
            timestamp: now_nanos(),
            path: path.to_string(),
            base_rev,
        };
        self.push_locked(&mut state, op)
    }

    pub fn push_move(&self, from: &str, to: &str) -> Result<()> {
        let mut state = self.lock();
        let op = PendingOperation::Move {
            id: state.next_id,
            timestamp: now_nanos(),
            from: from.to_string(),
            to: to.to_string(),
        };
        self.push_locked(&mut state, op)
    }

    /// Appends `op`, merging it with the previous operation on the same path when that is
    /// the last thing that happened to the path.
    fn push_locked(&self, state: &mut QueueFile, op: PendingOperation) -> Result<()> {
        state.next_id += 1;
        let merged = match &op {
            PendingOperation::Upload { path, .. } | PendingOperation::Delete { path, .. } => {
                let last = state.operations.iter().rposition(|o| o.touches(path));
                match last {
                    Some(i) if !matches!(state.operations[i], PendingOperation::Move { .. }) => {
                        let previous = state.operations.remove(i);
                        merge(previous, op, self)
                    }
                    _ => Some(op),
                }
            }
            PendingOperation::Move { .. } => Some(op),
        };
        if let Some(op) = merged {
            if state.operations.len() >= self.max {
                self.remove_blob(&op);
                return Err(ClientError::Config(format!(
                    "offline queue is full ({} operations)",
                    self.max
                )));
            }
            state.operations.push(op);
        }
        self.persist(state)
    }

    fn remove(&self, id: u64) -> Result<()> {
        let mut state = self.lock();
        state.operations.retain(|o| op_id(o) != id);
        self.persist(&state)
    }
}

fn op_id(op: &PendingOperation) -> u64 {
    match op {
        PendingOperation::Upload { id, .. }
        | PendingOperation::Delete { id, .. }
        | PendingOperation::Move { id, .. } => *id,
    }
}

/// `previous` then `next` on the same path, as one operation (or none). The merged
/// operation keeps the base revision of the first: that is what the server had.
fn merge(
    previous: PendingOperation,
    next: PendingOperation,
    queue: &OfflineQueue,
) -> Option<PendingOperation> {
    use PendingOperation::*;
    let base = match &previous {
        Upload { base_rev, .. } | Delete { base_rev, .. } => *base_rev,
        Move { .. } => None,
    };
    queue.remove_blob(&previous);
    match next {
        Upload {
            id,
            timestamp,
            path,
            blob,
            xxhash3,
            ..
        } => Some(Upload {
            id,
            timestamp,
            path,
            base_rev: base,
            blob,
            xxhash3,
        }),
        // Created offline, then deleted: the server never needs to hear of it.
        Delete { .. } if base.is_none() && matches!(previous, Upload { .. }) => None,
        Delete {
            id, timestamp, path, ..
        } => Some(Delete {
            id,
            timestamp,
            path,
            base_rev: base,
        }),
        m @ Move { .. } => Some(m),
    }
}

impl Client {
    /// Uploads now, or queues the upload when the server cannot be reached.
    pub async fn upload_or_queue(
        &self,
        queue: &OfflineQueue,
        path: &str,
        content: Bytes,
        base_rev: Option<u64>,
    ) -> Result<Queued<FileMetadata>> {
        let now = match base_rev {
            Some(r) => self.update_file_if(path, content.clone(), r).await,
            None => self.upload_file(path, content.clone()).await,
        };
        match now {
            Err(e) if unreachable(&e) => {
                queue.push_upload(path, &content, base_rev)?;
                Ok(Queued::Queued)
            }
            other => other.map(Queued::Done),
        }
    }

    /// Deletes now, or queues the delete when the server cannot be reached.
    pub async fn delete_or_queue(
        &self,
        queue: &OfflineQueue,
        path: &str,
        base_rev: Option<u64>,
    ) -> Result<Queued<()>> {
        let now = match base_rev {
            Some(r) => self.delete_file_if(path, r).await,
            None => self.delete_file(path).await,
        };
        match now {
            Err(e) if unreachable(&e) => {
                queue.push_delete(path, base_rev)?;
                Ok(Queued::Queued)
            }
            other => other.map(Queued::Done),
        }
    }

    /// Moves now, or queues the move when the server cannot be reached.
    pub async fn move_or_queue(
        &self,
        queue: &OfflineQueue,
        from: &str,
        to: &str,
    ) -> Result<Queued<FileMetadata>> {
        match self.move_file(from, to).await {
            Err(e) if unreachable(&e) => {
                queue.push_move(from, to)?;
                Ok(Queued::Queued)
            }
            other => other.map(Queued::Done),
        }
    }

    /// Replays the queue in order. Each operation is conditional on the revision it was
    /// based on: a 412 (or 409/404 that shows the server changed) becomes a conflict for the
    /// caller and the operation leaves the queue. Stops, keeping the rest, when the server is
    /// unreachable again.
    pub async fn replay_queue(&self, queue: &OfflineQueue) -> Result<ReplayReport> {
        let mut report = ReplayReport::default();
        for op in queue.operations() {
            let (result, content) = match &op {
                PendingOperation::Upload {
                    path, base_rev, blob, ..
                } => {
                    let content = queue.read_blob(blob)?;
                    let r = match base_rev {
                        Some(rev) => self.update_file_if(path, content.clone(), *rev).await.map(|_| ()),
                        None => self.upload_file(path, content.clone()).await.map(|_| ()),
                    };
                    (r, Some(content))
                }
                PendingOperation::Delete { path, base_rev, .. } => {
                    let r = match base_rev {
                        Some(rev) => self.delete_file_if(path, *rev).await,
                        None => self.delete_file(path).await,
                    };
                    // Already gone is what we wanted.
                    (
                        r.or_else(|e| {
                            if e.error_code() == Some(ErrorCode::FileNotFound) {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        }),
                        None,
                    )
                }
                PendingOperation::Move { from, to, .. } => (self.move_file(from, to).await.map(|_| ()), None),
            };
            match result {
                Ok(()) => {
                    queue.remove(op_id(&op))?;
                    queue.remove_blob(&op);
                    report.applied.push(op);
                }
                Err(e) if unreachable(&e) => {
                    report.remaining = queue.len();
                    return Ok(report);
                }
                Err(error) => {
                    queue.remove(op_id(&op))?;
                    queue.remove_blob(&op);
                    report.conflicts.push(QueueConflict {
                        operation: op,
                        content,
                        error,
                    });
                }
            }
        }
        report.remaining = queue.len();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(q: &OfflineQueue) -> Vec<String> {
        q.operations()
            .iter()
            .map(|o| match o {
                PendingOperation::Upload { path, base_rev, .. } => format!("upload {path} @{base_rev:?}"),
                PendingOperation::Delete { path, base_rev, .. } => format!("delete {path} @{base_rev:?}"),
                PendingOperation::Move { from, to, .. } => format!("move {from}->{to}"),
            })
            .collect()
    }

    #[test]
    fn merge_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = OfflineQueue::open(dir.path()).expect("open");
        q.push_upload("a", b"v1", Some(5)).expect("push");
        q.push_upload("b", b"new", None).expect("push");
        q.push_upload("a", b"v2", Some(6)).expect("push");
        assert_eq!(
            kinds(&q),
            ["upload b @None", "upload a @Some(5)"],
            "two edits → one, based on the first base"
        );
        q.push_delete("b", None).expect("push");
        assert_eq!(kinds(&q), ["upload a @Some(5)"], "create then delete → nothing");
        q.push_delete("a", Some(9)).expect("push");
        assert_eq!(kinds(&q), ["delete a @Some(5)"]);
        q.push_upload("a", b"back", None).expect("push");
        assert_eq!(
            kinds(&q),
            ["upload a @Some(5)"],
            "delete then re-create → an edit of the original"
        );
        q.push_move("a", "c").expect("push");
        q.push_upload("a", b"fresh", None).expect("push");
        assert_eq!(
            kinds(&q),
            ["upload a @Some(5)", "move a->c", "upload a @None"],
            "no merging across a move"
        );
        let blobs = std::fs::read_dir(dir.path().join("blobs")).expect("ls").count();
        assert_eq!(blobs, 2, "merged-away content is removed");
    }

    #[test]
    fn survives_reopen_and_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let q = OfflineQueue::with_capacity(dir.path(), 3).expect("open");
            q.push_upload("x", b"1", None).expect("push");
            q.push_delete("y", Some(2)).expect("push");
            q.push_move("m", "n").expect("push");
            let err = q.push_delete("z", None).unwrap_err();
            assert!(err.to_string().contains("full"), "{err}");
        }
        let q = OfflineQueue::with_capacity(dir.path(), 3).expect("reopen");
        assert_eq!(kinds(&q), ["upload x @None", "delete y @Some(2)", "move m->n"]);
        let PendingOperation::Upload { blob, .. } = &q.operations()[0] else {
            panic!("upload first")
        };
        assert_eq!(q.read_blob(blob).expect("blob"), Bytes::from_static(b"1"));
    }
}
