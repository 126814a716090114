//! The seed's `ClientError`, with the server's `error_code` kept.

use volebarn_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Network error: {0}")]
    Network(#[from] reqwest::Error),

    #[error("File not found: {path}")]
    FileNotFound { path: String },

    /// Any other non-2xx answer; `code` is the server's `error_code`.
    #[error("Server error: {status} {code} - {message}")]
    Server {
        status: u16,
        code: ErrorCode,
        message: String,
        path: String,
    },

    #[error("Hash mismatch for {path}: expected {expected}, got {actual}")]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },

    #[error("Invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    #[error("TLS error: {0}")]
    Tls(String),

    #[error("Timeout after {duration}s for operation: {operation}")]
    Timeout { duration: u64, operation: String },

    #[error("Rate limited: retry after {retry_after}s")]
    RateLimited { retry_after: u64 },

    #[error("Partial failure: {successful} succeeded, {failed} failed")]
    PartialFailure {
        successful: usize,
        failed: usize,
        errors: Vec<String>,
    },

    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },

    #[error("Protocol error: {0}")]
    Protocol(String),

    #[error("Configuration error: {0}")]
    Config(String),

    /// The circuit breaker is open: the server failed repeatedly; nothing was sent.
    #[error("Circuit open: server unavailable, next attempt in {retry_in:?}")]
    CircuitOpen { retry_in: std::time::Duration },
}

impl ClientError {
    /// The API error code this error stands for, when there is one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::FileNotFound { .. } => Some(ErrorCode::FileNotFound),
            ClientError::Server { code, .. } => Some(*code),
            ClientError::HashMismatch { .. } => Some(ErrorCode::HashMismatch),
            ClientError::InvalidPath { .. } => Some(ErrorCode::InvalidPath),
            ClientError::RateLimited { .. } => Some(ErrorCode::RateLimited),
            ClientError::Network(_) | ClientError::Timeout { .. } | ClientError::CircuitOpen { .. } => {
                Some(ErrorCode::NetworkError)
            }
            _ => None,
        }
    }

    /// The server answered 429: alive, and asking the client to wait.
    pub fn is_rate_limited(&self) -> bool {
        matches!(
            self,
            ClientError::RateLimited { .. } | ClientError::Server { status: 429, .. }
        )
    }

    /// Worth retrying: the request may succeed later (connect errors, timeouts, dropped
    /// connections, 408, 429, 5xx other than 501/505/507).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Network(e) => !e.is_builder() && !e.is_redirect(),
            ClientError::Timeout { .. } | ClientError::RateLimited { .. } => true,
            ClientError::Server { status, .. } => {
                matches!(status, 408 | 429) || (*status >= 500 && !matches!(status, 501 | 505 | 507))
            }
            _ => false,
        }
    }

    /// How long the server asked us to wait (`Retry-After` on 429).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::RateLimited { retry_after } => Some(std::time::Duration::from_secs(*retry_after)),
            _ => None,
        }
    }

    /// The HTTP status the server answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::FileNotFound { .. } => Some(404),
            ClientError::Server { status, .. } => Some(*status),
            ClientError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;
