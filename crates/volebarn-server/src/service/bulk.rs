//! Many files per request: bulk upload (one durable batch), bulk delete, the manifest in
//! pages, and the three-way sync plan.

use super::files::{commit_write, delete_dir_in, delete_file_in, StagedContent};
use super::{blocking, entry_metadata, Service, WriteMode};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::Entry;
use std::collections::{BTreeMap, BTreeSet};
use volebarn_core::sync::{plan, BaseState, LocalState, RemoteState, SyncPlan};
use volebarn_core::timefmt::UnixNanos;
use volebarn_core::types::{BulkDeleteResponse, BulkUploadResponse, SyncRequest};
use volebarn_core::{ChunkId, FileMetadata, OperationError, VPath, Xxh3};

/// One part of a bulk upload, chunked and waiting for the batch commit.
pub struct BulkItem {
    pub path: VPath,
    pub mode: WriteMode,
    pub content: StagedContent,
    pub mtime: Option<UnixNanos>,
}

/// Entries per page when scanning the whole namespace.
const PAGE: usize = 1000;

impl Service {
    /// Commits every staged part in one durable batch: chunks still in memory go to the
    /// chunk store together (one durable batch), then one transaction commits every record
    /// with its inline chunks. A part that fails its checks fails alone.
    pub async fn commit_bulk(
        &self,
        mut items: Vec<BulkItem>,
        mut failed: Vec<OperationError>,
    ) -> ServiceResult<BulkUploadResponse> {
        if items.is_empty() {
            return Ok(BulkUploadResponse {
                success: vec![],
                failed,
                files: vec![],
            });
        }
        let t0 = std::time::Instant::now();
        let mut contents: Vec<&mut StagedContent> = items.iter_mut().map(|i| &mut i.content).collect();
        let stored = self.store_pending(&mut contents).await;
        let written: Vec<ChunkId> = items.iter().flat_map(|i| i.content.written.clone()).collect();
        if let Err(e) = stored {
            self.discard(written).await;
            return Err(e);
        }
        let t_store = t0.elapsed();
        let committed = self
            .mutate(move |tx| {
                let mut files = Vec::new();
                let mut failures = Vec::new();
                let mut unused = Vec::new();
                // Every path and parent this batch checks, read at once.
                tx.prefetch(items.iter().map(|i| &i.path))?;
                for item in items {
                    let BulkItem {
                        path,
                        mode,
                        content,
                        mtime,
                    } = item;
                    let StagedContent {
                        chunks,
                        inline,
                        written,
                        size,
                        hash,
                        ..
                    } = content;
                    let mtime = mtime.unwrap_or(tx.now);
                    match commit_write(tx, &path, &mode, chunks, size, hash, mtime) {
                        Ok(meta) => {
                            tx.offer_inline(inline);
                            files.push(meta);
                        }
                        Err(e) => {
                            failures.push(e.to_operation_error());
                            unused.extend(written);
                        }
                    }
                }
                Ok((files, failures, unused))
            })
            .await;
        let (files, item_failures, unused) = match committed {
            Ok(x) => x,
            Err(e) => {
                self.discard(written).await;
                return Err(e);
            }
        };
        self.discard(unused).await;
        tracing::debug!(
            store_ms = t_store.as_millis() as u64,
            commit_ms = (t0.elapsed() - t_store).as_millis() as u64,
            files = files.len(),
            "bulk commit"
        );
        failed.extend(item_failures);
        Ok(BulkUploadResponse {
            success: files.iter().map(|f| f.path.clone()).collect(),
            failed,
            files,
        })
    }

    /// Deletes files and (recursively) directories; each path succeeds or fails alone.
    pub async fn bulk_delete(&self, paths: Vec<String>) -> ServiceResult<BulkDeleteResponse> {
        self.mutate(move |tx| {
            let mut resp = BulkDeleteResponse::default();
            let parsed: Vec<VPath> = paths
                .iter()
                .filter_map(|raw| ServiceError::parse_path(raw, false).ok())
                .collect();
            tx.prefetch(&parsed)?;
            for raw in paths {
                let result = ServiceError::parse_path(&raw, false).and_then(|p| match tx.get(&p)? {
                    Some(Entry::Dir(_)) => delete_dir_in(tx, &p),
                    _ => delete_file_in(tx, &p, None),
                });
                match result {
                    Ok(()) => resp.success.push(raw),
                    Err(e) => resp.failed.push(e.to_operation_error()),
                }
            }
            Ok(resp)
        })
        .await
    }

    /// One page of the manifest below `dir`, in path order, after `after`.
    pub async fn manifest_page(
        &self,
        dir: &VPath,
        after: Option<VPath>,
        limit: usize,
    ) -> ServiceResult<Vec<FileMetadata>> {
        let meta = self.inner.meta.clone();
        let d = dir.clone();
        blocking(move || {
            super::expect_dir(
                &d,
                meta.get(&d).map_err(|e| ServiceError::storage(d.as_str(), e))?,
            )?;
            let page = meta
                .descendants_page(&d, after.as_ref(), limit)
                .map_err(|e| ServiceError::storage(d.as_str(), e))?;
            Ok(page.iter().map(|(p, e)| entry_metadata(p, e)).collect())
        })
        .await?
    }

    /// The three-way plan ([docs/design.md](docs/design.md) §6) for a client's manifest against the server.
    pub async fn sync_plan(&self, req: SyncRequest) -> ServiceResult<SyncPlan> {
        let meta = self.inner.meta.clone();
        blocking(move || {
            let err = |e| ServiceError::storage("", e);
            let mut remote = BTreeMap::new();
            let mut remote_dirs = BTreeSet::new();
            let mut after: Option<VPath> = None;
            loop {
                let page = meta
                    .descendants_page(&VPath::root(), after.as_ref(), PAGE)
                    .map_err(err)?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (p, e) in page {
                    match e {
                        Entry::File(f) => {
                            let state = RemoteState {
                                xxh3: Xxh3(f.xxh3),
                                size: f.size,
                                mtime: f.mtime,
                                rev: f.rev,
                            };
                            remote.insert(p.to_string(), state);
                        }
                        Entry::Dir(_) => {
                            remote_dirs.insert(p.to_string());
                        }
                    }
                }
            }
            let mut local = BTreeMap::new();
            let mut local_dirs = BTreeSet::new();
            let mut base = BTreeMap::new();
            // What the base content of `path` at `rev` was, from the current file or history.
            let base_at = |path: &str, rev: u64, hint: Option<(Xxh3, u64)>| -> ServiceResult<BaseState> {
                if let Some((xxh3, size)) = hint {
                    return Ok(BaseState {
                        xxh3,
                        size,
                        mtime: 0,
                        rev,
                    });
                }
                if let Some(r) = remote.get(path).filter(|r| r.rev == rev) {
                    return Ok(BaseState {
                        xxh3: r.xxh3,
                        size: r.size,
                        mtime: r.mtime,
                        rev,
                    });
                }
                let vp = ServiceError::parse_path(path, false)?;
                let old = meta
                    .versions(&vp)
                    .map_err(err)?
                    .into_iter()
                    .find(|v| v.file.rev == rev);
                Ok(match old {
                    Some(v) => BaseState {
                        xxh3: Xxh3(v.file.xxh3),
                        size: v.file.size,
                        mtime: v.file.mtime,
                        rev,
                    },
                    // History trimmed: a base that matches neither side, so any difference
                    // is a conflict rather than a silent overwrite.
                    None => BaseState {
                        xxh3: Xxh3(0),
                        size: u64::MAX,
                        mtime: 0,
                        rev,
                    },
                })
            };
            for (key, entry) in &req.client_manifest.files {
                let path = if entry.path.is_empty() {
                    key.clone()
                } else {
                    entry.path.clone()
                };
                let vp = ServiceError::parse_path(&path, false)?;
                let path = vp.to_string();
                if entry.is_directory {
                    local_dirs.insert(path);
                    continue;
                }
                let hint = entry
                    .base_xxhash3
                    .map(|h| (h, entry.base_size.unwrap_or(entry.size)));
                if let Some(rev) = entry.base_rev {
                    base.insert(path.clone(), base_at(&path, rev, hint)?);
                }
                local.insert(
                    path,
                    LocalState {
                        xxh3: entry.xxhash3,
                        size: entry.size,
                        mtime: entry.modified,
                    },
                );
            }
            for (path, rev) in &req.deleted {
                let vp = ServiceError::parse_path(path, false)?;
                base.insert(vp.to_string(), base_at(vp.as_str(), *rev, None)?);
            }
            Ok(plan(
                &local,
                &remote,
                &base,
                &local_dirs,
                &remote_dirs,
                req.conflict_resolution,
            ))
        })
        .await?
    }
}
