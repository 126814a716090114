//! `POST /move`, `POST /copy`, `GET /search`.

use super::{json_body, parse_api_path, query_map, AppState};
use crate::error::{ServiceError, ServiceResult};
use crate::service::SearchQuery;
use axum::body::Body;
use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use volebarn_core::timefmt::parse_rfc3339;
use volebarn_core::types::MoveRequest;
use volebarn_core::{FileMetadata, VPath, Xxh3};

const MAX_BODY: usize = 64 * 1024;

async fn parse_move(body: Body) -> ServiceResult<(VPath, VPath, bool)> {
    let req: MoveRequest = json_body(body, MAX_BODY).await?;
    Ok((
        parse_api_path(&req.from_path, false)?,
        parse_api_path(&req.to_path, false)?,
        req.overwrite,
    ))
}

pub async fn move_path(State(st): State<AppState>, body: Body) -> ServiceResult<Json<FileMetadata>> {
    let (from, to, overwrite) = parse_move(body).await?;
    Ok(Json(st.service.move_path(&from, &to, overwrite).await?))
}

pub async fn copy_path(State(st): State<AppState>, body: Body) -> ServiceResult<Json<FileMetadata>> {
    let (from, to, overwrite) = parse_move(body).await?;
    Ok(Json(st.service.copy_path(&from, &to, overwrite).await?))
}

/// `?pattern=<glob>&path=<dir>&recursive=<bool>`, or `?modified_since=<RFC 3339>`, or
/// `?hash=<xxh3>`; filters combine.
pub async fn search(State(st): State<AppState>, uri: Uri) -> ServiceResult<Json<Vec<FileMetadata>>> {
    let q = query_map(&uri);
    let bad = |what: &str, v: &str| ServiceError::BadRequest {
        path: String::new(),
        message: format!("invalid {what} {v:?}"),
    };
    let dir = parse_api_path(q.get("path").map_or("", String::as_str), true)?;
    let recursive = match q.get("recursive").map(String::as_str) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(v) => return Err(bad("recursive", v)),
    };
    let modified_since = q
        .get("modified_since")
        .map(|v| parse_rfc3339(v).ok_or_else(|| bad("modified_since", v)))
        .transpose()?;
    let hash = q
        .get("hash")
        .map(|v| v.parse::<Xxh3>().map(|h| h.0).map_err(|_| bad("hash", v)))
        .transpose()?;
    let pattern = q.get("pattern").cloned().filter(|p| !p.is_empty());
    if pattern.is_none() && modified_since.is_none() && hash.is_none() {
        return Err(ServiceError::BadRequest {
            path: dir.to_string(),
            message: "give pattern, modified_since or hash".into(),
        });
    }
    let query = SearchQuery {
        pattern,
        dir,
        recursive,
        modified_since,
        hash,
    };
    Ok(Json(st.service.search(query).await?))
}
