//! Retries, idempotent retried writes, the circuit breaker and health, over real TCP: the
//! server runs for real (plain HTTP on loopback) behind a small fault-injecting proxy.

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use volebarn_client::{BreakerConfig, BreakerState, Client, ClientConfig, ClientError, RetryConfig, Xxh3};
use volebarn_server::config::{ServerConfig, TlsMode};

#[derive(Clone, Copy)]
enum Fault {
    /// Close the connection at once.
    Refuse,
    /// Forward the request, let the server answer, but never deliver the answer.
    LoseResponse,
}

/// Applies `fault` to the first `faulty` connections, forwards the rest. Counts connections.
async fn proxy(upstream: SocketAddr, fault: Fault, faulty: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if n < faulty {
                    match fault {
                        Fault::Refuse => return,
                        Fault::LoseResponse => {
                            let mut up = TcpStream::connect(upstream).await.expect("upstream");
                            let (mut up_r, mut up_w) = up.split();
                            let (mut down_r, _down_w) = down.split();
                            let forward = tokio::io::copy(&mut down_r, &mut up_w);
                            let mut first = [0u8; 1];
                            // Wait until the server starts answering, then drop everything.
                            tokio::select! {
                                _ = forward => {}
                                _ = up_r.read_exact(&mut first) => {}
                            }
                            return;
                        }
                    }
                }
                let mut up = TcpStream::connect(upstream).await.expect("upstream");
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                let _ = down.shutdown().await;
            });
        }
    });
    (addr, seen)
}

async fn server() -> (volebarn_server::RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = ServerConfig::new(dir.path().join("data"));
    cfg.port = 0;
    cfg.tls = TlsMode::Off;
    (volebarn_server::start(cfg).await.expect("server"), dir)
}

fn client(url: String, token: &str, retry: RetryConfig) -> Client {
    let mut cfg = ClientConfig::new(url, token);
    cfg.retry = retry;
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.read_timeout = Duration::from_secs(5);
    Client::new(cfg).expect("client")
}

fn quick() -> RetryConfig {
    RetryConfig {
        initial_delay: Duration::from_millis(10),
        jitter: false,
        ..RetryConfig::default()
    }
}

#[tokio::test]
async fn dropped_connections_are_retried_until_the_upload_lands() {
    let (srv, _dir) = server().await;
    let (addr, seen) = proxy(srv.addr, Fault::Refuse, 3).await;
    let c = client(format!("http://{addr}"), &srv.token, quick());
    let content = Bytes::from_static(b"made it through");
    let meta = c
        .upload_file("flaky.txt", content.clone())
        .await
        .expect("upload after retries");
    assert_eq!(meta.xxhash3, Xxh3::of(&content));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        4,
        "three refused connections, then one that worked"
    );
    let direct = client(srv.url.clone(), &srv.token, RetryConfig::none());
    assert_eq!(
        direct.download_file("flaky.txt").await.expect("stored once"),
        content
    );
    assert_eq!(c.health().breaker, BreakerState::Closed);
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_retried_upload_whose_first_attempt_landed_is_not_an_error() {
    let (srv, _dir) = server().await;
    let (addr, _) = proxy(srv.addr, Fault::LoseResponse, 1).await;
    let c = client(format!("http://{addr}"), &srv.token, quick());
    // The server stores the file but the answer is lost; the retry meets 409 already_exists
    // with our own content on the server, which is success.
    let content = Bytes::from_static(b"exactly once");
    let meta = c.upload_file("once.txt", content.clone()).await.expect("settled");
    assert_eq!(meta.xxhash3, Xxh3::of(&content));
    let versions = c.versions("once.txt").await.expect("versions");
    assert_eq!(versions.versions.len(), 1, "applied once, not twice");
    // A different file at the same path is still a real conflict.
    let err = c
        .upload_file("once.txt", Bytes::from_static(b"other"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409));
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn breaker_opens_on_a_dead_server_and_health_reports_it() {
    let (srv, _dir) = server().await;
    let (dead, seen) = proxy(srv.addr, Fault::Refuse, usize::MAX).await;
    let mut cfg = ClientConfig::new(format!("http://{dead}"), srv.token.clone());
    cfg.retry = RetryConfig::none();
    cfg.breaker = BreakerConfig {
        failure_threshold: 5,
        recovery_timeout: Duration::from_secs(3600),
    };
    let c = Client::new(cfg).expect("client");
    for _ in 0..5 {
        let err = c.get_file_metadata("x").await.unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 5);
    assert_eq!(c.health().breaker, BreakerState::Open);
    let err = c.get_file_metadata("x").await.unwrap_err();
    assert!(matches!(err, ClientError::CircuitOpen { .. }), "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 5, "an open circuit sends nothing");

    assert!(c.ping().await.is_err());
    let h = c.health();
    assert_eq!((h.is_healthy, h.consecutive_failures), (false, 1));

    let live = client(srv.url.clone(), &srv.token, RetryConfig::none());
    live.ping().await.expect("ping");
    let h = live.health();
    assert!(
        h.is_healthy && h.last_success_unix.is_some() && h.average_response_ms > 0.0,
        "{h:?}"
    );
    srv.shutdown().await.expect("shutdown");
}

/// Forwards connections, but cuts the first response after `keep` bytes.
async fn truncating_proxy(upstream: SocketAddr, keep: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let first = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let n = first.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let up = TcpStream::connect(upstream).await.expect("upstream");
                let (mut down_r, mut down_w) = down.into_split();
                let (mut up_r, mut up_w) = up.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut down_r, &mut up_w).await;
                });
                if n > 0 {
                    let _ = tokio::io::copy(&mut up_r, &mut down_w).await;
                    return;
                }
                let mut passed = 0;
                let mut buf = vec![0u8; 16 * 1024];
                while passed < keep {
                    let Ok(got) = up_r.read(&mut buf).await else {
                        return;
                    };
                    if got == 0 {
                        return;
                    }
                    let take = got.min(keep - passed);
                    if down_w.write_all(&buf[..take]).await.is_err() {
                        return;
                    }
                    passed += take;
                }
                // Drop both halves: the client sees the body end early.
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_truncated_download_is_fetched_again_and_verified() {
    let (srv, dir) = server().await;
    let direct = client(srv.url.clone(), &srv.token, RetryConfig::none());
    let content: Bytes = (0..300_000u32)
        .flat_map(|i| i.to_le_bytes())
        .collect::<Vec<u8>>()
        .into();
    direct
        .upload_file("long.bin", content.clone())
        .await
        .expect("upload");
    let addr = truncating_proxy(srv.addr, 100_000).await;
    let c = client(format!("http://{addr}"), &srv.token, quick());
    assert_eq!(c.download_file("long.bin").await.expect("retried"), content);
    let addr = truncating_proxy(srv.addr, 100_000).await;
    let c = client(format!("http://{addr}"), &srv.token, quick());
    let target = dir.path().join("long.out");
    assert_eq!(
        c.download_to("long.bin", &target).await.expect("retried"),
        Xxh3::of(&content)
    );
    assert_eq!(std::fs::read(&target).expect("read"), content.as_ref());
    srv.shutdown().await.expect("shutdown");
}
