//! `volebarn-server fsck`, the real binary on a real RocksDB + filesystem data directory
//! written by a real server: clean → 0; a flipped byte or a deleted chunk file → 1 with a line
//! naming the chunk and every file and version using it, and reading the file is a 500 that says
//! the content is damaged; wrong refcounts and orphans → 1, `--repair` fixes them, the next run
//! is clean; a running server → 2.

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::process::Command;
use volebarn_core::ChunkId;
use volebarn_server::storage::meta::rocks::RocksMetaStore;
use volebarn_server::storage::{MetaBatch, MetaOp, MetaStore};
use volebarn_testkit::{pseudo_random, TestServer};

/// The server binary: Cargo's, unless `VOLEBARN_SERVER_BIN` names another (when several
/// checkouts share one target directory, the uplifted binary may be another checkout's).
fn server_bin() -> std::path::PathBuf {
    std::env::var_os("VOLEBARN_SERVER_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_volebarn-server").into())
}

struct Run {
    code: i32,
    lines: Vec<String>,
    stderr: String,
}

impl Run {
    fn summary(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }

    /// The one line starting with `prefix`.
    fn line(&self, prefix: &str) -> &str {
        let found: Vec<&String> = self.lines.iter().filter(|l| l.starts_with(prefix)).collect();
        assert_eq!(
            found.len(),
            1,
            "one line starting {prefix:?} in {:#?}",
            self.lines
        );
        found[0]
    }
}

fn fsck(data: &Path, extra: &[&str]) -> Run {
    let out = Command::new(server_bin())
        .arg("fsck")
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "warn")
        .env_remove("VOLEBARN_CONFIG")
        .output()
        .expect("run fsck");
    let run = Run {
        code: out.status.code().expect("exit code"),
        lines: String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .map(str::to_string)
            .collect(),
        stderr: String::from_utf8(out.stderr).expect("utf-8"),
    };
    eprintln!(
        "fsck {extra:?} → {}\n{}\n{}",
        run.code,
        run.lines.join("\n"),
        run.stderr
    );
    run
}

fn chunk_file(data: &Path, id: &ChunkId) -> PathBuf {
    let hex = id.to_hex();
    data.join("chunks").join(&hex[..2]).join(hex)
}

/// Stops the server but keeps its temp directory (and so the data).
async fn stop(ts: &mut TestServer) {
    ts.server
        .take()
        .expect("running")
        .shutdown()
        .await
        .expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_chunks_are_named_with_every_file_and_version_using_them() {
    let mut ts = TestServer::start().await;
    let c = ts.client();
    // 200 KiB is below FastCDC's minimum: one chunk, in the chunk store (above 64 KiB).
    let shared = Bytes::from(pseudo_random(200 * 1024, 1));
    let id = ChunkId::of(&shared);
    c.upload_file("small.txt", Bytes::from_static(b"hello"))
        .await
        .expect("small");
    c.upload_file("big/one.bin", shared.clone()).await.expect("one");
    c.upload_file("third.bin", shared.clone()).await.expect("third");
    let old = c.upload_file("copy.bin", shared.clone()).await.expect("copy");
    // copy.bin moves on; its first revision, a kept version, still uses the chunk.
    c.update_file("copy.bin", Bytes::from(pseudo_random(300 * 1024, 2)))
        .await
        .expect("replace");
    c.upload_file("multi.bin", Bytes::from(pseudo_random(5 << 20, 3)))
        .await
        .expect("multi");
    stop(&mut ts).await;
    let data = ts.data();

    let clean = fsck(&data, &[]);
    assert_eq!(clean.code, 0, "a clean store");
    assert_eq!(clean.lines.len(), 1, "only the summary: {:?}", clean.lines);
    assert!(
        clean
            .summary()
            .starts_with("summary: 0 problems; checked 5 files, 1 versions"),
        "{}",
        clean.summary()
    );

    // Bit rot: one byte flipped in the chunk file.
    let path = chunk_file(&data, &id);
    let good = std::fs::read(&path).expect("chunk file");
    let mut bad = good.clone();
    bad[1000] ^= 0x40;
    std::fs::write(&path, &bad).expect("flip a byte");
    let run = fsck(&data, &[]);
    assert_eq!(run.code, 1);
    let line = run.line("corrupt chunk ");
    assert!(line.contains(&id.to_hex()), "{line}");
    for user in [
        "\"big/one.bin\"",
        "\"third.bin\"",
        &format!("version {} of \"copy.bin\"", old.rev),
    ] {
        assert!(line.contains(user), "{user} in {line}");
    }
    assert!(
        !line.contains("\"copy.bin\","),
        "the current copy.bin does not use it: {line}"
    );
    assert!(
        run.summary().starts_with("summary: 1 problem (1 corrupt)"),
        "{}",
        run.summary()
    );

    // Reading a damaged file through the API fails instead of returning wrong bytes.
    ts.restart().await;
    let c = ts.client_with(volebarn_testkit::fail_fast);
    let err = c.download_file("big/one.bin").await.expect_err("damaged file");
    eprintln!("download of a damaged file: {err}");
    let resp = ts
        .raw()
        .get(ts.url("/files/big/one.bin"))
        .bearer_auth(ts.token())
        .send()
        .await
        .expect("GET");
    let (status, body) = volebarn_testkit::operation_error(resp).await;
    assert_eq!(status, 500, "an error response, not a 200 cut short");
    assert_eq!(body.error_code, volebarn_core::ErrorCode::ServerError);
    assert!(
        body.error.contains("damaged") && body.error.contains("fsck"),
        "{}",
        body.error
    );
    assert_eq!(
        c.download_file("small.txt").await.expect("intact").as_ref(),
        b"hello"
    );
    stop(&mut ts).await;

    // --repair fixes nothing here and deletes no record.
    let run = fsck(&data, &["--repair"]);
    assert_eq!(run.code, 1);
    assert!(run.summary().contains("0 repaired"), "{}", run.summary());

    // A deleted chunk file.
    std::fs::remove_file(&path).expect("delete the chunk");
    let run = fsck(&data, &[]);
    assert_eq!(run.code, 1);
    let line = run.line("missing chunk ");
    assert!(
        line.contains(&id.to_hex()) && line.contains("\"big/one.bin\"") && line.contains("\"third.bin\""),
        "{line}"
    );

    std::fs::write(&path, &good).expect("put the chunk back");
    assert_eq!(fsck(&data, &[]).code, 0, "clean again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_refcounts_and_orphans_are_reported_and_repaired() {
    let mut ts = TestServer::start().await;
    let c = ts.client();
    let content = Bytes::from(pseudo_random(100 * 1024, 7));
    let id = ChunkId::of(&content);
    c.upload_file("a.bin", content.clone()).await.expect("a");
    c.upload_file("b.txt", Bytes::from_static(b"small and inline"))
        .await
        .expect("b");
    stop(&mut ts).await;
    let data = ts.data();

    // Damage the metadata directly: a refcount two too high, a count for a chunk nothing
    // uses, inline bytes nothing references; and a chunk file nothing references.
    let stray = Bytes::from_static(b"stray reference");
    let stray_id = ChunkId::of(&stray);
    let inline = Bytes::from_static(b"inline bytes of no file");
    let inline_id = ChunkId::of(&inline);
    {
        let meta = RocksMetaStore::open(&data.join("meta")).expect("open meta");
        let tx = meta.begin().expect("begin");
        tx.commit(MetaBatch {
            ops: vec![
                MetaOp::AdjustChunk {
                    id,
                    size: content.len() as u32,
                    delta: 2,
                },
                MetaOp::AdjustChunk {
                    id: stray_id,
                    size: stray.len() as u32,
                    delta: 1,
                },
                MetaOp::PutChunkData(inline_id, inline.clone()),
            ],
        })
        .expect("commit");
    }
    let orphan = pseudo_random(90 * 1024, 8);
    let orphan_id = ChunkId::of(&orphan);
    std::fs::write(chunk_file(&data, &orphan_id), &orphan).expect("orphan chunk file");

    let run = fsck(&data, &[]);
    assert_eq!(run.code, 1);
    assert!(run
        .line(&format!("refcount chunk {id}"))
        .contains("recorded 3, counted 1"));
    assert!(run
        .line(&format!("refcount chunk {stray_id}"))
        .contains("counted 0"));
    assert!(run
        .line(&format!("orphan inline chunk {inline_id}"))
        .contains("nothing uses it"));
    // The orphan file is younger than the default 24 h grace: left for GC, not a problem.
    assert!(
        !run.lines.iter().any(|l| l.contains(&orphan_id.to_hex())),
        "{:?}",
        run.lines
    );
    assert!(
        run.summary().starts_with("summary: 3 problems"),
        "{}",
        run.summary()
    );
    assert!(
        run.summary()
            .contains("1 unreferenced chunks within the orphan grace"),
        "{}",
        run.summary()
    );

    // The server's config file works for fsck too: with no grace the orphan file is garbage.
    let config = ts.dir.path().join("server.toml");
    std::fs::write(&config, "[chunks]\norphan_grace = \"0s\"\n").expect("config");
    let config = config.to_str().expect("utf-8 path");
    let run = fsck(&data, &["--config", config]);
    assert_eq!(run.code, 1);
    assert!(run
        .line(&format!("orphan chunk {orphan_id}"))
        .contains("orphan grace"));
    assert!(
        run.summary().starts_with("summary: 4 problems"),
        "{}",
        run.summary()
    );

    let run = fsck(&data, &["--config", config, "--repair"]);
    assert_eq!(run.code, 1, "problems were found (and fixed)");
    assert!(run.summary().contains("4 repaired"), "{}", run.summary());
    let run = fsck(&data, &["--config", config]);
    assert_eq!(run.code, 0, "repaired: clean");
    assert!(!chunk_file(&data, &orphan_id).exists(), "the orphan file is gone");
    {
        let meta = RocksMetaStore::open(&data.join("meta")).expect("open meta");
        assert_eq!(meta.chunk(&id).expect("read").map(|c| c.refs), Some(1));
        assert_eq!(meta.chunk(&stray_id).expect("read"), None);
        assert_eq!(meta.chunk_data(&inline_id).expect("read"), None);
    }

    // Every file record is intact.
    ts.restart().await;
    let c = ts.client();
    assert_eq!(c.download_file("a.bin").await.expect("a"), content);
    assert_eq!(
        c.download_file("b.txt").await.expect("b").as_ref(),
        b"small and inline"
    );
    stop(&mut ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_cannot_run_beside_a_running_server_or_without_a_store() {
    let ts = TestServer::start().await;
    ts.client()
        .upload_file("x.txt", Bytes::from_static(b"x"))
        .await
        .expect("upload");
    let run = fsck(&ts.data(), &[]);
    assert_eq!(run.code, 2);
    assert!(run.lines.is_empty(), "nothing checked: {:?}", run.lines);
    assert!(
        run.stderr.contains("is volebarn-server running?"),
        "{}",
        run.stderr
    );

    let run = fsck(&ts.dir.path().join("nowhere"), &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no data directory"), "{}", run.stderr);
    ts.shutdown().await;
}
