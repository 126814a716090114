//! Wire types: exactly the seed's JSON schemas, plus `rev` (DESIGN.md §4).

use crate::hash::Xxh3;
use crate::timefmt::{rfc3339_nanos, UnixNanos};
use serde::{Deserialize, Serialize};

/// The seed's `FileMetadata`, with the revision that last changed the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMetadata {
    pub path: String,
    pub name: String,
    pub size: u64,
    #[serde(with = "rfc3339_nanos")]
    pub modified: UnixNanos,
    pub is_directory: bool,
    /// xxh3-64 of the content; `0000000000000000` for directories.
    pub xxhash3: Xxh3,
    pub rev: u64,
}

/// `GET /directories/{path}`: the direct children of one directory, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryListing {
    pub path: String,
    pub entries: Vec<FileMetadata>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
