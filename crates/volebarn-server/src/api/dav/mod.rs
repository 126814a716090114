//! WebDAV at `/dav/` (class 1 and 2) for the clients people already have: rclone, davfs2,
//! Finder, Windows Explorer, GNOME Files. The protocol is dav-server's; this module gives it
//! a filesystem over the [`Service`](crate::service::Service) ([`fs`], [`file`]), HTTP Basic
//! authentication with the API token as the password, and the headers Volebarn adds
//! (`X-File-Hash` on downloads, `X-OC-Mtime` on uploads).
//!
//! Locks live in this server's memory (dav-server's `MemLs`): servers sharing a store do not
//! see each other's WebDAV locks, and a restart forgets them.

mod file;
mod fs;

use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use dav_server::{memls::MemLs, DavHandler};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use volebarn_core::timefmt::UnixNanos;
use volebarn_core::types::headers;
use volebarn_core::Xxh3;

/// Where WebDAV is mounted.
pub const PREFIX: &str = "/dav";

/// What one request carries into the filesystem, and what the filesystem hands back for the
/// response (dav-server passes it to every filesystem call as the request's "credentials").
#[derive(Clone, Default)]
pub(crate) struct DavRequest {
    /// The client's modification time for an upload (`X-OC-Mtime`).
    mtime: Option<UnixNanos>,
    /// The whole-file hash of the file a `GET`/`HEAD` opened.
    served_hash: Arc<Mutex<Option<u64>>>,
}

impl DavRequest {
    fn served(&self, xxh3: u64) {
        if let Ok(mut h) = self.served_hash.lock() {
            *h = Some(xxh3);
        }
    }
}

/// The WebDAV handler of one server.
pub(crate) fn handler(service: crate::service::Service, disk: Option<PathBuf>) -> DavHandler<DavRequest> {
    DavHandler::builder()
        .filesystem(Box::new(fs::ServiceFs::new(service, disk)))
        .locksystem(MemLs::new())
        .strip_prefix(PREFIX)
        .build_handler()
}

/// Whether a request path is one WebDAV serves.
pub(crate) fn is_dav_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/dav/")
}

/// The password of HTTP Basic credentials (any user name), or a bearer token.
fn presented_token(h: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(t) = v.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    let encoded = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    decoded.split_once(':').map(|(_, password)| password.to_string())
}

/// Whether the request carries the API token (as the HTTP Basic password, or a bearer token).
pub(crate) fn authorized(h: &HeaderMap, token: &str) -> bool {
    presented_token(h).is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
}

/// 401 with the Basic challenge WebDAV clients answer with credentials.
pub(crate) fn challenge() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"volebarn\", charset=\"UTF-8\"",
        )],
        "authentication required: HTTP Basic with the API token as the password\n",
    )
        .into_response()
}

/// `X-OC-Mtime` (ownCloud, rclone): Unix seconds, possibly with a fraction.
fn oc_mtime(h: &HeaderMap) -> Option<UnixNanos> {
    let v = h.get("x-oc-mtime")?.to_str().ok()?.trim();
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos: i64 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Serves one WebDAV request (already authenticated).
pub(crate) async fn serve(State(st): State<AppState>, req: Request) -> Response {
    let mtime = oc_mtime(req.headers());
    let method = req.method().clone();
    let dav_req = DavRequest {
        mtime,
        served_hash: Arc::default(),
    };
    let resp = st
        .dav
        .handle_guarded(req, "volebarn".to_string(), dav_req.clone())
        .await;
    let (mut parts, body) = resp.into_parts();
    if parts.status.is_success() {
        let served = dav_req.served_hash.lock().ok().and_then(|h| *h);
        if let (true, Some(hash)) = (method == Method::GET || method == Method::HEAD, served) {
            if let Ok(v) = HeaderValue::from_str(&Xxh3(hash).to_string()) {
                parts.headers.insert(headers::FILE_HASH, v);
            }
        }
        if method == Method::PUT && mtime.is_some() {
            parts
                .headers
                .insert("x-oc-mtime", HeaderValue::from_static("accepted"));
        }
    }
    Response::from_parts(parts, axum::body::Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oc_mtime_parses_seconds_and_fractions() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("x-oc-mtime", HeaderValue::from_str(v).expect("header"));
            oc_mtime(&m)
        };
        assert_eq!(h("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(h("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(h("soon"), None);
    }

    #[test]
    fn basic_password_is_the_token() {
        let mut m = HeaderMap::new();
        // "anyone:secret"
        m.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YW55b25lOnNlY3JldA=="),
        );
        assert!(authorized(&m, "secret"));
        assert!(!authorized(&m, "other"));
        assert!(!authorized(&HeaderMap::new(), "secret"));
    }
}
