//! The server's error type and the one place that maps it to HTTP (status + `OperationError`).

use crate::storage::StorageError;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use volebarn_core::{ErrorCode, OperationError};

/// Every way a server operation can fail, in domain terms.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no such file or directory")]
    NotFound { path: String },
    #[error("already exists")]
    AlreadyExists { path: String },
    #[error("is a directory")]
    IsADirectory { path: String },
    #[error("{blocker} is a file, not a directory")]
    NotADirectory { path: String, blocker: String },
    #[error("revision {current} does not match If-Match {expected}")]
    Precondition {
        path: String,
        current: u64,
        expected: String,
    },
    #[error("content hash {actual} does not match X-File-Hash {expected}")]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("file is larger than the limit of {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("the request body is larger than the limit of {limit} bytes; nothing of it was kept")]
    RequestTooLarge { limit: u64 },
    #[error("invalid path: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("{message}")]
    BadRequest { path: String, message: String },
    #[error("changes since revision {since} are no longer kept (journal holds {floor}..{head}); re-read the manifest")]
    Gone { since: u64, floor: u64, head: u64 },
    #[error("chunks missing: {}", ids.join(", "))]
    MissingChunks { path: String, ids: Vec<String> },
    #[error("method not allowed on this route")]
    MethodNotAllowed { path: String },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// Authenticated, but refused (a session cookie without proof of coming from the UI).
    #[error("{reason}")]
    Forbidden { reason: String },
    #[error("the server's disk is full")]
    InsufficientStorage { path: String },
    #[error("{reason}; retry after {retry_after} s")]
    RateLimited { reason: String, retry_after: u64 },
    #[error("storage failure: {source}")]
    Storage { path: String, source: StorageError },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// Parses a path a client sent; 400 `invalid_path` (naming the path) when it is not one.
    pub fn parse_path(raw: &str, allow_root: bool) -> Result<volebarn_core::VPath, ServiceError> {
        let parsed = if allow_root {
            volebarn_core::VPath::parse(raw)
        } else {
            volebarn_core::VPath::parse_non_root(raw)
        };
        parsed.map_err(|e| ServiceError::InvalidPath {
            path: raw.to_string(),
            reason: e.to_string(),
        })
    }

    pub fn storage(path: impl Into<String>, source: StorageError) -> Self {
        let path = path.into();
        if source.is_disk_full() {
            ServiceError::InsufficientStorage { path }
        } else {
            ServiceError::Storage { path, source }
        }
    }

    fn path(&self) -> &str {
        match self {
            ServiceError::NotFound { path }
            | ServiceError::AlreadyExists { path }
            | ServiceError::IsADirectory { path }
            | ServiceError::NotADirectory { path, .. }
            | ServiceError::Precondition { path, .. }
            | ServiceError::HashMismatch { path, .. }
            | ServiceError::TooLarge { path, .. }
            | ServiceError::InvalidPath { path, .. }
            | ServiceError::BadRequest { path, .. }
            | ServiceError::MethodNotAllowed { path }
            | ServiceError::MissingChunks { path, .. }
            | ServiceError::InsufficientStorage { path }
            | ServiceError::Storage { path, .. } => path,
            ServiceError::Unauthorized
            | ServiceError::Forbidden { .. }
            | ServiceError::Internal(_)
            | ServiceError::Gone { .. }
            | ServiceError::RequestTooLarge { .. }
            | ServiceError::RateLimited { .. } => "",
        }
    }

    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ServiceError::NotFound { .. } => (StatusCode::NOT_FOUND, ErrorCode::FileNotFound),
            ServiceError::AlreadyExists { .. } => (StatusCode::CONFLICT, ErrorCode::AlreadyExists),
            ServiceError::IsADirectory { .. } => (StatusCode::CONFLICT, ErrorCode::IsADirectory),
            ServiceError::NotADirectory { .. } => (StatusCode::CONFLICT, ErrorCode::NotADirectory),
            ServiceError::Precondition { .. } => {
                (StatusCode::PRECONDITION_FAILED, ErrorCode::PreconditionFailed)
            }
            ServiceError::HashMismatch { .. } => (StatusCode::BAD_REQUEST, ErrorCode::HashMismatch),
            ServiceError::TooLarge { .. } | ServiceError::RequestTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            ServiceError::InvalidPath { .. } => (StatusCode::BAD_REQUEST, ErrorCode::InvalidPath),
            ServiceError::BadRequest { .. } => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            ServiceError::Gone { .. } => (StatusCode::GONE, ErrorCode::Gone),
            ServiceError::MissingChunks { .. } => (StatusCode::BAD_REQUEST, ErrorCode::MissingChunks),
            ServiceError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::BadRequest),
            ServiceError::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            ServiceError::Forbidden { .. } => (StatusCode::FORBIDDEN, ErrorCode::PermissionDenied),
            ServiceError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            ServiceError::InsufficientStorage { .. } => {
                (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::InsufficientStorage)
            }
            ServiceError::Storage { .. } | ServiceError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::ServerError)
            }
        }
    }

    pub fn to_operation_error(&self) -> OperationError {
        let (status, code) = self.status_and_code();
        // 5xx bodies never leak internals; the detail goes to the log instead.
        let message = if let ServiceError::Storage {
            source: StorageError::Corrupt(_) | StorageError::MissingChunk(_),
            ..
        } = self
        {
            // Damage at rest: say so (no internals: the log names the chunk).
            "the stored content is damaged (a chunk is missing or does not match its hash); \
             `volebarn-server fsck` lists what is affected"
                .to_string()
        } else if status.is_server_error() && status != StatusCode::INSUFFICIENT_STORAGE {
            "internal server error".to_string()
        } else {
            self.to_string()
        };
        OperationError::new(self.path(), code, message)
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, path = self.path(), "request failed");
        } else {
            tracing::debug!(error = %self, path = self.path(), "request refused");
        }
        let mut resp = (status, axum::Json(self.to_operation_error())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        if let ServiceError::RateLimited { retry_after, .. } = self {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
        }
        resp
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
