//! Per-address limits: the brute-force guard (on by default) and `--rate-limit`, both
//! answered with 429 `rate_limited` and `Retry-After`; the client waits and finishes.

use bytes::Bytes;
use futures_util::StreamExt;
use std::num::NonZeroU32;
use std::time::Instant;
use volebarn_core::{ErrorCode, OperationError};
use volebarn_testkit::TestServer;

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
