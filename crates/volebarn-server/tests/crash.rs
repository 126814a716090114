//! A crash mid-flight: the real server binary takes concurrent small and chunked uploads from
//! several client tasks, is killed with SIGKILL once enough writes were acknowledged, and is
//! restarted on the same data directory. `fsck` is clean right after the crash and after the
//! restart, and every write that got a 2xx reads back with its hash.

use bytes::Bytes;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use volebarn_client::{Client, ClientConfig, Xxh3};
use volebarn_testkit::pseudo_random;

/// Writers uploading at once.
const WRITERS: usize = 4;
/// The server is killed once this many writes were acknowledged.
const KILL_AFTER: usize = 40;

/// The server binary: Cargo's, unless `VOLEBARN_SERVER_BIN` names another (when several
/// checkouts share one target directory, the uplifted binary may be another checkout's).
fn server_bin() -> std::path::PathBuf {
    std::env::var_os("VOLEBARN_SERVER_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_volebarn-server").into())
}

struct Proc {
    child: Child,
    url: String,
}

fn spawn(data: &Path) -> Proc {
    let mut child = Command::new(server_bin())
        .args(["--port", "0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .env_remove("VOLEBARN_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("listening line").expect("utf-8");
        if let Some(url) = line.strip_prefix("volebarn-server listening on ") {
            break url.to_string();
        }
    };
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc { child, url }
}

fn client(p: &Proc, data: &Path) -> Client {
    let token = std::fs::read_to_string(data.join("token")).expect("token");
    let mut cfg = ClientConfig::new(p.url.clone(), token.trim());
    cfg.ca_cert = Some(data.join("tls/cert.pem"));
    volebarn_testkit::fail_fast(&mut cfg);
    Client::new(cfg).expect("client")
}

fn fsck(data: &Path) -> (i32, String) {
    let out = Command::new(server_bin())
        .arg("fsck")
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .env_remove("VOLEBARN_CONFIG")
        .output()
        .expect("run fsck");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    eprintln!("fsck: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().expect("exit code"), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_flight_loses_no_acknowledged_write_and_leaves_fsck_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).expect("local dir");
    let mut server = spawn(&data);
    let c = client(&server, &data);

    // Acknowledged writes (path, hash); a watch counts them so the test kills on a count.
    let acked: Arc<Mutex<Vec<(String, Xxh3)>>> = Arc::default();
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
    let count_tx = Arc::new(count_tx);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (c, acked, count_tx, local) = (c.clone(), acked.clone(), count_tx.clone(), local.clone());
        writers.push(tokio::spawn(async move {
            for i in 0u64.. {
                let path = format!("w{w}/f{i}");
                let seed = (w as u64) << 32 | i;
                let result = if i % 4 == 3 {
                    // Chunked: several chunks through /chunks and a commit.
                    let file = local.join(format!("w{w}-{i}"));
                    let hash = volebarn_testkit::write_pseudo_random(&file, 3 << 20, seed);
                    c.upload_large(&path, &file, false)
                        .await
                        .map(|m| (m.xxhash3, hash))
                } else {
                    // Small: inline in the metadata store, or one chunk file.
                    let len = [3_000, 40_000, 150_000][(i % 3) as usize];
                    let body = Bytes::from(pseudo_random(len, seed));
                    let hash = Xxh3::of(&body);
                    c.upload_file(&path, body).await.map(|m| (m.xxhash3, hash))
                };
                match result {
                    Ok((served, hash)) => {
                        assert_eq!(served, hash, "{path}: acknowledged with the right hash");
                        acked.lock().expect("lock").push((path, hash));
                        count_tx.send_modify(|n| *n += 1);
                    }
                    // The server is gone: this writer is done.
                    Err(_) => return,
                }
            }
        }));
    }
    count_rx
        .wait_for(|n| *n >= KILL_AFTER)
        .await
        .expect("writers acknowledged");
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    for w in writers {
        w.await.expect("writer task");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= KILL_AFTER, "{} acknowledged", acked.len());
    eprintln!("{} writes acknowledged before the kill", acked.len());

    let (code, out) = fsck(&data);
    assert_eq!(code, 0, "fsck is clean right after the crash: {out}");

    let server = spawn(&data);
    let c = client(&server, &data);
    for (path, hash) in &acked {
        let bytes = c
            .download_file(path)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(Xxh3::of(&bytes), *hash, "{path} reads back");
        let meta = c.get_file_metadata(path).await.expect("metadata");
        assert_eq!(meta.xxhash3, *hash, "{path}: served hash");
    }
    let pid = server.child.id().to_string();
    let mut child = server.child;
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    assert!(child.wait().expect("wait").success(), "graceful stop");
    let (code, out) = fsck(&data);
    assert_eq!(code, 0, "fsck is clean after the restart: {out}");
    assert!(out.contains("summary: 0 problems"), "{out}");
}
