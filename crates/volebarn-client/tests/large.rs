//! Chunked upload of large files over real TCP, with the bytes on the wire counted by a
//! proxy: an edit re-sends about one chunk, and an interrupted upload resumes with only
//! the chunks that did not arrive.

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use volebarn_client::{Client, ClientConfig, RetryConfig, Xxh3};
use volebarn_core::chunking::MAX_CHUNK;
use volebarn_core::hash::Xxh3Hasher;
use volebarn_server::config::{ServerConfig, TlsMode};

/// Forwards connections, counting bytes from client to server. Once `cutoff` bytes have
/// passed, it drops every connection and refuses new ones.
struct Meter {
    sent: Arc<AtomicU64>,
    addr: SocketAddr,
}

async fn meter(upstream: SocketAddr, cutoff: Option<u64>) -> Meter {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = Arc::new(AtomicU64::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    let total = sent.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            if dead.load(Ordering::SeqCst) {
                continue; // dropped: connection refused in effect
            }
            let (total, dead) = (total.clone(), dead.clone());
            tokio::spawn(async move {
                let up = TcpStream::connect(upstream).await.expect("upstream");
                let (mut down_r, mut down_w) = down.into_split();
                let (mut up_r, mut up_w) = up.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut up_r, &mut down_w).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match down_r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let so_far = total.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                    if cutoff.is_some_and(|c| so_far >= c) {
                        dead.store(true, Ordering::SeqCst);
                    }
                    if dead.load(Ordering::SeqCst) || up_w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    Meter { sent, addr }
}

fn write_random_file(path: &std::path::Path, len: u64, seed: u64) -> Xxh3 {
    let mut f = std::fs::File::create(path).expect("create");
    let mut hasher = Xxh3Hasher::new();
    let mut x = seed | 1;
    let mut written = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while written < len {
        for word in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
        let n = (len - written).min(buf.len() as u64) as usize;
        std::io::Write::write_all(&mut f, &buf[..n]).expect("write");
        hasher.update(&buf[..n]);
        written += n as u64;
    }
    hasher.finish()
}

fn file_hash(path: &std::path::Path) -> Xxh3 {
    let mut f = std::fs::File::open(path).expect("open");
    let mut hasher = Xxh3Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).expect("read");
        if n == 0 {
            return hasher.finish();
        }
        hasher.update(&buf[..n]);
    }
}

async fn server(dir: &std::path::Path) -> volebarn_server::RunningServer {
    let mut cfg = ServerConfig::new(dir.join("data"));
    cfg.port = 0;
    cfg.tls = TlsMode::Off;
    cfg.max_file_size = 2 << 30;
    volebarn_server::start(cfg).await.expect("server")
}

fn client(addr: SocketAddr, token: &str, retry: RetryConfig) -> Client {
    let mut cfg = ClientConfig::new(format!("http://{addr}"), token);
    cfg.retry = retry;
    Client::new(cfg).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_changed_in_1gib_resends_about_one_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = server(dir.path()).await;
    let m = meter(srv.addr, None).await;
    let c = client(m.addr, &srv.token, RetryConfig::default());
    let file = dir.path().join("big.img");
    const GIB: u64 = 1 << 30;
    let hash = write_random_file(&file, GIB, 99);

    let meta = c
        .upload_path("big.img", &file, false)
        .await
        .expect("first upload (chunked)");
    assert_eq!((meta.size, meta.xxhash3), (GIB, hash));
    let first = m.sent.swap(0, Ordering::SeqCst);
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
    let second = m.sent.load(Ordering::SeqCst);
    eprintln!("1 GiB first upload: {first} bytes sent; after a 1-byte edit: {second} bytes");
    // The edit touches one chunk (two if it moved a boundary); plus requests and the
    // chunk list of ~1,000 ids in the missing/commit calls.
    assert!(
        second < 2 * u64::from(MAX_CHUNK) + 512 * 1024,
        "sent {second} bytes for a 1-byte edit"
    );

    let out = dir.path().join("check.img");
    assert_eq!(c.download_to("big.img", &out).await.expect("download"), edited);
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_resumes_with_only_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = server(dir.path()).await;
    let file = dir.path().join("video.bin");
    const SIZE: u64 = 64 << 20;
    let hash = write_random_file(&file, SIZE, 7);

    // The connection dies once half the file has gone out; retries cannot get through.
    let broken = meter(srv.addr, Some(SIZE / 2)).await;
    let quick = RetryConfig {
        initial_delay: Duration::from_millis(5),
        jitter: false,
        ..RetryConfig::default()
    };
    let c = client(broken.addr, &srv.token, quick);
    let err = c
        .upload_path("video.bin", &file, false)
        .await
        .expect_err("interrupted");
    assert!(
        err.is_transient() || matches!(err, volebarn_client::ClientError::CircuitOpen { .. }),
        "{err}"
    );
    let probe = client(srv.addr, &srv.token, RetryConfig::none());
    assert_eq!(
        probe.get_file_metadata("video.bin").await.unwrap_err().status(),
        Some(404),
        "nothing committed"
    );

    // Resume through a healthy path: only the missing chunks travel.
    let healthy = meter(srv.addr, None).await;
    let c = client(healthy.addr, &srv.token, RetryConfig::default());
    let meta = c.upload_path("video.bin", &file, false).await.expect("resumed");
    assert_eq!((meta.size, meta.xxhash3), (SIZE, hash));
    let resent = healthy.sent.load(Ordering::SeqCst);
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
    srv.shutdown().await.expect("shutdown");
}
