//! Liveness and the fallback for unknown routes.

use crate::error::ServiceError;
use axum::http::Uri;
use axum::Json;
use volebarn_core::types::HealthStatus;

pub async fn health() -> Json<HealthStatus> {
    Json(HealthStatus {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

pub async fn no_route(uri: Uri) -> ServiceError {
    ServiceError::NotFound {
        path: uri.path().to_string(),
    }
}

pub async fn method_not_allowed(uri: Uri) -> ServiceError {
    ServiceError::MethodNotAllowed {
        path: uri.path().to_string(),
    }
}

/// `/files/` names no file: the same answer as any other invalid path.
pub async fn empty_file_path() -> ServiceError {
    ServiceError::InvalidPath {
        path: String::new(),
        reason: "a file path cannot be empty".into(),
    }
}
