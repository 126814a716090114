//! Many files per request: bulk upload/download/delete, the manifest and the sync plan.

use crate::client::{check, header, parse_path, Client};
use crate::error::{ClientError, Result};
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use reqwest::header::HeaderMap;
use reqwest::Method;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use volebarn_core::hash::Xxh3Hasher;
use volebarn_core::sync::SyncPlan;
use volebarn_core::types::{headers, BulkDeleteResponse, BulkUploadResponse, PathList, SyncRequest};
use volebarn_core::FileMetadata;
use volebarn_core::{ErrorCode, OperationError, Xxh3};

/// The `multipart/form-data` body of a bulk upload: for each file a text field `path` (file
/// names in `Content-Disposition` are not reliably UTF-8 across implementations), then a
/// field `file` with the file's own headers (hash, condition, mtime) and bytes.
///
/// Not reqwest's `Form`: it chains each field's stream onto all the earlier ones, so every
/// piece of an n-field body is polled through up to n nested streams. For the 2,000 fields
/// of a 1,000-file request that was O(n²) — 1.5 CPU-seconds of the client's time for the
/// `upload` bench's twenty requests (perf), more than the server spent storing the files.
/// Here the body is produced part by part, each part one buffer (boundary, headers, bytes),
/// and buffers are joined up to [`FormData::PIECE`] so HTTP/2 frames stay large.
struct FormData {
    boundary: String,
    parts: Vec<(String, HeaderMap, Bytes)>,
}

impl FormData {
    /// Bytes per piece of the body stream (parts are joined up to about this size).
    const PIECE: usize = 64 * 1024;

    fn new(parts: Vec<(String, HeaderMap, Bytes)>) -> Self {
        FormData {
            boundary: Self::boundary(),
            parts,
        }
    }

    /// A fresh random boundary, as reqwest's: 128 bits make a collision with file content hopeless.
    fn boundary() -> String {
        format!("{:032x}", rand::random::<u128>())
    }

    /// The closing delimiter.
    fn close(boundary: &str) -> Vec<u8> {
        format!("--{boundary}--\r\n").into_bytes()
    }

    /// The body, lazily: a part is encoded only when the connection asks for more.
    fn into_stream(self) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let mut next = 0;
        futures_util::stream::poll_fn(move |_| {
            if next > self.parts.len() {
                return std::task::Poll::Ready(None);
            }
            let mut buf = Vec::with_capacity(Self::PIECE);
            while next < self.parts.len() && buf.len() < Self::PIECE {
                let (path, headers, content) = &self.parts[next];
                encode_part(&mut buf, &self.boundary, path, headers, content);
                next += 1;
            }
            if next == self.parts.len() {
                buf.extend_from_slice(&Self::close(&self.boundary));
                next += 1;
            }
            std::task::Poll::Ready(Some(Ok(Bytes::from(buf))))
        })
    }
}

/// One part's bytes: the `path` field, then the `file` field with its headers and bytes.
fn encode_part(buf: &mut Vec<u8>, boundary: &str, path: &str, headers: &HeaderMap, content: &[u8]) {
    let b = boundary;
    buf.extend_from_slice(
        format!("--{b}\r\ncontent-disposition: form-data; name=\"path\"\r\n\r\n").as_bytes(),
    );
    buf.extend_from_slice(path.as_bytes());
    buf.extend_from_slice(
        format!("\r\n--{b}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"file\"\r\n")
            .as_bytes(),
    );
    for (name, value) in headers {
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(content);
    buf.extend_from_slice(b"\r\n");
}

/// A file part's own headers: its xxh3 (the server refuses a part damaged in flight), its
/// condition (`If-Match`, `If-None-Match: *`) and its mtime.
fn part_headers(content: &[u8], condition: UploadCondition, mtime: Option<i64>) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put(headers::FILE_HASH, Xxh3::of(content).to_string());
    match condition {
        UploadCondition::Any => {}
        UploadCondition::Create => put("if-none-match", "*".into()),
        UploadCondition::IfMatch(rev) => put("if-match", format!("\"{rev}\"")),
    }
    if let Some(t) = mtime {
        put(headers::MODIFIED_TIME, volebarn_core::timefmt::format_rfc3339(t));
    }
    h
}

/// One local file of a bulk upload ([`Client::bulk_upload_files`]): read from disk while the
/// request is sent, so a request holds a few pieces of its body, not all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUpload {
    /// Where it goes on the server.
    pub path: String,
    /// The file to read.
    pub local: PathBuf,
    pub condition: UploadCondition,
}

/// Pieces of a streamed body read ahead of the connection.
const READ_AHEAD: usize = 2;

/// Reads and encodes `files` into body pieces of about [`FormData::PIECE`] bytes, sent on
/// `tx` as the connection takes them (blocking). Returns the content bytes read and the files
/// that could not be read, which are left out of the body. Stops early if the request is gone.
fn stream_parts(
    boundary: &str,
    files: Vec<LocalUpload>,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> (u64, Vec<OperationError>) {
    let mut buf = Vec::with_capacity(FormData::PIECE);
    let mut read = 0u64;
    let mut unreadable = Vec::new();
    for f in files {
        match read_local(&f.local) {
            Ok((content, mtime)) => {
                let h = part_headers(&content, f.condition, Some(mtime));
                encode_part(&mut buf, boundary, &f.path, &h, &content);
                read += content.len() as u64;
            }
            Err(e) => {
                let code = match e.kind() {
                    std::io::ErrorKind::NotFound => ErrorCode::FileNotFound,
                    std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
                    _ => ErrorCode::Unknown,
                };
                let error = format!("reading {}: {e}", f.local.display());
                unreadable.push(OperationError::new(f.path, code, error));
            }
        }
        if buf.len() >= FormData::PIECE {
            let piece = std::mem::replace(&mut buf, Vec::with_capacity(FormData::PIECE));
            if tx.blocking_send(Bytes::from(piece)).is_err() {
                return (read, unreadable);
            }
        }
    }
    buf.extend_from_slice(&FormData::close(boundary));
    // An error here means the request is gone; its caller sees that.
    let _ = tx.blocking_send(Bytes::from(buf));
    (read, unreadable)
}

/// A local file's bytes and mtime (Unix nanoseconds), from one open.
fn read_local(path: &Path) -> std::io::Result<(Vec<u8>, i64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut content = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut content)?;
    Ok((content, crate::client::time_nanos(meta.modified()?)))
}

/// Groups items into bulk requests of at most `max_files` items and `max_bytes` bytes by
/// `size` (an item larger than that is a request of its own), in order. Lazy: a batch is
/// gathered when it is asked for, so a first sync of 100,000 files does not hold every file's
/// request (path, local path, condition) before the first one is sent.
pub fn bulk_batches<I: IntoIterator, F: Fn(&I::Item) -> u64>(
    items: I,
    size: F,
    max_files: usize,
    max_bytes: u64,
) -> BulkBatches<I::IntoIter, F> {
    BulkBatches {
        items: items.into_iter().peekable(),
        size,
        max_files,
        max_bytes,
    }
}

/// The batches of [`bulk_batches`], gathered one at a time.
pub struct BulkBatches<I: Iterator, F> {
    items: std::iter::Peekable<I>,
    size: F,
    max_files: usize,
    max_bytes: u64,
}

impl<I: Iterator, F: Fn(&I::Item) -> u64> Iterator for BulkBatches<I, F> {
    type Item = Vec<I::Item>;

    fn next(&mut self) -> Option<Vec<I::Item>> {
        let first = self.items.next()?;
        let mut bytes = (self.size)(&first);
        let mut batch = vec![first];
        while batch.len() < self.max_files {
            // Each item is sized once (the one that starts the next batch, twice).
            match self.items.peek().map(|i| (self.size)(i)) {
                Some(n) if bytes + n <= self.max_bytes => bytes += n,
                _ => break,
            }
            batch.push(self.items.next().expect("peeked"));
        }
        Some(batch)
    }
}

/// One file of a bulk upload (the seed's `FileUpload`).
#[derive(Debug, Clone)]
pub struct FileUpload {
    pub path: String,
    pub content: Bytes,
}

/// When a bulk-uploaded file may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadCondition {
    /// Create or replace.
    Any,
    /// Only if the path does not exist (409 `already_exists` otherwise).
    Create,
    /// Only if the file is at this revision (412 `precondition_failed` otherwise).
    IfMatch(u64),
}

/// One file of a conditional bulk upload.
#[derive(Debug, Clone)]
pub struct ConditionalUpload {
    pub path: String,
    pub content: Bytes,
    pub condition: UploadCondition,
    /// The file's own modification time (Unix nanoseconds).
    pub mtime: Option<i64>,
}

impl From<FileUpload> for ConditionalUpload {
    fn from(f: FileUpload) -> Self {
        ConditionalUpload {
            path: f.path,
            content: f.content,
            condition: UploadCondition::Any,
            mtime: None,
        }
    }
}

/// One verified file of a bulk download (the seed's `FileDownload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDownload {
    pub path: String,
    pub content: Bytes,
    pub xxhash3: Xxh3,
    pub rev: Option<u64>,
}

/// The seed's `BulkDownloadResponse`, plus the paths the server could not send.
#[derive(Debug, Clone, Default)]
pub struct BulkDownload {
    pub files: Vec<FileDownload>,
    pub missing: Vec<OperationError>,
}

#[derive(serde::Deserialize)]
struct MissingReport {
    missing: Vec<OperationError>,
}

impl Client {
    /// Uploads many files in one `multipart/form-data` request. Each part carries its xxh3
    /// so the server refuses a part damaged in flight, and its condition (`If-Match`,
    /// `If-None-Match: *`) and mtime; parts fail individually (see `failed` in the answer).
    pub(crate) async fn bulk_upload_once(&self, files: Vec<ConditionalUpload>) -> Result<BulkUploadResponse> {
        let content_bytes: u64 = files.iter().map(|f| f.content.len() as u64).sum();
        let mut parts = Vec::with_capacity(files.len());
        for f in files {
            parse_path(&f.path)?;
            let h = part_headers(&f.content, f.condition, f.mtime);
            parts.push((f.path, h, f.content));
        }
        let form = FormData::new(parts);
        let boundary = form.boundary.clone();
        let answer = self.post_bulk_upload(&boundary, form.into_stream()).await?;
        self.sent(content_bytes);
        Ok(answer)
    }

    /// Sends a bulk upload's `multipart/form-data` body and reads the answer.
    async fn post_bulk_upload(
        &self,
        boundary: &str,
        body: impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    ) -> Result<BulkUploadResponse> {
        let resp = self
            .request(Method::POST, format!("{}/bulk/upload", self.base))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await?;
        Ok(check(resp, "").await?.json().await?)
    }

    /// [`Client::bulk_upload_once`] reading the files from disk as the body is sent (on a
    /// blocking thread, a few pieces ahead). Files that cannot be read are left out and
    /// listed in `failed` (`file_not_found`, `permission_denied`, or `unknown`).
    pub(crate) async fn bulk_upload_files_once(&self, files: Vec<LocalUpload>) -> Result<BulkUploadResponse> {
        for f in &files {
            parse_path(&f.path)?;
        }
        let boundary = FormData::boundary();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(READ_AHEAD);
        let b = boundary.clone();
        let reader = tokio::task::spawn_blocking(move || stream_parts(&b, files, &tx));
        let body =
            futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|p| p.map(Ok::<_, std::io::Error>)));
        let mut answer = self.post_bulk_upload(&boundary, body).await?;
        // The server answered after the closing delimiter, the reader's last piece: it is done.
        let (read, unreadable) = reader
            .await
            .map_err(|e| ClientError::Protocol(format!("read task: {e}")))?;
        answer.failed.extend(unreadable);
        self.sent(read);
        Ok(answer)
    }

    /// Starts a bulk download and returns its parts.
    async fn open_bulk_download(&self, paths: &[String]) -> Result<multer::Multipart<'static>> {
        let body = PathList {
            paths: paths.to_vec(),
        };
        let resp = self
            .request(Method::POST, format!("{}/bulk/download", self.base))
            .json(&body)
            .send()
            .await?;
        let resp = check(resp, "").await?;
        let content_type = header(resp.headers(), "content-type")
            .unwrap_or_default()
            .to_string();
        let boundary = content_type
            .parse::<mime::Mime>()
            .ok()
            .filter(|m| m.type_() == mime::MULTIPART)
            .and_then(|m| m.get_param(mime::BOUNDARY).map(|b| b.to_string()))
            .ok_or_else(|| {
                ClientError::Protocol(format!("bulk download is not multipart: {content_type:?}"))
            })?;
        Ok(multer::Multipart::new(resp.bytes_stream(), boundary))
    }

    /// Downloads many files in one request, verifying every file's xxh3.
    pub(crate) async fn bulk_download_once(&self, paths: &[String]) -> Result<BulkDownload> {
        let mut parts = self.open_bulk_download(paths).await?;
        let mut out = BulkDownload::default();
        while let Some(mut part) = next_part(&mut parts).await? {
            let info = match part_info(part.headers())? {
                PartKind::Report => {
                    out.missing = read_report(part).await?;
                    continue;
                }
                PartKind::File(info) => info,
            };
            let mut content = Vec::new();
            while let Some(piece) = part.chunk().await.map_err(multipart_error)? {
                content.extend_from_slice(&piece);
            }
            let actual = Xxh3::of(&content);
            if actual != info.expected {
                return Err(ClientError::HashMismatch {
                    path: info.path,
                    expected: info.expected.to_string(),
                    actual: actual.to_string(),
                });
            }
            out.files.push(FileDownload {
                path: info.path,
                content: Bytes::from(content),
                xxhash3: actual,
                rev: info.rev,
            });
        }
        Ok(out)
    }

    /// Downloads many files in one request straight into the folder at `root`: each part
    /// streams to a temporary file beside its target, is verified and gets the remote mtime;
    /// then the whole batch is made durable at once and renamed into place (see [`publish`]).
    /// Returns the files written and, per path, what went wrong.
    pub async fn bulk_download_into(
        &self,
        root: &Path,
        paths: &[String],
    ) -> Result<(Vec<FileMetadata>, Vec<OperationError>)> {
        let mut staged = Vec::new();
        let mut failed = Vec::new();
        let received = self.receive_parts(root, paths, &mut staged, &mut failed).await;
        if let Err(e) = received {
            // Nothing of a broken batch appears: the caller fetches it again.
            for s in staged {
                let _ = tokio::fs::remove_file(&s.tmp).await;
            }
            return Err(e);
        }
        let root = root.to_path_buf();
        let (written, unpublished) = tokio::task::spawn_blocking(move || publish(&root, staged))
            .await
            .map_err(|e| ClientError::Protocol(format!("publishing downloads: {e}")))?;
        failed.extend(unpublished);
        Ok((written, failed))
    }

    /// Reads a bulk download's parts into temp files (`staged`); per-path failures go to
    /// `failed`, and a broken stream ends it with an error.
    async fn receive_parts(
        &self,
        root: &Path,
        paths: &[String],
        staged: &mut Vec<Staged>,
        failed: &mut Vec<OperationError>,
    ) -> Result<()> {
        let mut parts = self.open_bulk_download(paths).await?;
        while let Some(part) = next_part(&mut parts).await? {
            let info = match part_info(part.headers())? {
                PartKind::Report => {
                    failed.extend(read_report(part).await?);
                    continue;
                }
                PartKind::File(info) => info,
            };
            let path = info.path.clone();
            match stage_part(root, info, part, self).await {
                Ok(s) => staged.push(s),
                Err(e @ ClientError::Network(_)) | Err(e @ ClientError::Protocol(_)) => return Err(e),
                Err(e) => {
                    if matches!(e, ClientError::HashMismatch { .. }) {
                        self.resilience.metrics.hash_mismatch();
                    }
                    failed.push(OperationError::new(
                        path,
                        e.error_code().unwrap_or(volebarn_core::ErrorCode::Unknown),
                        e.to_string(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Deletes files and directories (recursively); each path succeeds or fails alone.
    pub(crate) async fn bulk_delete_once(&self, paths: &[String]) -> Result<BulkDeleteResponse> {
        let body = PathList {
            paths: paths.to_vec(),
        };
        let resp = self
            .request(Method::POST, format!("{}/bulk/delete", self.base))
            .json(&body)
            .send()
            .await?;
        Ok(check(resp, "").await?.json().await?)
    }

    /// `GET /bulk/manifest` (every file and directory below `path`, `None` = everything),
    /// each entry handed to `each` as it is parsed, plus the journal
    /// revision the listing is current as of. Neither the body nor the listing is held whole:
    /// the body's pieces go to a parser on a blocking thread as they arrive (at 100,000 files
    /// the body was 17 MB and the parsed map 26 MB more, both at once).
    pub(crate) async fn fold_manifest_once<T, F>(
        &self,
        path: Option<&str>,
        acc: T,
        each: F,
    ) -> Result<(T, u64)>
    where
        T: Send + 'static,
        F: FnMut(&mut T, String, FileMetadata) + Send + 'static,
    {
        let mut req = self.request(Method::GET, format!("{}/bulk/manifest", self.base));
        if let Some(p) = path {
            req = req.query(&[("path", p)]);
        }
        let mut resp = check(req.send().await?, path.unwrap_or("")).await?;
        let rev = resp
            .headers()
            .get(headers::JOURNAL_REV)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Protocol("manifest without X-Journal-Rev".into()))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(MANIFEST_PIECES_AHEAD);
        let parser = tokio::task::spawn_blocking(move || manifest::parse(rx, acc, each));
        // A broken connection ends the parser's input early; its error is the one to report
        // (a transient one, retried), not the parser's "unexpected end".
        let mut broken = None;
        loop {
            match resp.chunk().await {
                Ok(Some(piece)) => {
                    if tx.send(piece).await.is_err() {
                        break; // the parser stopped: its error says why
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let parsed = parser
            .await
            .map_err(|e| ClientError::Protocol(format!("manifest parser: {e}")))?;
        if let Some(e) = broken {
            return Err(e.into());
        }
        let acc = parsed.map_err(|e| ClientError::Protocol(format!("manifest: {e}")))?;
        Ok((acc, rev))
    }

    /// Asks the server for the three-way sync plan of a local manifest (with base revs).
    pub(crate) async fn sync_plan_once(&self, request: &SyncRequest) -> Result<SyncPlan> {
        let resp = self
            .request(Method::POST, format!("{}/bulk/sync", self.base))
            .json(request)
            .send()
            .await?;
        Ok(check(resp, "").await?.json().await?)
    }
}

/// Pieces of a manifest's body queued for its parser.
const MANIFEST_PIECES_AHEAD: usize = 4;

/// The manifest's parser: `{"files": {path: FileMetadata, ...}}` read as a stream.
mod manifest {
    use bytes::{Buf, Bytes};
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::io::Read;
    use volebarn_core::FileMetadata;

    /// Parses the pieces `rx` receives, handing each entry to `each` as it is read.
    pub(super) fn parse<T, F>(
        rx: tokio::sync::mpsc::Receiver<Bytes>,
        mut acc: T,
        mut each: F,
    ) -> serde_json::Result<T>
    where
        F: FnMut(&mut T, String, FileMetadata),
    {
        let input = Pieces {
            rx,
            piece: Bytes::new(),
        };
        // serde_json reads a reader byte by byte; a BufReader makes each byte a copy.
        let mut de =
            serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(64 * 1024, input));
        Manifest {
            acc: &mut acc,
            each: &mut each,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(acc)
    }

    /// The body, as a reader over the pieces that arrive.
    struct Pieces {
        rx: tokio::sync::mpsc::Receiver<Bytes>,
        piece: Bytes,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            while self.piece.is_empty() {
                match self.rx.blocking_recv() {
                    Some(p) => self.piece = p,
                    None => return Ok(0),
                }
            }
            let n = buf.len().min(self.piece.len());
            buf[..n].copy_from_slice(&self.piece[..n]);
            self.piece.advance(n);
            Ok(n)
        }
    }

    /// The outer object: its `files` go to [`Files`], anything else is skipped.
    struct Manifest<'a, T, F> {
        acc: &'a mut T,
        each: &'a mut F,
    }

    impl<'de, T, F: FnMut(&mut T, String, FileMetadata)> DeserializeSeed<'de> for Manifest<'_, T, F> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de, T, F: FnMut(&mut T, String, FileMetadata)> Visitor<'de> for Manifest<'_, T, F> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a manifest object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut files = false;
            while let Some(key) = map.next_key::<String>()? {
                if key == "files" && !files {
                    map.next_value_seed(Files {
                        acc: &mut *self.acc,
                        each: &mut *self.each,
                    })?;
                    files = true;
                } else if key == "files" {
                    return Err(serde::de::Error::duplicate_field("files"));
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if !files {
                return Err(serde::de::Error::missing_field("files"));
            }
            Ok(())
        }
    }

    /// The `files` object, entry by entry.
    struct Files<'a, T, F> {
        acc: &'a mut T,
        each: &'a mut F,
    }

    impl<'de, T, F: FnMut(&mut T, String, FileMetadata)> DeserializeSeed<'de> for Files<'_, T, F> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de, T, F: FnMut(&mut T, String, FileMetadata)> Visitor<'de> for Files<'_, T, F> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of paths to file metadata")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some((path, meta)) = map.next_entry::<String, FileMetadata>()? {
                (self.each)(self.acc, path, meta);
            }
            Ok(())
        }
    }
}

fn multipart_error(e: multer::Error) -> ClientError {
    ClientError::Protocol(format!("bulk download: {e}"))
}

async fn next_part(parts: &mut multer::Multipart<'static>) -> Result<Option<multer::Field<'static>>> {
    parts.next_field().await.map_err(multipart_error)
}

/// The headers of one file part of a bulk download.
struct PartInfo {
    path: String,
    expected: Xxh3,
    rev: Option<u64>,
    modified: Option<i64>,
}

enum PartKind {
    File(PartInfo),
    /// The final `{"missing": [...]}` part.
    Report,
}

fn part_info(h: &reqwest::header::HeaderMap) -> Result<PartKind> {
    if h.get("x-volebarn-report").is_some() {
        return Ok(PartKind::Report);
    }
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    let path = percent_decode_str(text("x-file-path").unwrap_or_default())
        .decode_utf8_lossy()
        .to_string();
    let expected = text(headers::FILE_HASH)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ClientError::Protocol(format!("bulk download part {path} has no X-File-Hash")))?;
    let rev = text("etag").and_then(|v| v.trim_matches('"').parse().ok());
    let modified = text(headers::MODIFIED_TIME).and_then(volebarn_core::timefmt::parse_rfc3339);
    Ok(PartKind::File(PartInfo {
        path,
        expected,
        rev,
        modified,
    }))
}

async fn read_report(part: multer::Field<'static>) -> Result<Vec<OperationError>> {
    let bytes = part.bytes().await.map_err(multipart_error)?;
    let report: MissingReport = serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::Protocol(format!("bulk download report: {e}")))?;
    Ok(report.missing)
}

/// A verified download in its temp file, waiting for its batch to be published.
struct Staged {
    tmp: std::path::PathBuf,
    target: std::path::PathBuf,
    meta: FileMetadata,
}

/// Streams one part to a temp file beside `root/<path>`, verifies it and sets the remote mtime.
async fn stage_part(
    root: &Path,
    info: PartInfo,
    mut part: multer::Field<'static>,
    client: &Client,
) -> Result<Staged> {
    let vpath = parse_path(&info.path)?;
    let target = vpath
        .as_str()
        .split('/')
        .fold(root.to_path_buf(), |p, c| p.join(c));
    let dir = target
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.to_path_buf());
    let io = |source| ClientError::Io {
        path: target.display().to_string(),
        source,
    };
    tokio::fs::create_dir_all(&dir).await.map_err(io)?;
    let tmp = dir.join(format!(
        ".{}.volebarn-{:016x}.tmp",
        vpath.name(),
        rand::random::<u64>()
    ));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut hasher = Xxh3Hasher::new();
        let mut size = 0u64;
        while let Some(piece) = part.chunk().await.map_err(multipart_error)? {
            hasher.update(&piece);
            size += piece.len() as u64;
            file.write_all(&piece).await.map_err(io)?;
            client.received(piece.len() as u64);
        }
        let actual = hasher.finish();
        if actual != info.expected {
            return Err(ClientError::HashMismatch {
                path: info.path.clone(),
                expected: info.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        file.flush().await.map_err(io)?;
        let file = file.into_std().await;
        if let Some(nanos) = info.modified {
            file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos.max(0) as u64))
                .map_err(io)?;
        }
        drop(file);
        Ok(Staged {
            tmp: tmp.clone(),
            target: target.clone(),
            meta: FileMetadata {
                path: vpath.to_string(),
                name: vpath.name().to_string(),
                size,
                modified: info.modified.unwrap_or_default(),
                is_directory: false,
                xxhash3: actual,
                rev: info.rev.unwrap_or_default(),
            },
        })
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Puts a batch of staged downloads in place, durably: their contents are flushed to disk
/// before any of them appears under its name, and the renames are flushed before this returns
/// (a sync engine records them as synced next; a rename lost in a crash would then read as a
/// local deletion). On Linux that is two `syncfs` per filesystem for the whole batch — one
/// journal commit instead of one `fsync` per file; elsewhere each file and directory is synced.
/// Blocking.
fn publish(root: &Path, staged: Vec<Staged>) -> (Vec<FileMetadata>, Vec<OperationError>) {
    let mut written = Vec::with_capacity(staged.len());
    let mut failed = Vec::new();
    let fail = |failed: &mut Vec<OperationError>, s: &Staged, e: std::io::Error| {
        let _ = std::fs::remove_file(&s.tmp);
        failed.push(OperationError::new(
            s.meta.path.clone(),
            volebarn_core::ErrorCode::Unknown,
            format!("{}: {e}", s.target.display()),
        ));
    };
    if staged.is_empty() {
        return (written, failed);
    }
    let dirs: std::collections::BTreeSet<&Path> = staged.iter().filter_map(|s| s.tmp.parent()).collect();
    if let Err(e) = crate::durable::flush(root, &dirs, staged.iter().map(|s| s.tmp.as_path())) {
        for s in &staged {
            fail(
                &mut failed,
                s,
                std::io::Error::new(e.kind(), format!("flushing downloads: {e}")),
            );
        }
        return (written, failed);
    }
    let mut renamed = Vec::with_capacity(staged.len());
    for s in staged {
        match std::fs::rename(&s.tmp, &s.target) {
            Ok(()) => renamed.push(s),
            Err(e) => fail(&mut failed, &s, e),
        }
    }
    let dirs: std::collections::BTreeSet<&Path> = renamed.iter().filter_map(|s| s.target.parent()).collect();
    match crate::durable::flush(root, &dirs, std::iter::empty()) {
        Ok(()) => written.extend(renamed.into_iter().map(|s| s.meta)),
        // The files are in place but may not survive a crash: report them as not done, so
        // they are fetched (and flushed) again rather than recorded as synced.
        Err(e) => {
            for s in renamed {
                failed.push(OperationError::new(
                    s.meta.path,
                    volebarn_core::ErrorCode::Unknown,
                    format!("flushing downloads: {e}"),
                ));
            }
        }
    }
    (written, failed)
}
#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    type Field = (String, Option<String>, Vec<(String, String)>, Vec<u8>);

    /// What a multipart parser (the server's, multer) reads back from a body.
    async fn parse(form: FormData) -> Vec<Field> {
        let boundary = form.boundary.clone();
        let pieces: Vec<Bytes> = form.into_stream().try_collect().await.expect("body");
        assert!(
            pieces.iter().all(|p| p.len() < 2 * FormData::PIECE),
            "pieces stay near the piece size"
        );
        parse_pieces(boundary, pieces).await
    }

    async fn parse_pieces(boundary: String, pieces: Vec<Bytes>) -> Vec<Field> {
        let body = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
        let mut parts = multer::Multipart::new(body, boundary);
        let mut out = Vec::new();
        while let Some(field) = parts.next_field().await.expect("well-formed") {
            let name = field.name().unwrap_or_default().to_string();
            let file_name = field.file_name().map(str::to_string);
            let headers = field
                .headers()
                .iter()
                .filter(|(n, _)| n.as_str() != "content-disposition")
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect();
            let bytes = field.bytes().await.expect("field bytes").to_vec();
            out.push((name, file_name, headers, bytes));
        }
        out
    }

    #[test]
    fn bulk_batches_hold_at_most_their_files_and_bytes_in_order() {
        const MIB: u64 = 1024 * 1024;
        let sizes = [MIB, MIB, MIB, MIB, 1, 5 * MIB, 0, 0];
        let got: Vec<_> = bulk_batches(0..sizes.len(), |i| sizes[*i], 1000, 4 * MIB).collect();
        assert_eq!(got, [vec![0, 1, 2, 3], vec![4], vec![5], vec![6, 7]]);
        let many: Vec<_> = bulk_batches(0..2500, |_| 1, 1000, 4 * MIB).collect();
        let lens: Vec<usize> = many.iter().map(Vec::len).collect();
        assert_eq!(lens, [1000, 1000, 500]);
        assert_eq!(many.concat(), (0..2500).collect::<Vec<_>>());
        assert_eq!(bulk_batches(Vec::<u8>::new(), |_| 1, 1000, 4 * MIB).next(), None);
        let small: Vec<_> = bulk_batches([MIB, MIB, MIB], |s| *s, 1000, 2 * MIB).collect();
        assert_eq!(small, [vec![MIB, MIB], vec![MIB]]);
    }

    #[tokio::test]
    async fn local_files_stream_as_parts_read_from_disk_a_few_pieces_ahead() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = Vec::new();
        let mut expected = Vec::new();
        for i in 0..200u32 {
            // Empty files, small ones, and some larger than a piece.
            let content: Vec<u8> = match i % 4 {
                0 => Vec::new(),
                1 => format!("--{i}\r\n\r\n").repeat(i as usize).into_bytes(),
                2 => vec![i as u8; 3 * FormData::PIECE + i as usize],
                _ => (0..i).map(|b| b as u8).collect(),
            };
            let local = dir.path().join(format!("f{i}"));
            std::fs::write(&local, &content).expect("write");
            let condition = if i % 2 == 0 {
                UploadCondition::Create
            } else {
                UploadCondition::IfMatch(u64::from(i))
            };
            files.push(LocalUpload {
                path: format!("d/ä {i}.txt"),
                local: local.clone(),
                condition,
            });
            if i % 50 == 7 {
                // Gone before the request reads it.
                std::fs::remove_file(&local).expect("rm");
                continue;
            }
            let mtime = crate::client::time_nanos(
                std::fs::metadata(&local)
                    .expect("stat")
                    .modified()
                    .expect("mtime"),
            );
            expected.push((
                format!("d/ä {i}.txt"),
                part_headers(&content, condition, Some(mtime)),
                content,
            ));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let boundary = FormData::boundary();
        let b = boundary.clone();
        let reader = tokio::task::spawn_blocking(move || stream_parts(&b, files, &tx));
        let mut pieces = Vec::new();
        while let Some(p) = rx.recv().await {
            pieces.push(p);
        }
        let (read, unreadable) = reader.await.expect("reader");
        assert!(
            pieces
                .iter()
                .all(|p| p.len() < FormData::PIECE + 4 * FormData::PIECE),
            "a piece is at most one file beyond the piece size"
        );
        let missing: Vec<(&str, ErrorCode)> = unreadable
            .iter()
            .map(|e| (e.path.as_str(), e.error_code))
            .collect();
        assert_eq!(
            missing,
            [
                ("d/ä 7.txt", ErrorCode::FileNotFound),
                ("d/ä 57.txt", ErrorCode::FileNotFound),
                ("d/ä 107.txt", ErrorCode::FileNotFound),
                ("d/ä 157.txt", ErrorCode::FileNotFound)
            ]
        );
        assert_eq!(read, expected.iter().map(|(_, _, c)| c.len() as u64).sum::<u64>());
        let parsed = parse_pieces(boundary, pieces).await;
        assert_eq!(parsed.len(), 2 * expected.len());
        for (fields, (path, headers, content)) in parsed.chunks(2).zip(expected) {
            assert_eq!(fields[0].3, path.as_bytes());
            let sent: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_string()))
                .collect();
            assert_eq!(fields[1].2, sent, "hash, condition and mtime of {path}");
            assert_eq!(fields[1].3, content, "bytes of {path}");
        }
    }

    #[tokio::test]
    async fn a_dropped_request_stops_the_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<LocalUpload> = (0..100)
            .map(|i| {
                let local = dir.path().join(format!("f{i}"));
                std::fs::write(&local, vec![1u8; FormData::PIECE]).expect("write");
                LocalUpload {
                    path: format!("f{i}"),
                    local,
                    condition: UploadCondition::Any,
                }
            })
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let reader = tokio::task::spawn_blocking(move || stream_parts("b", files, &tx));
        rx.recv().await.expect("first piece");
        drop(rx);
        let (read, _) = reader.await.expect("reader");
        assert!(
            read < 100 * FormData::PIECE as u64,
            "it stopped reading: {read} bytes"
        );
    }

    #[tokio::test]
    async fn the_body_parses_back_to_every_path_header_and_byte() {
        let mut parts = Vec::new();
        for i in 0..300u32 {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("x-file-hash", format!("{i:016x}").parse().expect("value"));
            if i % 2 == 0 {
                h.insert("if-match", format!("\"{i}\"").parse().expect("value"));
            }
            // Contents that look like multipart themselves, and empty ones.
            let content = match i % 3 {
                0 => Bytes::new(),
                1 => Bytes::from(format!("--x\r\n\r\ncontent-disposition: {i}\r\n").repeat(i as usize)),
                _ => Bytes::from(vec![i as u8; 1000 + i as usize]),
            };
            parts.push((format!("dir {i}/ä file {i}.txt"), h, content));
        }
        let expected = parts.clone();
        let parsed = parse(FormData::new(parts)).await;
        assert_eq!(parsed.len(), 2 * expected.len());
        for (fields, (path, headers, content)) in parsed.chunks(2).zip(expected) {
            assert_eq!(fields[0].0, "path");
            assert_eq!(fields[0].3, path.as_bytes());
            assert_eq!(fields[1].0, "file");
            assert_eq!(fields[1].1.as_deref(), Some("file"));
            let sent: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_string()))
                .collect();
            assert_eq!(fields[1].2, sent);
            assert_eq!(fields[1].3, content.to_vec());
        }
    }

    #[tokio::test]
    async fn an_empty_upload_is_a_well_formed_empty_body() {
        assert!(parse(FormData::new(Vec::new())).await.is_empty());
    }
}
