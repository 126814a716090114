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

pub async fn list(State(st): State<AppState>, uri: Uri) -> ServiceResult<Json<DirectoryListing>> {
    let path = path_from_uri(&uri, PREFIX, true)?;
    Ok(Json(st.service.list_dir(&path).await?))
}

pub async fn list_root(State(st): State<AppState>) -> ServiceResult<Json<DirectoryListing>> {
    Ok(Json(st.service.list_dir(&VPath::root()).await?))
}

pub async fn remove(State(st): State<AppState>, uri: Uri) -> ServiceResult<StatusCode> {
    let path = path_from_uri(&uri, PREFIX, false)?;
    st.service.delete_dir(&path).await?;
    Ok(StatusCode::NO_CONTENT)
}
