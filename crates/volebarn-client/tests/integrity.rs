//! Downloads are verified: a byte flipped on the wire becomes `ClientError::HashMismatch`,
//! and `download_to` leaves neither a corrupt file nor a temp file behind.
//!
//! The server runs for real (plain HTTP on loopback, so a proxy can see the bytes); a small
//! TCP proxy in this file flips the first body byte of the first response on each connection.

use bytes::Bytes;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use volebarn_client::{Client, ClientConfig, ClientError, ErrorCode, RetryConfig};
use volebarn_server::config::{ServerConfig, TlsMode};

async fn corrupting_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            tokio::spawn(async move {
                let up = TcpStream::connect(upstream).await.expect("connect upstream");
                let (mut down_r, mut down_w) = down.into_split();
                let (mut up_r, mut up_w) = up.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut down_r, &mut up_w).await;
                });
                let mut seen: Vec<u8> = Vec::new();
                let mut flipped = false;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match up_r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if !flipped {
                        let start = seen.len();
                        seen.extend_from_slice(&buf[..n]);
                        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            let body_at = end + 4;
                            if body_at < seen.len() && body_at >= start {
                                buf[body_at - start] ^= 0x01;
                                flipped = true;
                            }
                        }
                    }
                    if down_w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn corrupted_download_is_a_hash_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = ServerConfig::new(dir.path().join("data"));
    cfg.port = 0;
    cfg.tls = TlsMode::Off;
    let server = volebarn_server::start(cfg).await.expect("server");
    let direct = Client::new(ClientConfig::new(server.url.clone(), server.token.clone())).expect("client");
    let content = Bytes::from(vec![b'v'; 100_000]);
    direct
        .upload_file("victim.txt", content.clone())
        .await
        .expect("upload");
    assert_eq!(
        direct.download_file("victim.txt").await.expect("clean download"),
        content
    );

    let proxy = corrupting_proxy(server.addr).await;
    // Without retries the damage surfaces as a mismatch…
    let via_proxy = || {
        let mut cfg = ClientConfig::new(format!("http://{proxy}"), server.token.clone());
        cfg.retry = RetryConfig::none();
        Client::new(cfg).expect("client")
    };

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
    let retrying =
        Client::new(ClientConfig::new(format!("http://{proxy}"), server.token.clone())).expect("client");
    assert_eq!(
        retrying.download_file("victim.txt").await.expect("re-fetched"),
        content
    );
    retrying
        .download_to("victim.txt", &target)
        .await
        .expect("re-fetched to disk");
    assert_eq!(std::fs::read(&target).expect("read"), content.as_ref());
    server.shutdown().await.expect("shutdown");
}
