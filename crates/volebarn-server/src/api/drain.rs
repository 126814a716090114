//! Early answers that every HTTP/2 client can read.
//!
//! A handler may answer before it has read the request body: 401 before the body, 413 over
//! the size limit, 400 on a hash mismatch, 409, 507. Over HTTP/2, hyper and h2 then do what
//! RFC 9113 §8.1 asks — the whole response, then `RST_STREAM(NO_ERROR)` — but clients in wide
//! use do not read a response whose request they could not finish sending: curl 7.88
//! (nghttp2 1.52, Debian 12) reports "(92) Stream error in the HTTP/2 framing layer" and
//! never shows the 413. So before such an answer leaves, the rest of the request body is
//! read and thrown away, up to [`DRAIN_LIMIT`] bytes and [`DRAIN_TIME`]; past either, the
//! reset goes out as before (a client sending gigabytes past a limit is not waited for).
//! Over HTTP/1.1 hyper sends the response and closes the connection, and closing a socket
//! with unread request bytes in it sends a TCP reset, which can destroy the response before
//! the client reads it (Python's ssl module: "EOF occurred in violation of protocol"); so the
//! rest is read there too, unless the client sent `Expect: 100-continue`: then it has not
//! sent the body, and the answer goes out without it.

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::Version;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Most request-body bytes read and discarded to deliver one early answer.
pub const DRAIN_LIMIT: u64 = 256 * 1024 * 1024;
/// Longest time spent discarding them.
pub const DRAIN_TIME: Duration = Duration::from_secs(30);

/// The request body, shared between the handler (which reads what it wants and drops its
/// end) and this middleware (which reads the rest afterwards).
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Body>>);

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let mut body = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut *body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).size_hint()
    }
}

/// Reads and discards what is left of `body`, within the limits; true when it ended.
async fn drain(mut body: SharedBody) -> bool {
    let mut read = 0u64;
    let reading = async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    read += f.data_ref().map_or(0, |d| d.len() as u64);
                    if read > DRAIN_LIMIT {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, reading).await.unwrap_or(false)
}

/// The middleware: a response given before the request body ended waits until the body has
/// been read to its end (within the limits), except for an HTTP/1.1 client still waiting for
/// `100 Continue`.
pub async fn deliver_early_answers(req: Request, next: Next) -> Response {
    let awaits_continue = req.version() != Version::HTTP_2
        && req
            .headers()
            .get(axum::http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if awaits_continue || req.body().is_end_stream() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let shared = SharedBody(Arc::new(Mutex::new(body)));
    let resp = next
        .run(Request::from_parts(parts, Body::new(shared.clone())))
        .await;
    if !shared.is_end_stream() && !drain(shared).await {
        tracing::debug!(
            status = resp.status().as_u16(),
            "answered before the request body ended; the rest was not read"
        );
    }
    resp
}
