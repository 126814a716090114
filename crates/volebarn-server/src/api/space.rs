//! The disk-space guard: a write that arrives while a local store's filesystem has less than
//! its reserve free is answered `507 insufficient_storage` before anything is written.
//!
//! Why a reserve, and not only the `ENOSPC` mapping: a chunk write that meets `ENOSPC`
//! fails cleanly (its temp file is removed, nothing references it), but RocksDB, when its
//! WAL or a flush meets `ENOSPC`, records a background error and refuses every later write
//! until it recovers (and the C API the server uses cannot ask it to resume). Keeping a
//! reserve free means metadata writes, a few KiB each, always have room: the chunk bytes hit
//! the limit first, and those fail alone. Reads and deletes are never refused, so a user can
//! always free space. A write racing past the check still gets 507 from the `ENOSPC`
//! mapping ([`crate::storage::StorageError::is_disk_full`]).

use super::AppState;
use crate::error::ServiceError;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;

/// Bytes kept free on each local store's filesystem: 1/32 of it, between 1 MiB and 256 MiB.
pub fn reserve(total: u64) -> u64 {
    (total / 32).clamp(1 << 20, 256 << 20)
}

/// Does this request write? Reads, deletes and the read-only POSTs (which chunks are
/// missing, bulk download, bulk delete, the sync plan) are let through.
fn writes(method: &Method, path: &str) -> bool {
    match method.as_str() {
        "GET" | "HEAD" | "OPTIONS" | "DELETE" | "PROPFIND" | "UNLOCK" => false,
        "POST" => !matches!(
            path,
            "/chunks/missing" | "/bulk/download" | "/bulk/delete" | "/bulk/sync"
        ),
        _ => true,
    }
}

/// The first of `dirs` whose filesystem has less than its reserve free, if any.
fn short_of_space(dirs: &[PathBuf]) -> Option<(PathBuf, u64)> {
    dirs.iter().find_map(|dir| {
        let s = rustix::fs::statvfs(dir).ok()?;
        let free = s.f_bavail.saturating_mul(s.f_frsize);
        let total = s.f_blocks.saturating_mul(s.f_frsize);
        (free < reserve(total)).then(|| (dir.clone(), free))
    })
}

pub(super) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.local_stores.is_empty() || !writes(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let dirs = state.local_stores.clone();
    let short = tokio::task::spawn_blocking(move || short_of_space(&dirs))
        .await
        .ok()
        .flatten();
    match short {
        Some((dir, free)) => {
            tracing::warn!(dir = %dir.display(), free, method = %req.method(), path = req.uri().path(),
                "refusing a write: the disk is (nearly) full");
            ServiceError::InsufficientStorage {
                path: req.uri().path().to_string(),
            }
            .into_response()
        }
        None => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deletes_and_read_only_posts_are_never_refused() {
        for (m, p) in [
            ("GET", "/files/a"),
            ("DELETE", "/files/a"),
            ("POST", "/chunks/missing"),
            ("POST", "/bulk/delete"),
            ("PROPFIND", "/dav/a"),
        ] {
            assert!(
                !writes(&Method::from_bytes(m.as_bytes()).expect("method"), p),
                "{m} {p}"
            );
        }
        for (m, p) in [
            ("PUT", "/files/a"),
            ("POST", "/files/a"),
            ("PUT", "/chunks/ab"),
            ("POST", "/bulk/upload"),
            ("POST", "/move"),
            ("MKCOL", "/dav/d"),
            ("COPY", "/dav/a"),
        ] {
            assert!(
                writes(&Method::from_bytes(m.as_bytes()).expect("method"), p),
                "{m} {p}"
            );
        }
        assert_eq!(reserve(24 << 20), 1 << 20);
        assert_eq!(reserve(64 << 30), 256 << 20);
        assert_eq!(reserve(3200 << 20), 100 << 20);
    }
}
