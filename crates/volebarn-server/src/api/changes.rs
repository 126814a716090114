//! `GET /changes?since=<rev>&wait=<seconds>`: the long-polled journal.

use super::{query_map, AppState};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::ChangeKind;
use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use std::time::Duration;
use volebarn_core::types::{self, ChangeEntry, ChangesResponse};

/// Longest accepted wait, in seconds.
const MAX_WAIT: u64 = 60;
/// Most entries per answer; the client continues from `next`.
const MAX_CHANGES: usize = 10_000;

fn wire_kind(k: ChangeKind) -> types::ChangeKind {
    match k {
        ChangeKind::Put => types::ChangeKind::Put,
        ChangeKind::Delete => types::ChangeKind::Delete,
        ChangeKind::Mkdir => types::ChangeKind::Mkdir,
        ChangeKind::Rmdir => types::ChangeKind::Rmdir,
        ChangeKind::Move => types::ChangeKind::Move,
        ChangeKind::Copy => types::ChangeKind::Copy,
    }
}

pub async fn changes(State(st): State<AppState>, uri: Uri) -> ServiceResult<Json<ChangesResponse>> {
    let q = query_map(&uri);
    let number = |key: &str| -> ServiceResult<u64> {
        match q.get(key) {
            None => Ok(0),
            // Documented as a (non-negative) int64: larger numbers are refused, not wrapped.
            Some(v) => v
                .parse::<i64>()
                .ok()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| ServiceError::BadRequest {
                    path: String::new(),
                    message: format!("{key} must be an integer from 0 to 2^63-1, not {v:?}"),
                }),
        }
    };
    let since = number("since")?;
    let wait = number("wait")?;
    if wait > MAX_WAIT {
        return Err(ServiceError::BadRequest {
            path: String::new(),
            message: format!("wait is at most {MAX_WAIT} seconds, not {wait}"),
        });
    }
    let wait = Duration::from_secs(wait);
    let (changes, next) = st.service.changes(since, wait, MAX_CHANGES).await?;
    let changes = changes
        .into_iter()
        .map(|c| ChangeEntry {
            rev: c.change.rev,
            kind: wire_kind(c.change.kind),
            path: c.change.path,
            to_path: c.change.to_path,
            metadata: c.metadata,
        })
        .collect();
    Ok(Json(ChangesResponse { changes, next }))
}
