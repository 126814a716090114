//! The fault proxy does what its faults say, through TLS, counted.

use bytes::Bytes;
use std::time::Duration;
use volebarn_client::RetryConfig;
use volebarn_testkit::{Direction, Fault, TestServer};

fn quick() -> RetryConfig {
    RetryConfig {
        initial_delay: Duration::from_millis(5),
        jitter: false,
        ..RetryConfig::default()
    }
}

#[tokio::test]
async fn the_first_connections_are_cut_after_so_many_bytes_up() {
    let t = TestServer::start().await;
    let proxy = t
        .proxy(Fault::Cut {
            first: 2,
            after: 20_000,
            direction: Direction::Up,
        })
        .await;
    let c = t.client_via(&proxy, |cfg| cfg.retry = quick());
    let content = Bytes::from(volebarn_testkit::pseudo_random(200_000, 1));
    c.upload_file("f.bin", content.clone())
        .await
        .expect("upload on the third connection");
    assert_eq!((proxy.connections(), proxy.faulted()), (3, 2));
    assert!(proxy.sent() >= 2 * 20_000 + 200_000, "{}", proxy.sent());
    assert_eq!(t.client.download_file("f.bin").await.expect("download"), content);
    t.shutdown().await;
}

#[tokio::test]
async fn a_dead_link_drops_everything_and_refuses_new_connections() {
    let t = TestServer::start().await;
    let proxy = t.proxy(Fault::DieAfterSent(50_000)).await;
    let c = t.client_via(&proxy, |cfg| cfg.retry = RetryConfig::none());
    c.ping().await.expect("a ping fits under the limit");
    let err = c
        .upload_file("f.bin", Bytes::from(vec![1u8; 200_000]))
        .await
        .expect_err("the link dies mid-upload");
    assert!(err.is_transient(), "{err}");
    let err = c.ping().await.expect_err("refused");
    assert!(err.is_transient(), "{err}");
    assert!(proxy.faulted() >= 2, "the cut connection and the refused one");
    assert_eq!(
        t.client.get_file_metadata("f.bin").await.unwrap_err().status(),
        Some(404)
    );
    t.shutdown().await;
}
