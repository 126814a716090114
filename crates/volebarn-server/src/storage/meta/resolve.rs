//! What a [`MetaBatch`] leaves behind, worked out once for every backend.
//!
//! A batch is a list of ops in order; several may touch one key (a file put twice, a chunk
//! referenced and released, inline bytes put and then freed). [`resolve`] folds them, against
//! the committed state, into the final value of every key they touch, the refcount changes
//! and the new totals. A backend then only writes that result in one atomic unit — RocksDB
//! as one `WriteBatch`, PostgreSQL as a few set-based statements in one transaction — so the
//! two cannot drift apart in how they read a batch.

use super::{MetaBatch, MetaOp, StoreStats};
use crate::storage::records::{Change, ChunkInfo, Claim, DeadProps, DirRecord, FileRecord, VersionRecord};
use crate::storage::{StorageError, StorageResult};
use bytes::Bytes;
use std::collections::HashMap;
use volebarn_core::{ChunkId, VPath};

/// A key's committed value and the value the batch leaves.
#[derive(Debug, Clone)]
pub struct Delta<T> {
    pub old: Option<T>,
    pub new: Option<T>,
}

/// The net effect of one batch.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Every file path the batch touched (`old: None, new: None`: a delete of an absent file).
    pub files: HashMap<VPath, Delta<FileRecord>>,
    /// Directory records to put (`Some`) or delete (`None`).
    pub dirs: HashMap<VPath, Option<DirRecord>>,
    /// Every chunk whose refcount the batch touched; `new: None` means no reference is left.
    pub chunks: HashMap<ChunkId, Delta<ChunkInfo>>,
    /// Inline bytes to store (never for a chunk left without references).
    pub chunk_data: HashMap<ChunkId, Bytes>,
    /// Versions (path, rev) to put or delete.
    pub versions: HashMap<(VPath, u64), Option<VersionRecord>>,
    /// Claims (by key) to put or delete.
    pub claims: HashMap<[u8; 32], Option<Claim>>,
    /// Dead properties to put (`Some`) or delete (`None`).
    pub dead_props: HashMap<VPath, Option<DeadProps>>,
    /// Journal entries to add, in order (none at or below `trim`).
    pub journal: Vec<Change>,
    /// Journal entries at or below this revision go (the floor becomes the larger of this and
    /// the committed floor).
    pub trim: Option<u64>,
    /// Totals after the batch.
    pub stats: StoreStats,
}

impl Resolved {
    /// Chunks left without references, sorted: their inline bytes go with the commit, their
    /// chunk-store bytes are orphans for GC.
    pub fn freed(&self) -> Vec<ChunkId> {
        let mut freed: Vec<ChunkId> = self
            .chunks
            .iter()
            .filter_map(|(id, c)| c.new.is_none().then_some(*id))
            .collect();
        freed.sort();
        freed
    }
}

/// Folds `batch` over the committed state: `file` and `chunk` read a committed record,
/// `stats` are the committed totals. Fails (and nothing may be written) when a refcount
/// would drop below zero.
pub fn resolve(
    batch: MetaBatch,
    mut file: impl FnMut(&VPath) -> StorageResult<Option<FileRecord>>,
    mut chunk: impl FnMut(&ChunkId) -> StorageResult<Option<ChunkInfo>>,
    stats: StoreStats,
) -> StorageResult<Resolved> {
    let mut r = Resolved {
        stats,
        ..Resolved::default()
    };
    for op in batch.ops {
        match op {
            MetaOp::PutFile(path, rec) => {
                let old = match r.files.remove(&path) {
                    Some(d) => d.old,
                    None => file(&path)?,
                };
                r.files.insert(path, Delta { old, new: Some(rec) });
            }
            MetaOp::DeleteFile(path) => {
                let old = match r.files.remove(&path) {
                    Some(d) => d.old,
                    None => file(&path)?,
                };
                r.files.insert(path, Delta { old, new: None });
            }
            MetaOp::PutDir(path, rec) => {
                r.dirs.insert(path, Some(rec));
            }
            MetaOp::DeleteDir(path) => {
                r.dirs.insert(path, None);
            }
            MetaOp::AdjustChunk { id, size, delta } => {
                let entry = match r.chunks.remove(&id) {
                    Some(d) => d,
                    None => {
                        let old = chunk(&id)?;
                        Delta { old, new: old }
                    }
                };
                let cur = entry.new;
                let refs = cur.map_or(0, |c| c.refs as i64) + delta;
                if refs < 0 {
                    return Err(StorageError::Corrupt(format!(
                        "refcount of chunk {id} would drop below zero"
                    )));
                }
                let new = (refs > 0).then(|| ChunkInfo {
                    refs: refs as u64,
                    size: cur.map_or(size, |c| c.size),
                });
                r.chunks.insert(id, Delta { old: entry.old, new });
            }
            MetaOp::PutChunkData(id, data) => {
                r.chunk_data.insert(id, data);
            }
            MetaOp::PutVersion(path, v) => {
                r.versions.insert((path, v.file.rev), Some(v));
            }
            MetaOp::DeleteVersion(path, rev) => {
                r.versions.insert((path, rev), None);
            }
            MetaOp::PutClaim(claim) => {
                r.claims.insert(claim.key(), Some(claim));
            }
            MetaOp::DeleteClaim(key) => {
                r.claims.insert(key, None);
            }
            MetaOp::SetDeadProps(path, props) => {
                r.dead_props.insert(path, props);
            }
            MetaOp::Journal(change) => r.journal.push(change),
            MetaOp::TrimJournal(upto) => {
                r.journal.retain(|c| c.rev > upto);
                r.trim = Some(r.trim.map_or(upto, |t| t.max(upto)));
            }
        }
    }
    // Totals from the net change of each key.
    let s = &mut r.stats;
    for c in r.files.values() {
        match (&c.old, &c.new) {
            (None, Some(n)) => {
                s.files += 1;
                s.file_bytes += n.size;
            }
            (Some(o), None) => {
                s.files = s.files.saturating_sub(1);
                s.file_bytes = s.file_bytes.saturating_sub(o.size);
            }
            (Some(o), Some(n)) => s.file_bytes = s.file_bytes.saturating_sub(o.size) + n.size,
            (None, None) => {}
        }
    }
    for c in r.chunks.values() {
        match (&c.old, &c.new) {
            (None, Some(n)) => {
                s.chunks += 1;
                s.chunk_bytes += u64::from(n.size);
            }
            (Some(o), None) => {
                s.chunks = s.chunks.saturating_sub(1);
                s.chunk_bytes = s.chunk_bytes.saturating_sub(u64::from(o.size));
            }
            _ => {}
        }
    }
    // A chunk nothing references any more takes its inline bytes with it.
    for (id, c) in &r.chunks {
        if c.new.is_none() {
            r.chunk_data.remove(id);
        }
    }
    Ok(r)
}
