//! Move, copy and search.

use bytes::Bytes;
use std::time::{Duration, Instant};
use volebarn_client::{ErrorCode, FileUpload, Xxh3};
use volebarn_testkit::{pseudo_random, TestServer};

#[tokio::test]
async fn move_and_copy_files() {
    let t = TestServer::start().await;
    let c = &t.client;
    let data = Bytes::from(pseudo_random(3 * 1024 * 1024, 21));
    c.upload_file("src/a.bin", data.clone()).await.expect("upload");
    let chunks_before = t.chunk_files();

    let moved = c.move_file("src/a.bin", "dst/deeper/a.bin").await.expect("move");
    assert_eq!(
        (moved.path.as_str(), moved.xxhash3),
        ("dst/deeper/a.bin", Xxh3::of(&data))
    );
    assert_eq!(
        c.get_file_metadata("src/a.bin").await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(c.download_file("dst/deeper/a.bin").await.expect("download"), data);

    c.copy_file("dst/deeper/a.bin", "copy.bin").await.expect("copy");
    assert_eq!(t.chunk_files(), chunks_before, "move and copy never copy bytes");
    c.delete_file("dst/deeper/a.bin").await.expect("delete original");
    assert_eq!(c.download_file("copy.bin").await.expect("copy survives"), data);

    c.upload_file("other.txt", Bytes::from_static(b"other"))
        .await
        .expect("upload");
    let err = c.move_file("other.txt", "copy.bin").await.unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(409), Some(ErrorCode::AlreadyExists))
    );
    c.move_or_copy_overwrite(false, "other.txt", "copy.bin")
        .await
        .expect("overwrite");
    assert_eq!(
        c.download_file("copy.bin").await.expect("replaced"),
        Bytes::from_static(b"other")
    );
    let err = c.move_file("missing", "x").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn move_and_copy_a_directory_of_1000_files() {
    let t = TestServer::start().await;
    let files: Vec<FileUpload> = (0..1000)
        .map(|i| FileUpload {
            path: format!("tree/sub{}/f{i}.txt", i % 10),
            content: Bytes::from(format!("n{i}")),
        })
        .collect();
    assert_eq!(
        t.client.bulk_upload(files).await.expect("upload").success.len(),
        1000
    );

    let start = Instant::now();
    t.client.move_file("tree", "moved/tree").await.expect("move dir");
    let move_time = start.elapsed();
    let start = Instant::now();
    t.client
        .copy_file("moved/tree", "copied")
        .await
        .expect("copy dir");
    let copy_time = start.elapsed();
    eprintln!("move of 1,000 files: {move_time:?}; copy: {copy_time:?}");
    // The bound; one metadata batch takes ~15 ms here, so this has 60x headroom.
    assert!(move_time < Duration::from_secs(1) && copy_time < Duration::from_secs(1));

    let manifest = t.client.get_manifest(None).await.expect("manifest");
    let count = |prefix: &str| {
        manifest
            .files
            .values()
            .filter(|m| !m.is_directory && m.path.starts_with(prefix))
            .count()
    };
    assert_eq!(
        (count("tree/"), count("moved/tree/"), count("copied/")),
        (0, 1000, 1000)
    );
    assert_eq!(
        t.client.download_file("copied/sub7/f537.txt").await.expect("dl"),
        Bytes::from_static(b"n537")
    );
    assert_eq!(
        t.client
            .download_file("moved/tree/sub7/f537.txt")
            .await
            .expect("dl"),
        Bytes::from_static(b"n537")
    );

    let err = t.client.move_file("moved", "moved/inside").await.unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(400), Some(ErrorCode::InvalidPath))
    );
    let err = t
        .client
        .move_or_copy_overwrite(false, "moved/tree", "moved")
        .await
        .unwrap_err();
    assert_eq!(
        err.status(),
        Some(400),
        "cannot replace the source's own ancestor"
    );
}

#[tokio::test]
async fn search_by_glob_time_and_hash() {
    let t = TestServer::start().await;
    let c = &t.client;
    for p in [
        "docs/a.txt",
        "docs/b.md",
        "docs/sub/c.txt",
        "notes.txt",
        "img/x.png",
    ] {
        c.upload_file(p, Bytes::from(p.to_string()))
            .await
            .expect("upload");
    }
    c.upload_file("dup/same.txt", Bytes::from_static(b"docs/a.txt"))
        .await
        .expect("dup");
    let names = |v: Vec<volebarn_client::FileMetadata>| v.into_iter().map(|m| m.path).collect::<Vec<_>>();
    assert_eq!(
        names(c.search_files("*.txt", None).await.expect("search")),
        ["docs/a.txt", "docs/sub/c.txt", "dup/same.txt", "notes.txt"]
    );
    assert_eq!(
        names(c.search_files("*.txt", Some("docs")).await.expect("search")),
        ["docs/a.txt", "docs/sub/c.txt"]
    );
    assert_eq!(
        names(c.search_files("sub/*.txt", Some("docs")).await.expect("search")),
        ["docs/sub/c.txt"]
    );
    assert_eq!(
        names(c.search_files("sub", Some("docs")).await.expect("dirs match too")),
        ["docs/sub"]
    );
    assert_eq!(
        names(c.search_hash(Xxh3::of(b"docs/a.txt")).await.expect("hash")),
        ["docs/a.txt", "dup/same.txt"]
    );

    let cutoff = volebarn_core::timefmt::now_nanos();
    c.update_file("notes.txt", Bytes::from_static(b"newer"))
        .await
        .expect("update");
    assert_eq!(
        names(c.search_modified_since(cutoff).await.expect("since")),
        ["notes.txt"]
    );

    let resp = t
        .raw()
        .get(t.url("/search?pattern=["))
        .bearer_auth(t.token())
        .send()
        .await
        .expect("bad glob");
    assert_eq!(resp.status(), 400);
}
