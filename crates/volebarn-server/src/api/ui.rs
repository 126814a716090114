//! The web UI: `GET /` (its page) and `GET /ui/{file}` (its scripts, styles, icons), served
//! without authentication from files embedded in the binary (`ui/` beside this crate's
//! `Cargo.toml`). The page signs in through [`super::session`] and then uses the same API as
//! every other client. Every answer carries a strict Content-Security-Policy: scripts, styles,
//! connections and images only from this origin (images also from `blob:`/`data:` URLs the
//! page makes for previews), no inline script, no framing.

use axum::http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// URL prefix of the UI's assets.
pub const PREFIX: &str = "/ui/";

#[derive(rust_embed::Embed)]
#[folder = "ui/"]
struct Assets;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
     media-src 'self' blob:; frame-src 'self' blob:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Whether `path` is one of the UI's public paths.
pub fn is_ui_path(path: &str) -> bool {
    path == "/" || path.starts_with(PREFIX)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The security headers of every UI answer.
fn secure(mut resp: Response, cache: &'static str) -> Response {
    let h = resp.headers_mut();
    let fixed: [(HeaderName, &'static str); 5] = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, cache),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

fn asset(name: &str, cache: &'static str) -> Response {
    match Assets::get(name) {
        Some(file) => secure(
            (
                [(header::CONTENT_TYPE, content_type(name))],
                file.data.into_owned(),
            )
                .into_response(),
            cache,
        ),
        None => secure(StatusCode::NOT_FOUND.into_response(), "no-store"),
    }
}

/// `GET /`: the page. Not cached, so a new server's UI is picked up on reload.
pub async fn index() -> Response {
    asset("index.html", "no-cache")
}

/// `GET /ui/{file}`: an asset; revalidated on each load (they are small and unversioned).
pub async fn file(uri: Uri) -> Response {
    let name = uri.path().strip_prefix(PREFIX).unwrap_or("");
    if name.split('/').any(|s| s.is_empty() || s == "..") {
        return secure(StatusCode::NOT_FOUND.into_response(), "no-store");
    }
    asset(name, "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_embedded() {
        assert!(Assets::get("index.html").is_some());
        assert!(Assets::get("app.js").is_some());
        assert!(Assets::get("style.css").is_some());
    }
}
