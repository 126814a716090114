//! Versions and restore, the change feed (long-poll), journal trimming and garbage collection.

use super::files::commit_write;
use super::{blocking, entry_metadata, file_metadata, Service, WriteMode};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Change, Entry};
use std::time::Duration;
use volebarn_core::timefmt::UnixNanos;
use volebarn_core::types::{TrashEntry, TrashList, VersionInfo};
use volebarn_core::{FileMetadata, VPath, Xxh3};

/// Retention and collection settings (docs/design.md §4; issue "2.").
#[derive(Debug, Clone)]
pub struct Retention {
    /// Versions archived longer ago than this are dropped by GC.
    pub versions_max_age: Duration,
    /// Chunks stored but referenced by nothing are deleted after this grace period.
    pub orphan_grace: Duration,
    /// Journal entries kept for `/changes`; older ones answer 410 `gone`.
    pub journal_keep: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            versions_max_age: Duration::from_secs(30 * 24 * 3600),
            orphan_grace: Duration::from_secs(24 * 3600),
            journal_keep: 100_000,
        }
    }
}

/// What one GC pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub versions_dropped: usize,
    pub chunks_deleted: usize,
    pub orphans_deleted: usize,
}

/// A journal entry with the current metadata of its (target) path when that is still the
/// state the entry produced.
#[derive(Debug, Clone)]
pub struct ChangeWithMeta {
    pub change: Change,
    pub metadata: Option<FileMetadata>,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Service {
    /// Kept versions of `path`, newest first; the current content (if any) comes first.
    pub async fn versions(&self, path: &VPath) -> ServiceResult<Vec<VersionInfo>> {
        let meta = self.inner.meta.clone();
        let p = path.clone();
        blocking(move || {
            let err = |e| ServiceError::storage(p.as_str(), e);
            let current = meta.get(&p).map_err(err)?;
            if let Some(Entry::Dir(_)) = current {
                return Err(ServiceError::IsADirectory { path: p.to_string() });
            }
            let mut out = Vec::new();
            if let Some(Entry::File(f)) = &current {
                out.push(VersionInfo {
                    rev: f.rev,
                    size: f.size,
                    xxhash3: Xxh3(f.xxh3),
                    modified: f.mtime,
                    deleted: false,
                    current: true,
                    archived: None,
                });
            }
            for v in meta.versions(&p).map_err(err)?.into_iter().rev() {
                out.push(VersionInfo {
                    rev: v.file.rev,
                    size: v.file.size,
                    xxhash3: Xxh3(v.file.xxh3),
                    modified: v.file.mtime,
                    deleted: v.deleted,
                    current: false,
                    archived: Some(v.archived_at),
                });
            }
            if out.is_empty() {
                return Err(ServiceError::NotFound { path: p.to_string() });
            }
            Ok(out)
        })
        .await?
    }

    /// The record of revision `rev` of `path`, current or kept as a version, to download.
    pub async fn open_version(&self, path: &VPath, rev: u64) -> ServiceResult<crate::storage::FileRecord> {
        if let Ok(rec) = self.open_file(path).await {
            if rec.rev == rev {
                return Ok(rec);
            }
        }
        let meta = self.inner.meta.clone();
        let p = path.clone();
        let versions = blocking(move || meta.versions(&p))
            .await?
            .map_err(|e| ServiceError::storage(path.as_str(), e))?;
        versions
            .into_iter()
            .find(|v| v.file.rev == rev)
            .map(|v| v.file)
            .ok_or_else(|| ServiceError::NotFound {
                path: format!("{path}@{rev}"),
            })
    }

    /// The trash of `dir`: its direct children (every file below it when `recursive`) that
    /// are deleted (their newest version says so and no file is at the path now) and
    /// restorable from a kept version, in path order. `dir` itself may be gone (the trash of
    /// a deleted folder); a file there is `not_a_directory`.
    pub async fn trash(&self, dir: &VPath, recursive: bool) -> ServiceResult<TrashList> {
        let meta = self.inner.meta.clone();
        let d = dir.clone();
        blocking(move || {
            let err = |e| ServiceError::storage(d.as_str(), e);
            if let Some(Entry::File(_)) = meta.get(&d).map_err(err)? {
                return Err(ServiceError::NotADirectory {
                    path: d.to_string(),
                    blocker: d.to_string(),
                });
            }
            let present = if recursive {
                meta.descendants(&d)
            } else {
                meta.children(&d)
            };
            let present: std::collections::HashSet<VPath> = present
                .map_err(err)?
                .into_iter()
                .filter(|(_, e)| matches!(e, Entry::File(_)))
                .map(|(p, _)| p)
                .collect();
            let versions = meta.versions_below(&d, !recursive).map_err(err)?;
            let mut entries = Vec::new();
            // Oldest first per path: the newest version decides.
            for kept in versions.chunk_by(|a, b| a.0 == b.0) {
                let Some((path, newest)) = kept.last() else {
                    continue;
                };
                if newest.deleted && !present.contains(path) {
                    entries.push(TrashEntry {
                        path: path.to_string(),
                        name: path.name().to_string(),
                        size: newest.file.size,
                        xxhash3: Xxh3(newest.file.xxh3),
                        modified: newest.file.mtime,
                        deleted: newest.archived_at,
                        rev: newest.file.rev,
                        versions: kept.len() as u64,
                    });
                }
            }
            Ok(TrashList {
                path: d.to_string(),
                entries,
            })
        })
        .await?
    }

    /// Makes version `rev` of `path` current again as a new revision (the content it
    /// replaces becomes a version itself). Restoring the current revision changes nothing.
    pub async fn restore(&self, path: &VPath, rev: u64) -> ServiceResult<FileMetadata> {
        let path = path.clone();
        self.mutate(move |tx| {
            if let Some(Entry::File(f)) = tx.get(&path)? {
                if f.rev == rev {
                    return Ok(file_metadata(&path, &f));
                }
            }
            let versions = tx.versions(&path)?;
            let v =
                versions
                    .into_iter()
                    .find(|v| v.file.rev == rev)
                    .ok_or_else(|| ServiceError::NotFound {
                        path: format!("{path}@{rev}"),
                    })?;
            let f = v.file;
            let mode = WriteMode::Upsert { if_match: None };
            let now = tx.now;
            commit_write(tx, &path, &mode, f.chunks, f.size, Xxh3(f.xxh3), now)
        })
        .await
    }

    /// Journal entries after `since`; waits up to `wait` for one when there are none.
    /// 410 `gone` when `since` is older than the kept journal (or newer than the head:
    /// the client's view belongs to another history).
    pub async fn changes(
        &self,
        since: u64,
        wait: Duration,
        limit: usize,
    ) -> ServiceResult<(Vec<ChangeWithMeta>, u64)> {
        // Subscribe before reading so a commit between the read and the wait is not missed.
        let mut head = self.subscribe_head();
        let first = self.read_changes(since, limit).await?;
        if !first.0.is_empty() || wait.is_zero() {
            return Ok(first);
        }
        // The watch guard is dropped right here: it must not live across an await.
        let parked = Parked::new(&self.inner.parked);
        let arrived = matches!(
            tokio::time::timeout(wait, head.wait_for(|h| *h > since)).await,
            Ok(Ok(_))
        );
        drop(parked);
        if arrived {
            self.read_changes(since, limit).await
        } else {
            Ok(first)
        }
    }

    async fn read_changes(&self, since: u64, limit: usize) -> ServiceResult<(Vec<ChangeWithMeta>, u64)> {
        let meta = self.inner.meta.clone();
        blocking(move || {
            let err = |e| ServiceError::storage("", e);
            let floor = meta.journal_floor().map_err(err)?;
            let head = meta.head_rev().map_err(err)?;
            if since < floor || since > head {
                return Err(ServiceError::Gone { since, floor, head });
            }
            let changes = meta.changes_since(since, limit).map_err(err)?;
            let next = changes.last().map_or(since, |c| c.rev);
            let mut out = Vec::with_capacity(changes.len());
            for change in changes {
                let target = change.to_path.as_deref().unwrap_or(&change.path);
                let metadata = match VPath::parse(target) {
                    Ok(p) => match meta.get(&p).map_err(err)? {
                        Some(e) => {
                            let m = entry_metadata(&p, &e);
                            (m.rev == change.rev).then_some(m)
                        }
                        None => None,
                    },
                    Err(_) => None,
                };
                out.push(ChangeWithMeta { change, metadata });
            }
            Ok((out, next))
        })
        .await?
    }

    /// One garbage-collection pass at time `now` (injected so tests control the clock):
    /// drops versions older than `versions_max_age`, deletes chunks nothing references
    /// any more, and deletes orphan chunks (stored, never committed) older than the grace
    /// period. Chunks still used by any file or kept version are never touched.
    pub async fn gc(&self, now: UnixNanos) -> ServiceResult<GcReport> {
        let retention = self.inner.config.retention.clone();
        let cutoff = now.saturating_sub(nanos(retention.versions_max_age));
        let mut report = GcReport::default();
        loop {
            let (dropped, freed) = self
                .mutate(move |tx| {
                    let expired = tx.versions_archived_before(cutoff, 1000)?;
                    let mut freed = 0;
                    for (path, v) in &expired {
                        tx.drop_version(path, v);
                        freed += v.file.chunks.len();
                    }
                    Ok((expired.len(), freed))
                })
                .await?;
            report.versions_dropped += dropped;
            report.chunks_deleted += freed;
            if dropped < 1000 {
                break;
            }
        }
        report.orphans_deleted = self
            .collect_orphans(now.saturating_sub(nanos(retention.orphan_grace)))
            .await?;
        Ok(report)
    }
}

impl Service {
    /// Deletes the bytes of chunks nothing references that were stored at or before
    /// `stored_before`. Each deletion happens inside a transaction that first re-checks the
    /// reference count, so it is serialized with every commit: a commit that found the chunk
    /// present either came first (then the count is not zero and the chunk stays) or comes
    /// after (then its own re-check sees the chunk gone and asks for it again). docs/design.md §8.
    async fn collect_orphans(&self, stored_before: UnixNanos) -> ServiceResult<usize> {
        const PER_TX: usize = 1000;
        let stored = self
            .inner
            .chunks
            .list()
            .await
            .map_err(|e| ServiceError::storage("", e))?;
        let old: Vec<_> = stored
            .into_iter()
            .filter(|c| c.stored_at <= stored_before)
            .map(|c| c.id)
            .collect();
        let mut deleted = 0;
        for group in old.chunks(PER_TX) {
            let group = group.to_vec();
            deleted += self.mutate(move |tx| tx.delete_unreferenced(&group)).await?;
        }
        Ok(deleted)
    }
}

/// The revision up to which the journal should be trimmed after reaching `head`, if any.
/// Trims in steps of a tenth of `keep`, so a delete-range is not issued on every commit.
pub(crate) fn journal_trim_target(head: u64, floor: u64, keep: u64) -> Option<u64> {
    let keep = keep.max(1);
    let slack = (keep / 10).max(1);
    (head.saturating_sub(floor) > keep + slack).then(|| head - keep)
}

/// Storage figures for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct ServiceStats {
    pub files: u64,
    pub file_bytes: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
    pub head_rev: u64,
}

impl Service {
    pub async fn stats(&self) -> ServiceResult<ServiceStats> {
        let meta = self.inner.meta.clone();
        blocking(move || {
            let err = |e| ServiceError::storage("", e);
            let s = meta.stats().map_err(err)?;
            Ok(ServiceStats {
                files: s.files,
                file_bytes: s.file_bytes,
                chunks: s.chunks,
                chunk_bytes: s.chunk_bytes,
                head_rev: meta.head_rev().map_err(err)?,
            })
        })
        .await?
    }
}

/// Counts a parked long-poll for as long as it lives (also when its request is dropped).
struct Parked<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Parked<'a> {
    fn new(count: &'a std::sync::atomic::AtomicU64) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Parked(count)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
