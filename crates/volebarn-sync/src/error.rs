//! The sync crate's one error type. Per-path failures during a pass are not errors: they are in
//! the pass report. A `SyncError` means the pass (or opening the folder) could not run at all.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the folder {} does not exist", .0.display())]
    NoFolder(PathBuf),
    /// Another process (a `volebarn watch`) holds the folder's index.
    #[error("the folder's index {} is in use: is `volebarn watch` running on this folder?", .0.display())]
    InUse(PathBuf),
    #[error("the folder's index {}", path.display())]
    Index {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    /// A state file or index entry that cannot be decoded.
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The scan's blocking task panicked or was cancelled.
    #[error("the folder scan did not finish: {0}")]
    Scan(String),
}

impl SyncError {
    /// Whether another process holds the folder's index.
    pub fn is_in_use(&self) -> bool {
        matches!(self, SyncError::InUse(_))
    }

    /// `what path`, caused by `source`: for `map_err`.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> SyncError {
        let path = path.into();
        move |source| SyncError::Io { what, path, source }
    }
}

pub type Result<T, E = SyncError> = std::result::Result<T, E>;
