//! HTTP layer: routing, auth, request logging, path and header parsing. Handlers are short:
//! extract, call the [`Service`], map the result. Knows nothing of RocksDB or chunk files.

mod admin;
mod bulk;
mod changes;
mod chunks;
mod directories;
mod files;
mod namespace;
mod versions;

use crate::error::ServiceError;
use crate::service::{IfMatch, Service};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::Router;
use percent_encoding::percent_decode_str;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use volebarn_core::VPath;

#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub token: Arc<String>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(admin::health))
        .route(
            "/files/{*path}",
            post(files::upload)
                .put(files::update)
                .get(files::download)
                .head(files::head)
                .delete(files::delete),
        )
        .route("/bulk/upload", post(bulk::upload))
        .route("/bulk/download", post(bulk::download))
        .route("/bulk/delete", post(bulk::delete))
        .route("/bulk/manifest", get(bulk::manifest))
        .route("/bulk/sync", post(bulk::sync))
        .route("/move", post(namespace::move_path))
        .route("/copy", post(namespace::copy_path))
        .route("/search", get(namespace::search))
        .route("/changes", get(changes::changes))
        .route("/versions/{*path}", get(versions::list).post(versions::restore))
        .route("/chunks/missing", post(chunks::missing))
        .route("/chunks/{id}", put(chunks::put))
        .route("/directories", get(directories::list_root))
        .route("/directories/", get(directories::list_root))
        .route(
            "/directories/{*path}",
            post(directories::create)
                .get(directories::list)
                .delete(directories::remove),
        )
        .route("/files/", any(admin::empty_file_path))
        .fallback(admin::no_route)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Bearer token on everything but `/health`, compared in constant time.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if bool::from(t.as_bytes().ct_eq(state.token.as_bytes())) => next.run(req).await,
        _ => ServiceError::Unauthorized.into_response(),
    }
}

/// One line per request: method, route, status, bytes, duration. Never the token.
async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let bytes_in = content_length(req.headers());
    let resp = next.run(req).await;
    tracing::info!(
        method = %method,
        route = %route,
        status = resp.status().as_u16(),
        bytes_in,
        bytes_out = content_length(resp.headers()),
        duration_ms = start.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

fn content_length(h: &HeaderMap) -> u64 {
    h.get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The API path after `prefix` in the request URI, percent-decoded exactly once.
pub(crate) fn path_from_uri(uri: &Uri, prefix: &str, allow_root: bool) -> Result<VPath, ServiceError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or("");
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ServiceError::InvalidPath {
            path: raw.to_string(),
            reason: "path is not valid UTF-8".into(),
        })?;
    let parsed = if allow_root {
        VPath::parse(&decoded)
    } else {
        VPath::parse_non_root(&decoded)
    };
    parsed.map_err(|e| ServiceError::InvalidPath {
        path: decoded.to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn header_str<'a>(
    h: &'a HeaderMap,
    name: &str,
    path: &VPath,
) -> Result<Option<&'a str>, ServiceError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| ServiceError::BadRequest {
            path: path.to_string(),
            message: format!("header {name} is not valid ASCII"),
        }),
    }
}

pub(crate) fn if_match(h: &HeaderMap, path: &VPath) -> Result<Option<IfMatch>, ServiceError> {
    Ok(header_str(h, "if-match", path)?.map(IfMatch::parse))
}

/// Largest JSON request body accepted (a manifest of ~100k entries fits).
pub(crate) const MAX_JSON_BODY: usize = 256 * 1024 * 1024;

/// Reads a whole (small) body, answering 413 over `limit`.
pub(crate) async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, ServiceError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            ServiceError::TooLarge {
                path: String::new(),
                limit: limit as u64,
            }
        } else {
            ServiceError::BadRequest {
                path: String::new(),
                message: format!("reading the body failed: {e}"),
            }
        }
    })
}

/// Reads a JSON body into `T`, answering 413/400 with an `OperationError` on failure.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    body: axum::body::Body,
    limit: usize,
) -> Result<T, ServiceError> {
    let bytes = read_body(body, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| ServiceError::BadRequest {
        path: String::new(),
        message: format!("invalid JSON body: {e}"),
    })
}

/// The query string as key/value pairs (later keys win).
pub(crate) fn query_map(uri: &Uri) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub(crate) fn parse_api_path(raw: &str, allow_root: bool) -> Result<VPath, ServiceError> {
    let parsed = if allow_root {
        VPath::parse(raw)
    } else {
        VPath::parse_non_root(raw)
    };
    parsed.map_err(|e| ServiceError::InvalidPath {
        path: raw.to_string(),
        reason: e.to_string(),
    })
}
