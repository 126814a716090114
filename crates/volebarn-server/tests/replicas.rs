//! Two servers ("replicas") on the same metadata and chunk stores, driven through the service
//! layer: nothing lives only in one server's memory ([docs/design.md](docs/design.md) §8). The GC/upload race is
//! interleaved step by step in both orders, and a chunk a commit depends on is never lost.

use bytes::Bytes;
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;
use volebarn_core::timefmt::now_nanos;
use volebarn_core::types::{ChunkSpec, ChunkedCommit};
use volebarn_core::{ChunkId, VPath, Xxh3};
use volebarn_server::error::ServiceError;
use volebarn_server::service::{Retention, Service, ServiceConfig, UploadOptions, WriteMode};
use volebarn_server::storage::chunks::fs::FsChunkStore;
use volebarn_server::storage::chunks::s3::S3ChunkStore;
use volebarn_server::storage::meta::postgres::PgMetaStore;
use volebarn_server::storage::meta::rocks::RocksMetaStore;
use volebarn_server::storage::{ChunkStore, MetaStore};

const GRACE: Duration = Duration::from_secs(3600);

/// The engines two replicas share (every pair the server can run on).
#[derive(Clone, Copy, Debug)]
enum Backend {
    /// One RocksDB and one chunk directory, shared in-process (the embedded default).
    RocksFs,
    /// One PostgreSQL database, each replica with its own connections, and a shared directory.
    PostgresFs,
    /// One PostgreSQL database and one S3 bucket (Garage), each replica with its own clients.
    PostgresS3,
    /// The embedded metadata store with chunks in S3 (a mixed pair).
    RocksS3,
}

struct Pair {
    a: Service,
    b: Service,
    chunks: Arc<dyn ChunkStore>,
    _keep: Box<dyn Any>,
}

async fn pair(backend: Backend) -> Pair {
    let dir = tempfile::tempdir().expect("tempdir");
    let (meta_a, meta_b): (Arc<dyn MetaStore>, Arc<dyn MetaStore>) = match backend {
        Backend::RocksFs => {
            let m: Arc<dyn MetaStore> =
                Arc::new(RocksMetaStore::open(&dir.path().join("meta")).expect("meta"));
            (m.clone(), m)
        }
        Backend::PostgresFs | Backend::PostgresS3 => {
            let url = volebarn_testkit::pg_cluster().database();
            let connect = move || PgMetaStore::connect(&url).expect("connect");
            let (a, b) = tokio::task::spawn_blocking(move || (connect(), connect()))
                .await
                .expect("connect task");
            (Arc::new(a), Arc::new(b))
        }
        Backend::RocksS3 => {
            let m: Arc<dyn MetaStore> =
                Arc::new(RocksMetaStore::open(&dir.path().join("meta")).expect("meta"));
            (m.clone(), m)
        }
    };
    let (chunks_a, chunks_b): (Arc<dyn ChunkStore>, Arc<dyn ChunkStore>) = match backend {
        Backend::RocksFs | Backend::PostgresFs => {
            let fs: Arc<dyn ChunkStore> = Arc::new(
                FsChunkStore::open(&dir.path().join("chunks"), &dir.path().join("tmp")).expect("chunks"),
            );
            (fs.clone(), fs)
        }
        Backend::PostgresS3 | Backend::RocksS3 => {
            let bucket = tokio::task::spawn_blocking(|| volebarn_testkit::Garage::get().bucket())
                .await
                .expect("bucket task");
            let url = bucket.url("replicas");
            let a = S3ChunkStore::open(&url, &bucket.settings).await.expect("s3 a");
            let b = S3ChunkStore::open(&url, &bucket.settings).await.expect("s3 b");
            (Arc::new(a), Arc::new(b))
        }
    };
    let config = ServiceConfig {
        max_file_size: 1 << 30,
        // Overwritten and deleted content is released at once, so chunks become orphans.
        versions_keep: 0,
        retention: Retention {
            orphan_grace: GRACE,
            ..Retention::default()
        },
    };
    Pair {
        a: Service::new(meta_a, chunks_a.clone(), config.clone()).expect("service a"),
        b: Service::new(meta_b, chunks_b, config).expect("service b"),
        chunks: chunks_a,
        _keep: Box::new(dir),
    }
}

/// Runs each scenario on every backend pair, as its own test.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod rocks_fs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::RocksFs).await
            })*
        }
        mod postgres_fs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::PostgresFs).await
            })*
        }
        mod postgres_s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::PostgresS3).await
            })*
        }
        mod rocks_s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::RocksS3).await
            })*
        }
    };
}

on_every_backend!(
    a_write_through_one_replica_wakes_and_is_read_through_the_other,
    gc_on_one_replica_never_loses_a_chunk_the_other_commits,
    a_commit_that_comes_first_keeps_its_chunk_from_gc,
    freed_chunks_wait_for_the_grace_period,
    small_files_live_inline_with_no_chunk_files,
);

fn p(s: &str) -> VPath {
    VPath::parse(s).expect("path")
}

/// 300 KiB of distinct bytes: one chunk, too big to live inline, so it is in the chunk store.
fn content(seed: u8) -> Vec<u8> {
    (0..300 * 1024u32)
        .map(|i| (i.wrapping_mul(31) as u8) ^ seed)
        .collect()
}

async fn upload(s: &Service, path: &str, data: &[u8]) {
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(data))]);
    s.write_file(
        &p(path),
        WriteMode::Upsert { if_match: None },
        UploadOptions::default(),
        body,
    )
    .await
    .expect("upload");
}

fn commit_of(data: &[u8]) -> ChunkedCommit {
    ChunkedCommit {
        size: data.len() as u64,
        xxhash3: Some(Xxh3::of(data)),
        chunks: vec![ChunkSpec {
            id: ChunkId::of(data),
            len: data.len() as u32,
        }],
    }
}

async fn read(s: &Service, path: &str) -> Vec<u8> {
    use futures_util::StreamExt;
    let rec = s.open_file(&p(path)).await.expect("open");
    let mut out = Vec::new();
    let mut stream = std::pin::pin!(s.content_stream(&p(path), &rec));
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece.expect("chunk"));
    }
    out
}

async fn a_write_through_one_replica_wakes_and_is_read_through_the_other(backend: Backend) {
    let t = pair(backend).await;
    let mut head_b = t.b.subscribe_head();
    let before = *head_b.borrow_and_update();
    upload(&t.a, "doc.txt", b"written through a").await;
    // b's long-polls wake within a second of a's commit (through the store's notification).
    tokio::time::timeout(Duration::from_secs(1), head_b.wait_for(|h| *h > before))
        .await
        .expect("b woken within 1 s")
        .expect("store alive");
    assert_eq!(read(&t.b, "doc.txt").await, b"written through a");
    // Revisions come from the shared store: b continues after a.
    upload(&t.b, "other.txt", b"through b").await;
    let ra = t.a.stat(&p("doc.txt")).await.expect("stat").rev;
    let rb = t.a.stat(&p("other.txt")).await.expect("stat").rev;
    assert!(rb > ra);
}

async fn gc_on_one_replica_never_loses_a_chunk_the_other_commits(backend: Backend) {
    let t = pair(backend).await;
    let data = content(1);
    let id = ChunkId::of(&data);
    upload(&t.a, "f", &data).await;

    // B's client asks which chunks are missing: none, X is present.
    assert!(t.b.missing_chunks(vec![id]).await.expect("missing").is_empty());
    // A deletes the only file referencing X, and A's GC runs past the grace period.
    t.a.delete_file(&p("f"), None).await.expect("delete");
    let later = now_nanos() + GRACE.as_nanos() as i64 + 1;
    assert_eq!(t.a.gc(later).await.expect("gc").orphans_deleted, 1);
    assert_eq!(t.chunks.contains_many(&[id]).await.expect("contains"), vec![None]);

    // B commits the file it believes complete: refused, naming the chunk, nothing recorded.
    let err =
        t.b.commit_chunks(&p("g"), WriteMode::Create, commit_of(&data), None)
            .await
            .expect_err("a commit must not reference deleted bytes");
    match err {
        ServiceError::MissingChunks { ids, .. } => assert_eq!(ids, vec![id.to_hex()]),
        other => panic!("expected missing_chunks, got {other:?}"),
    }
    assert!(t.b.stat(&p("g")).await.is_err());
    // The client uploads the chunk again and the commit succeeds with the right bytes.
    t.b.put_chunk(id, Bytes::from(data.clone()))
        .await
        .expect("put chunk");
    t.b.commit_chunks(&p("g"), WriteMode::Create, commit_of(&data), None)
        .await
        .expect("commit");
    assert_eq!(read(&t.a, "g").await, data);
}

async fn a_commit_that_comes_first_keeps_its_chunk_from_gc(backend: Backend) {
    let t = pair(backend).await;
    let data = content(2);
    let id = ChunkId::of(&data);
    upload(&t.a, "f", &data).await;
    assert!(t.b.missing_chunks(vec![id]).await.expect("missing").is_empty());
    t.a.delete_file(&p("f"), None).await.expect("delete");
    // This time B commits before A's GC runs: the reference keeps X alive.
    t.b.commit_chunks(&p("g"), WriteMode::Create, commit_of(&data), None)
        .await
        .expect("commit");
    let later = now_nanos() + GRACE.as_nanos() as i64 + 1;
    assert_eq!(t.a.gc(later).await.expect("gc").orphans_deleted, 0);
    assert_eq!(read(&t.b, "g").await, data);
}

async fn freed_chunks_wait_for_the_grace_period(backend: Backend) {
    let t = pair(backend).await;
    let data = content(3);
    let id = ChunkId::of(&data);
    upload(&t.a, "f", &data).await;
    t.a.delete_file(&p("f"), None).await.expect("delete");
    assert_eq!(t.a.gc(now_nanos()).await.expect("gc").orphans_deleted, 0);
    assert!(t.chunks.contains_many(&[id]).await.expect("contains")[0].is_some());
    let later = now_nanos() + GRACE.as_nanos() as i64 + 1;
    assert_eq!(t.b.gc(later).await.expect("gc").orphans_deleted, 1);
    assert_eq!(t.chunks.contains_many(&[id]).await.expect("contains"), vec![None]);
}

async fn small_files_live_inline_with_no_chunk_files(backend: Backend) {
    let t = pair(backend).await;
    upload(&t.a, "small.txt", b"tiny").await;
    assert!(
        t.chunks.list().await.expect("list").is_empty(),
        "no chunk file for a small file"
    );
    assert_eq!(read(&t.b, "small.txt").await, b"tiny");
    // A replaced small file's bytes go with its last reference (versions are off here).
    upload(&t.a, "small.txt", b"other").await;
    assert_eq!(read(&t.a, "small.txt").await, b"other");
}
