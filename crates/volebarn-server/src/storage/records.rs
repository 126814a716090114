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

/// A client's word that a list of chunks adds up to a file of `size` bytes with whole-file
/// hash `xxh3` (a chunked commit), recorded until the server has checked it. Reading a big
/// file back to check its hash before answering would cost a read of every byte on each
/// commit (and a download with a remote chunk store), so the check runs in the background;
/// a file whose claim is still open is checked before it is served.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Claim {
    pub size: u64,
    pub xxh3: u64,
    pub chunks: Vec<ChunkRef>,
    /// Where the commit put the file (not part of the key): a false claim is corrected
    /// there and wherever the record has gone since.
    pub path: String,
}

impl Claim {
    /// The claim a file record at `path` makes.
    pub fn of(path: &str, rec: &FileRecord) -> Claim {
        Claim {
            size: rec.size,
            xxh3: rec.xxh3,
            chunks: rec.chunks.clone(),
            path: path.to_string(),
        }
    }

    /// Whether `rec` makes this claim.
    pub fn made_by(&self, rec: &FileRecord) -> bool {
        rec.xxh3 == self.xxh3 && rec.size == self.size && rec.chunks == self.chunks
    }

    /// Identifies the claim (and every record making it, under any path or revision).
    pub fn key(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&self.size.to_le_bytes());
        h.update(&self.xxh3.to_le_bytes());
        for c in &self.chunks {
            h.update(&c.id);
            h.update(&c.len.to_le_bytes());
        }
        *h.finalize().as_bytes()
    }
}

/// The dead properties WebDAV clients set on a path with `PROPPATCH`, each kept as the XML
/// element the client sent. Stored per path beside its entry; deleting the entry deletes
/// them. Not part of a file's content: setting them makes no revision or journal entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct DeadProps {
    pub props: Vec<DeadProp>,
}

/// One dead property: its name, namespace and the element itself.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DeadProp {
    pub namespace: Option<String>,
    pub name: String,
    pub prefix: Option<String>,
    pub xml: Option<Vec<u8>>,
}
