//! Bad input gets a clear 4xx with the seed's `OperationError` body, and touches nothing.

use bytes::Bytes;
use volebarn_core::ErrorCode;
use volebarn_testkit::{operation_error as error_of, TestServer};

#[tokio::test]
async fn every_bad_path_class_is_400_invalid_path() {
    let t = TestServer::start().await;
    // A file outside the data directory that a traversal would target.
    let outside = t.dir.path().join("outside.txt");
    std::fs::write(&outside, b"untouched").expect("write");
    let long_component = "x".repeat(256);
    let too_long = vec!["y".repeat(200); 21].join("%2F");
    let too_deep = vec!["d"; 257].join("%2F");
    let cases = [
        ("..%2Foutside.txt", "traversal"),
        ("a%2F..%2F..%2Foutside.txt", "nested traversal"),
        ("a%2F.%2Fb", "dot component"),
        ("a%2F%2Fb", "empty component"),
        ("a%00b", "NUL"),
        ("a%0Ab", "newline"),
        ("a%1Fb", "control character"),
        ("a%5Cb", "backslash"),
        ("%FF%FE", "invalid UTF-8"),
        (long_component.as_str(), "component over 255 bytes"),
        (too_long.as_str(), "path over 4096 bytes"),
        (too_deep.as_str(), "deeper than 256"),
    ];
    for (raw, what) in cases {
        for method in [
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::GET,
            reqwest::Method::DELETE,
        ] {
            let resp = t
                .raw()
                .request(method.clone(), t.url(&format!("/files/{raw}")))
                .bearer_auth(t.token())
                .body("evil")
                .send()
                .await
                .expect("request");
            let (status, op) = error_of(resp).await;
            assert_eq!(
                (status, op.error_code),
                (400, ErrorCode::InvalidPath),
                "{what} via {method}"
            );
        }
        let resp = t
            .raw()
            .post(t.url(&format!("/directories/{raw}")))
            .bearer_auth(t.token())
            .send()
            .await
            .expect("mkdir");
        let (status, op) = error_of(resp).await;
        assert_eq!(
            (status, op.error_code),
            (400, ErrorCode::InvalidPath),
            "{what} via mkdir"
        );
    }
    assert_eq!(std::fs::read(&outside).expect("read"), b"untouched");
    let top: Vec<_> = std::fs::read_dir(t.dir.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(top.len(), 2, "only the data dir and our sentinel: {top:?}");
    assert!(t
        .client
        .list_directory(None)
        .await
        .expect("list")
        .entries
        .is_empty());
    assert!(t.chunk_files().is_empty());
}

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let t = TestServer::start().await;
    t.client
        .upload_file("secret", Bytes::from_static(b"s"))
        .await
        .expect("upload");
    let raw = t.raw();
    for req in [
        raw.get(t.url("/files/secret")),
        raw.get(t.url("/files/secret")).bearer_auth("wrong"),
        raw.get(t.url("/files/secret"))
            .header("authorization", format!("Basic {}", t.token())),
        raw.post(t.url("/files/new"))
            .bearer_auth(format!("{}x", t.token()))
            .body("x"),
        raw.get(t.url("/directories/")),
    ] {
        let (status, op) = error_of(req.send().await.expect("send")).await;
        assert_eq!((status, op.error_code), (401, ErrorCode::Unauthorized));
    }
    assert_eq!(
        raw.get(t.url("/health")).send().await.expect("health").status(),
        200,
        "health needs no token"
    );
    assert!(matches!(
        t.client.get_file_metadata("new").await,
        Err(volebarn_client::ClientError::FileNotFound { .. })
    ));
}

#[tokio::test]
async fn not_found_and_bad_headers() {
    let t = TestServer::start().await;
    let raw = t.raw();
    let (status, op) = error_of(
        raw.get(t.url("/files/nothing/here"))
            .bearer_auth(t.token())
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(
        (status, op.error_code, op.path.as_str()),
        (404, ErrorCode::FileNotFound, "nothing/here")
    );
    let (status, op) = error_of(
        raw.delete(t.url("/files/nothing"))
            .bearer_auth(t.token())
            .send()
            .await
            .expect("delete"),
    )
    .await;
    assert_eq!((status, op.error_code), (404, ErrorCode::FileNotFound));
    let (status, op) = error_of(
        raw.get(t.url("/no-such-route"))
            .bearer_auth(t.token())
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!((status, op.error_code), (404, ErrorCode::FileNotFound));
    let resp = raw
        .post(t.url("/files/h"))
        .bearer_auth(t.token())
        .header("x-file-hash", "not-hex")
        .body("x")
        .send()
        .await
        .expect("post");
    let (status, op) = error_of(resp).await;
    assert_eq!((status, op.error_code), (400, ErrorCode::BadRequest));
    let resp = raw
        .post(t.url("/files/h"))
        .bearer_auth(t.token())
        .header("x-modified-time", "yesterday")
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(error_of(resp).await.0, 400);
    assert!(t.chunk_files().is_empty());
}

#[tokio::test]
async fn wrong_method_and_empty_path_get_operation_errors() {
    let t = TestServer::start().await;
    let resp = t
        .raw()
        .patch(t.url("/files/x"))
        .bearer_auth(t.token())
        .send()
        .await
        .expect("patch");
    let (status, op) = error_of(resp).await;
    assert_eq!((status, op.error_code), (405, ErrorCode::BadRequest));
    let resp = t
        .raw()
        .post(t.url("/files/"))
        .bearer_auth(t.token())
        .body("x")
        .send()
        .await
        .expect("post");
    let (status, op) = error_of(resp).await;
    assert_eq!((status, op.error_code), (400, ErrorCode::InvalidPath));
    assert!(t.chunk_files().is_empty());
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback() {
    let plain_on_all = |cfg: &mut volebarn_server::config::ServerConfig| {
        cfg.host = "0.0.0.0".into();
        cfg.tls = volebarn_server::config::TlsMode::Off;
    };
    let err = TestServer::try_start_with(plain_on_all)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--allow-insecure"), "{err}");
    let t = TestServer::start_with(|cfg| {
        plain_on_all(cfg);
        cfg.allow_insecure = true;
    })
    .await;
    assert!(t.server().url.starts_with("http://"));
    t.shutdown().await;
}
