//! `/directories/{path}`: create, list, delete recursively.

use super::{path_from_uri, AppState};
use crate::error::ServiceResult;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::Json;
use volebarn_core::{DirectoryListing, FileMetadata, VPath};

const PREFIX: &str = "/directories/";

pub async fn create(State(st): State<AppState>, uri: Uri) -> ServiceResult<(StatusCode, Json<FileMetadata>)> {
    let path = path_from_uri(&uri, PREFIX, false)?;
    let meta = st.service.create_dir(&path).await?;
    Ok((StatusCode::CREATED, Json(meta)))
}

/// The listing with `X-Head-Rev`: the head revision read before it, where a `/changes`
/// long-poll that keeps the listing current starts (the web UI's live view).
async fn listing(
    st: &AppState,
    path: &VPath,
) -> ServiceResult<([(&'static str, String); 1], Json<DirectoryListing>)> {
    let head = st.service.head_rev().await?;
    let listing = st.service.list_dir(path).await?;
    Ok(([("x-head-rev", head.to_string())], Json(listing)))
}

pub async fn list(
    State(st): State<AppState>,
    uri: Uri,
) -> ServiceResult<([(&'static str, String); 1], Json<DirectoryListing>)> {
    let path = path_from_uri(&uri, PREFIX, true)?;
    listing(&st, &path).await
}

pub async fn list_root(
    State(st): State<AppState>,
) -> ServiceResult<([(&'static str, String); 1], Json<DirectoryListing>)> {
    listing(&st, &VPath::root()).await
}

pub async fn remove(State(st): State<AppState>, uri: Uri) -> ServiceResult<StatusCode> {
    let path = path_from_uri(&uri, PREFIX, false)?;
    st.service.delete_dir(&path).await?;
    Ok(StatusCode::NO_CONTENT)
}
