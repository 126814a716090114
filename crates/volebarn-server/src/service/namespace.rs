//! Move, copy and search: metadata-only operations over files and whole trees.

use super::{blocking, entry_metadata, Service, Tx};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::{ChangeKind, DirRecord, Entry, FileRecord};
use volebarn_core::{FileMetadata, VPath};

/// Where and how to search.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Glob matched against the name, or against the path below `dir` when it contains `/`.
    pub pattern: Option<String>,
    pub dir: VPath,
    pub recursive: bool,
    /// Only files modified at or after this time.
    pub modified_since: Option<i64>,
    /// Only files with this content hash.
    pub hash: Option<u64>,
}

impl Service {
    /// Moves a file or a directory tree. Chunk references move with the records: no bytes
    /// are copied or rewritten.
    pub async fn move_path(&self, from: &VPath, to: &VPath, overwrite: bool) -> ServiceResult<FileMetadata> {
        let (from, to) = (from.clone(), to.clone());
        self.mutate(move |tx| relocate(tx, &from, &to, overwrite, false))
            .await
    }

    /// Copies a file or a directory tree by adding chunk references.
    pub async fn copy_path(&self, from: &VPath, to: &VPath, overwrite: bool) -> ServiceResult<FileMetadata> {
        let (from, to) = (from.clone(), to.clone());
        self.mutate(move |tx| relocate(tx, &from, &to, overwrite, true))
            .await
    }

    pub async fn search(&self, q: SearchQuery) -> ServiceResult<Vec<FileMetadata>> {
        let matcher = match &q.pattern {
            Some(p) => Some(
                globset::GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| ServiceError::BadRequest {
                        path: q.dir.to_string(),
                        message: format!("invalid glob {p:?}: {e}"),
                    })?
                    .compile_matcher(),
            ),
            None => None,
        };
        let meta = self.inner.meta.clone();
        blocking(move || {
            let err = |e| ServiceError::storage(q.dir.as_str(), e);
            super::expect_dir(&q.dir, meta.get(&q.dir).map_err(err)?)?;
            let candidates: Vec<(VPath, Entry)> = if let Some(h) = q.hash {
                let mut v = Vec::new();
                for p in meta.files_with_hash(h).map_err(err)? {
                    if let Some(e) = meta.get(&p).map_err(err)? {
                        v.push((p, e));
                    }
                }
                v
            } else if q.recursive {
                meta.descendants(&q.dir).map_err(err)?
            } else {
                meta.children(&q.dir).map_err(err)?
            };
            let prefix_len = if q.dir.is_root() {
                0
            } else {
                q.dir.as_str().len() + 1
            };
            let mut out: Vec<FileMetadata> = candidates
                .into_iter()
                .filter(|(p, _)| p.starts_with(&q.dir) && p != &q.dir)
                .filter(|(p, _)| q.recursive || p.parent().as_ref() == Some(&q.dir))
                .filter(|(_, e)| match (q.modified_since, e) {
                    (Some(t), Entry::File(f)) => f.mtime >= t,
                    (Some(_), Entry::Dir(_)) => false,
                    (None, _) => true,
                })
                .filter(|(p, _)| match &matcher {
                    None => true,
                    Some(m) => {
                        let pattern_has_slash = q.pattern.as_deref().is_some_and(|s| s.contains('/'));
                        if pattern_has_slash {
                            m.is_match(&p.as_str()[prefix_len..])
                        } else {
                            m.is_match(p.name())
                        }
                    }
                })
                .map(|(p, e)| entry_metadata(&p, &e))
                .collect();
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(out)
        })
        .await?
    }
}

/// Moves (`copy = false`) or copies `from` to `to` inside one transaction.
fn relocate(
    tx: &mut Tx<'_>,
    from: &VPath,
    to: &VPath,
    overwrite: bool,
    copy: bool,
) -> ServiceResult<FileMetadata> {
    if from.is_root() || to.is_root() {
        return Err(ServiceError::InvalidPath {
            path: from.to_string(),
            reason: "the root directory cannot be moved, copied or replaced".into(),
        });
    }
    if to == from {
        return Err(ServiceError::InvalidPath {
            path: to.to_string(),
            reason: "source and target are the same".into(),
        });
    }
    if from.starts_with(to) {
        return Err(ServiceError::InvalidPath {
            path: to.to_string(),
            reason: format!("cannot replace {to}: it contains the source {from}"),
        });
    }
    if to.starts_with(from) {
        return Err(ServiceError::InvalidPath {
            path: to.to_string(),
            reason: format!("cannot move or copy {from} into itself"),
        });
    }
    let source = tx.get(from)?.ok_or_else(|| ServiceError::NotFound {
        path: from.to_string(),
    })?;
    match tx.get(to)? {
        Some(_) if !overwrite => return Err(ServiceError::AlreadyExists { path: to.to_string() }),
        Some(_) => tx.clear_path(to)?,
        None => {}
    }
    let rev = tx.rev();
    tx.ensure_parents(to, rev)?;
    let moved = |rec: &FileRecord| FileRecord { rev, ..rec.clone() };
    // Where a path below `from` lands below `to`.
    let rebase = |p: &VPath| {
        VPath::parse(&format!("{}{}", to.as_str(), &p.as_str()[from.as_str().len()..])).map_err(|e| {
            ServiceError::InvalidPath {
                path: to.to_string(),
                reason: format!("target path: {e}"),
            }
        })
    };
    let result = match source {
        Entry::File(f) => {
            let rec = moved(&f);
            tx.put_file(to.clone(), rec.clone(), copy);
            if !copy {
                tx.remove_file(from.clone());
            }
            super::file_metadata(to, &rec)
        }
        Entry::Dir(d) => {
            let below = tx.descendants(from)?;
            let dir = DirRecord { mtime: d.mtime, rev };
            tx.put_dir(to.clone(), dir);
            for (p, e) in below {
                let target = rebase(&p)?;
                match e {
                    Entry::File(f) => {
                        tx.put_file(target, moved(&f), copy);
                        if !copy {
                            tx.remove_file(p);
                        }
                    }
                    Entry::Dir(sub) => {
                        tx.put_dir(
                            target,
                            DirRecord {
                                mtime: sub.mtime,
                                rev,
                            },
                        );
                        if !copy {
                            tx.remove_dir(p);
                        }
                    }
                }
            }
            if !copy {
                tx.remove_dir(from.clone());
            }
            super::dir_metadata(to, &dir)
        }
    };
    // The WebDAV dead properties of the source, and of everything below a directory, go with
    // it (the sources' own are removed with their entries on a move).
    let props = tx.committed_dead_props(from)?;
    if !props.props.is_empty() {
        tx.set_dead_props(to.clone(), props);
    }
    for (p, props) in tx.committed_dead_props_below(from)? {
        tx.set_dead_props(rebase(&p)?, props);
    }
    let kind = if copy { ChangeKind::Copy } else { ChangeKind::Move };
    tx.journal(rev, kind, from, Some(to));
    Ok(result)
}
