//! Chunked upload of large files over real TCP, with the bytes on the wire counted by a
//! proxy: an edit re-sends about one chunk, and an interrupted upload resumes with only
//! the chunks that did not arrive.

use std::os::unix::fs::FileExt;
use std::time::Duration;
use volebarn_client::RetryConfig;
use volebarn_core::chunking::MAX_CHUNK;
use volebarn_testkit::{file_hash, write_pseudo_random, Fault, TestServer};

async fn server() -> TestServer {
    TestServer::start_with(|cfg| cfg.max_file_size = 2 << 30).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_changed_in_1gib_resends_about_one_chunk() {
    let srv = server().await;
    let dir = &srv.dir;
    let m = srv.proxy(Fault::None).await;
    let c = srv.client_via(&m, |_| {});
    let file = dir.path().join("big.img");
    const GIB: u64 = 1 << 30;
    let hash = write_pseudo_random(&file, GIB, 99);

    let meta = c
        .upload_path("big.img", &file, false)
        .await
        .expect("first upload (chunked)");
    assert_eq!((meta.size, meta.xxhash3), (GIB, hash));
    let first = m.take_sent();
    assert!(first >= GIB, "the whole file travelled once: {first}");

    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open")
        .write_all_at(b"!", GIB / 2)
        .expect("edit one byte");
    let edited = file_hash(&file);
    let meta = c
        .upload_path("big.img", &file, true)
        .await
        .expect("second upload");
    assert_eq!(meta.xxhash3, edited);
    let second = m.sent();
    eprintln!("1 GiB first upload: {first} bytes sent; after a 1-byte edit: {second} bytes");
    // The edit touches one chunk (two if it moved a boundary); plus requests and the
    // chunk list of ~1,000 ids in the missing/commit calls.
    assert!(
        second < 2 * u64::from(MAX_CHUNK) + 512 * 1024,
        "sent {second} bytes for a 1-byte edit"
    );

    let out = dir.path().join("check.img");
    assert_eq!(c.download_to("big.img", &out).await.expect("download"), edited);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_resumes_with_only_the_rest() {
    let srv = server().await;
    let file = srv.dir.path().join("video.bin");
    const SIZE: u64 = 64 << 20;
    let hash = write_pseudo_random(&file, SIZE, 7);

    // The connection dies once half the file has gone out; retries cannot get through.
    let broken = srv.proxy(Fault::DieAfterSent(SIZE / 2)).await;
    let quick = RetryConfig {
        initial_delay: Duration::from_millis(5),
        jitter: false,
        ..RetryConfig::default()
    };
    let c = srv.client_via(&broken, |cfg| cfg.retry = quick);
    let err = c
        .upload_path("video.bin", &file, false)
        .await
        .expect_err("interrupted");
    assert!(
        err.is_transient() || matches!(err, volebarn_client::ClientError::CircuitOpen { .. }),
        "{err}"
    );
    let probe = srv.client_with(|cfg| cfg.retry = RetryConfig::none());
    assert_eq!(
        probe.get_file_metadata("video.bin").await.unwrap_err().status(),
        Some(404),
        "nothing committed"
    );

    // Resume through a healthy path: only the missing chunks travel.
    let healthy = srv.proxy(Fault::None).await;
    let c = srv.client_via(&healthy, |_| {});
    let meta = c.upload_path("video.bin", &file, false).await.expect("resumed");
    assert_eq!((meta.size, meta.xxhash3), (SIZE, hash));
    let resent = healthy.sent();
    eprintln!("64 MiB upload interrupted at 50%: resumed with {resent} bytes");
    // Chunks in flight when the link died (up to 3, at most 4 MiB each) may go again.
    assert!(
        resent <= SIZE / 2 + 3 * u64::from(MAX_CHUNK) + 256 * 1024,
        "resent {resent} of {SIZE}"
    );
    assert!(
        resent >= SIZE / 2 - 3 * u64::from(MAX_CHUNK),
        "at least the unsent half: {resent}"
    );
    srv.shutdown().await;
}
