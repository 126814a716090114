//! HTTPS client for the single-file and directory API.

use crate::error::{ClientError, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, CONTENT_LENGTH, ETAG};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use volebarn_core::hash::Xxh3Hasher;
use volebarn_core::timefmt::{format_rfc3339, parse_rfc3339};
use volebarn_core::types::{headers, HealthStatus};
use volebarn_core::{DirectoryListing, ErrorCode, FileMetadata, OperationError, VPath, Xxh3};

/// Characters left as-is in a path segment: RFC 3986 unreserved, except `.` so that `..`
/// can never become a dot-segment (the client validates paths anyway).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// Where and how to reach a server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `https://127.0.0.1:3000`
    pub server_url: String,
    pub token: String,
    /// Extra CA (PEM) to trust, e.g. the server's generated `<data>/tls/cert.pem`.
    pub ca_cert: Option<PathBuf>,
    /// Skip certificate verification (the seed's `tls.verify_certificates = false`). Only for
    /// testing: anyone on the path can then read and change the traffic.
    pub accept_invalid_certs: bool,
    pub connect_timeout: Duration,
    /// Longest silence while waiting for bytes of a response.
    pub read_timeout: Duration,
    pub retry: crate::resilience::RetryConfig,
    pub breaker: crate::resilience::BreakerConfig,
    pub large: crate::large::LargeFileConfig,
}

impl ClientConfig {
    pub fn new(server_url: impl Into<String>, token: impl Into<String>) -> Self {
        ClientConfig {
            server_url: server_url.into(),
            token: token.into(),
            ca_cert: None,
            accept_invalid_certs: false,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            retry: crate::resilience::RetryConfig::default(),
            breaker: crate::resilience::BreakerConfig::default(),
            large: crate::large::LargeFileConfig::default(),
        }
    }

    pub fn with_ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub(crate) base: String,
    token: String,
    pub(crate) resilience: std::sync::Arc<Resilience>,
    pub(crate) observer: crate::progress::Observer,
}

/// The background health monitor; dropping it stops the monitor.
pub struct HealthMonitor(tokio::task::JoinHandle<()>);

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Retry policy, breaker and health state shared by clones of one `Client`.
pub(crate) struct Resilience {
    pub(crate) retry: crate::resilience::RetryConfig,
    pub(crate) large: crate::large::LargeFileConfig,
    pub(crate) breaker: crate::resilience::CircuitBreaker,
    pub(crate) health: std::sync::Mutex<crate::resilience::HealthState>,
    pub(crate) metrics: crate::metrics::Metrics,
}

pub(crate) fn parse_path(path: &str) -> Result<VPath> {
    VPath::parse_non_root(path).map_err(|e| ClientError::InvalidPath {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn encode_path(p: &VPath) -> String {
    p.as_str()
        .split('/')
        .map(|seg| utf8_percent_encode(seg, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

pub(crate) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn header_hash(h: &HeaderMap, path: &VPath) -> Result<Xxh3> {
    header(h, headers::FILE_HASH)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ClientError::Protocol(format!("response for {path} has no valid X-File-Hash")))
}

fn rev_from_etag(h: &HeaderMap) -> Option<u64> {
    header(h, ETAG.as_str())?.trim_matches('"').parse().ok()
}

/// `Retry-After` as seconds: either a number of seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<u64> {
    if let Ok(secs) = v.trim().parse() {
        return Some(secs);
    }
    let at = httpdate::parse_http_date(v.trim()).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .map_or(0, |d| d.as_secs()),
    )
}

/// Turns a non-2xx response into the matching `ClientError`.
async fn error_from(resp: Response, path: &str) -> ClientError {
    let status = resp.status();
    let retry_after = header(resp.headers(), "retry-after").and_then(parse_retry_after);
    let body = resp.bytes().await.unwrap_or_default();
    let op: Option<OperationError> = serde_json::from_slice(&body).ok();
    let (code, message, epath) = match op {
        Some(op) => (op.error_code, op.error, op.path),
        None => (
            if status.is_server_error() {
                ErrorCode::ServerError
            } else {
                ErrorCode::Unknown
            },
            String::from_utf8_lossy(&body).chars().take(200).collect(),
            path.to_string(),
        ),
    };
    match status {
        StatusCode::NOT_FOUND if code == ErrorCode::FileNotFound => ClientError::FileNotFound {
            path: path.to_string(),
        },
        StatusCode::TOO_MANY_REQUESTS => ClientError::RateLimited {
            retry_after: retry_after.unwrap_or(1),
        },
        _ => ClientError::Server {
            status: status.as_u16(),
            code,
            message,
            path: epath,
        },
    }
}

pub(crate) async fn check(resp: Response, path: &str) -> Result<Response> {
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(error_from(resp, path).await)
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self> {
        // One process-wide provider; a second install (another Client) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .danger_accept_invalid_certs(config.accept_invalid_certs);
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca)
                .map_err(|e| ClientError::Config(format!("reading CA certificate {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ClientError::Tls(format!("CA certificate {}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| ClientError::Tls(e.to_string()))?;
        let base = config.server_url.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(ClientError::Config(format!(
                "server URL {base:?} must start with https:// or http://"
            )));
        }
        Ok(Client {
            http,
            base,
            token: config.token,
            resilience: std::sync::Arc::new(Resilience {
                retry: config.retry,
                large: config.large,
                breaker: crate::resilience::CircuitBreaker::new(config.breaker),
                health: std::sync::Mutex::new(crate::resilience::HealthState::default()),
                metrics: crate::metrics::Metrics::default(),
            }),
            observer: crate::progress::Observer::default(),
        })
    }

    /// The server's URL, without a trailing `/`.
    pub fn server_url(&self) -> &str {
        &self.base
    }

    /// A clone of this client (same connections, retries and breaker) that reports the
    /// progress of its transfers to `observer`.
    pub fn with_observer(&self, observer: std::sync::Arc<dyn crate::TransferObserver>) -> Client {
        Client {
            observer: crate::progress::Observer::new(observer),
            ..self.clone()
        }
    }

    /// Tells this client's [`TransferObserver`](crate::TransferObserver), if any, that `path`
    /// finished transferring. For sync engines that move a file with several calls (a bulk
    /// request, a conditional retry) and so know best when it is done.
    pub fn report_file_done(&self, path: &str) {
        self.observer.file_done(path);
    }

    pub(crate) fn request(&self, method: Method, url: String) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.token)
    }

    /// A write to a file: POST creates, PUT replaces (always when conditional on `if_match`).
    pub(crate) fn write_request(&self, p: &VPath, replace: bool, if_match: Option<u64>) -> RequestBuilder {
        let method = if replace || if_match.is_some() {
            Method::PUT
        } else {
            Method::POST
        };
        let req = self.request(method, self.file_url(p));
        match if_match {
            Some(rev) => req.header("if-match", format!("\"{rev}\"")),
            None => req,
        }
    }

    pub(crate) fn file_url(&self, p: &VPath) -> String {
        format!("{}/files/{}", self.base, encode_path(p))
    }

    fn dir_url(&self, p: &VPath) -> String {
        format!("{}/directories/{}", self.base, encode_path(p))
    }

    /// `GET /health` (no token needed, no retries); the round trip feeds [`Client::health`].
    pub async fn ping(&self) -> Result<HealthStatus> {
        let start = tokio::time::Instant::now();
        let result: Result<HealthStatus> = async {
            let resp = check(self.http.get(format!("{}/health", self.base)).send().await?, "").await?;
            Ok(resp.json().await?)
        }
        .await;
        let outcome = match &result {
            Ok(_) => Ok(start.elapsed()),
            Err(_) => Err(()),
        };
        self.resilience
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(outcome);
        result
    }

    /// Requests, response times, network errors, hash mismatches and bytes moved by this
    /// client and its clones so far.
    pub fn metrics(&self) -> crate::TransferMetrics {
        self.resilience.metrics.snapshot()
    }

    /// `n` bytes of file content went to the server.
    pub(crate) fn sent(&self, n: u64) {
        self.resilience.metrics.sent(n);
        self.observer.bytes(n);
    }

    /// `n` bytes of file content came from the server.
    pub(crate) fn received(&self, n: u64) {
        self.resilience.metrics.received(n);
        self.observer.bytes(n);
    }

    /// What the client knows about the server: last success, consecutive failures, average
    /// latency, health, and the circuit breaker's state.
    pub fn health(&self) -> crate::resilience::ServerHealth {
        let breaker = self.resilience.breaker.state();
        self.resilience
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot(breaker)
    }

    /// Pings `/health` in the background: every 30 s while healthy, backing off to 30 s,
    /// 1 min, 2 min, then 5 min while it fails. Runs until the returned guard is dropped.
    pub fn start_health_monitor(&self) -> HealthMonitor {
        let client = self.clone();
        HealthMonitor(tokio::spawn(crate::resilience::monitor_loop(move || {
            let client = client.clone();
            async move {
                let ok = client.ping().await.is_ok();
                (ok, client.health().consecutive_failures)
            }
        })))
    }

    async fn send_content(
        &self,
        replace: bool,
        path: &str,
        content: Bytes,
        if_match: Option<u64>,
    ) -> Result<FileMetadata> {
        let p = parse_path(path)?;
        let req = self
            .write_request(&p, replace, if_match)
            .header(headers::FILE_HASH, Xxh3::of(&content).to_string())
            .body(content);
        let resp = check(req.send().await?, path).await?;
        Ok(resp.json().await?)
    }

    /// Creates a new file (409 `already_exists` if present).
    pub(crate) async fn upload_file_once(&self, path: &str, content: Bytes) -> Result<FileMetadata> {
        self.send_content(false, path, content, None).await
    }

    /// Replaces an existing file (404 if absent).
    pub(crate) async fn update_file_once(&self, path: &str, content: Bytes) -> Result<FileMetadata> {
        self.send_content(true, path, content, None).await
    }

    /// Replaces a file only if its current revision is `rev` (else 412 `precondition_failed`).
    pub(crate) async fn update_file_if_once(
        &self,
        path: &str,
        content: Bytes,
        rev: u64,
    ) -> Result<FileMetadata> {
        self.send_content(true, path, content, Some(rev)).await
    }

    /// Downloads a whole file into memory and verifies its xxh3.
    pub(crate) async fn download_file_once(&self, path: &str) -> Result<Bytes> {
        let p = parse_path(path)?;
        let resp = check(self.request(Method::GET, self.file_url(&p)).send().await?, path).await?;
        let expected = header_hash(resp.headers(), &p)?;
        let body = resp.bytes().await?;
        let actual = Xxh3::of(&body);
        if actual != expected {
            return Err(ClientError::HashMismatch {
                path: path.to_string(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(body)
    }

    pub(crate) async fn delete_file_once(&self, path: &str) -> Result<()> {
        self.delete_file_inner(path, None).await
    }

    /// Deletes a file only if its current revision is `rev`.
    pub(crate) async fn delete_file_if_once(&self, path: &str, rev: u64) -> Result<()> {
        self.delete_file_inner(path, Some(rev)).await
    }

    async fn delete_file_inner(&self, path: &str, if_match: Option<u64>) -> Result<()> {
        let p = parse_path(path)?;
        let mut req = self.request(Method::DELETE, self.file_url(&p));
        if let Some(rev) = if_match {
            req = req.header("if-match", format!("\"{rev}\""));
        }
        check(req.send().await?, path).await?;
        Ok(())
    }

    /// Metadata from `HEAD /files/{path}`.
    pub(crate) async fn get_file_metadata_once(&self, path: &str) -> Result<FileMetadata> {
        let p = parse_path(path)?;
        let resp = self.request(Method::HEAD, self.file_url(&p)).send().await?;
        if !resp.status().is_success() {
            // HEAD answers carry no body: map the status alone.
            return Err(match resp.status() {
                StatusCode::NOT_FOUND => ClientError::FileNotFound {
                    path: path.to_string(),
                },
                s => ClientError::Server {
                    status: s.as_u16(),
                    code: if s == StatusCode::CONFLICT {
                        ErrorCode::IsADirectory
                    } else {
                        ErrorCode::Unknown
                    },
                    message: s.to_string(),
                    path: path.to_string(),
                },
            });
        }
        let h = resp.headers();
        let bad = |what: &str| ClientError::Protocol(format!("HEAD {path}: missing or invalid {what}"));
        Ok(FileMetadata {
            path: p.to_string(),
            name: p.name().to_string(),
            size: header(h, headers::FILE_SIZE)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad("X-File-Size"))?,
            modified: header(h, headers::MODIFIED_TIME)
                .and_then(parse_rfc3339)
                .ok_or_else(|| bad("X-Modified-Time"))?,
            is_directory: false,
            xxhash3: header_hash(h, &p)?,
            rev: rev_from_etag(h).ok_or_else(|| bad("ETag"))?,
        })
    }

    pub(crate) async fn create_directory_once(&self, path: &str) -> Result<FileMetadata> {
        let p = parse_path(path)?;
        let resp = check(self.request(Method::POST, self.dir_url(&p)).send().await?, path).await?;
        Ok(resp.json().await?)
    }

    /// Deletes a directory and everything in it.
    pub(crate) async fn delete_directory_once(&self, path: &str) -> Result<()> {
        let p = parse_path(path)?;
        check(self.request(Method::DELETE, self.dir_url(&p)).send().await?, path).await?;
        Ok(())
    }

    /// Direct children of a directory (`None` = the root).
    pub(crate) async fn list_directory_once(&self, path: Option<&str>) -> Result<DirectoryListing> {
        let p = match path {
            None => VPath::root(),
            Some(s) => VPath::parse(s).map_err(|e| ClientError::InvalidPath {
                path: s.to_string(),
                reason: e.to_string(),
            })?,
        };
        let resp = check(
            self.request(Method::GET, self.dir_url(&p)).send().await?,
            p.as_str(),
        )
        .await?;
        Ok(resp.json().await?)
    }

    /// Streams a local file to the server, creating (`replace = false`) or replacing it.
    /// The file is hashed first so the server can refuse a body that changed in flight;
    /// its mtime travels as `X-Modified-Time`.
    pub(crate) async fn upload_path_once(
        &self,
        remote: &str,
        local: &Path,
        replace: bool,
        if_match: Option<u64>,
    ) -> Result<FileMetadata> {
        let p = parse_path(remote)?;
        let io_err = |source| ClientError::Io {
            path: local.display().to_string(),
            source,
        };
        let (hash, len) = hash_file_async(local).await.map_err(io_err)?;
        let file = tokio::fs::File::open(local).await.map_err(io_err)?;
        let mtime = file_mtime(local).await.map_err(io_err)?;
        let me = self.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |piece| {
            if let Ok(piece) = piece {
                me.sent(piece.len() as u64);
            }
        });
        let body = reqwest::Body::wrap_stream(stream);
        let req = self
            .write_request(&p, replace, if_match)
            .header(headers::FILE_HASH, hash.to_string())
            .header(headers::MODIFIED_TIME, format_rfc3339(mtime))
            .header(CONTENT_LENGTH, len)
            .body(body);
        let resp = check(req.send().await?, remote).await?;
        Ok(resp.json().await?)
    }

    /// Streams a file to `local`, verifying its xxh3 before it appears there: the bytes go to
    /// a temporary file beside `local`, which is fsynced and renamed only when the hash
    /// matches. Returns the verified hash.
    pub(crate) async fn download_to_once(&self, remote: &str, local: &Path) -> Result<FileMetadata> {
        let p = parse_path(remote)?;
        let resp = check(self.request(Method::GET, self.file_url(&p)).send().await?, remote).await?;
        let expected = header_hash(resp.headers(), &p)?;
        let rev = rev_from_etag(resp.headers());
        let modified = header(resp.headers(), headers::MODIFIED_TIME).and_then(parse_rfc3339);
        let dir = local
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.volebarn-{:016x}.tmp", rand::random::<u64>()));
        let result = async {
            let io_err = |source| ClientError::Io {
                path: tmp.display().to_string(),
                source,
            };
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err)?;
            let mut hasher = Xxh3Hasher::new();
            let mut size = 0u64;
            let mut stream = resp.bytes_stream();
            while let Some(piece) = stream.next().await {
                let piece = piece?;
                hasher.update(&piece);
                size += piece.len() as u64;
                file.write_all(&piece).await.map_err(io_err)?;
                self.received(piece.len() as u64);
            }
            // tokio's File writes in the background: wait for every byte before syncing.
            file.flush().await.map_err(io_err)?;
            let actual = hasher.finish();
            if actual != expected {
                return Err(ClientError::HashMismatch {
                    path: remote.to_string(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
            let file = file.into_std().await;
            if let Some(nanos) = modified {
                // The file keeps the author's modification time, not the download time.
                let t = std::time::UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64);
                file.set_modified(t).map_err(io_err)?;
            }
            file.sync_all().map_err(io_err)?;
            drop(file);
            tokio::fs::rename(&tmp, local)
                .await
                .map_err(|source| ClientError::Io {
                    path: local.display().to_string(),
                    source,
                })?;
            Ok(FileMetadata {
                path: p.to_string(),
                name: p.name().to_string(),
                size,
                modified: modified.unwrap_or_default(),
                is_directory: false,
                xxhash3: actual,
                rev: rev.unwrap_or_default(),
            })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

/// A local file's mtime in Unix nanoseconds.
pub(crate) async fn file_mtime(path: &Path) -> std::io::Result<i64> {
    Ok(time_nanos(tokio::fs::metadata(path).await?.modified()?))
}

pub(crate) fn time_nanos(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// The xxh3 and length of the file at `path`, read in 1 MiB pieces; `on_read` hears each
/// piece's length (for bytes-read figures). Blocking: the one file hash of the client and the
/// crates built on it (async callers go through [`hash_file_async`]).
pub fn hash_file(path: &Path, mut on_read: impl FnMut(u64)) -> std::io::Result<(Xxh3, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Xxh3Hasher::new();
    // Sized to the file (up to 1 MiB): a zeroed 1 MiB buffer per small file cost a scan of
    // 100,000 files seconds of memset (or of mapping and unmapping).
    let size = f.metadata().map_or(0, |m| m.len());
    let mut buf = vec![
        0u8;
        usize::try_from(size)
            .unwrap_or(usize::MAX)
            .clamp(8 << 10, 1 << 20)
    ];
    let mut len = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            return Ok((hasher.finish(), len));
        }
        on_read(n as u64);
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// [`hash_file`] on a blocking thread.
pub(crate) async fn hash_file_async(path: &Path) -> std::io::Result<(Xxh3, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || hash_file(&path, |_| {}))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("7"), Some(7));
        let in_a_minute = std::time::SystemTime::now() + std::time::Duration::from_secs(61);
        let secs = parse_retry_after(&httpdate::fmt_http_date(in_a_minute)).expect("date");
        assert!((59..=61).contains(&secs), "{secs}");
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(0),
            "a past date means now"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn segments_are_encoded_so_dots_and_slashes_cannot_escape() {
        let p = VPath::parse("a b/ü?#%/x.txt").expect("valid");
        assert_eq!(encode_path(&p), "a%20b/%C3%BC%3F%23%25/x%2Etxt");
        assert!(matches!(
            parse_path("a/../b"),
            Err(ClientError::InvalidPath { .. })
        ));
        assert!(matches!(parse_path("a//b"), Err(ClientError::InvalidPath { .. })));
    }
}
