//! Chunked upload of large files over real TCP, with the bytes on the wire counted by a
//! proxy: a file round-trips byte for byte, an edit re-sends only the chunks it touched, a
//! file that changes while it is read is refused, and an interrupted upload resumes with
//! only the chunks that did not arrive.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use volebarn_client::{ClientError, RetryConfig, TransferObserver};
use volebarn_core::chunking::{chunk_boundaries, MAX_CHUNK};
use volebarn_core::{ChunkId, Xxh3};
use volebarn_testkit::{file_hash, pseudo_random, write_pseudo_random, Fault, TestServer};

/// The distinct chunks of `data` (as the client cuts them), by id, in first-seen order.
fn distinct_chunks(data: &[u8]) -> Vec<(ChunkId, u64)> {
    let mut seen = HashSet::new();
    chunk_boundaries(data)
        .into_iter()
        .map(|(o, l)| (ChunkId::of(&data[o..o + l]), l as u64))
        .filter(|(id, _)| seen.insert(*id))
        .collect()
}

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

    // The local copy goes before the download so that the test needs two copies of the
    // file on disk (the server's chunks and the download) rather than three.
    std::fs::remove_file(&file).expect("remove the local copy");
    let out = dir.path().join("check.img");
    assert_eq!(c.download_to("big.img", &out).await.expect("download"), edited);
    assert_eq!(file_hash(&out), edited, "the bytes on disk are the edited file");
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

    // What the server still lacks, by its own account.
    let data = std::fs::read(&file).expect("read");
    let chunks = distinct_chunks(&data);
    let ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
    let lacking: HashSet<ChunkId> = probe
        .missing_chunks(&ids)
        .await
        .expect("missing")
        .into_iter()
        .collect();
    let lacking_bytes: u64 = chunks
        .iter()
        .filter(|c| lacking.contains(&c.0))
        .map(|c| c.1)
        .sum();

    // Resume through a healthy path: only the missing chunks travel.
    let healthy = srv.proxy(Fault::None).await;
    let c = srv.client_via(&healthy, |_| {});
    let meta = c.upload_path("video.bin", &file, false).await.expect("resumed");
    assert_eq!((meta.size, meta.xxhash3), (SIZE, hash));
    assert_eq!(
        c.metrics().bytes_sent,
        lacking_bytes,
        "exactly the lacking chunks"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_chunk_file_round_trips_byte_for_byte_with_its_hash() {
    let srv = server().await;
    // Random stretches around a run of zeros: chunks of every size, and the zeros make the
    // same 4 MiB chunk twice, which is sent once.
    let mut data = pseudo_random(11 << 20, 5);
    data.extend(vec![0u8; 4 * MAX_CHUNK as usize + 12_345]);
    data.extend(pseudo_random(7 << 20, 6));
    let file = srv.dir.path().join("mixed.bin");
    std::fs::write(&file, &data).expect("write");
    let chunks = distinct_chunks(&data);
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    assert!(chunks.len() < chunk_boundaries(&data).len(), "a chunk repeats");

    // One upload in flight: the smallest memory budget, with 4 MiB chunks in it.
    let c = srv.client_with(|cfg| cfg.large.concurrency = 1);
    let meta = c
        .upload_path("dir/mixed.bin", &file, false)
        .await
        .expect("upload");
    assert_eq!((meta.size, meta.xxhash3), (data.len() as u64, Xxh3::of(&data)));
    assert_eq!(
        c.metrics().bytes_sent,
        chunks.iter().map(|c| c.1).sum::<u64>(),
        "every distinct chunk sent once"
    );
    assert_eq!(
        srv.chunk_files().len(),
        chunks.len(),
        "one file per distinct chunk"
    );

    let resp = srv
        .raw()
        .get(srv.url("/files/dir/mixed.bin"))
        .bearer_auth(srv.token())
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    let header = resp
        .headers()
        .get("x-file-hash")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.bytes().await.expect("body");
    assert_eq!(header, Some(Xxh3::of(&data).to_string()), "X-File-Hash");
    assert!(body[..] == data[..], "the same bytes come back");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_resends_exactly_the_chunks_it_touched() {
    let srv = server().await;
    let file = srv.dir.path().join("edit.bin");
    let mut data = pseudo_random(40 << 20, 11);
    std::fs::write(&file, &data).expect("write");
    let c = srv.client();
    c.upload_path("edit.bin", &file, false)
        .await
        .expect("first upload");
    let before: HashSet<ChunkId> = distinct_chunks(&data).into_iter().map(|c| c.0).collect();

    // Two edits far apart: a byte changed in place, and 100 bytes inserted.
    data[9 << 20] ^= 0xFF;
    let at = 30 << 20;
    data.splice(at..at, pseudo_random(100, 12));
    std::fs::write(&file, &data).expect("edit");
    let touched: Vec<(ChunkId, u64)> = distinct_chunks(&data)
        .into_iter()
        .filter(|(id, _)| !before.contains(id))
        .collect();
    assert!(
        (2..=4).contains(&touched.len()),
        "{} chunks touched",
        touched.len()
    );

    let sent_before = c.metrics().bytes_sent;
    let meta = c
        .upload_path("edit.bin", &file, true)
        .await
        .expect("second upload");
    assert_eq!((meta.size, meta.xxhash3), (data.len() as u64, Xxh3::of(&data)));
    assert_eq!(
        c.metrics().bytes_sent - sent_before,
        touched.iter().map(|c| c.1).sum::<u64>(),
        "exactly the touched chunks travel"
    );
    let out = srv.dir.path().join("edit.out");
    assert_eq!(
        c.download_to("edit.bin", &out).await.expect("download"),
        Xxh3::of(&data)
    );
    assert!(std::fs::read(&out).expect("read") == data);
    srv.shutdown().await;
}

/// Overwrites one byte of a file the first time any upload progress is reported.
struct EditOnFirstProgress {
    file: std::path::PathBuf,
    done: AtomicBool,
}

impl TransferObserver for EditOnFirstProgress {
    fn bytes(&self, _: u64) {
        if !self.done.swap(true, Ordering::SeqCst) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&self.file)
                .expect("open");
            f.write_all_at(b"#", 1234).expect("edit during the upload");
        }
    }

    fn file_done(&self, _: &str) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_during_the_upload_is_refused() {
    let srv = server().await;
    let file = srv.dir.path().join("moving.bin");
    // Four times the client's memory budget: when the first chunk has been sent, most of the
    // file is still unread, so the edit lands while the upload reads the file.
    const SIZE: u64 = 128 << 20;
    let original = write_pseudo_random(&file, SIZE, 21);
    let observer = Arc::new(EditOnFirstProgress {
        file: file.clone(),
        done: AtomicBool::new(false),
    });
    let c = srv.client().with_observer(observer.clone());
    let err = c
        .upload_path("moving.bin", &file, false)
        .await
        .expect_err("the file changed under the upload");
    assert!(observer.done.load(Ordering::SeqCst), "the edit happened");
    assert!(
        matches!(&err, ClientError::Io { source, .. } if source.to_string().contains("changed")),
        "{err}"
    );
    assert_ne!(file_hash(&file), original);
    assert_eq!(
        srv.client()
            .get_file_metadata("moving.bin")
            .await
            .unwrap_err()
            .status(),
        Some(404),
        "nothing committed"
    );

    // Once the file holds still, the upload goes through, with the edited bytes.
    let meta = srv
        .client()
        .upload_path("moving.bin", &file, false)
        .await
        .expect("upload");
    assert_eq!((meta.size, meta.xxhash3), (SIZE, file_hash(&file)));
    srv.shutdown().await;
}
