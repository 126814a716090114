//! The S3 chunk store against a real S3 server: the test kit's single-node Garage, one
//! bucket per test. What is checked is what an operator sees: the bucket's keys, start-up
//! errors that say what is wrong within seconds, and chunks that round-trip.

use bytes::Bytes;
use futures_util::stream::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use volebarn_core::ChunkId;
use volebarn_server::storage::chunks::s3::{S3ChunkStore, S3Settings};
use volebarn_server::storage::{ChunkStore, StorageError};
use volebarn_testkit::{Garage, S3Bucket};

/// Start-up against a bad endpoint or bucket must fail well within this.
const FAILS_WITHIN: Duration = Duration::from_secs(10);

async fn open(bucket: &S3Bucket, prefix: &str) -> S3ChunkStore {
    S3ChunkStore::open(&bucket.url(prefix), &bucket.settings)
        .await
        .expect("open the S3 chunk store")
}

/// A plain object_store client on the bucket, to look at (and tamper with) it directly.
fn raw(bucket: &S3Bucket) -> AmazonS3 {
    let s = &bucket.settings;
    AmazonS3Builder::new()
        .with_bucket_name(&bucket.name)
        .with_endpoint(s.endpoint.clone().expect("endpoint"))
        .with_region(s.region.clone().expect("region"))
        .with_access_key_id(s.access_key_id.clone().expect("key"))
        .with_secret_access_key(s.secret_access_key.clone().expect("secret"))
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("raw S3 client")
}

async fn keys(bucket: &S3Bucket) -> Vec<String> {
    let mut keys: Vec<String> = raw(bucket)
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list the bucket");
    keys.sort();
    keys
}

fn chunk(data: &[u8]) -> (ChunkId, Bytes) {
    (ChunkId::of(data), Bytes::copy_from_slice(data))
}

fn fan_out(id: &ChunkId) -> String {
    let hex = id.to_hex();
    format!("{}/{}/{hex}", &hex[0..2], &hex[2..4])
}

/// `open`'s error and how long it took to come.
async fn open_error(url: &str, settings: &S3Settings) -> (String, Duration) {
    let started = Instant::now();
    let err = S3ChunkStore::open(url, settings)
        .await
        .expect_err("open must fail");
    let took = started.elapsed();
    assert!(matches!(err, StorageError::Db(_)), "{err:?}");
    eprintln!("open {url} failed in {took:.1?}: {err}");
    (err.to_string(), took)
}

#[tokio::test]
async fn chunk_conformance_on_garage() {
    let garage = Garage::get();
    eprintln!("garage started in {:.1?}", garage.started_in);
    volebarn_server::storage::chunks::conformance::run_all(|| async {
        let bucket = garage.bucket();
        (open(&bucket, "volebarn/chunks").await, ())
    })
    .await;
    // Once more at the bucket's root (no prefix).
    volebarn_server::storage::chunks::conformance::run_all(|| async {
        let bucket = garage.bucket();
        (open(&bucket, "").await, ())
    })
    .await;
}

#[tokio::test]
async fn chunks_land_at_prefix_ab_cd_hex() {
    let bucket = Garage::get().bucket();
    let (a, b) = (chunk(b"first chunk"), chunk(b"second chunk"));
    open(&bucket, "tenant/chunks/")
        .await
        .put_many(vec![a.clone(), b.clone()])
        .await
        .expect("put");
    let mut expected = vec![
        format!("tenant/chunks/{}", fan_out(&a.0)),
        format!("tenant/chunks/{}", fan_out(&b.0)),
    ];
    expected.sort();
    assert_eq!(keys(&bucket).await, expected);

    let root = Garage::get().bucket();
    open(&root, "")
        .await
        .put_many(vec![a.clone()])
        .await
        .expect("put");
    assert_eq!(keys(&root).await, vec![fan_out(&a.0)], "no prefix: ab/cd/<hex>");
}

#[tokio::test]
async fn list_ignores_objects_that_are_not_chunks() {
    let bucket = Garage::get().bucket();
    let store = open(&bucket, "p").await;
    let (id, data) = chunk(b"the one real chunk");
    store.put_many(vec![(id, data)]).await.expect("put");
    let hex = id.to_hex();
    let raw = raw(&bucket);
    for key in [
        "p/readme.txt".to_string(),
        "p/ab/cd/not-a-hash".to_string(),
        format!("p/{hex}"),
        format!("p/00/00/{hex}"),
        format!("p/{}.part", fan_out(&id)),
        format!("p2/{}", fan_out(&ChunkId::of(b"another prefix"))),
        format!("other/{}", fan_out(&ChunkId::of(b"outside the prefix"))),
    ] {
        raw.put(&Path::from(key.as_str()), PutPayload::from_static(b"foreign"))
            .await
            .expect("put a foreign object");
    }
    let listed = store.list().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].id, listed[0].len), (id, 18));
    assert_eq!(
        store.contains_many(&[id]).await.expect("contains"),
        vec![Some(18)]
    );
}

#[tokio::test]
async fn bytes_changed_in_the_bucket_are_reported_as_corrupt() {
    let bucket = Garage::get().bucket();
    let store = open(&bucket, "c").await;
    let (id, data) = chunk(b"original bytes");
    store.put_many(vec![(id, data)]).await.expect("put");
    raw(&bucket)
        .put(
            &Path::from(store.chunk_key(&id).as_str()),
            PutPayload::from_static(b"rotten"),
        )
        .await
        .expect("overwrite");
    let err = store.get(&id).await.expect_err("corrupt");
    assert!(matches!(err, StorageError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn a_missing_bucket_fails_open_at_once_with_a_clear_error() {
    let garage = Garage::get();
    let (msg, took) = open_error("s3://no-such-bucket/chunks", &garage.settings()).await;
    assert_eq!(
        msg,
        format!(
            "database error: S3 bucket \"no-such-bucket\" at {}: bucket does not exist",
            garage.endpoint()
        )
    );
    assert!(took < FAILS_WITHIN, "took {took:?}");
}

#[tokio::test]
async fn a_wrong_secret_fails_open_with_access_denied() {
    let bucket = Garage::get().bucket();
    let mut settings = bucket.settings.clone();
    settings.secret_access_key = Some("0".repeat(64));
    let (msg, took) = open_error(&bucket.url("x"), &settings).await;
    assert_eq!(
        msg,
        format!(
            "database error: S3 bucket \"{}\" at {}: access denied (Forbidden: Invalid signature); \
             check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            bucket.name,
            Garage::get().endpoint()
        )
    );
    assert!(took < FAILS_WITHIN, "took {took:?}");
}

#[tokio::test]
async fn an_endpoint_nobody_listens_on_fails_open_within_seconds() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let settings = S3Settings {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        allow_http: true,
        access_key_id: Some("GK0".into()),
        secret_access_key: Some("s".into()),
        ..S3Settings::default()
    };
    let (msg, took) = open_error("s3://bucket/p", &settings).await;
    assert!(
        msg.starts_with(&format!(
            "database error: S3 bucket \"bucket\" at http://127.0.0.1:{port}: cannot reach the endpoint ("
        )) && msg.to_lowercase().contains("connection refused"),
        "{msg}"
    );
    assert!(took < FAILS_WITHIN, "took {took:?}");
}

#[tokio::test]
async fn an_endpoint_that_never_answers_fails_open_within_seconds() {
    // The kernel accepts the connection, nobody reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().expect("addr"));
    let settings = S3Settings {
        endpoint: Some(endpoint.clone()),
        allow_http: true,
        access_key_id: Some("GK0".into()),
        secret_access_key: Some("s".into()),
        ..S3Settings::default()
    };
    let (msg, took) = open_error("s3://bucket", &settings).await;
    assert_eq!(
        msg,
        format!(
            "database error: S3 bucket \"bucket\" at {endpoint}: cannot reach the endpoint (no answer within 8 s)"
        )
    );
    assert!(took < FAILS_WITHIN, "took {took:?}");
}

#[tokio::test]
async fn plain_http_needs_allow_http_and_bad_urls_say_why() {
    let mut settings = Garage::get().settings();
    settings.allow_http = false;
    let (msg, _) = open_error("s3://bucket", &settings).await;
    assert!(msg.contains("AWS_ALLOW_HTTP=true"), "{msg}");
    let settings = Garage::get().settings();
    for url in ["http://bucket/p", "s3:///p", "bucket"] {
        let (msg, _) = open_error(url, &settings).await;
        assert!(msg.contains("expected s3://BUCKET/PREFIX"), "{url}: {msg}");
    }
}
