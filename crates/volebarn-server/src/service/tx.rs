//! One write transaction: reads see the transaction's own changes, every change lands in one
//! `MetaBatch`, and revisions are handed out in order (one per user-visible change).

use super::Inner;
use crate::error::{ServiceError, ServiceResult};
use crate::storage::{
    Change, ChangeKind, DirRecord, Entry, FileRecord, MetaBatch, MetaOp, StagedChunk, VersionRecord,
};
use std::collections::HashMap;
use volebarn_core::timefmt::{now_nanos, UnixNanos};
use volebarn_core::VPath;

pub struct Tx<'a> {
    pub(crate) inner: &'a Inner,
    batch: MetaBatch,
    next_rev: u64,
    overlay: HashMap<VPath, Option<Entry>>,
    staged: Vec<StagedChunk>,
    /// One clock reading per transaction, so every record of it agrees.
    pub now: UnixNanos,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(inner: &'a Inner, first_rev: u64) -> Self {
        Tx {
            inner,
            batch: MetaBatch::default(),
            next_rev: first_rev,
            overlay: HashMap::new(),
            staged: Vec::new(),
            now: now_nanos(),
        }
    }

    /// The next revision; every journal entry gets its own.
    pub fn rev(&mut self) -> u64 {
        let r = self.next_rev;
        self.next_rev += 1;
        r
    }

    /// What lives at `path`, including this transaction's changes.
    pub fn get(&self, path: &VPath) -> ServiceResult<Option<Entry>> {
        if let Some(e) = self.overlay.get(path) {
            return Ok(e.clone());
        }
        self.inner
            .meta
            .get(path)
            .map_err(|e| ServiceError::storage(path.as_str(), e))
    }

    /// Everything below `dir` as committed before this transaction.
    pub fn descendants(&self, dir: &VPath) -> ServiceResult<Vec<(VPath, Entry)>> {
        self.inner
            .meta
            .descendants(dir)
            .map_err(|e| ServiceError::storage(dir.as_str(), e))
    }

    /// Creates every missing parent directory of `path` (with revision `rev`); fails with
    /// 409 `not_a_directory` when an ancestor is a file.
    pub fn ensure_parents(&mut self, path: &VPath, rev: u64) -> ServiceResult<()> {
        for anc in path.ancestors() {
            match self.get(&anc)? {
                Some(Entry::Dir(_)) => {}
                Some(Entry::File(_)) => {
                    return Err(ServiceError::NotADirectory {
                        path: path.to_string(),
                        blocker: anc.to_string(),
                    })
                }
                None => self.put_dir(anc, DirRecord { mtime: self.now, rev }),
            }
        }
        Ok(())
    }

    /// Checks (without changing anything) that `path`'s parents can exist.
    pub fn check_parents(&self, path: &VPath) -> ServiceResult<()> {
        for anc in path.ancestors() {
            if let Some(Entry::File(_)) = self.get(&anc)? {
                return Err(ServiceError::NotADirectory {
                    path: path.to_string(),
                    blocker: anc.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Stores a file record that references chunks it adds (`add_refs`) or that already
    /// hold a reference moved over from elsewhere (`add_refs = false`, e.g. a move).
    pub fn put_file(&mut self, path: VPath, rec: FileRecord, add_refs: bool) {
        if add_refs {
            self.adjust_chunks(&rec, 1);
        }
        self.overlay.insert(path.clone(), Some(Entry::File(rec.clone())));
        self.batch.push(MetaOp::PutFile(path, rec));
    }

    /// Removes a file record without touching its chunk references (the caller archives or
    /// moves them).
    pub fn remove_file(&mut self, path: VPath) {
        self.overlay.insert(path.clone(), None);
        self.batch.push(MetaOp::DeleteFile(path));
    }

    pub fn put_dir(&mut self, path: VPath, rec: DirRecord) {
        self.overlay.insert(path.clone(), Some(Entry::Dir(rec)));
        self.batch.push(MetaOp::PutDir(path, rec));
    }

    pub fn remove_dir(&mut self, path: VPath) {
        self.overlay.insert(path.clone(), None);
        self.batch.push(MetaOp::DeleteDir(path));
    }

    pub fn adjust_chunks(&mut self, rec: &FileRecord, delta: i64) {
        for c in &rec.chunks {
            self.batch.push(MetaOp::AdjustChunk {
                id: c.chunk_id(),
                size: c.len,
                delta,
            });
        }
    }

    pub fn journal(&mut self, rev: u64, kind: ChangeKind, path: &VPath, to_path: Option<&VPath>) {
        self.batch.push(MetaOp::Journal(Change {
            rev,
            kind,
            path: path.to_string(),
            to_path: to_path.map(ToString::to_string),
            at: self.now,
        }));
    }

    /// Chunks to publish before the batch commits.
    pub fn stage(&mut self, staged: Vec<StagedChunk>) {
        self.staged.extend(staged);
    }

    /// Keeps `old` as a version of `path` (or releases its chunks when versions are off),
    /// dropping the oldest versions beyond the retention count.
    pub fn archive(&mut self, path: &VPath, old: FileRecord, deleted: bool) -> ServiceResult<()> {
        let keep = self.inner.config.versions_keep;
        if keep == 0 {
            self.adjust_chunks(&old, -1);
            return Ok(());
        }
        let existing = self
            .inner
            .meta
            .versions(path)
            .map_err(|e| ServiceError::storage(path.as_str(), e))?;
        let excess = (existing.len() + 1).saturating_sub(keep);
        for v in existing.iter().take(excess) {
            self.adjust_chunks(&v.file, -1);
            self.batch.push(MetaOp::DeleteVersion(path.clone(), v.file.rev));
        }
        let version = VersionRecord {
            file: old,
            deleted,
            archived_at: self.now,
        };
        self.batch.push(MetaOp::PutVersion(path.clone(), version));
        Ok(())
    }

    /// Forgets one kept version and releases its chunks.
    pub fn drop_version(&mut self, path: &VPath, v: &VersionRecord) {
        self.adjust_chunks(&v.file, -1);
        self.batch.push(MetaOp::DeleteVersion(path.clone(), v.file.rev));
    }

    /// Replaces or removes whatever is at `path` so something new can take its place:
    /// files become versions, directories are removed with everything below them.
    pub fn clear_path(&mut self, path: &VPath) -> ServiceResult<()> {
        match self.get(path)? {
            None => {}
            Some(Entry::File(f)) => {
                self.archive(path, f, true)?;
                self.remove_file(path.clone());
            }
            Some(Entry::Dir(_)) => {
                for (p, e) in self.descendants(path)? {
                    match e {
                        Entry::File(f) => {
                            self.archive(&p, f, true)?;
                            self.remove_file(p);
                        }
                        Entry::Dir(_) => self.remove_dir(p),
                    }
                }
                self.remove_dir(path.clone());
            }
        }
        Ok(())
    }

    /// Publishes staged chunks, commits the batch, deletes freed chunks. Returns the next
    /// unused revision.
    pub(crate) fn commit(self) -> ServiceResult<u64> {
        let Tx {
            inner,
            mut batch,
            next_rev,
            staged,
            ..
        } = self;
        if batch.ops.is_empty() {
            return Ok(next_rev);
        }
        let floor = inner
            .meta
            .journal_floor()
            .map_err(|e| ServiceError::storage("", e))?;
        let head = next_rev.saturating_sub(1);
        if let Some(upto) =
            super::history::journal_trim_target(head, floor, inner.config.retention.journal_keep)
        {
            batch.push(MetaOp::TrimJournal(upto));
        }
        let start = std::time::Instant::now();
        let (chunks, ops) = (staged.len(), batch.ops.len());
        inner
            .chunks
            .publish(staged)
            .map_err(|e| ServiceError::storage("", e))?;
        let published = start.elapsed();
        let outcome = inner
            .meta
            .commit(batch)
            .map_err(|e| ServiceError::storage("", e))?;
        tracing::debug!(
            chunks,
            ops,
            publish_ms = published.as_millis() as u64,
            meta_ms = (start.elapsed() - published).as_millis() as u64,
            "commit"
        );
        for id in outcome.freed_chunks {
            if let Err(e) = inner.chunks.delete(&id) {
                // An undeleted chunk is an orphan that GC removes; the commit stands.
                tracing::warn!(chunk = %id, error = %e, "could not delete a freed chunk");
            }
        }
        Ok(next_rev)
    }
}
