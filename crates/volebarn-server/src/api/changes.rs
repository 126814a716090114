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
            Some(v) => v.parse().map_err(|_| ServiceError::BadRequest {
                path: String::new(),
                message: format!("{key} must be a non-negative integer, not {v:?}"),
            }),
        }
    };
    let since = number("since")?;
    let wait = Duration::from_secs(number("wait")?.min(MAX_WAIT));
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
