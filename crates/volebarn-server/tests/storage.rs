//! Durability, dedup, refcounts, versions and cleanup, observed on disk.

use bytes::Bytes;
use std::time::Duration;
use volebarn_client::{ClientError, ErrorCode, Xxh3};
use volebarn_core::chunking::chunk_boundaries;
use volebarn_core::ChunkId;
use volebarn_server::storage::INLINE_MAX;
use volebarn_testkit::{pseudo_random, wait_for, TestServer};

/// Runs GC with a clock past the orphan grace period: chunk files nothing references are
/// deleted then, never at once ([docs/design.md](docs/design.md) §8).
async fn collect_garbage(t: &TestServer) {
    let later = volebarn_core::timefmt::now_nanos() + 25 * 3600 * 1_000_000_000;
    t.server().service.gc(later).await.expect("gc");
}

/// The chunks of `data` that live in chunk files (small ones are inline in the metadata).
fn distinct_chunks(data: &[u8]) -> Vec<ChunkId> {
    let mut ids: Vec<ChunkId> = chunk_boundaries(data)
        .iter()
        .filter(|(_, l)| *l > INLINE_MAX as usize)
        .map(|(o, l)| ChunkId::of(&data[*o..o + l]))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn on_disk_ids(t: &TestServer) -> Vec<ChunkId> {
    let mut ids: Vec<ChunkId> = t
        .chunk_files()
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .expect("chunk file named by BLAKE3")
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn multi_chunk_files_dedup_and_free_their_chunks() {
    // Versions off: deleting the last reference frees the chunks, and GC deletes their bytes.
    let t = TestServer::start_with(|c| c.versions_keep = 0).await;
    let data = Bytes::from(pseudo_random(10 * 1024 * 1024 + 123, 5));
    let expected = distinct_chunks(&data);
    assert!(expected.len() >= 3, "a 10 MiB file spans several chunks");

    t.client
        .upload_file("one/copy.bin", data.clone())
        .await
        .expect("upload 1");
    t.client
        .upload_file("two/copy.bin", data.clone())
        .await
        .expect("upload 2");
    assert_eq!(on_disk_ids(&t), expected, "same content twice is stored once");
    // Every chunk file holds exactly the bytes its name promises.
    for p in t.chunk_files() {
        let bytes = std::fs::read(&p).expect("read chunk");
        assert_eq!(
            ChunkId::of(&bytes).to_hex(),
            p.file_name().and_then(|n| n.to_str()).expect("name")
        );
    }
    assert_eq!(
        t.client.download_file("two/copy.bin").await.expect("download"),
        data
    );

    t.client.delete_file("one/copy.bin").await.expect("delete 1");
    assert_eq!(on_disk_ids(&t), expected, "still referenced by the second file");
    assert_eq!(
        t.client.download_file("two/copy.bin").await.expect("download"),
        data
    );
    t.client.delete_file("two/copy.bin").await.expect("delete 2");
    collect_garbage(&t).await;
    assert!(t.chunk_files().is_empty(), "last reference gone → chunks gone");
    assert!(t.tmp_files().is_empty());
}

#[tokio::test]
async fn overwrite_frees_only_unshared_chunks() {
    let t = TestServer::start_with(|c| c.versions_keep = 0).await;
    let a = pseudo_random(3 * 1024 * 1024, 1);
    let b = pseudo_random(3 * 1024 * 1024, 2);
    t.client
        .upload_file("a", Bytes::from(a.clone()))
        .await
        .expect("a");
    t.client
        .upload_file("b", Bytes::from(a.clone()))
        .await
        .expect("b");
    t.client
        .update_file("a", Bytes::from(b.clone()))
        .await
        .expect("overwrite a");
    let mut both = distinct_chunks(&a);
    both.extend(distinct_chunks(&b));
    both.sort();
    assert_eq!(on_disk_ids(&t), both);
    t.client
        .update_file("b", Bytes::from(b.clone()))
        .await
        .expect("overwrite b");
    collect_garbage(&t).await;
    assert_eq!(
        on_disk_ids(&t),
        distinct_chunks(&b),
        "a's chunks freed once nothing uses them"
    );
}

#[tokio::test]
async fn deleted_content_is_kept_as_a_version_by_default() {
    let t = TestServer::start().await;
    let data = Bytes::from(pseudo_random(600_000, 9));
    t.client
        .upload_file("keep/me", data.clone())
        .await
        .expect("upload");
    t.client.delete_file("keep/me").await.expect("delete");
    assert_eq!(
        on_disk_ids(&t),
        distinct_chunks(&data),
        "a deleted file stays recoverable"
    );
}

#[tokio::test]
async fn data_survives_restart() {
    let mut t = TestServer::start().await;
    let data = Bytes::from(pseudo_random(5 * 1024 * 1024, 3));
    let m = t
        .client
        .upload_file("persist/big.bin", data.clone())
        .await
        .expect("upload");
    t.client
        .create_directory("persist/empty-dir")
        .await
        .expect("mkdir");
    let token = t.token().to_string();
    t.restart().await;
    assert_eq!(t.token(), token, "the generated token is reused");
    assert_eq!(
        t.client.download_file("persist/big.bin").await.expect("download"),
        data
    );
    let head = t.client.get_file_metadata("persist/big.bin").await.expect("head");
    assert_eq!((head.rev, head.xxhash3), (m.rev, Xxh3::of(&data)));
    let names: Vec<_> = t
        .client
        .list_directory(Some("persist"))
        .await
        .expect("list")
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["big.bin", "empty-dir"]);
    // Revisions keep increasing after a restart.
    let m2 = t
        .client
        .upload_file("persist/next", Bytes::from_static(b"n"))
        .await
        .expect("upload");
    assert!(m2.rev > m.rev);
}

#[tokio::test]
async fn hash_mismatch_stores_nothing() {
    let t = TestServer::start().await;
    let resp = t
        .raw()
        .post(t.url("/files/bad-hash.bin"))
        .bearer_auth(t.token())
        .header("x-file-hash", "0123456789abcdef")
        .body(pseudo_random(2 * 1024 * 1024, 4))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    let body: volebarn_core::OperationError = resp.json().await.expect("error body");
    assert_eq!(body.error_code, ErrorCode::HashMismatch);
    assert_eq!(body.path, "bad-hash.bin");
    assert!(matches!(
        t.client.get_file_metadata("bad-hash.bin").await,
        Err(ClientError::FileNotFound { .. })
    ));
    assert!(t.chunk_files().is_empty());
    assert!(t.tmp_files().is_empty());
}

#[tokio::test]
async fn too_large_is_413_and_stores_nothing() {
    let t = TestServer::start_with(|c| c.max_file_size = 1024 * 1024).await;
    let err = t
        .client
        .upload_file("big", Bytes::from(vec![1u8; 1024 * 1024 + 1]))
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(413), Some(ErrorCode::PayloadTooLarge))
    );
    // Without a Content-Length the limit is enforced while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..20).map(|_| Ok(vec![2u8; 100_000])).collect();
    let resp = t
        .raw()
        .post(t.url("/files/streamed"))
        .bearer_auth(t.token())
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 413);
    assert!(t
        .client
        .list_directory(None)
        .await
        .expect("list")
        .entries
        .is_empty());
    assert!(wait_for(Duration::from_secs(10), || t.tmp_files().is_empty()).await);
    t.client
        .upload_file("fits", Bytes::from(vec![1u8; 1024 * 1024]))
        .await
        .expect("exactly the limit fits");
}

#[tokio::test]
async fn disconnect_mid_upload_leaves_nothing_behind() {
    let t = TestServer::start().await;
    // 6 MiB of a promised 20 MiB, then the body fails and the client drops the connection.
    let mut pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..6).map(|i| Ok(pseudo_random(1024 * 1024, i))).collect();
    pieces.push(Err(std::io::Error::other("client gave up")));
    let res = t
        .raw()
        .post(t.url("/files/partial.bin"))
        .bearer_auth(t.token())
        .header("content-length", 20 * 1024 * 1024)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(pieces)))
        .send()
        .await;
    assert!(res.is_err(), "the request itself fails");
    // The server notices the broken body, then drops its staged chunks. Each chunk put
    // syncs the file system: on a machine busy writing elsewhere that alone took over 20 s.
    let clean = wait_for(Duration::from_secs(60), || {
        t.tmp_files().is_empty() && t.chunk_files().is_empty()
    })
    .await;
    assert!(clean, "tmp: {:?}, chunks: {:?}", t.tmp_files(), t.chunk_files());
    assert!(matches!(
        t.client.get_file_metadata("partial.bin").await,
        Err(ClientError::FileNotFound { .. })
    ));
    assert!(t
        .client
        .list_directory(None)
        .await
        .expect("list")
        .entries
        .is_empty());
}

#[tokio::test]
async fn version_retention_frees_the_oldest_versions() {
    let t = TestServer::start_with(|c| c.versions_keep = 2).await;
    let contents: Vec<Vec<u8>> = (0..5).map(|i| pseudo_random(400_000, 100 + i)).collect();
    t.client
        .upload_file("v", Bytes::from(contents[0].clone()))
        .await
        .expect("upload");
    for c in &contents[1..] {
        t.client
            .update_file("v", Bytes::from(c.clone()))
            .await
            .expect("overwrite");
    }
    // Current content plus the two most recent previous versions.
    let mut kept: Vec<ChunkId> = contents[2..].iter().flat_map(|c| distinct_chunks(c)).collect();
    kept.sort();
    collect_garbage(&t).await;
    assert_eq!(on_disk_ids(&t), kept);
    assert_eq!(
        t.client.download_file("v").await.expect("download"),
        Bytes::from(contents[4].clone())
    );
}
