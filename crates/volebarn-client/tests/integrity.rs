//! Downloads are verified: a byte flipped on the wire becomes `ClientError::HashMismatch`,
//! and `download_to` leaves neither a corrupt file nor a temp file behind.
//!
//! The server runs for real behind the kit's fault proxy, which flips the first body byte of
//! the first response on each connection. This is the one client test on plain HTTP (TLS
//! off, loopback): under TLS the flipped byte fails the record's authentication and the
//! client sees a dropped connection, never the bytes; what this test proves is the client's
//! own end-to-end hash check, the last line of defence when the transport does not protect.

use bytes::Bytes;
use volebarn_client::{ClientError, ErrorCode, RetryConfig};
use volebarn_server::config::TlsMode;
use volebarn_testkit::{Fault, TestServer};

#[tokio::test]
async fn corrupted_download_is_a_hash_mismatch() {
    let server = TestServer::start_with(|cfg| cfg.tls = TlsMode::Off).await;
    let dir = &server.dir;
    let direct = server.client();
    let content = Bytes::from(vec![b'v'; 100_000]);
    direct
        .upload_file("victim.txt", content.clone())
        .await
        .expect("upload");
    assert_eq!(
        direct.download_file("victim.txt").await.expect("clean download"),
        content
    );

    let proxy = server.proxy(Fault::FlipFirstBodyByte).await;
    // Without retries the damage surfaces as a mismatch…
    let via_proxy = || server.client_via(&proxy, |cfg| cfg.retry = RetryConfig::none());

    let err = via_proxy().download_file("victim.txt").await.unwrap_err();
    assert!(matches!(err, ClientError::HashMismatch { .. }), "{err}");
    assert_eq!(err.error_code(), Some(ErrorCode::HashMismatch));

    let target = dir.path().join("out.txt");
    let err = via_proxy().download_to("victim.txt", &target).await.unwrap_err();
    assert!(matches!(err, ClientError::HashMismatch { .. }), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != "data")
        .collect();
    assert!(left.is_empty(), "nothing written on a mismatch: {left:?}");

    // …with the default policy the client downloads again (on the same, now clean,
    // connection) and gets the right bytes.
    let retrying = server.client_via(&proxy, |_| {});
    assert_eq!(
        retrying.download_file("victim.txt").await.expect("re-fetched"),
        content
    );
    retrying
        .download_to("victim.txt", &target)
        .await
        .expect("re-fetched to disk");
    assert_eq!(std::fs::read(&target).expect("read"), content.as_ref());
    server.shutdown().await;
}
