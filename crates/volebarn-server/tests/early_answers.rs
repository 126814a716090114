//! An answer given before the request body was read (401, 413, 409) or after it (400
//! `hash_mismatch`) reaches a real `curl` over HTTP/2 and HTTP/1.1 — the body is an
//! `OperationError`, not a framing error — and nothing is written. (507 before the body:
//! `tests/disk_full.rs`.)

use volebarn_core::ErrorCode;
use volebarn_testkit::{curl_post as curl, TestServer};

#[tokio::test]
async fn early_answers_reach_curl_over_http2_and_http11() {
    let t = TestServer::start_with(|c| c.max_file_size = 32 << 20).await;
    t.client
        .upload_file("a-file", bytes::Bytes::from_static(b"x"))
        .await
        .expect("upload");
    // Over the limit, and under it (large enough that the server answers before reading it).
    let big = t.dir.path().join("big.bin");
    std::fs::write(&big, volebarn_testkit::pseudo_random(40 << 20, 3)).expect("write");
    let fits = t.dir.path().join("fits.bin");
    std::fs::write(&fits, volebarn_testkit::pseudo_random(24 << 20, 4)).expect("write");
    for proto in ["--http2", "--http1.1"] {
        let (status, op) = curl(&t, proto, t.token(), "/files/too-big.bin", &big, &[]).await;
        assert_eq!(
            (status, op.error_code),
            (413, ErrorCode::PayloadTooLarge),
            "{proto}"
        );
        let (status, op) = curl(&t, proto, "wrong", "/files/guess.bin", &big, &[]).await;
        assert_eq!((status, op.error_code), (401, ErrorCode::Unauthorized), "{proto}");
        let (status, op) = curl(&t, proto, t.token(), "/files/a-file/under-a-file.bin", &fits, &[]).await;
        assert_eq!(
            (status, op.error_code),
            (409, ErrorCode::NotADirectory),
            "{proto}"
        );
        // The whole body read, then refused: it is not what the sender said it hashed to.
        let (status, op) = curl(
            &t,
            proto,
            t.token(),
            "/files/wrong-hash.bin",
            &fits,
            &["X-File-Hash: 0123456789abcdef"],
        )
        .await;
        assert_eq!((status, op.error_code), (400, ErrorCode::HashMismatch), "{proto}");
    }
    for path in [
        "too-big.bin",
        "guess.bin",
        "a-file/under-a-file.bin",
        "wrong-hash.bin",
    ] {
        assert!(
            matches!(
                t.client.get_file_metadata(path).await,
                Err(volebarn_client::ClientError::FileNotFound { .. })
                    | Err(volebarn_client::ClientError::Server { status: 409, .. })
            ),
            "{path} was written"
        );
    }
    assert_eq!(
        t.client.download_file("a-file").await.expect("download").as_ref(),
        b"x"
    );
    assert!(t.tmp_files().is_empty(), "temp files left: {:?}", t.tmp_files());
}
