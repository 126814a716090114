//! `POST /chunks/missing` and `PUT /chunks/{id}`.

use super::{json_body, AppState};
use crate::error::{ServiceError, ServiceResult};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use volebarn_core::chunking::MAX_CHUNK;
use volebarn_core::types::{ChunkIds, MissingChunks};
use volebarn_core::ChunkId;

pub async fn missing(State(st): State<AppState>, body: Body) -> ServiceResult<Json<MissingChunks>> {
    let req: ChunkIds = json_body(body, st.json_limit()).await?;
    Ok(Json(MissingChunks {
        missing: st.service.missing_chunks(req.ids).await?,
    }))
}

pub async fn put(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> ServiceResult<StatusCode> {
    let id: ChunkId = id.parse().map_err(|_| ServiceError::BadRequest {
        path: format!("chunks/{id}"),
        message: "a chunk id is 64 lowercase hex digits (BLAKE3)".into(),
    })?;
    let data = super::read_body(body, MAX_CHUNK as usize).await?;
    st.service.put_chunk(id, data).await?;
    Ok(StatusCode::NO_CONTENT)
}
