//! The operations of the file server, independent of HTTP.
//!
//! Write order (docs/design.md §4, §8): bodies are chunked while streaming; small chunks stay in
//! memory and are committed inline with the metadata, larger ones are put durably into the
//! chunk store (in parallel, no lock). Then one store transaction checks preconditions,
//! re-checks that every newly referenced chunk exists, and commits every metadata change of
//! the operation at once, with revisions from the store. A crash can leave an orphan chunk
//! but never metadata pointing at missing bytes. Unreferenced bytes are deleted only by GC,
//! after a grace period and inside a transaction, so a chunk being deleted can never be the
//! one a commit just found present. Nothing here lives only in this server's memory: two
//! servers on the same stores behave as one.

mod bulk;
mod chunked;
mod files;
mod history;
mod namespace;
mod props;
mod tx;
mod verify;

pub use bulk::BulkItem;
pub use files::{StagedContent, UploadOptions, WriteMode};
pub use history::{ChangeWithMeta, GcReport, Retention};
pub use namespace::SearchQuery;
pub use tx::Tx;
pub(crate) use tx::{Committed, Lookup};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{ChunkStore, DirRecord, Entry, FileRecord, MetaStore, StorageError};
use std::sync::Arc;
use volebarn_core::{FileMetadata, VPath, Xxh3};

/// Limits and retention the service enforces.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub max_file_size: u64,
    /// Previous versions kept per path (0 keeps none: overwritten content is freed at once).
    pub versions_keep: usize,
    pub retention: Retention,
}

/// A parsed `If-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfMatch {
    any: bool,
    revs: Vec<u64>,
    raw: String,
}

impl IfMatch {
    /// Parses `*`, `"12"` or a comma-separated list. Weak or foreign tags are kept as
    /// never-matching, so they answer 412 rather than being ignored.
    pub fn parse(raw: &str) -> IfMatch {
        let mut m = IfMatch {
            any: false,
            revs: Vec::new(),
            raw: raw.to_string(),
        };
        for tag in raw.split(',').map(str::trim) {
            if tag == "*" {
                m.any = true;
            } else if let Some(rev) = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse().ok())
            {
                m.revs.push(rev);
            }
        }
        m
    }

    /// Matches exactly one revision.
    pub fn rev(rev: u64) -> IfMatch {
        IfMatch {
            any: false,
            revs: vec![rev],
            raw: format!("\"{rev}\""),
        }
    }

    pub fn matches(&self, rev: u64) -> bool {
        self.any || self.revs.contains(&rev)
    }
}

pub(crate) fn check_if_match(path: &VPath, if_match: Option<&IfMatch>, rev: u64) -> ServiceResult<()> {
    match if_match {
        Some(m) if !m.matches(rev) => Err(ServiceError::Precondition {
            path: path.to_string(),
            current: rev,
            expected: m.raw.clone(),
        }),
        _ => Ok(()),
    }
}

#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) chunks: Arc<dyn ChunkStore>,
    pub(crate) config: ServiceConfig,
    /// Long-polls of `/changes` parked waiting for a commit (exported in `/metrics`).
    pub(crate) parked: std::sync::atomic::AtomicU64,
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ServiceResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))
}

pub fn file_metadata(path: &VPath, rec: &FileRecord) -> FileMetadata {
    FileMetadata {
        path: path.to_string(),
        name: path.name().to_string(),
        size: rec.size,
        modified: rec.mtime,
        is_directory: false,
        xxhash3: Xxh3(rec.xxh3),
        rev: rec.rev,
    }
}

pub fn dir_metadata(path: &VPath, rec: &DirRecord) -> FileMetadata {
    FileMetadata {
        path: path.to_string(),
        name: path.name().to_string(),
        size: 0,
        modified: rec.mtime,
        is_directory: true,
        xxhash3: Xxh3(0),
        rev: rec.rev,
    }
}

/// `entry` (what lives at `path`) must be a file: 404 when absent, 409 `is_a_directory`.
pub(crate) fn expect_file(path: &VPath, entry: Option<Entry>) -> ServiceResult<FileRecord> {
    match entry {
        Some(Entry::File(f)) => Ok(f),
        Some(Entry::Dir(_)) => Err(ServiceError::IsADirectory {
            path: path.to_string(),
        }),
        None => Err(ServiceError::NotFound {
            path: path.to_string(),
        }),
    }
}

/// `entry` (what lives at `path`) must be a directory: 404 when absent, 409 `not_a_directory`.
pub(crate) fn expect_dir(path: &VPath, entry: Option<Entry>) -> ServiceResult<DirRecord> {
    match entry {
        Some(Entry::Dir(d)) => Ok(d),
        Some(Entry::File(_)) => Err(ServiceError::NotADirectory {
            path: path.to_string(),
            blocker: path.to_string(),
        }),
        None => Err(ServiceError::NotFound {
            path: path.to_string(),
        }),
    }
}

pub fn entry_metadata(path: &VPath, e: &Entry) -> FileMetadata {
    match e {
        Entry::File(f) => file_metadata(path, f),
        Entry::Dir(d) => dir_metadata(path, d),
    }
}

impl Service {
    pub fn new(
        meta: Arc<dyn MetaStore>,
        chunks: Arc<dyn ChunkStore>,
        config: ServiceConfig,
    ) -> Result<Self, StorageError> {
        Ok(Service {
            inner: Arc::new(Inner {
                meta,
                chunks,
                config,
                parked: Default::default(),
            }),
        })
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// A receiver that sees the head revision change after every commit (the store's, so
    /// a commit through another server sharing it wakes this one's long-polls too).
    pub fn subscribe_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.meta.watch_head()
    }

    /// How many long-polls are parked waiting for a commit right now.
    pub fn parked_long_polls(&self) -> u64 {
        self.inner.parked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The highest committed revision.
    pub async fn head_rev(&self) -> ServiceResult<u64> {
        let meta = self.inner.meta.clone();
        blocking(move || meta.head_rev())
            .await?
            .map_err(|e| ServiceError::storage("", e))
    }

    /// Runs one mutation as a store transaction: `build` checks preconditions and records
    /// its changes; then newly referenced chunks are re-checked and the batch committed in
    /// one durable write (which wakes long-polls through the store).
    pub(crate) async fn mutate<T: Send + 'static>(
        &self,
        build: impl FnOnce(&mut Tx<'_>) -> ServiceResult<T> + Send + 'static,
    ) -> ServiceResult<T> {
        let inner = self.inner.clone();
        let rt = tokio::runtime::Handle::current();
        blocking(move || {
            let mut tx = Tx::begin(&inner, rt)?;
            let out = build(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::IfMatch;

    #[test]
    fn if_match_parsing() {
        assert!(IfMatch::parse("\"5\"").matches(5));
        assert!(!IfMatch::parse("\"5\"").matches(6));
        assert!(IfMatch::parse("*").matches(99));
        assert!(IfMatch::parse("\"1\", \"7\"").matches(7));
        assert!(!IfMatch::parse("W/\"5\"").matches(5));
        assert!(!IfMatch::parse("5").matches(5));
        assert!(IfMatch::rev(3).matches(3));
    }
}
