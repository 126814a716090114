//! A full disk, for real: the server's data directory (RocksDB and chunks) lives on a small
//! tmpfs the test mounts, and a filler file the test writes there takes the space away.
//! Every write path answers `507 insufficient_storage` with an `OperationError`, nothing is
//! half-written, reads go on, and once the filler is deleted the same writes succeed.
//!
//! Needs `mount` (CI runs as root); where mounting is not allowed the test prints why and
//! passes without running.

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use volebarn_client::{Client, ClientError, ErrorCode, FileUpload, RetryConfig, Xxh3};
use volebarn_core::types::{ChunkSpec, ChunkedCommit};
use volebarn_core::ChunkId;
use volebarn_testkit::{curl_post, pseudo_random, TestServer};

const MIB: u64 = 1 << 20;

/// A tmpfs mounted for the test, unmounted when dropped (also when the test panics).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the server's files may still be open while a failed test unwinds.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Bytes free on the filesystem holding `dir`.
fn free(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

/// Grows the filler file until `leave` bytes are free (or the disk is full).
fn fill_until(filler: &Path, dir: &Path, leave: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(filler)
        .expect("filler");
    let block = vec![0xA5u8; 64 * 1024];
    loop {
        let now = free(dir);
        if now <= leave {
            break;
        }
        let n = ((now - leave) as usize).min(block.len());
        if f.write_all(&block[..n]).and_then(|()| f.sync_data()).is_err() {
            break; // full
        }
    }
}

fn assert_507(err: &ClientError, what: &str) {
    assert_eq!(err.status(), Some(507), "{what}: {err}");
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::InsufficientStorage),
        "{what}: {err}"
    );
}

async fn raw_507(resp: reqwest::Response, what: &str) {
    let (status, op) = volebarn_testkit::operation_error(resp).await;
    assert_eq!(status, 507, "{what}");
    assert_eq!(op.error_code, ErrorCode::InsufficientStorage, "{what}");
}

fn dav_put(t: &TestServer, path: &str, body: Bytes) -> reqwest::RequestBuilder {
    t.raw()
        .request(Method::PUT, t.url(&format!("/dav/{path}")))
        .basic_auth("anyone", Some(t.token()))
        .body(body)
}

/// Reads still work and nothing changed: the old file, its content, the directory.
async fn reads_go_on(c: &Client, old: &Bytes) {
    assert_eq!(&c.download_file("keep.txt").await.expect("read keep.txt"), old);
    let listing = c.list_directory(None).await.expect("list the root");
    assert!(listing.entries.iter().any(|e| e.path == "d"), "{listing:?}");
}

async fn absent(c: &Client, path: &str) {
    let err = c.get_file_metadata(path).await.expect_err(path);
    assert_eq!(err.status(), Some(404), "{path} must not exist: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_everywhere_and_recovers_once_space_is_freed() {
    let fs = match Tmpfs::mount("24m") {
        Ok(fs) => fs,
        Err(why) => {
            println!("skipped: cannot mount a tmpfs here: {why}");
            return;
        }
    };
    let data: PathBuf = fs.path().join("data");
    let filler = fs.path().join("filler");
    let t = TestServer::start_with(|cfg| {
        cfg.data_dir = data.clone();
        cfg.max_file_size = 1 << 30;
    })
    .await;
    // 507 is not retried; nothing else is expected to fail.
    let c = t.client_with(|cfg| cfg.retry = RetryConfig::none());

    let old = Bytes::from_static(b"the old version");
    c.upload_file("keep.txt", old.clone()).await.expect("keep.txt");
    c.create_directory("d").await.expect("d");
    let small_chunk = Bytes::from(pseudo_random(300 * 1024, 5));
    let small_id = ChunkId::of(&small_chunk);
    c.put_chunk(small_id, small_chunk.clone()).await.expect("a chunk");
    let commit = ChunkedCommit {
        size: small_chunk.len() as u64,
        xxhash3: Some(Xxh3::of(&small_chunk)),
        chunks: vec![ChunkSpec {
            id: small_id,
            len: small_chunk.len() as u32,
        }],
    };
    let big = Bytes::from(pseudo_random(8 * MIB as usize, 1));
    let chunk = Bytes::from(pseudo_random(3 * MIB as usize, 2));
    let chunk_id = ChunkId::of(&chunk);
    let small = |p: &str| FileUpload {
        path: p.into(),
        content: Bytes::from(pseudo_random(1000, 3)),
    };
    let bulk = || {
        vec![
            small("bulk/a.txt"),
            FileUpload {
                path: "bulk/big.bin".into(),
                content: big.clone(),
            },
            small("bulk/c.txt"),
        ]
    };

    // 1. 4 MiB free: bodies larger than that fail alone, as they meet ENOSPC.
    fill_until(&filler, fs.path(), 4 * MIB);
    println!("stage 1: {} bytes free", free(fs.path()));
    let err = c.upload_file("big.bin", big.clone()).await.unwrap_err();
    assert_507(&err, "single POST");
    let err = c.update_file("keep.txt", big.clone()).await.unwrap_err();
    assert_507(&err, "single PUT over an existing file");
    let resp = dav_put(&t, "dav-big.bin", big.clone()).send().await.expect("dav");
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE, "WebDAV PUT");
    let answer = c.bulk_upload(bulk()).await.expect("bulk answers");
    assert_eq!(answer.success, ["bulk/a.txt", "bulk/c.txt"], "{answer:?}");
    assert_eq!(answer.failed.len(), 1, "{answer:?}");
    assert_eq!(answer.failed[0].error_code, ErrorCode::InsufficientStorage);
    assert_eq!(answer.failed[0].path, "bulk/big.bin");
    absent(&c, "big.bin").await;
    absent(&c, "dav-big.bin").await;
    absent(&c, "bulk/big.bin").await;
    reads_go_on(&c, &old).await;
    assert!(
        t.tmp_files().is_empty(),
        "no temp files left: {:?}",
        t.tmp_files()
    );

    // 2. 2 MiB free: a 3 MiB chunk does not fit.
    fill_until(&filler, fs.path(), 2 * MIB);
    println!("stage 2: {} bytes free", free(fs.path()));
    let err = c.put_chunk(chunk_id, chunk.clone()).await.unwrap_err();
    assert_507(&err, "chunk PUT");
    let missing = c.missing_chunks(&[chunk_id]).await.expect("missing");
    assert_eq!(missing, [chunk_id], "the chunk was not stored");
    reads_go_on(&c, &old).await;

    // 3. Full: every write is refused before it touches storage, metadata-only ones too.
    fill_until(&filler, fs.path(), 0);
    println!("stage 3: {} bytes free", free(fs.path()));
    let err = c
        .commit_chunks("committed.bin", &commit, false)
        .await
        .unwrap_err();
    assert_507(&err, "chunked commit");
    assert_507(&c.create_directory("d2").await.unwrap_err(), "directory create");
    assert_507(&c.move_file("keep.txt", "moved.txt").await.unwrap_err(), "move");
    assert_507(&c.copy_file("keep.txt", "copied.txt").await.unwrap_err(), "copy");
    assert_507(
        &c.upload_file("tiny.txt", Bytes::from_static(b"x"))
            .await
            .unwrap_err(),
        "a tiny POST",
    );
    raw_507(
        dav_put(&t, "tiny.txt", Bytes::from_static(b"x"))
            .send()
            .await
            .expect("dav"),
        "WebDAV PUT",
    )
    .await;
    let resp = t
        .raw()
        .request(Method::from_bytes(b"MKCOL").expect("method"), t.url("/dav/d3"))
        .basic_auth("anyone", Some(t.token()))
        .send()
        .await
        .expect("mkcol");
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE, "WebDAV MKCOL");
    // A real curl gets the 507 body before it has sent its 8 MiB, over both protocols.
    let outside = tempfile::tempdir().expect("tempdir");
    let body = outside.path().join("big.bin");
    std::fs::write(&body, &big).expect("write");
    for proto in ["--http2", "--http1.1"] {
        let (status, op) = curl_post(&t, proto, t.token(), "/files/curl-big.bin", &body, &[]).await;
        assert_eq!(
            (status, op.error_code),
            (507, ErrorCode::InsufficientStorage),
            "curl {proto}"
        );
    }
    for p in [
        "committed.bin",
        "moved.txt",
        "copied.txt",
        "tiny.txt",
        "curl-big.bin",
    ] {
        absent(&c, p).await;
    }
    reads_go_on(&c, &old).await;

    // 4. Space freed: the same writes succeed.
    std::fs::remove_file(&filler).expect("delete the filler");
    println!("stage 4: {} bytes free", free(fs.path()));
    assert_eq!(
        c.upload_file("big.bin", big.clone())
            .await
            .expect("single POST")
            .xxhash3,
        Xxh3::of(&big)
    );
    c.put_chunk(chunk_id, chunk.clone()).await.expect("chunk PUT");
    assert_eq!(
        c.commit_chunks("committed.bin", &commit, false)
            .await
            .expect("commit")
            .xxhash3,
        Xxh3::of(&small_chunk)
    );
    c.create_directory("d2").await.expect("directory create");
    c.move_file("keep.txt", "moved.txt").await.expect("move");
    c.copy_file("moved.txt", "copied.txt").await.expect("copy");
    let resp = dav_put(&t, "dav-small.txt", Bytes::from_static(b"dav"))
        .send()
        .await
        .expect("dav");
    assert!(resp.status().is_success(), "WebDAV PUT: {}", resp.status());
    let answer = c.bulk_upload(bulk()).await.expect("bulk");
    assert!(answer.failed.is_empty(), "{answer:?}");
    assert_eq!(&c.download_file("moved.txt").await.expect("moved"), &old);
    assert_eq!(&c.download_file("copied.txt").await.expect("copied"), &old);
    assert_eq!(c.download_file("bulk/big.bin").await.expect("bulk big"), big);
    assert_eq!(
        c.download_file("committed.bin").await.expect("committed"),
        small_chunk
    );
    t.shutdown().await;
    drop(fs);
}
