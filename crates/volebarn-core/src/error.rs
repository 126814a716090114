//! The seed's `OperationError` body and every `error_code` the API can answer ([docs/design.md](docs/design.md) §5).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Machine-readable error code carried in every non-2xx body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // The seed's codes.
    FileNotFound,
    PermissionDenied,
    HashMismatch,
    NetworkError,
    ServerError,
    // Our additions ([docs/design.md](docs/design.md) §5).
    AlreadyExists,
    InvalidPath,
    PayloadTooLarge,
    PreconditionFailed,
    MissingChunks,
    Unauthorized,
    RateLimited,
    InsufficientStorage,
    NotADirectory,
    IsADirectory,
    Gone,
    /// A request that is malformed in a way no other code describes (bad header, bad JSON).
    BadRequest,
    /// Anything a newer server sends that this build does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FileNotFound => "file_not_found",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::HashMismatch => "hash_mismatch",
            ErrorCode::NetworkError => "network_error",
            ErrorCode::ServerError => "server_error",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::InvalidPath => "invalid_path",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::MissingChunks => "missing_chunks",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::NotADirectory => "not_a_directory",
            ErrorCode::IsADirectory => "is_a_directory",
            ErrorCode::Gone => "gone",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The seed's error body: `{ path, error, error_code }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OperationError {
    pub path: String,
    pub error: String,
    pub error_code: ErrorCode,
}

impl OperationError {
    pub fn new(path: impl Into<String>, code: ErrorCode, error: impl Into<String>) -> Self {
        OperationError {
            path: path.into(),
            error: error.into(),
            error_code: code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_snake_case_and_match_as_str() {
        for code in [
            ErrorCode::FileNotFound,
            ErrorCode::InvalidPath,
            ErrorCode::PreconditionFailed,
            ErrorCode::IsADirectory,
            ErrorCode::BadRequest,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        let unknown: ErrorCode = serde_json::from_str("\"quota_exceeded\"").unwrap();
        assert_eq!(unknown, ErrorCode::Unknown);
    }
}
