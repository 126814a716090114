//! Wire types: exactly the seed's JSON schemas, plus `rev` ([docs/design.md](docs/design.md) §4).

use crate::hash::{ChunkId, Xxh3};
use crate::timefmt::{rfc3339_nanos, UnixNanos};
use serde::{Deserialize, Serialize};

/// The seed's `FileMetadata`, with the revision that last changed the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileMetadata {
    pub path: String,
    pub name: String,
    pub size: u64,
    #[serde(with = "rfc3339_nanos")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub modified: UnixNanos,
    pub is_directory: bool,
    /// xxh3-64 of the content; `0000000000000000` for directories.
    pub xxhash3: Xxh3,
    pub rev: u64,
}

/// `GET /directories/{path}`: the direct children of one directory, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirectoryListing {
    pub path: String,
    pub entries: Vec<FileMetadata>,
}

/// One entry of `GET /versions/{path}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionInfo {
    pub rev: u64,
    pub size: u64,
    pub xxhash3: Xxh3,
    #[serde(with = "rfc3339_nanos")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub modified: UnixNanos,
    /// The file was deleted right after this version.
    pub deleted: bool,
    /// This is the file's current content.
    pub current: bool,
    /// When this version stopped being current.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timefmt::rfc3339_nanos_opt"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub archived: Option<UnixNanos>,
}

/// One deleted file of `GET /trash/{dir}`: restore it with `POST /versions/{path}/restore`
/// and `{"rev": rev}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrashEntry {
    pub path: String,
    pub name: String,
    /// Size of the content it had when it was deleted.
    pub size: u64,
    pub xxhash3: Xxh3,
    /// The modification time of that content.
    #[serde(with = "rfc3339_nanos")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub modified: UnixNanos,
    /// When it was deleted.
    #[serde(with = "rfc3339_nanos")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub deleted: UnixNanos,
    /// The revision to restore (the content it had when it was deleted).
    pub rev: u64,
    /// How many versions of it are kept.
    pub versions: u64,
}

/// `GET /trash/{dir}`: files of one directory that are deleted but have kept versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrashList {
    pub path: String,
    pub entries: Vec<TrashEntry>,
}

/// One chunk of a chunked commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkSpec {
    pub id: ChunkId,
    pub len: u32,
}

/// Body of `PUT`/`POST /files/{path}` with `Content-Type: application/vnd.volebarn.chunks+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkedCommit {
    pub size: u64,
    /// xxh3-64 of the whole file, the client's claim (checked in the background). Absent:
    /// the server reads the chunks back and computes it before committing — for clients
    /// that cannot compute xxh3, such as the web UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxhash3: Option<Xxh3>,
    pub chunks: Vec<ChunkSpec>,
}

/// Content type of a chunked commit.
pub const CHUNKS_CONTENT_TYPE: &str = "application/vnd.volebarn.chunks+json";

/// `POST /chunks/missing` request and answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkIds {
    pub ids: Vec<ChunkId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MissingChunks {
    pub missing: Vec<ChunkId>,
}

/// `POST /move` and `POST /copy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MoveRequest {
    pub from_path: String,
    pub to_path: String,
    #[serde(default)]
    pub overwrite: bool,
}

/// `POST /versions/{path}/restore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreRequest {
    pub rev: u64,
}

/// `POST /bulk/delete` and `POST /bulk/download` requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PathList {
    pub paths: Vec<String>,
}

/// `POST /bulk/upload` answer (the seed's).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkUploadResponse {
    pub success: Vec<String>,
    pub failed: Vec<crate::OperationError>,
    /// Metadata of every stored file, in `success` order (our addition: carries `rev`).
    #[serde(default)]
    pub files: Vec<FileMetadata>,
}

/// `POST /bulk/delete` answer (the seed's).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkDeleteResponse {
    pub success: Vec<String>,
    pub failed: Vec<crate::OperationError>,
}

/// What a change did (`GET /changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Put,
    Delete,
    Mkdir,
    Rmdir,
    Move,
    Copy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeEntry {
    pub rev: u64,
    pub kind: ChangeKind,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_path: Option<String>,
    /// The entry's metadata when it is still what this change produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<FileMetadata>,
}

/// `GET /changes` answer: continue with `since = next`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangesResponse {
    pub changes: Vec<ChangeEntry>,
    pub next: u64,
}

/// `GET /versions/{path}` answer, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionList {
    pub path: String,
    pub versions: Vec<VersionInfo>,
}

/// The seed's `FileManifest`: every entry below a directory, keyed by path.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileManifest {
    pub files: std::collections::BTreeMap<String, FileMetadata>,
}

/// One entry of a client's manifest in `POST /bulk/sync`: the seed's `FileMetadata` fields
/// plus the base the client last synced ([docs/design.md](docs/design.md) §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientEntry {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub size: u64,
    #[serde(with = "rfc3339_nanos")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub modified: UnixNanos,
    #[serde(default)]
    pub is_directory: bool,
    #[serde(default)]
    pub xxhash3: Xxh3,
    /// The server revision this path had when the client last synced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_rev: Option<u64>,
    /// The content hash at that sync, when the client keeps it (saves a history lookup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_xxhash3: Option<Xxh3>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientManifest {
    pub files: std::collections::BTreeMap<String, ClientEntry>,
}

/// `POST /bulk/sync`: the seed's `SyncRequest` plus `deleted: { path: base_rev }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncRequest {
    pub client_manifest: ClientManifest,
    #[serde(default)]
    pub conflict_resolution: crate::sync::ConflictStrategy,
    /// Paths the client had at its last sync and has deleted since, with their base rev.
    #[serde(default)]
    pub deleted: std::collections::BTreeMap<String, u64>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthStatus {
    pub status: String,
    pub version: String,
}

/// Header names used across the API.
pub mod headers {
    pub const FILE_HASH: &str = "x-file-hash";
    pub const FILE_SIZE: &str = "x-file-size";
    pub const MODIFIED_TIME: &str = "x-modified-time";
    pub const FILE_REV: &str = "x-file-rev";
    /// On `/bulk/manifest`: the journal head when the listing began; `/changes?since=` it
    /// brings a copy of the listing up to date.
    pub const JOURNAL_REV: &str = "x-journal-rev";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_metadata_json_has_the_seed_fields() {
        let m = FileMetadata {
            path: "a/b.txt".into(),
            name: "b.txt".into(),
            size: 5,
            modified: 0,
            is_directory: false,
            xxhash3: Xxh3(0xabc),
            rev: 7,
        };
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(v["xxhash3"], "0000000000000abc");
        assert_eq!(v["modified"], "1970-01-01T00:00:00Z");
        assert_eq!(v["rev"], 7);
        let back: FileMetadata = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
