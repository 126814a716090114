//! Single-file and directory API through the real client against the real TLS server.

use bytes::Bytes;
use volebarn_client::{ClientError, ErrorCode, Xxh3};
use volebarn_testkit::{pseudo_random, TestServer};

#[tokio::test]
async fn crud_round_trip_is_byte_exact() {
    let t = TestServer::start().await;
    let c = &t.client;
    let v1 = Bytes::from_static(b"hello volebarn\n");
    let meta = c
        .upload_file("docs/readme.txt", v1.clone())
        .await
        .expect("upload");
    assert_eq!(meta.path, "docs/readme.txt");
    assert_eq!(meta.name, "readme.txt");
    assert_eq!(meta.size, v1.len() as u64);
    assert_eq!(meta.xxhash3, Xxh3::of(&v1));
    assert!(!meta.is_directory);
    assert_eq!(c.download_file("docs/readme.txt").await.expect("download"), v1);

    let head = c.get_file_metadata("/docs/readme.txt").await.expect("head");
    assert_eq!(
        (head.size, head.xxhash3, head.rev),
        (meta.size, meta.xxhash3, meta.rev)
    );
    assert_eq!(head.modified, meta.modified);

    let v2 = Bytes::from(pseudo_random(70_000, 1));
    let updated = c
        .update_file("docs/readme.txt", v2.clone())
        .await
        .expect("update");
    assert!(updated.rev > meta.rev);
    assert_eq!(updated.xxhash3, Xxh3::of(&v2));
    assert_eq!(c.download_file("docs/readme.txt").await.expect("download"), v2);

    // The parent directory was created implicitly and lists the file.
    let listing = c.list_directory(Some("docs")).await.expect("list");
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(listing.entries[0].xxhash3, Xxh3::of(&v2));
    let root = c.list_directory(None).await.expect("list root");
    assert_eq!(
        root.entries
            .iter()
            .map(|e| (e.name.as_str(), e.is_directory))
            .collect::<Vec<_>>(),
        [("docs", true)]
    );

    assert!(c
        .verify_file_integrity("docs/readme.txt", Xxh3::of(&v2).0)
        .await
        .expect("verify"));
    assert!(!c
        .verify_file_integrity("docs/readme.txt", Xxh3::of(&v1).0)
        .await
        .expect("verify"));

    c.delete_file("docs/readme.txt").await.expect("delete");
    let err = c.download_file("docs/readme.txt").await.unwrap_err();
    assert!(matches!(err, ClientError::FileNotFound { .. }), "{err}");
    assert!(matches!(
        c.get_file_metadata("docs/readme.txt").await,
        Err(ClientError::FileNotFound { .. })
    ));
}

#[tokio::test]
async fn empty_file() {
    let t = TestServer::start().await;
    let meta = t.client.upload_file("empty", Bytes::new()).await.expect("upload");
    assert_eq!(meta.size, 0);
    assert_eq!(meta.xxhash3, Xxh3::of(b""));
    assert_eq!(
        t.client.download_file("empty").await.expect("download"),
        Bytes::new()
    );
    assert!(t.chunk_files().is_empty(), "an empty file has no chunks");
}

#[tokio::test]
async fn special_unicode_and_deep_paths() {
    let t = TestServer::start().await;
    let deep = (0..50)
        .map(|i| format!("level {i}"))
        .collect::<Vec<_>>()
        .join("/")
        + "/leaf.bin";
    let names = [
        "with space.txt",
        "Ünïcödé/日本語 ファイル.txt",
        "emoji/🦀 crab.rs",
        "punct/a+b=c&d;e,f'g!(h)[i]{j}@k$l.txt",
        "percent/100% sure #1 ?.txt",
        "dots/...hidden..name.",
        deep.as_str(),
    ];
    for (i, name) in names.iter().enumerate() {
        let content = Bytes::from(format!("content of {name} #{i}"));
        let meta = t
            .client
            .upload_file(name, content.clone())
            .await
            .unwrap_or_else(|e| panic!("upload {name}: {e}"));
        assert_eq!(meta.path, *name);
        assert_eq!(
            t.client.download_file(name).await.expect("download"),
            content,
            "{name}"
        );
    }
    let listing = t.client.list_directory(Some("Ünïcödé")).await.expect("list");
    assert_eq!(listing.entries[0].name, "日本語 ファイル.txt");
    let parent = deep.rsplit_once('/').map(|(p, _)| p).expect("parent");
    let listing = t.client.list_directory(Some(parent)).await.expect("list deep");
    assert_eq!(listing.entries[0].name, "leaf.bin");
}

#[tokio::test]
async fn directories_create_list_delete() {
    let t = TestServer::start().await;
    let c = &t.client;
    let d = c.create_directory("photos/2024").await.expect("mkdir");
    assert!(d.is_directory);
    let err = c.create_directory("photos/2024").await.unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(409), Some(ErrorCode::AlreadyExists))
    );
    c.upload_file("photos/2024/a.jpg", Bytes::from_static(b"a"))
        .await
        .expect("upload");
    c.upload_file("photos/2024/trip/b.jpg", Bytes::from_static(b"b"))
        .await
        .expect("upload");
    c.upload_file("photos/c.jpg", Bytes::from_static(b"c"))
        .await
        .expect("upload");
    let names: Vec<_> = c
        .list_directory(Some("photos/2024"))
        .await
        .expect("list")
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["a.jpg", "trip"]);

    c.delete_directory("photos/2024").await.expect("rmdir");
    assert!(matches!(
        c.download_file("photos/2024/trip/b.jpg").await,
        Err(ClientError::FileNotFound { .. })
    ));
    let err = c.list_directory(Some("photos/2024")).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(
        c.download_file("photos/c.jpg").await.expect("sibling kept"),
        Bytes::from_static(b"c")
    );
    let err = c.delete_directory("photos/2024").await.unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(404), Some(ErrorCode::FileNotFound))
    );
}

#[tokio::test]
async fn conflicts_and_preconditions_have_their_codes() {
    let t = TestServer::start().await;
    let c = &t.client;
    let m = c
        .upload_file("a/file", Bytes::from_static(b"1"))
        .await
        .expect("upload");

    let err = c
        .upload_file("a/file", Bytes::from_static(b"2"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(409), Some(ErrorCode::AlreadyExists))
    );
    // A file where a directory is, and below a file.
    let err = c.upload_file("a", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(409), Some(ErrorCode::IsADirectory))
    );
    let err = c
        .upload_file("a/file/child", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(409), Some(ErrorCode::NotADirectory))
    );
    let err = c.create_directory("a/file").await.unwrap_err();
    assert_eq!(err.status(), Some(409));

    // PUT of an absent file is 404.
    let err = c
        .update_file("a/absent", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::FileNotFound { .. }), "{err}");

    // If-Match: the right rev wins, a stale rev is 412 and changes nothing.
    let m2 = c
        .update_file_if("a/file", Bytes::from_static(b"2"), m.rev)
        .await
        .expect("matching rev");
    let err = c
        .update_file_if("a/file", Bytes::from_static(b"3"), m.rev)
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.error_code()),
        (Some(412), Some(ErrorCode::PreconditionFailed))
    );
    let err = c.delete_file_if("a/file", m.rev).await.unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::PreconditionFailed));
    assert_eq!(
        c.download_file("a/file").await.expect("download"),
        Bytes::from_static(b"2")
    );
    c.delete_file_if("a/file", m2.rev)
        .await
        .expect("delete with matching rev");
}

#[tokio::test]
async fn etag_and_head_headers() {
    let t = TestServer::start().await;
    let m = t
        .client
        .upload_file("e.txt", Bytes::from_static(b"etag"))
        .await
        .expect("upload");
    let resp = t
        .raw()
        .head(t.url("/files/e.txt"))
        .bearer_auth(t.token())
        .send()
        .await
        .expect("head");
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["etag"], format!("\"{}\"", m.rev).as_str());
    assert_eq!(h["x-file-size"], "4");
    assert_eq!(h["x-file-hash"], Xxh3::of(b"etag").to_string().as_str());
    let modified = h["x-modified-time"].to_str().expect("ascii");
    assert!(
        volebarn_core::timefmt::parse_rfc3339(modified).is_some(),
        "{modified}"
    );
    let resp = t
        .raw()
        .get(t.url("/files/e.txt"))
        .bearer_auth(t.token())
        .send()
        .await
        .expect("get");
    assert_eq!(resp.headers()["etag"], format!("\"{}\"", m.rev).as_str());
}

#[tokio::test]
async fn upload_keeps_the_given_modification_time() {
    let t = TestServer::start().await;
    let resp = t
        .raw()
        .post(t.url("/files/dated.txt"))
        .bearer_auth(t.token())
        .header("x-modified-time", "2021-03-04T05:06:07.5Z")
        .body("dated")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    let head = t.client.get_file_metadata("dated.txt").await.expect("head");
    assert_eq!(
        volebarn_core::timefmt::format_rfc3339(head.modified),
        "2021-03-04T05:06:07.5Z"
    );
}

#[tokio::test]
async fn concurrent_uploads_of_50_files() {
    let t = TestServer::start().await;
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let c = t.client.clone();
        tasks.push(tokio::spawn(async move {
            let data = Bytes::from(pseudo_random(1000 + i as usize * 977, i));
            let meta = c
                .upload_file(&format!("many/f{i:02}.bin"), data.clone())
                .await
                .expect("upload");
            (i, data, meta.rev)
        }));
    }
    let mut revs = Vec::new();
    for task in tasks {
        let (i, data, rev) = task.await.expect("task");
        assert_eq!(
            t.client
                .download_file(&format!("many/f{i:02}.bin"))
                .await
                .expect("download"),
            data
        );
        revs.push(rev);
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 50, "every write got its own revision");
    assert_eq!(
        t.client
            .list_directory(Some("many"))
            .await
            .expect("list")
            .entries
            .len(),
        50
    );
}

#[tokio::test]
async fn streamed_path_upload_and_download() {
    let t = TestServer::start().await;
    let src = t.dir.path().join("src.bin");
    let data = pseudo_random(9 * 1024 * 1024 + 5, 77);
    std::fs::write(&src, &data).expect("write");
    let meta = t
        .client
        .upload_path("big/src.bin", &src, false)
        .await
        .expect("upload_path");
    assert_eq!(meta.xxhash3, Xxh3::of(&data));
    let local_mtime = std::fs::metadata(&src).expect("meta").modified().expect("mtime");
    let expected = local_mtime
        .duration_since(std::time::UNIX_EPOCH)
        .expect("epoch")
        .as_nanos() as i64;
    assert_eq!(meta.modified, expected, "the local mtime travels with the upload");
    let dst = t.dir.path().join("dst.bin");
    let h = t
        .client
        .download_to("big/src.bin", &dst)
        .await
        .expect("download_to");
    assert_eq!(h, Xxh3::of(&data));
    assert_eq!(std::fs::read(&dst).expect("read"), data);
    let leftovers: Vec<_> = std::fs::read_dir(t.dir.path())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("volebarn-"))
        .collect();
    assert!(leftovers.is_empty(), "no temp file left beside the download");
}
