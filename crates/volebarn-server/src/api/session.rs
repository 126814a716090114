//! Browser sessions for the web UI: `POST /auth/login` trades the API token for a session
//! cookie, `POST /auth/logout` clears it, and [`cookie_authorized`] lets the cookie stand in
//! for `Authorization: Bearer` (never on WebDAV paths, which keep HTTP Basic).
//!
//! The cookie is stateless, `<expiry>.<nonce>.<mac>`: the MAC is a keyed BLAKE3 of
//! `<expiry>.<nonce>` under a key derived from the token. Every replica that shares the token
//! accepts it, nothing is stored, and changing the token invalidates every session. Logging
//! out clears the cookie in that browser; a copied cookie value stays valid until it expires
//! ([`SESSION_LIFETIME`]).
//!
//! Cross-site requests: the cookie is `SameSite=Strict`, and a cookie-authenticated request
//! with an unsafe method must also carry `X-Volebarn-UI: 1` (which a cross-site form cannot
//! send) or an `Origin` naming this server; otherwise 403 `permission_denied`.

use super::AppState;
use crate::error::{ServiceError, ServiceResult};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub const COOKIE: &str = "volebarn_session";
/// How long a session lasts after login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A second cookie, readable by script and holding no secret: tells the page a session
/// exists, so it shows the sign-in form instead of probing with a request that fails.
pub const MARKER: &str = "volebarn_signed_in";
/// The header the UI sends with every request (the CSRF proof of a cookie session).
pub const UI_HEADER: &str = "x-volebarn-ui";

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct LoginRequest {
    /// The server's API token.
    pub token: String,
}

fn mac_key(token: &str) -> [u8; 32] {
    blake3::derive_key("volebarn 2026 web UI session cookie v1", token.as_bytes())
}

fn mac(token: &str, payload: &str) -> String {
    blake3::keyed_hash(&mac_key(token), payload.as_bytes())
        .to_hex()
        .to_string()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new session value valid until `expiry` (Unix seconds).
fn issue(token: &str, expiry: u64) -> String {
    let nonce: [u8; 16] = rand::random();
    let payload = format!("{expiry}.{}", hex::encode(nonce));
    let mac = mac(token, &payload);
    format!("{payload}.{mac}")
}

/// Whether `value` is a session issued under `token` that has not expired at `now`.
fn valid(token: &str, value: &str, now: u64) -> bool {
    let Some((payload, given)) = value.rsplit_once('.') else {
        return false;
    };
    let Some(expiry) = payload.split_once('.').and_then(|(e, _)| e.parse::<u64>().ok()) else {
        return false;
    };
    let expected = mac(token, payload);
    bool::from(expected.as_bytes().ct_eq(given.as_bytes())) && now < expiry
}

/// The value of cookie `name` among the request's `Cookie` headers.
fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request carries a valid session cookie.
pub(super) fn has_session(h: &HeaderMap, token: &str) -> bool {
    cookie(h, COOKIE).is_some_and(|v| valid(token, v, unix_now()))
}

/// Whether a cookie-authenticated request may go on: safe methods always; unsafe ones only
/// with the UI header or an `Origin` that is this server (`host` as the request names it).
pub(super) fn csrf_ok(method: &Method, h: &HeaderMap, host: Option<&str>) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    if h.get(UI_HEADER).is_some_and(|v| v.as_bytes() == b"1") {
        return true;
    }
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) => {
            origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                == Some(host)
        }
        _ => false,
    }
}

/// `Set-Cookie` for the session `value` and the marker, living `max_age` seconds (0 clears
/// them).
fn set_cookies(resp: &mut Response, value: &str, max_age: u64) {
    let attrs = format!("Secure; SameSite=Strict; Path=/; Max-Age={max_age}");
    let marker = if max_age == 0 { "" } else { "1" };
    for v in [
        format!("{COOKIE}={value}; HttpOnly; {attrs}"),
        format!("{MARKER}={marker}; {attrs}"),
    ] {
        // Hex digits, dots and ASCII attributes: always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

/// `POST /auth/login`: 204 with the session cookie, or 401 (counted by the brute-force
/// guard like any wrong token).
pub async fn login(State(st): State<AppState>, req: Request) -> ServiceResult<Response> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let body: LoginRequest = super::json_body(req.into_body(), 4096).await?;
    if !bool::from(body.token.as_bytes().ct_eq(st.token.as_bytes())) {
        if let Some(ip) = peer {
            st.limits.auth_failed(ip, Instant::now());
        }
        return Err(ServiceError::Unauthorized);
    }
    let lifetime = SESSION_LIFETIME.as_secs();
    let value = issue(&st.token, unix_now() + lifetime);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    set_cookies(&mut resp, &value, lifetime);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `POST /auth/logout`: 204, clearing the session cookie in this browser.
pub async fn logout(_body: Body) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    set_cookies(&mut resp, "", 0);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_until_it_expires_and_only_under_its_token() {
        let v = issue("secret", 1000);
        assert!(valid("secret", &v, 999));
        assert!(!valid("secret", &v, 1000), "expired");
        assert!(!valid("other", &v, 10), "another token");
        let forged = v.replacen("1000", "9999", 1);
        assert!(!valid("secret", &forged, 10), "a changed expiry breaks the MAC");
        assert!(!valid("secret", "", 10));
        assert!(!valid("secret", "1.2", 10));
    }

    #[test]
    fn unsafe_cookie_requests_need_the_ui_header_or_this_origin() {
        let mut h = HeaderMap::new();
        assert!(csrf_ok(&Method::GET, &h, Some("a:1")));
        assert!(!csrf_ok(&Method::POST, &h, Some("a:1")));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil:1"));
        assert!(!csrf_ok(&Method::DELETE, &h, Some("a:1")));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://a:1"));
        assert!(csrf_ok(&Method::DELETE, &h, Some("a:1")));
        let mut h = HeaderMap::new();
        h.insert(UI_HEADER, HeaderValue::from_static("1"));
        assert!(csrf_ok(&Method::PUT, &h, None));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; volebarn_session=x.y.z; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("x.y.z"));
    }
}
