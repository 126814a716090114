//! HTTP layer: routing, auth, request logging, path and header parsing. Handlers are short:
//! extract, call the [`Service`], map the result. Knows nothing of RocksDB or chunk files.

mod admin;
mod bulk;
mod changes;
mod chunks;
mod dav;
mod directories;
mod drain;
mod files;
pub mod limits;
mod metrics;
mod namespace;
pub mod openapi;
pub mod session;
pub mod space;
mod ui;
mod versions;

use crate::error::ServiceError;
use crate::service::{IfMatch, Service};
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
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
    pub metrics: Arc<metrics::Metrics>,
    pub limits: Arc<limits::Limits>,
    dav: Arc<dav_server::DavHandler<dav::DavRequest>>,
    /// Directories of the local stores (RocksDB, chunk directory) whose free space the
    /// disk guard watches ([`space`]); empty when everything is remote.
    local_stores: Arc<Vec<std::path::PathBuf>>,
}

impl AppState {
    /// `disk` is a directory on the disk the data lives on (WebDAV reports its free space).
    pub fn new(
        service: Service,
        token: String,
        disk: Option<std::path::PathBuf>,
        limits: limits::LimitsConfig,
    ) -> Self {
        AppState {
            dav: Arc::new(dav::handler(service.clone(), disk)),
            service,
            token: Arc::new(token),
            metrics: Arc::new(metrics::Metrics::default()),
            limits: Arc::new(limits::Limits::new(limits)),
            local_stores: Arc::new(Vec::new()),
        }
    }

    /// Largest JSON request body: [`MAX_JSON_BODY`], or less under `--max-request-size`.
    pub(crate) fn json_limit(&self) -> usize {
        usize::try_from(self.limits.max_request_size()).map_or(MAX_JSON_BODY, |n| n.min(MAX_JSON_BODY))
    }

    /// Watches the free space of these directories: writes get 507 while one of them has
    /// less than its reserve free ([`space`]).
    pub fn with_local_stores(mut self, dirs: Vec<std::path::PathBuf>) -> Self {
        self.local_stores = Arc::new(dirs);
        self
    }
}

/// Declares the routes once: expands to `add_routes` (the router) and `routes()` (the table
/// of `(method, documented path)` that the OpenAPI test compares with the spec).
macro_rules! api_routes {
    ( $( $path:literal => { $( $method:ident => $handler:path as $doc:literal ),+ $(,)? } ),* $(,)? ) => {
        fn add_routes(router: Router<AppState>) -> Router<AppState> {
            router $( .route($path, axum::routing::MethodRouter::new() $( .$method($handler) )+ ) )*
        }

        /// Every API route as `(method, path as documented in /openapi.json)`.
        pub fn routes() -> Vec<(&'static str, &'static str)> {
            vec![ $( $( (stringify!($method), $doc) ),+ ),* ]
        }
    };
}

api_routes! {
    "/health" => { get => admin::health as "/health" },
    "/metrics" => { get => metrics::metrics as "/metrics" },
    "/openapi.json" => { get => openapi::openapi as "/openapi.json" },
    "/auth/login" => { post => session::login as "/auth/login" },
    "/auth/logout" => { post => session::logout as "/auth/logout" },
    "/files/{*path}" => {
        post => files::upload as "/files/{path}",
        put => files::update as "/files/{path}",
        get => files::download as "/files/{path}",
        head => files::head as "/files/{path}",
        delete => files::delete as "/files/{path}",
    },
    "/directories" => { get => directories::list_root as "/directories" },
    "/directories/" => { get => directories::list_root as "/directories" },
    "/directories/{*path}" => {
        post => directories::create as "/directories/{path}",
        get => directories::list as "/directories/{path}",
        delete => directories::remove as "/directories/{path}",
    },
    "/bulk/upload" => { post => bulk::upload as "/bulk/upload" },
    "/bulk/download" => { post => bulk::download as "/bulk/download" },
    "/bulk/delete" => { post => bulk::delete as "/bulk/delete" },
    "/bulk/manifest" => { get => bulk::manifest as "/bulk/manifest" },
    "/bulk/sync" => { post => bulk::sync as "/bulk/sync" },
    "/move" => { post => namespace::move_path as "/move" },
    "/copy" => { post => namespace::copy_path as "/copy" },
    "/search" => { get => namespace::search as "/search" },
    "/changes" => { get => changes::changes as "/changes" },
    "/versions/{*path}" => {
        get => versions::list as "/versions/{path}",
        post => versions::restore as "/versions/{path}/restore",
    },
    "/trash" => { get => versions::trash_root as "/trash" },
    "/trash/" => { get => versions::trash_root as "/trash" },
    "/trash/{*path}" => { get => versions::trash as "/trash/{path}" },
    "/chunks/missing" => { post => chunks::missing as "/chunks/missing" },
    "/chunks/{id}" => { put => chunks::put as "/chunks/{id}" },
}

pub fn router(state: AppState) -> Router {
    add_routes(Router::new())
        .route("/", axum::routing::get(ui::index))
        .route("/ui/{*file}", axum::routing::get(ui::file))
        .route("/files/", any(admin::empty_file_path))
        .route(dav::PREFIX, any(dav::serve))
        .route("/dav/", any(dav::serve))
        .route("/dav/{*path}", any(dav::serve))
        .fallback(admin::no_route)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), space::guard))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .layer(middleware::from_fn(drain::deliver_early_answers))
        .with_state(state)
}

/// Bearer token on everything but `/health` and the web UI's page and assets, compared in
/// constant time (WebDAV takes it as the password of HTTP Basic credentials; the UI's session
/// cookie, [`session`], stands in for it elsewhere), behind the per-address limits
/// ([`limits`]): the request rate first, then the brute-force guard. `/auth/login` and
/// `/auth/logout` are behind the limits but check the token themselves.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/health" || ui::is_ui_path(path) {
        return next.run(req).await;
    }
    // Absent only when the router is driven without a socket (never by `serve`).
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let now = Instant::now();
    if let Some(ip) = peer {
        if let Some(retry_after) = state.limits.over_rate(ip) {
            return ServiceError::RateLimited {
                reason: "too many requests from this address".into(),
                retry_after,
            }
            .into_response();
        }
        if let Some(retry_after) = state.limits.auth_blocked(ip, now) {
            return ServiceError::RateLimited {
                reason: "too many failed authentications from this address".into(),
                retry_after,
            }
            .into_response();
        }
    }
    if path == "/auth/login" || path == "/auth/logout" {
        return next.run(req).await;
    }
    let dav = dav::is_dav_path(path);
    let bearer = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let authorized = if dav {
        dav::authorized(req.headers(), &state.token)
    } else if let Some(t) = bearer {
        bool::from(t.as_bytes().ct_eq(state.token.as_bytes()))
    } else if session::has_session(req.headers(), &state.token) {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if !session::csrf_ok(req.method(), req.headers(), host) {
            return ServiceError::Forbidden {
                reason: "a session cookie on an unsafe method needs X-Volebarn-UI: 1 or this server's Origin"
                    .into(),
            }
            .into_response();
        }
        true
    } else {
        false
    };
    if authorized {
        return next.run(req).await;
    }
    // Only a wrong credential counts as a failed authentication: WebDAV clients send their
    // first request without any, to be told how to log in.
    if let Some(ip) = peer.filter(|_| req.headers().contains_key(axum::http::header::AUTHORIZATION)) {
        state.limits.auth_failed(ip, now);
    }
    if dav {
        dav::challenge()
    } else {
        ServiceError::Unauthorized.into_response()
    }
}

/// One line per request: method, route, status, bytes, duration. Never the token.
async fn log_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let bytes_in = content_length(req.headers());
    let resp = next.run(req).await;
    let bytes_out = content_length(resp.headers());
    state.metrics.record(
        method.as_str(),
        &route,
        resp.status().as_u16(),
        bytes_in,
        bytes_out,
    );
    tracing::info!(
        method = %method,
        route = %route,
        status = resp.status().as_u16(),
        bytes_in,
        bytes_out,
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
    ServiceError::parse_path(&decoded, allow_root)
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
            ServiceError::RequestTooLarge { limit: limit as u64 }
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
    ServiceError::parse_path(raw, allow_root)
}
