//! `/files/{path}`: streamed upload, replace, download, metadata and delete.

use super::{header_str, if_match, path_from_uri, AppState};
use crate::error::{ServiceError, ServiceResult};
use crate::service::{UploadOptions, WriteMode};
use crate::storage::FileRecord;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use volebarn_core::timefmt::{format_rfc3339, parse_rfc3339};
use volebarn_core::types::{headers, ChunkedCommit, CHUNKS_CONTENT_TYPE};
use volebarn_core::{FileMetadata, VPath, Xxh3};

const PREFIX: &str = "/files/";

fn etag(rev: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{rev}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

fn upload_options(h: &HeaderMap, path: &VPath) -> ServiceResult<UploadOptions> {
    let expected_hash = header_str(h, headers::FILE_HASH, path)?
        .map(|v| {
            v.trim()
                .to_ascii_lowercase()
                .parse::<Xxh3>()
                .map_err(|_| ServiceError::BadRequest {
                    path: path.to_string(),
                    message: format!("X-File-Hash {v:?} is not 16 hex digits"),
                })
        })
        .transpose()?;
    let mtime = header_str(h, headers::MODIFIED_TIME, path)?
        .map(|v| {
            parse_rfc3339(v).ok_or_else(|| ServiceError::BadRequest {
                path: path.to_string(),
                message: format!("X-Modified-Time {v:?} is not an RFC 3339 time"),
            })
        })
        .transpose()?;
    let declared_len = header_str(h, header::CONTENT_LENGTH.as_str(), path)?.and_then(|v| v.parse().ok());
    Ok(UploadOptions {
        expected_hash,
        mtime,
        declared_len,
    })
}

async fn write(
    st: AppState,
    req: Request,
    mode_of: impl FnOnce(&HeaderMap, &VPath) -> ServiceResult<WriteMode>,
) -> ServiceResult<(VPath, FileMetadata)> {
    let path = path_from_uri(req.uri(), PREFIX, false)?;
    let opts = upload_options(req.headers(), &path)?;
    let mode = mode_of(req.headers(), &path)?;
    let chunked = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some(CHUNKS_CONTENT_TYPE));
    let meta = if chunked {
        let commit: ChunkedCommit = super::json_body(req.into_body(), st.json_limit()).await?;
        st.service.commit_chunks(&path, mode, commit, opts.mtime).await?
    } else {
        let body = req.into_body().into_data_stream();
        st.service.write_file(&path, mode, opts, body).await?
    };
    Ok((path, meta))
}

fn metadata_response(status: StatusCode, meta: FileMetadata) -> Response {
    let tag = etag(meta.rev);
    let mut resp = (status, Json(meta)).into_response();
    resp.headers_mut().insert(header::ETAG, tag);
    resp
}

pub async fn upload(State(st): State<AppState>, req: Request) -> ServiceResult<Response> {
    let (_, meta) = write(st, req, |_, _| Ok(WriteMode::Create)).await?;
    Ok(metadata_response(StatusCode::CREATED, meta))
}

pub async fn update(State(st): State<AppState>, req: Request) -> ServiceResult<Response> {
    let (_, meta) = write(st, req, |h, p| {
        Ok(WriteMode::Replace {
            if_match: if_match(h, p)?,
        })
    })
    .await?;
    Ok(metadata_response(StatusCode::OK, meta))
}

fn content_headers(rec: &FileRecord) -> HeaderMap {
    let mut h = HeaderMap::new();
    let put = |h: &mut HeaderMap, name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    put(&mut h, headers::FILE_HASH, Xxh3(rec.xxh3).to_string());
    put(&mut h, headers::FILE_SIZE, rec.size.to_string());
    put(&mut h, headers::MODIFIED_TIME, format_rfc3339(rec.mtime));
    put(&mut h, "content-length", rec.size.to_string());
    h.insert(header::ETAG, etag(rec.rev));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h
}

/// `GET /files/{path}`, or `?rev=N` for a kept version (the web UI's version download).
pub async fn download(State(st): State<AppState>, uri: Uri) -> ServiceResult<Response> {
    let path = path_from_uri(&uri, PREFIX, false)?;
    let rev = match super::query_map(&uri).get("rev") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| ServiceError::BadRequest {
                    path: path.to_string(),
                    message: format!("rev must be an integer from 0 to 2^63-1, not {v:?}"),
                })?,
        ),
    };
    let rec = match rev {
        None => st.service.open_file(&path).await?,
        Some(rev) => st.service.open_version(&path, rev).await?,
    };
    let mut content = Box::pin(st.service.content_stream(&path, &rec));
    // The first chunk is read before answering: a damaged one (most files are one chunk) is
    // an error response, not a 200 cut short.
    let first = content.next().await.transpose()?;
    let stream = futures_util::stream::iter(first.map(Ok)).chain(content).map(|r| {
        r.map_err(|e| {
            tracing::error!(error = %e, "download aborted");
            std::io::Error::other(e.to_string())
        })
    });
    Ok((content_headers(&rec), Body::from_stream(stream)).into_response())
}

pub async fn head(State(st): State<AppState>, uri: Uri) -> ServiceResult<Response> {
    let path = path_from_uri(&uri, PREFIX, false)?;
    let rec = st.service.open_file(&path).await?;
    Ok((content_headers(&rec), Body::empty()).into_response())
}

pub async fn delete(State(st): State<AppState>, uri: Uri, h: HeaderMap) -> ServiceResult<StatusCode> {
    let path = path_from_uri(&uri, PREFIX, false)?;
    st.service.delete_file(&path, if_match(&h, &path)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
