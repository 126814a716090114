//! Durable storage behind two traits (docs/design.md §4, §8): [`MetaStore`] for metadata, with
//! transactions and revisions, and [`ChunkStore`] for content-addressed chunk bytes. The
//! service layer owns the write order (put chunks → one metadata transaction that re-checks
//! the chunks it newly references → GC deletes unreferenced bytes only after a grace
//! period); implementations only promise that each call is atomic and durable when it
//! returns. Small chunks live inline in the metadata store ([`INLINE_MAX`]).

pub mod chunks;
pub mod codec;
pub mod meta;
pub mod records;

pub use chunks::{ChunkStore, StoredChunk};
pub use meta::{CommitOutcome, Entry, MetaBatch, MetaOp, MetaStore, MetaTxn};

/// Chunks up to this size are stored inline in the metadata store, committed in the same
/// batch as the file record: a small file costs no file, rename, directory entry or fsync
/// of its own ([docs/design.md](docs/design.md) §8). Larger chunks (FastCDC cuts 256 KiB–4 MiB) go to the chunk
/// store. 64 KiB keeps a batch of small files to a few large sequential writes while the
/// metadata store's values stay small enough for its blob files.
pub const INLINE_MAX: u32 = 64 * 1024;
pub use records::{
    Change, ChangeKind, ChunkInfo, ChunkRef, Claim, DeadProp, DeadProps, DirRecord, FileRecord, VersionRecord,
};

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
    /// True when the failure means the disk is full (answered as 507): `ENOSPC` or `EDQUOT`
    /// from the filesystem, or a database reporting the same (RocksDB and PostgreSQL pass the
    /// OS message on: "No space left on device", "Disk quota exceeded").
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::Io(e) => matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)),
            StorageError::Db(msg) => {
                msg.contains("No space left on device") || msg.contains("Disk quota exceeded")
            }
            _ => false,
        }
    }
}

pub type StorageResult<T> = Result<T, StorageError>;
