//! Durable storage behind two traits (DESIGN.md §4): [`MetaStore`] for metadata and
//! [`ChunkStore`] for content-addressed chunk bytes. The service layer owns the write order
//! (stage chunks → publish → one metadata batch → delete freed chunks); implementations only
//! promise that each call is atomic and durable when it returns.

pub mod chunks;
pub mod codec;
pub mod meta;
pub mod records;

pub use chunks::{ChunkStore, StagedChunk};
pub use meta::{CommitOutcome, Entry, MetaBatch, MetaOp, MetaStore};
pub use records::{Change, ChangeKind, ChunkInfo, ChunkRef, DirRecord, FileRecord, VersionRecord};

/// Failures of a storage backend. Never shown to API users verbatim.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Db(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("chunk {0} is missing")]
    MissingChunk(volebarn_core::ChunkId),
}

impl StorageError {
    /// True when the failure means the disk is full (answered as 507).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::Io(e) if e.raw_os_error() == Some(libc::ENOSPC))
    }
}

pub type StorageResult<T> = Result<T, StorageError>;
