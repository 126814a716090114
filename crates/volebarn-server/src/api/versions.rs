//! `GET /versions/{path}`, `POST /versions/{path}/restore` and `GET /trash/{dir}`.

use super::{json_body, path_from_uri, query_map, AppState};
use crate::error::{ServiceError, ServiceResult};
use axum::body::Body;
use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use volebarn_core::types::{RestoreRequest, TrashList, VersionList};
use volebarn_core::FileMetadata;
use volebarn_core::VPath;

const PREFIX: &str = "/versions/";

pub async fn list(State(st): State<AppState>, uri: Uri) -> ServiceResult<Json<VersionList>> {
    let path = path_from_uri(&uri, PREFIX, false)?;
    let versions = st.service.versions(&path).await?;
    Ok(Json(VersionList {
        path: path.to_string(),
        versions,
    }))
}

pub async fn restore(State(st): State<AppState>, uri: Uri, body: Body) -> ServiceResult<Json<FileMetadata>> {
    let Some(raw) = uri.path().strip_suffix("/restore") else {
        return Err(ServiceError::MethodNotAllowed {
            path: uri.path().to_string(),
        });
    };
    let uri: Uri = raw.parse().map_err(|_| ServiceError::InvalidPath {
        path: raw.to_string(),
        reason: "bad URI".into(),
    })?;
    let path = path_from_uri(&uri, PREFIX, false)?;
    let req: RestoreRequest = json_body(body, 4096).await?;
    Ok(Json(st.service.restore(&path, req.rev).await?))
}

/// `?recursive=true`: every deleted file below the directory, not only its own.
fn recursive(uri: &Uri) -> ServiceResult<bool> {
    match query_map(uri).get("recursive").map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(v) => Err(ServiceError::BadRequest {
            path: String::new(),
            message: format!("recursive must be true or false, not {v:?}"),
        }),
    }
}

/// `GET /trash/{dir}`: deleted files of a directory that can be restored.
pub async fn trash(State(st): State<AppState>, uri: Uri) -> ServiceResult<Json<TrashList>> {
    let dir = path_from_uri(&uri, "/trash/", true)?;
    Ok(Json(st.service.trash(&dir, recursive(&uri)?).await?))
}

/// `GET /trash`: deleted files of the root directory.
pub async fn trash_root(State(st): State<AppState>, uri: Uri) -> ServiceResult<Json<TrashList>> {
    Ok(Json(st.service.trash(&VPath::root(), recursive(&uri)?).await?))
}
