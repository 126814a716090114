//! `/bulk/*`: multipart upload, multipart/mixed download, delete, manifest, sync.

use super::{json_body, parse_api_path, query_map, AppState};
use crate::error::{ServiceError, ServiceResult};
use crate::service::{BulkItem, IfMatch, StagedContent, WriteMode};
use axum::body::Body;
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::StreamExt;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;
use volebarn_core::sync::SyncPlan;
use volebarn_core::timefmt::parse_rfc3339;
use volebarn_core::types::{headers, BulkDeleteResponse, BulkUploadResponse, PathList, SyncRequest};
use volebarn_core::{OperationError, VPath, Xxh3};

fn part_header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// One part's options from its own headers.
fn part_options(h: &HeaderMap, path: &VPath) -> ServiceResult<(Option<Xxh3>, Option<i64>, WriteMode)> {
    let bad = |what: &str, v: &str| ServiceError::BadRequest {
        path: path.to_string(),
        message: format!("invalid {what} {v:?}"),
    };
    let hash = part_header(h, headers::FILE_HASH)
        .map(|v| {
            v.trim()
                .to_ascii_lowercase()
                .parse::<Xxh3>()
                .map_err(|_| bad("X-File-Hash", v))
        })
        .transpose()?;
    let mtime = part_header(h, headers::MODIFIED_TIME)
        .map(|v| parse_rfc3339(v).ok_or_else(|| bad("X-Modified-Time", v)))
        .transpose()?;
    let if_match = part_header(h, "if-match").map(IfMatch::parse);
    // `If-None-Match: *`: create only, 409 if the path exists.
    if part_header(h, "if-none-match").map(str::trim) == Some("*") {
        return Ok((hash, mtime, WriteMode::Create));
    }
    Ok((hash, mtime, WriteMode::Upsert { if_match }))
}

/// Parts up to this size are read into memory and staged on the blocking pool in parallel
/// (file creation is latency-bound); larger parts stream through the chunker in place.
const SMALL_PART: usize = 4 * 1024 * 1024;
/// Small parts being staged at once.
const STAGING_IN_FLIGHT: usize = 8;
/// Bytes of small parts held in memory before their chunks are put into the chunk store (or,
/// for small chunks, before later parts stop being kept inline): bounds a request's memory.
const BULK_IN_MEMORY: usize = 32 * 1024 * 1024;

/// A part on its way to the batch commit.
enum Pending {
    /// Only while [`flush`] swaps a staging part for its result.
    Resolving,
    Failed(OperationError),
    Staged(BulkItem),
    Staging {
        path: VPath,
        mode: WriteMode,
        mtime: Option<i64>,
        hash: Option<Xxh3>,
        task: tokio::task::JoinHandle<ServiceResult<StagedContent>>,
    },
}

impl Pending {
    /// A part whose content is known: ready for the commit, or failed alone.
    fn settled(
        path: VPath,
        mode: WriteMode,
        mtime: Option<i64>,
        staged: ServiceResult<StagedContent>,
    ) -> Pending {
        match staged {
            Ok(content) => Pending::Staged(BulkItem {
                path,
                mode,
                content,
                mtime,
            }),
            Err(e) => Pending::Failed(e.to_operation_error()),
        }
    }
}

/// `multipart/form-data`, one part per file named by its filename (or by a `path` field
/// sent just before it). Parts are streamed to storage one by one; a bad part fails alone.
/// Existing files are replaced (a part may carry `If-Match` to make that conditional).
///
/// The request as a whole is bounded by `--max-request-size`: a `Content-Length` over it is
/// refused before any byte is read, a chunked body as soon as it passes it. Either way the
/// answer is 413 `payload_too_large` and nothing of the request is kept: parts are committed
/// together once the whole body has been read.
pub async fn upload(State(st): State<AppState>, req: Request) -> ServiceResult<Json<BulkUploadResponse>> {
    let limit = st.limits.max_request_size();
    if declared_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(ServiceError::RequestTooLarge { limit });
    }
    let (parts, body) = req.into_parts();
    let over = Arc::new(AtomicBool::new(false));
    let body = limited(body, limit, over.clone());
    let mut form = Multipart::from_request(Request::from_parts(parts, body), &st)
        .await
        .map_err(|e| ServiceError::BadRequest {
            path: String::new(),
            message: format!("not a multipart/form-data request: {}", e.body_text()),
        })?;
    upload_parts(&st, &mut form).await.map_err(|e| {
        // The one place a body cut off at the limit becomes a 413, wherever the parts were
        // being read when it happened.
        if over.load(Ordering::SeqCst) {
            ServiceError::RequestTooLarge { limit }
        } else {
            e
        }
    })
}

/// The `Content-Length` a request declares, if any.
fn declared_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// `body`, failing (and setting `over`) as soon as more than `limit` bytes have arrived.
fn limited(body: Body, limit: u64, over: Arc<AtomicBool>) -> Body {
    let mut seen = 0u64;
    Body::from_stream(body.into_data_stream().map(move |piece| {
        let piece = piece?;
        seen = seen.saturating_add(piece.len() as u64);
        if seen > limit {
            over.store(true, Ordering::SeqCst);
            return Err(axum::Error::new(std::io::Error::other(format!(
                "the request body is larger than {limit} bytes"
            ))));
        }
        Ok(piece)
    }))
}

async fn upload_parts(st: &AppState, form: &mut Multipart) -> ServiceResult<Json<BulkUploadResponse>> {
    let mut pending: Vec<Pending> = Vec::new();
    let permits = Arc::new(Semaphore::new(STAGING_IN_FLIGHT));
    let mut progress = Progress {
        in_memory: 0,
        flushed: 0,
        inline_budget: BULK_IN_MEMORY,
    };
    let outcome = read_parts(st, form, &mut pending, &permits, &mut progress).await;
    let finished = match outcome {
        Ok(()) => flush(&mut pending, st, &mut progress).await,
        Err(e) => Err(e),
    };
    if let Err(e) = finished {
        let mut written = Vec::new();
        for p in pending {
            match p {
                Pending::Staged(item) => written.extend(item.content.written),
                Pending::Staging { task, .. } => {
                    if let Ok(Ok(content)) = task.await {
                        written.extend(content.written);
                    }
                }
                Pending::Failed(_) | Pending::Resolving => {}
            }
        }
        st.service.discard(written).await;
        return Err(e);
    }
    let mut items = Vec::new();
    let mut failed = Vec::new();
    for p in pending {
        match p {
            Pending::Failed(e) => failed.push(e),
            Pending::Staged(item) => items.push(item),
            Pending::Staging { .. } | Pending::Resolving => {
                return Err(ServiceError::Internal("a bulk part was left unresolved".into()))
            }
        }
    }
    Ok(Json(st.service.commit_bulk(items, failed).await?))
}

/// How far a bulk upload's parts have been read and stored.
struct Progress {
    /// Bytes of parts read into memory since the last flush.
    in_memory: usize,
    /// Parts before this index have been flushed.
    flushed: usize,
    /// Bytes of small chunks that may still be kept in memory for the inline commit.
    inline_budget: usize,
}

/// Resolves the staging tasks of the parts not flushed yet, then puts the chunks held in
/// memory into the chunk store.
/// Small chunks stay in memory for the inline commit until `inline_budget` is spent; after
/// that they go to the chunk store too.
async fn flush(pending: &mut [Pending], st: &AppState, progress: &mut Progress) -> ServiceResult<()> {
    let fresh = &mut pending[progress.flushed..];
    for p in fresh.iter_mut() {
        *p = match std::mem::replace(p, Pending::Resolving) {
            Pending::Staging {
                path,
                mode,
                mtime,
                hash,
                task,
            } => {
                let staged = task
                    .await
                    .map_err(|e| ServiceError::Internal(format!("staging task: {e}")))
                    .and_then(|r| r)
                    .and_then(|content| content.verify(&path, hash).map(|()| content));
                Pending::settled(path, mode, mtime, staged)
            }
            other => other,
        };
    }
    let mut contents = Vec::new();
    for p in fresh.iter_mut() {
        if let Pending::Staged(item) = p {
            let c = &mut item.content;
            let inline: usize = c.inline.iter().map(|(_, b)| b.len()).sum();
            if inline > progress.inline_budget {
                c.unstored.append(&mut c.inline);
            } else {
                progress.inline_budget -= inline;
            }
            contents.push(c);
        }
    }
    let stored = st.service.store_pending(&mut contents).await;
    progress.flushed = pending.len();
    progress.in_memory = 0;
    stored
}

/// Reads every part: small ones are chunked in the background, big ones streamed to storage.
async fn read_parts(
    st: &AppState,
    form: &mut Multipart,
    pending: &mut Vec<Pending>,
    permits: &Arc<Semaphore>,
    progress: &mut Progress,
) -> ServiceResult<()> {
    let mut pending_path: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error("", &e)),
        };
        if field.file_name().is_none() && field.name() == Some("path") {
            let text = field.text().await.map_err(|e| multipart_error("", &e))?;
            pending_path = Some(text);
            continue;
        }
        let Some(raw) = pending_path
            .take()
            .or_else(|| field.file_name().map(str::to_string))
        else {
            pending.push(Pending::Failed(OperationError::new(
                "",
                volebarn_core::ErrorCode::BadRequest,
                "part has no filename or path field",
            )));
            continue;
        };
        let checked = parse_api_path(&raw, false).and_then(|path| {
            if !seen.insert(path.clone()) {
                return Err(ServiceError::BadRequest {
                    path: raw.clone(),
                    message: "path appears twice in one request".into(),
                });
            }
            let (hash, mtime, mode) = part_options(field.headers(), &path)?;
            Ok((path, hash, mtime, mode))
        });
        let (path, hash, mtime, mode) = match checked {
            Ok(x) => x,
            Err(e) => {
                pending.push(Pending::Failed(e.to_operation_error()));
                continue;
            }
        };
        // Read up to SMALL_PART bytes; a part that ends by then is staged in the background.
        let mut field = field;
        let mut head: Vec<u8> = Vec::new();
        let mut ended = false;
        while head.len() <= SMALL_PART {
            match field.chunk().await {
                Ok(Some(piece)) => head.extend_from_slice(&piece),
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(e) => return Err(multipart_error(path.as_str(), &e)),
            }
        }
        if ended {
            progress.in_memory += head.len();
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            let service = st.service.clone();
            let p = path.clone();
            let task = tokio::spawn(async move {
                let out = service.stage_in_memory(p, Bytes::from(head)).await;
                drop(permit);
                out
            });
            pending.push(Pending::Staging {
                path,
                mode,
                mtime,
                hash,
                task,
            });
            if progress.in_memory > BULK_IN_MEMORY {
                flush(pending, st, progress).await?;
            }
            continue;
        }
        let body = futures_util::stream::iter([Ok::<Bytes, axum::extract::multipart::MultipartError>(
            Bytes::from(head),
        )])
        .chain(field);
        let staged = match st.service.store_body(&path, body).await {
            Ok(content) => match content.verify(&path, hash) {
                Ok(()) => Ok(content),
                Err(e) => {
                    st.service.discard(content.written).await;
                    Err(e)
                }
            },
            Err(e @ ServiceError::BadRequest { .. }) => return Err(e),
            Err(e) => Err(e),
        };
        pending.push(Pending::settled(path, mode, mtime, staged));
    }
    Ok(())
}

fn encode_header_path(p: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(p, KEEP).to_string()
}

/// `{ paths }` → `multipart/mixed`: one part per file with `X-File-Path` (percent-encoded),
/// `X-File-Hash`, `ETag` and `Content-Length`; paths that could not be sent are listed in a
/// final `application/json` part `{ "missing": [OperationError] }`.
pub async fn download(State(st): State<AppState>, body: Body) -> ServiceResult<Response> {
    let req: PathList = json_body(body, st.json_limit()).await?;
    let boundary = format!("volebarn-{:032x}", rand::random::<u128>());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let service = st.service.clone();
    let b = boundary.clone();
    tokio::spawn(async move {
        let mut missing: Vec<OperationError> = Vec::new();
        for raw in req.paths {
            let file = match parse_api_path(&raw, false) {
                Ok(p) => service.open_file(&p).await.map(|rec| (p, rec)),
                Err(e) => Err(e),
            };
            let (path, rec) = match file {
                Ok(x) => x,
                Err(e) => {
                    missing.push(e.to_operation_error());
                    continue;
                }
            };
            let head = format!(
                "--{b}\r\nContent-Type: application/octet-stream\r\nX-File-Path: {}\r\nX-File-Hash: {}\r\nETag: \"{}\"\r\nX-Modified-Time: {}\r\nContent-Length: {}\r\n\r\n",
                encode_header_path(path.as_str()),
                Xxh3(rec.xxh3),
                rec.rev,
                volebarn_core::timefmt::format_rfc3339(rec.mtime),
                rec.size
            );
            if tx.send(Ok(Bytes::from(head))).await.is_err() {
                return;
            }
            let mut content = std::pin::pin!(service.content_stream(&path, &rec));
            while let Some(piece) = content.next().await {
                let piece = piece.map_err(|e| std::io::Error::other(e.to_string()));
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    return;
                }
            }
            if tx.send(Ok(Bytes::from_static(b"\r\n"))).await.is_err() {
                return;
            }
        }
        let report = serde_json::json!({ "missing": missing }).to_string();
        let tail = format!("--{b}\r\nContent-Type: application/json\r\nX-Volebarn-Report: missing\r\n\r\n{report}\r\n--{b}--\r\n");
        let _ = tx.send(Ok(Bytes::from(tail))).await;
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let content_type = format!("multipart/mixed; boundary={boundary}");
    let mut resp = Body::from_stream(stream).into_response();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

pub async fn delete(State(st): State<AppState>, body: Body) -> ServiceResult<Json<BulkDeleteResponse>> {
    let req: PathList = json_body(body, st.json_limit()).await?;
    Ok(Json(st.service.bulk_delete(req.paths).await?))
}

/// `GET /bulk/manifest?path=<dir>` → `{ "files": { path: FileMetadata } }`, streamed page by
/// page from a database scan so a million entries never sit in memory at once.
pub async fn manifest(State(st): State<AppState>, uri: Uri) -> ServiceResult<Response> {
    const PAGE: usize = 1000;
    let q = query_map(&uri);
    let dir = parse_api_path(q.get("path").map_or("", String::as_str), true)?;
    // The head before the first page: replaying `/changes` from it covers every write the
    // page-by-page listing may have missed.
    let head = st.service.head_rev().await?;
    // Fetch the first page now so a bad directory is a proper 4xx, not a broken stream.
    let first = st.service.manifest_page(&dir, None, PAGE).await?;
    let service = st.service.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let mut page = first;
        let mut first_entry = true;
        if tx.send(Ok(Bytes::from_static(b"{\"files\":{"))).await.is_err() {
            return;
        }
        loop {
            if page.is_empty() {
                break;
            }
            let mut buf = Vec::with_capacity(page.len() * 200);
            for m in &page {
                if !first_entry {
                    buf.push(b',');
                }
                first_entry = false;
                let entry = serde_json::to_vec(&m.path).and_then(|k| serde_json::to_vec(m).map(|v| (k, v)));
                match entry {
                    Ok((k, v)) => {
                        buf.extend_from_slice(&k);
                        buf.push(b':');
                        buf.extend_from_slice(&v);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e))).await;
                        return;
                    }
                }
            }
            if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                return;
            }
            if page.len() < PAGE {
                break;
            }
            let after = page.last().and_then(|m| VPath::parse(&m.path).ok());
            page = match service.manifest_page(&dir, after, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
        }
        let _ = tx.send(Ok(Bytes::from_static(b"}}"))).await;
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert(headers::JOURNAL_REV, HeaderValue::from(head));
    Ok(resp)
}

pub async fn sync(State(st): State<AppState>, body: Body) -> ServiceResult<Json<SyncPlan>> {
    let req: SyncRequest = json_body(body, st.json_limit()).await?;
    Ok(Json(st.service.sync_plan(req).await?))
}

/// A multipart body that could not be read: 400 `bad_request` naming what went wrong (the
/// request's own size limit turns it into a 413 in [`upload`]).
fn multipart_error(path: &str, e: &MultipartError) -> ServiceError {
    ServiceError::BadRequest {
        path: path.to_string(),
        message: format!("malformed multipart body: {}", error_chain(e)),
    }
}

/// `e: cause: cause…`, so a multipart failure says what actually went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}
