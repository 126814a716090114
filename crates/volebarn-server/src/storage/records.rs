//! Records as stored on disk (bitcode + snappy, see [`super::codec`]).

use bitcode::{Decode, Encode};
use volebarn_core::timefmt::UnixNanos;
use volebarn_core::ChunkId;

/// One chunk of a file, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct ChunkRef {
    pub id: [u8; 32],
    pub len: u32,
}

impl ChunkRef {
    pub fn chunk_id(&self) -> ChunkId {
        ChunkId(self.id)
    }
}

/// A file's current content: size, whole-file xxh3 and its chunk list.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct FileRecord {
    pub size: u64,
    pub xxh3: u64,
    pub mtime: UnixNanos,
    pub rev: u64,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct DirRecord {
    pub mtime: UnixNanos,
    pub rev: u64,
}

/// Reference count of one stored chunk. Every occurrence in a current file or a kept version
/// counts once; the chunk's bytes may be deleted only when this reaches zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct ChunkInfo {
    pub refs: u64,
    pub size: u32,
}

/// A previous version of a file, kept for restore.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct VersionRecord {
    pub file: FileRecord,
    /// True when the file was deleted right after this version.
    pub deleted: bool,
    /// When this version stopped being current.
    pub archived_at: UnixNanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum ChangeKind {
    Put,
    Delete,
    Mkdir,
    Rmdir,
    Move,
    Copy,
}

/// One journal entry; `rev` is the global revision the mutation got.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Change {
    pub rev: u64,
    pub kind: ChangeKind,
    pub path: String,
    pub to_path: Option<String>,
    pub at: UnixNanos,
}
