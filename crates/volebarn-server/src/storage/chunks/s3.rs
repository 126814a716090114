//! [`ChunkStore`] on any S3-compatible object store (AWS S3, Garage, MinIO, …) through the
//! `object_store` crate: one object per chunk at `<prefix>/ab/cd/<blake3-hex>`.
//!
//! S3 gives the guarantees the trait asks for without any staging of our own: a PUT is
//! atomic (readers see the whole object or none) and durable once acknowledged, and since a
//! chunk's key is its hash, two servers putting the same chunk write the same bytes. Chunks
//! are at most 4 MiB (FastCDC's maximum), so a plain PUT is enough; multipart uploads, with
//! their extra round trips and leftover parts, would buy nothing.
//!
//! Requests are path-style (`http://endpoint/bucket/key`), which every S3 server accepts,
//! and signed with SigV4 including the payload's SHA-256, so the server rejects a body
//! damaged in transit. What the bucket returns is still checked against the chunk's BLAKE3
//! id on every read.

use super::{ChunkStore, StoredChunk};
use crate::storage::{StorageError, StorageResult};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use volebarn_core::ChunkId;

/// Requests in flight for one `put_many` or `contains_many`: S3 latency is per request, so
/// a batch goes as fast as the requests overlap, and 16 keeps one server's share of the
/// connection pool (and the bucket's request rate) modest.
const IN_FLIGHT: usize = 16;
/// A TCP connection that is not up by then is not coming.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One request, including the transfer of a 4 MiB chunk over a slow link.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `open` waits for the bucket to answer before it gives up with one clear error.
const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// Where and as whom to reach S3. Every field left `None` falls back to object_store's own
/// default (AWS itself, region `us-east-1`, credentials from the instance). The server takes
/// them from the environment ([`S3Settings::from_env`]); tests pass them explicitly so that
/// nothing mutates the process environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// `http(s)://host:port` of an S3-compatible server; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Plain HTTP to the endpoint (a local Garage or MinIO); refused unless set.
    pub allow_http: bool,
}

impl fmt::Debug for S3Settings {
    /// Never prints the secret key (settings end up in logs and panic messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Settings {
    /// The variables the AWS tools (and object_store) read: `AWS_ENDPOINT` or
    /// `AWS_ENDPOINT_URL`, `AWS_REGION` or `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP=true`. Empty values count as unset.
    pub fn from_env() -> S3Settings {
        S3Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`S3Settings::from_env`] over any source of variables.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> S3Settings {
        let var = |names: &[&str]| {
            names
                .iter()
                .filter_map(|n| lookup(n))
                .map(|v| v.trim().to_string())
                .find(|v| !v.is_empty())
        };
        S3Settings {
            endpoint: var(&["AWS_ENDPOINT", "AWS_ENDPOINT_URL"]),
            region: var(&["AWS_REGION", "AWS_DEFAULT_REGION"]),
            access_key_id: var(&["AWS_ACCESS_KEY_ID"]),
            secret_access_key: var(&["AWS_SECRET_ACCESS_KEY"]),
            allow_http: var(&["AWS_ALLOW_HTTP"])
                .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes")),
        }
    }

    /// Where the bucket lives, for error messages.
    fn place(&self) -> String {
        match (&self.endpoint, &self.region) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, Some(region)) => format!("AWS region {region}"),
            (None, None) => "AWS".to_string(),
        }
    }
}

/// `s3://BUCKET/PREFIX` taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct S3Url {
    bucket: String,
    /// Empty for the bucket's root.
    prefix: Path,
}

fn parse_url(url: &str) -> StorageResult<S3Url> {
    let bad = |why: &str| StorageError::Db(format!("S3 URL {url:?}: {why} (expected s3://BUCKET/PREFIX)"));
    let rest = url.strip_prefix("s3://").ok_or_else(|| bad("not an s3:// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("no bucket"));
    }
    if bucket.contains(|c: char| c.is_whitespace() || matches!(c, '?' | '#' | '@' | ':')) {
        return Err(bad("not a valid bucket name"));
    }
    let prefix = Path::parse(prefix.trim_matches('/')).map_err(|e| bad(&format!("bad prefix: {e}")))?;
    Ok(S3Url {
        bucket: bucket.to_string(),
        prefix,
    })
}

/// The key of a chunk: `<prefix>/ab/cd/<hex>`, fanned out like the filesystem store so that
/// a listing of one level stays small and a key prefix spreads over the bucket's partitions.
fn chunk_key(prefix: &Path, id: &ChunkId) -> Path {
    let hex = id.to_hex();
    prefix
        .clone()
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(hex.as_str())
}

/// The chunk a key names, or `None` for any other object under the prefix.
fn chunk_of_key(prefix: &Path, key: &Path) -> Option<ChunkId> {
    let parts: Vec<String> = key
        .prefix_match(prefix)?
        .map(|p| p.as_ref().to_string())
        .collect();
    let [ab, cd, hex] = parts.as_slice() else {
        return None;
    };
    let id: ChunkId = hex.parse().ok()?;
    (id.to_hex() == *hex && hex[0..2] == **ab && hex[2..4] == **cd).then_some(id)
}

/// Retries for everyday requests: a few quick ones ride over a dropped connection or a
/// server's brief 503, while a real outage surfaces as an error within half a minute
/// rather than holding a client's request for object_store's default three.
fn operation_retries() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(30),
    }
}

/// Retries for the start-up probe: one, so that a wrong endpoint fails in seconds.
fn probe_retries() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            base: 2.0,
        },
        max_retries: 1,
        retry_timeout: Duration::from_secs(3),
    }
}

fn build(bucket: &str, settings: &S3Settings, retry: RetryConfig) -> StorageResult<AmazonS3> {
    let options = ClientOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_allow_http(settings.allow_http);
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(false)
        .with_client_options(options)
        .with_retry(retry);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &settings.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &settings.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    builder
        .build()
        .map_err(|e| StorageError::Db(format!("S3 bucket {bucket:?} at {}: {e}", settings.place())))
}

/// True when anything in `e`'s chain is an HTTP error of one of `kinds`.
fn http_error_is(e: &(dyn std::error::Error + 'static), kinds: &[HttpErrorKind]) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<HttpError>() {
            if kinds.contains(&h.kind()) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// The innermost error of `e`'s chain: what actually went wrong ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// S3's own explanation in an error body (`<Message>…</Message>`), if any.
fn s3_message(text: &str) -> Option<&str> {
    let start = text.find("<Message>")? + "<Message>".len();
    let len = text[start..].find("</Message>")?;
    Some(&text[start..start + len])
}

/// The one line `open` fails with when the probe does not succeed. object_store reports a
/// failed listing as a generic error carrying the status and S3's XML body, so the missing
/// bucket and the refused key are recognised by S3's error codes in that text (a bare 404
/// may just as well be a web server that is not S3, so it is shown as it came).
fn probe_failure(bucket: &str, place: &str, e: &object_store::Error) -> StorageError {
    let text = e.to_string();
    let why = if http_error_is(e, &[HttpErrorKind::Connect, HttpErrorKind::Timeout]) {
        format!("cannot reach the endpoint ({})", root_cause(e))
    } else if matches!(e, object_store::Error::NotFound { .. }) || text.contains("NoSuchBucket") {
        "bucket does not exist".to_string()
    } else if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || text.contains("AccessDenied")
        || text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
        || text.contains("403 Forbidden")
    {
        format!(
            "access denied ({}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            s3_message(&text).unwrap_or("403 Forbidden")
        )
    } else {
        text
    };
    StorageError::Db(format!("S3 bucket {bucket:?} at {place}: {why}"))
}

fn s3_error(e: object_store::Error) -> StorageError {
    StorageError::Db(format!("S3: {e}"))
}

#[derive(Clone)]
pub struct S3ChunkStore {
    store: Arc<AmazonS3>,
    prefix: Path,
}

impl fmt::Debug for S3ChunkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "S3ChunkStore({}, prefix {:?})",
            self.store,
            self.prefix.as_ref()
        )
    }
}

impl S3ChunkStore {
    /// Opens the store at `s3://BUCKET/PREFIX` and checks that the bucket answers, so that a
    /// wrong endpoint, bucket or key stops the server at start-up, within seconds, with one
    /// clear error — not at the first upload.
    pub async fn open(url: &str, settings: &S3Settings) -> StorageResult<S3ChunkStore> {
        let S3Url { bucket, prefix } = parse_url(url)?;
        let place = settings.place();
        if let Some(endpoint) = &settings.endpoint {
            if endpoint.starts_with("http://") && !settings.allow_http {
                return Err(StorageError::Db(format!(
                    "S3 bucket {bucket:?} at {endpoint}: the endpoint is plain HTTP; set AWS_ALLOW_HTTP=true to allow it"
                )));
            }
        }
        // The probe gets its own client with a single retry: the store's patient retries
        // are for a server that was up and hiccups, not for one that was never there.
        // Its first page of listing (one request, whatever the bucket holds) proves
        // endpoint, bucket and key.
        let probe = build(&bucket, settings, probe_retries())?;
        let listed = tokio::time::timeout(PROBE_TIMEOUT, probe.list(Some(&prefix)).next()).await;
        match listed {
            Ok(None | Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(probe_failure(&bucket, &place, &e)),
            Err(_) => {
                return Err(StorageError::Db(format!(
                    "S3 bucket {bucket:?} at {place}: cannot reach the endpoint (no answer within {} s)",
                    PROBE_TIMEOUT.as_secs()
                )))
            }
        }
        let store = build(&bucket, settings, operation_retries())?;
        tracing::info!(bucket = %bucket, prefix = prefix.as_ref(), at = %place, "S3 chunk store opened");
        Ok(S3ChunkStore {
            store: Arc::new(store),
            prefix,
        })
    }

    /// The object key of a chunk (tests and fsck look at the bucket itself).
    pub fn chunk_key(&self, id: &ChunkId) -> String {
        chunk_key(&self.prefix, id).to_string()
    }

    async fn put_one(&self, id: ChunkId, data: Bytes) -> StorageResult<()> {
        self.store
            .put(&chunk_key(&self.prefix, &id), PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(s3_error)
    }

    async fn len_of(&self, id: ChunkId) -> StorageResult<Option<u64>> {
        match self.store.head(&chunk_key(&self.prefix, &id)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error(e)),
        }
    }

    /// A listed object as a chunk, or `None` (with a warning) for a foreign key.
    fn stored(&self, meta: object_store::ObjectMeta) -> Option<StoredChunk> {
        let Some(id) = chunk_of_key(&self.prefix, &meta.location) else {
            tracing::warn!(key = %meta.location, "object under the chunk prefix is not a chunk; ignored");
            return None;
        };
        Some(StoredChunk {
            id,
            len: meta.size,
            // i64 nanoseconds reach the year 2262; a date beyond cannot come from S3.
            stored_at: meta.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX),
        })
    }
}

#[async_trait::async_trait]
impl ChunkStore for S3ChunkStore {
    /// Parallel PUTs; each is durable when acknowledged, so the batch is when all are. A
    /// chunk named twice in one batch is sent once.
    async fn put_many(&self, chunks: Vec<(ChunkId, Bytes)>) -> StorageResult<()> {
        let mut seen = HashSet::with_capacity(chunks.len());
        let unique: Vec<_> = chunks.into_iter().filter(|(id, _)| seen.insert(*id)).collect();
        stream::iter(unique)
            .map(|(id, data)| self.put_one(id, data))
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    async fn get(&self, id: &ChunkId) -> StorageResult<Bytes> {
        let got = match self.store.get(&chunk_key(&self.prefix, id)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Err(StorageError::MissingChunk(*id)),
            Err(e) => return Err(s3_error(e)),
        };
        let data = got.bytes().await.map_err(s3_error)?;
        if ChunkId::of(&data) != *id {
            return Err(StorageError::Corrupt(format!(
                "chunk {id} does not match its hash"
            )));
        }
        Ok(data)
    }

    /// Parallel HEADs, answered in the order asked.
    async fn contains_many(&self, ids: &[ChunkId]) -> StorageResult<Vec<Option<u64>>> {
        stream::iter(ids.iter().copied())
            .map(|id| self.len_of(id))
            .buffered(IN_FLIGHT)
            .try_collect()
            .await
    }

    async fn delete(&self, id: &ChunkId) -> StorageResult<()> {
        // S3 answers a DELETE of an absent key with success; NotFound is accepted too for
        // servers that say so.
        match self.store.delete(&chunk_key(&self.prefix, id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(e)),
        }
    }

    /// Every object under the prefix, page by page (1000 keys a request); keys that are not
    /// chunk keys are skipped with a warning, so a bucket shared with other data is safe.
    async fn list(&self) -> StorageResult<Vec<StoredChunk>> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let mut objects = self.store.list(prefix);
        let mut out = Vec::new();
        while let Some(meta) = objects.next().await {
            if let Some(chunk) = self.stored(meta.map_err(s3_error)?) {
                out.push(chunk);
            }
        }
        out.sort_by_key(|c| c.id);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_bucket_and_prefix() {
        let u = parse_url("s3://bucket").expect("bucket only");
        assert_eq!((u.bucket.as_str(), u.prefix.as_ref()), ("bucket", ""));
        let u = parse_url("s3://bucket/").expect("trailing slash");
        assert_eq!(u.prefix.as_ref(), "");
        let u = parse_url("s3://bucket/a/b/").expect("prefix");
        assert_eq!((u.bucket.as_str(), u.prefix.as_ref()), ("bucket", "a/b"));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, why) in [
            ("http://bucket/x", "not an s3:// URL"),
            ("s3://", "no bucket"),
            ("s3:///prefix", "no bucket"),
            ("s3://bucket/a//b", "bad prefix"),
        ] {
            let e = parse_url(url).expect_err(url).to_string();
            assert!(e.contains(why) && e.contains("s3://BUCKET/PREFIX"), "{url}: {e}");
        }
    }

    #[test]
    fn keys_fan_out_under_the_prefix_and_parse_back() {
        let id = ChunkId::of(b"x");
        let hex = id.to_hex();
        let with = chunk_key(&Path::from("p/q"), &id);
        assert_eq!(with.as_ref(), format!("p/q/{}/{}/{hex}", &hex[0..2], &hex[2..4]));
        assert_eq!(chunk_of_key(&Path::from("p/q"), &with), Some(id));
        let bare = chunk_key(&Path::default(), &id);
        assert_eq!(bare.as_ref(), format!("{}/{}/{hex}", &hex[0..2], &hex[2..4]));
        assert_eq!(chunk_of_key(&Path::default(), &bare), Some(id));
    }

    #[test]
    fn foreign_keys_are_not_chunks() {
        let id = ChunkId::of(b"x");
        let hex = id.to_hex();
        let p = Path::from("p");
        for key in [
            format!("p/{hex}"),
            format!("p/00/00/{hex}"),
            format!("p/{}/{}/{hex}.tmp", &hex[0..2], &hex[2..4]),
            format!("p/{}/{}/x/{hex}", &hex[0..2], &hex[2..4]),
            "p/readme.txt".to_string(),
            format!("q/{}/{}/{hex}", &hex[0..2], &hex[2..4]),
        ] {
            assert_eq!(chunk_of_key(&p, &Path::from(key.as_str())), None, "{key}");
        }
    }

    #[test]
    fn s3_explains_itself_in_the_error_body() {
        let body = "403 Forbidden: <?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>\
                    <Message>Forbidden: Invalid signature</Message></Error>";
        assert_eq!(s3_message(body), Some("Forbidden: Invalid signature"));
        assert_eq!(s3_message("403 Forbidden"), None);
    }

    #[test]
    fn settings_come_from_the_aws_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let s = S3Settings::from_lookup(env(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:3900"),
            ("AWS_DEFAULT_REGION", "garage"),
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_ALLOW_HTTP", "TRUE"),
        ]));
        assert_eq!(
            s,
            S3Settings {
                endpoint: Some("http://127.0.0.1:3900".into()),
                region: Some("garage".into()),
                access_key_id: Some("GK1".into()),
                secret_access_key: Some("s3cr3t".into()),
                allow_http: true,
            }
        );
        assert!(!format!("{s:?}").contains("s3cr3t"), "Debug hides the secret");
        let s = S3Settings::from_lookup(env(&[
            ("AWS_ENDPOINT", "http://a"),
            ("AWS_ENDPOINT_URL", "http://b"),
            ("AWS_REGION", ""),
            ("AWS_DEFAULT_REGION", "eu"),
        ]));
        assert_eq!(s.endpoint.as_deref(), Some("http://a"), "AWS_ENDPOINT wins");
        assert_eq!(
            s.region.as_deref(),
            Some("eu"),
            "an empty variable counts as unset"
        );
        assert!(!s.allow_http);
    }
}
