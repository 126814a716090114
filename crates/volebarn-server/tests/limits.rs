//! Per-address limits: the brute-force guard (on by default) and `--rate-limit`, both
//! answered with 429 `rate_limited` and `Retry-After`; the client waits and finishes.

use bytes::Bytes;
use futures_util::StreamExt;
use std::num::NonZeroU32;
use std::time::Instant;
use volebarn_core::{ErrorCode, OperationError};
use volebarn_testkit::{pseudo_random, TestServer};

/// Status, `Retry-After` and the `OperationError` body of a refused request.
async fn refusal(resp: reqwest::Response) -> (u16, Option<u64>, OperationError) {
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let (status, op) = volebarn_testkit::operation_error(resp).await;
    (status, retry_after, op)
}

#[tokio::test]
async fn ten_wrong_tokens_then_the_address_is_refused_even_with_the_right_one() {
    let t = TestServer::start().await;
    t.client
        .upload_file("secret", Bytes::from_static(b"s"))
        .await
        .expect("upload");
    let raw = t.raw();
    for i in 0..10 {
        let resp = raw
            .get(t.url("/files/secret"))
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .expect("send");
        let (status, _, op) = refusal(resp).await;
        assert_eq!(
            (status, op.error_code),
            (401, ErrorCode::Unauthorized),
            "guess {i}"
        );
    }
    // The right token no longer helps: a guesser cannot learn that a guess was right.
    let resp = raw
        .get(t.url("/files/secret"))
        .bearer_auth(t.token())
        .send()
        .await
        .expect("send");
    let (status, retry_after, op) = refusal(resp).await;
    assert_eq!((status, op.error_code), (429, ErrorCode::RateLimited));
    let retry_after = retry_after.expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert!(op.error.contains("failed authentications"), "{}", op.error);
    assert_eq!(
        raw.get(t.url("/health")).send().await.expect("health").status(),
        200,
        "health checks are never refused"
    );
}

#[tokio::test]
async fn over_the_rate_an_address_gets_429_with_retry_after() {
    let t = TestServer::start_with(|c| c.limits.requests_per_second = NonZeroU32::new(1)).await;
    let raw = t.raw();
    let start = Instant::now();
    let mut allowed = 0u64;
    let (status, retry_after, op) = loop {
        let resp = raw
            .get(t.url("/directories/"))
            .bearer_auth(t.token())
            .send()
            .await
            .expect("send");
        if resp.status() != 200 {
            break refusal(resp).await;
        }
        allowed += 1;
        assert!(allowed < 100, "the rate limit never refused a request");
    };
    assert_eq!((status, op.error_code), (429, ErrorCode::RateLimited));
    assert_eq!(retry_after, Some(1), "one request a second: retry in a second");
    // A burst of two, then one for every second that passed.
    assert!(allowed >= 2, "the burst is twice the rate, got {allowed}");
    assert!(
        allowed <= 3 + start.elapsed().as_secs(),
        "{allowed} requests passed in {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn the_client_honours_retry_after_and_finishes_under_a_rate_limit() {
    let t = TestServer::start_with(|c| c.limits.requests_per_second = NonZeroU32::new(20)).await;
    let client = t.client_with(|_| {});
    let files: Vec<(String, Bytes)> = (0..60)
        .map(|i| (format!("rated/{i}.txt"), Bytes::from(format!("file {i}"))))
        .collect();
    let results: Vec<_> = futures_util::stream::iter(files.clone())
        .map(|(path, data)| {
            let client = client.clone();
            async move { client.upload_file(&path, data).await.map(|_| ()) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for r in results {
        r.expect("every upload finishes despite the limit");
    }
    for (path, data) in &files {
        assert_eq!(&client.download_file(path).await.expect("download"), data);
    }
    // The limit really was in the way: the server answered some requests with 429. (This
    // request is limited too: it waits as long as the server says.)
    let metrics = loop {
        let resp = t
            .raw()
            .get(t.url("/metrics"))
            .bearer_auth(t.token())
            .send()
            .await
            .expect("metrics");
        if resp.status() == 429 {
            let (_, retry_after, _) = refusal(resp).await;
            tokio::time::sleep(std::time::Duration::from_secs(retry_after.expect("Retry-After"))).await;
            continue;
        }
        break resp.text().await.expect("text");
    };
    assert!(
        metrics.lines().any(|l| l.contains("status=\"429\"")),
        "no 429 was served:\n{metrics}"
    );
}

#[tokio::test]
async fn webdav_passwords_count_against_the_same_guard_but_bare_requests_do_not() {
    let t = TestServer::start().await;
    let raw = t.raw();
    // A depth-0 PROPFIND of the WebDAV root, with `password` as the Basic password if any.
    let propfind = |password: Option<String>| {
        let req = raw
            .request(
                reqwest::Method::from_bytes(b"PROPFIND").expect("method"),
                t.url("/dav/"),
            )
            .header("depth", "0");
        let req = match password {
            Some(p) => req.basic_auth("anyone", Some(p)),
            None => req,
        };
        async move { req.send().await.expect("send") }
    };
    // WebDAV clients ask without credentials first, to be told how to log in: never counted.
    for _ in 0..20 {
        assert_eq!(propfind(None).await.status(), 401);
    }
    assert_eq!(
        propfind(Some(t.token().to_string())).await.status(),
        207,
        "bare requests did not block the address"
    );
    for i in 0..10 {
        assert_eq!(
            propfind(Some(format!("guess-{i}"))).await.status(),
            401,
            "guess {i}"
        );
    }
    // Blocked now, over WebDAV and REST alike.
    let (status, retry_after, op) = refusal(propfind(Some(t.token().to_string())).await).await;
    assert_eq!((status, op.error_code), (429, ErrorCode::RateLimited));
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)));
    let rest = raw
        .get(t.url("/directories/"))
        .bearer_auth(t.token())
        .send()
        .await
        .expect("send");
    assert_eq!(rest.status(), 429);
}

/// A `multipart/form-data` body with one part per `(path, bytes)`, and its boundary.
fn bulk_body(files: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "volebarn-test-boundary-7d1c".to_string();
    let mut body = Vec::new();
    for (path, data) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

/// Posts `body` to `/bulk/upload`, with a `Content-Length` or (`chunked`) as a stream of
/// 8 KiB pieces of unknown length.
async fn post_bulk(
    t: &TestServer,
    client: &reqwest::Client,
    boundary: &str,
    body: Vec<u8>,
    chunked: bool,
) -> reqwest::Response {
    let body = if chunked {
        let pieces: Vec<Result<Bytes, std::io::Error>> =
            body.chunks(8192).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
    } else {
        reqwest::Body::from(body)
    };
    client
        .post(t.url("/bulk/upload"))
        .bearer_auth(t.token())
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("the server answers")
}

#[tokio::test]
async fn a_bulk_request_over_max_request_size_is_refused_whole_with_413() {
    const LIMIT: u64 = 256 * 1024;
    let t = TestServer::start_with(|c| c.limits.max_request_size = LIMIT).await;
    let h2 = t.raw();
    let h1 = {
        volebarn_testkit::install_crypto();
        let pem = std::fs::read(t.ca_cert()).expect("ca");
        reqwest::Client::builder()
            .use_rustls_tls()
            .http1_only()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
            .build()
            .expect("client")
    };
    let cases = [
        ("h2-length", &h2, false),
        ("h2-stream", &h2, true),
        ("h1-length", &h1, false),
        ("h1-chunked", &h1, true),
    ];
    for (name, client, chunked) in cases {
        // Each part is far below --max-file-size; together they are over the request limit,
        // and the first parts arrive (and are stored) before the limit is passed.
        let over: Vec<(String, Vec<u8>)> = (0..5)
            .map(|i| (format!("{name}/over-{i}.bin"), pseudo_random(100 * 1024, i)))
            .collect();
        let (boundary, body) = bulk_body(&over);
        assert!(body.len() as u64 > LIMIT);
        let resp = post_bulk(&t, client, &boundary, body, chunked).await;
        let (status, op) = volebarn_testkit::operation_error(resp).await;
        assert_eq!(
            (status, op.error_code),
            (413, ErrorCode::PayloadTooLarge),
            "{name}: {}",
            op.error
        );
        assert!(op.error.contains(&LIMIT.to_string()), "{name}: {}", op.error);
        for (path, _) in &over {
            let err = t.client.get_file_metadata(path).await.unwrap_err();
            assert_eq!(err.status(), Some(404), "{name}: {path} was kept");
        }
        // Under the limit: every part lands.
        let under: Vec<(String, Vec<u8>)> = (0..2)
            .map(|i| (format!("{name}/under-{i}.bin"), pseudo_random(100 * 1024, 10 + i)))
            .collect();
        let (boundary, body) = bulk_body(&under);
        assert!((body.len() as u64) < LIMIT);
        let resp = post_bulk(&t, client, &boundary, body, chunked).await;
        assert_eq!(resp.status(), 200, "{name}");
        let done: volebarn_client::BulkUploadResponse = resp.json().await.expect("json");
        assert!(done.failed.is_empty(), "{name}: {:?}", done.failed);
        for (path, data) in &under {
            let got = t.client.download_file(path).await.expect("download");
            assert_eq!(got.as_ref(), data.as_slice(), "{name}: {path}");
        }
    }
    assert!(t.tmp_files().is_empty(), "refused requests leave no temp files");
    // A refused request leaves no chunks behind either.
    let chunks_before = t.chunk_files().len();
    let (boundary, body) = bulk_body(&[("late/x.bin".into(), pseudo_random(300 * 1024, 99))]);
    let resp = post_bulk(&t, &h2, &boundary, body, true).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(
        t.chunk_files().len(),
        chunks_before,
        "a refused part's chunks stay"
    );
}
