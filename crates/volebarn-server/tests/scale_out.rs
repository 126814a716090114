//! Two real servers (replicas) on one PostgreSQL database and one S3 bucket (Garage), driven
//! over HTTPS by real clients, as a load balancer would spread them: whatever one replica
//! acknowledges, the other serves; revisions, `If-Match`, long-polls, versions and dedup hold
//! across them; `kill -9` of one replica under load loses nothing it acknowledged. Also: what
//! a user sees when `--meta`/`--chunks` point at nothing.

use bytes::Bytes;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use volebarn_client::{Client, ClientConfig};
use volebarn_core::Xxh3;
use volebarn_server::config::{ChunkBackend, MetaBackend};
use volebarn_server::storage::chunks::s3::{S3ChunkStore, S3Settings};
use volebarn_server::storage::ChunkStore;
use volebarn_testkit::{pg_cluster, pseudo_random, wait_for, Garage, TestServer};

const TOKEN: &str = "replica-test-token-0123456789abcdef";

/// Where the replicas keep their shared state: one PostgreSQL database and one S3 bucket.
struct Shared {
    meta: String,
    chunks: String,
    s3: S3Settings,
}

impl Shared {
    async fn postgres_s3() -> Shared {
        tokio::task::spawn_blocking(|| {
            let bucket = Garage::get().bucket();
            Shared {
                meta: pg_cluster().database(),
                chunks: bucket.url("chunks"),
                s3: bucket.settings,
            }
        })
        .await
        .expect("set-up task")
    }

    async fn replica(&self) -> TestServer {
        TestServer::start_with(|cfg| {
            cfg.meta = Some(MetaBackend::Postgres(self.meta.clone()));
            cfg.chunks = Some(ChunkBackend::S3(self.chunks.clone()));
            cfg.s3 = Some(self.s3.clone());
            cfg.token = Some(TOKEN.into());
        })
        .await
    }

    /// Chunk objects in the shared bucket.
    async fn chunk_objects(&self) -> usize {
        let store = S3ChunkStore::open(&self.chunks, &self.s3)
            .await
            .expect("open bucket");
        store.list().await.expect("list").len()
    }

    /// The environment a `volebarn-server` process reads these S3 settings from.
    fn s3_env(&self) -> Vec<(&'static str, String)> {
        let s = &self.s3;
        let mut env = vec![("AWS_ALLOW_HTTP", s.allow_http.to_string())];
        for (k, v) in [
            ("AWS_ENDPOINT", &s.endpoint),
            ("AWS_REGION", &s.region),
            ("AWS_ACCESS_KEY_ID", &s.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &s.secret_access_key),
        ] {
            if let Some(v) = v {
                env.push((k, v.clone()));
            }
        }
        env
    }
}

async fn two_replicas(shared: &Shared) -> (TestServer, TestServer) {
    let a = shared.replica().await;
    let b = shared.replica().await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_through_one_replica_is_read_through_the_other() {
    let shared = Shared::postgres_s3().await;
    let (a, b) = two_replicas(&shared).await;
    // Small (inline in PostgreSQL) and large (chunks in the shared store).
    let small = Bytes::from_static(b"hello from replica a");
    let large = Bytes::from(pseudo_random(3 * 1024 * 1024 + 17, 7));
    a.client
        .upload_file("small.txt", small.clone())
        .await
        .expect("upload small");
    a.client
        .upload_file("dir/large.bin", large.clone())
        .await
        .expect("upload large");
    for (path, data) in [("small.txt", &small), ("dir/large.bin", &large)] {
        assert_eq!(&b.client.download_file(path).await.expect("download"), data);
        let resp = b
            .raw()
            .get(b.url(&format!("/files/{path}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-file-hash"].to_str().expect("ascii"),
            Xxh3::of(data).to_string()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_replica_wakes_within_a_second_of_a_write_through_the_other() {
    let shared = Shared::postgres_s3().await;
    let (a, b) = two_replicas(&shared).await;
    let next = b.client.changes(0, 0).await.expect("changes").next;
    let waiter = {
        let c = b.client();
        tokio::spawn(async move { c.changes(next, 30).await })
    };
    // Write only once b has parked the long-poll (its /metrics say so).
    let (raw, metrics) = (b.raw(), b.url("/metrics"));
    let parked = wait_for_async(Duration::from_secs(10), || {
        let (raw, metrics) = (raw.clone(), metrics.clone());
        async move {
            let text = raw
                .get(&metrics)
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines().any(|l| l == "volebarn_long_polls 1").then_some(())
        }
    })
    .await;
    assert!(parked.is_some(), "b parked the long-poll");
    let written = Instant::now();
    a.client
        .upload_file("wake.txt", Bytes::from_static(b"x"))
        .await
        .expect("upload");
    let answer = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("long-poll answered")
        .expect("task")
        .expect("changes");
    let waited = written.elapsed();
    assert!(waited < Duration::from_secs(1), "woken after {waited:?}");
    assert!(answer.changes.iter().any(|c| c.path == "wake.txt"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_races_across_replicas_have_exactly_one_winner() {
    let shared = Shared::postgres_s3().await;
    let (a, b) = two_replicas(&shared).await;
    let mut rev = a
        .client
        .upload_file("race.txt", Bytes::from_static(b"0"))
        .await
        .expect("create")
        .rev;
    for round in 0..10u32 {
        let (ca, cb) = (a.client(), b.client());
        let (ra, rb) = tokio::join!(
            ca.update_file_if("race.txt", Bytes::from(format!("a{round}")), rev),
            cb.update_file_if("race.txt", Bytes::from(format!("b{round}")), rev),
        );
        let (winner, loser) = match (ra, rb) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            (ra, rb) => panic!("round {round}: expected one 200 and one 412, got {ra:?} / {rb:?}"),
        };
        assert_eq!(loser.status(), Some(412), "round {round}: {loser:?}");
        assert!(winner.rev > rev);
        rev = winner.rev;
        let body = a.client.download_file("race.txt").await.expect("download");
        assert_eq!(
            b.client.get_file_metadata("race.txt").await.expect("stat").rev,
            rev
        );
        assert!(body == format!("a{round}").as_bytes() || body == format!("b{round}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_uploads_over_both_replicas_get_distinct_revisions() {
    let shared = Shared::postgres_s3().await;
    let (a, b) = two_replicas(&shared).await;
    let clients = [a.client(), b.client()];
    let uploads = (0..200u32).map(|i| {
        let c = clients[(i % 2) as usize].clone();
        async move {
            c.upload_file(&format!("many/{i:03}.txt"), Bytes::from(format!("file {i}")))
                .await
                .expect("upload")
                .rev
        }
    });
    let revs: BTreeSet<u64> = futures_util::future::join_all(uploads)
        .await
        .into_iter()
        .collect();
    assert_eq!(revs.len(), 200, "every upload got its own revision");
    for server in [&a, &b] {
        let manifest = server.client.get_manifest(Some("many")).await.expect("manifest");
        assert_eq!(manifest.files.len(), 200);
        let seen: BTreeSet<u64> = manifest.files.values().map(|f| f.rev).collect();
        assert_eq!(seen, revs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_deletes_versions_and_dedup_are_shared() {
    let shared = Shared::postgres_s3().await;
    let (a, b) = two_replicas(&shared).await;
    let v1 = Bytes::from(pseudo_random(600 * 1024, 1));
    let v2 = Bytes::from(pseudo_random(600 * 1024, 2));
    a.client.upload_file("doc.bin", v1.clone()).await.expect("v1");
    b.client.update_file("doc.bin", v2.clone()).await.expect("v2");
    let versions = a.client.versions("doc.bin").await.expect("versions");
    assert!(!versions.versions.is_empty(), "a sees the version b archived");
    a.client
        .move_file("doc.bin", "moved/doc.bin")
        .await
        .expect("move");
    assert_eq!(b.client.download_file("moved/doc.bin").await.expect("read"), v2);
    assert_eq!(
        b.client
            .get_file_metadata("doc.bin")
            .await
            .err()
            .and_then(|e| e.status()),
        Some(404)
    );
    b.client.delete_file("moved/doc.bin").await.expect("delete");
    assert_eq!(
        a.client
            .get_file_metadata("moved/doc.bin")
            .await
            .err()
            .and_then(|e| e.status()),
        Some(404)
    );
    // The same content through the other replica adds no object to the shared store.
    let objects = shared.chunk_objects().await;
    let big = Bytes::from(pseudo_random(2 * 1024 * 1024, 3));
    a.client.upload_file("one.bin", big.clone()).await.expect("one");
    let after_first = shared.chunk_objects().await;
    assert!(after_first > objects, "the first upload stored chunks");
    b.client.upload_file("two.bin", big.clone()).await.expect("two");
    assert_eq!(shared.chunk_objects().await, after_first, "dedup across replicas");
    assert_eq!(a.client.download_file("two.bin").await.expect("read"), big);
}

/// Polls `probe` until it yields a value or `timeout` passes.
async fn wait_for_async<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `volebarn-server` binary as a separate process (so it can be killed with SIGKILL).
struct Process {
    child: std::process::Child,
    url: String,
    ca: PathBuf,
}

fn spawn_replica(shared: &Shared, data: &std::path::Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_volebarn-server"))
        .args(["--data-dir", &data.display().to_string(), "--port", "0"])
        .args([
            "--meta",
            &shared.meta,
            "--chunks",
            &shared.chunks,
            "--token",
            TOKEN,
        ])
        .envs(shared.s3_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn volebarn-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let url = loop {
        let line = lines.next().expect("server printed its address").expect("line");
        if let Some(u) = line.strip_prefix("volebarn-server listening on ") {
            break u.to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Process {
        child,
        url,
        ca: data.join("tls").join("cert.pem"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_replica_under_load_loses_nothing_it_acknowledged() {
    let shared = Shared::postgres_s3().await;
    let b = shared.replica().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = spawn_replica(&shared, dir.path());
    let ca = a.ca.clone();
    assert!(
        ca.exists(),
        "the replica wrote its certificate to {}",
        ca.display()
    );
    let client = Client::new({
        let mut c = ClientConfig::new(a.url.clone(), TOKEN);
        c.ca_cert = Some(ca);
        c.retry.max_retries = 0;
        c
    })
    .expect("client");
    // Four writers upload until the replica dies under them.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Bytes)>::new()));
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let (client, acked) = (client.clone(), acked.clone());
            tokio::spawn(async move {
                for i in 0u32.. {
                    let path = format!("load/{w}/{i}.bin");
                    let size = if i % 5 == 0 { 300 * 1024 } else { 2000 };
                    let data = Bytes::from(pseudo_random(size, u64::from(w * 100_000 + i)));
                    match client.upload_file(&path, data.clone()).await {
                        Ok(_) => acked.lock().expect("lock").push((path, data)),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    let acked_probe = acked.clone();
    assert!(
        wait_for(Duration::from_secs(60), move || acked_probe
            .lock()
            .expect("lock")
            .len()
            >= 40)
        .await,
        "40 uploads acknowledged before the kill"
    );
    a.child.kill().expect("SIGKILL");
    let _ = a.child.wait();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 40);
    for (path, data) in &acked {
        let got = b
            .client
            .download_file(path)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(&got, data, "{path}");
    }
}

#[test]
fn bad_engine_urls_fail_fast_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let unreachable = format!("postgres://postgres@127.0.0.1:{free_port}/volebarn");
    let missing_bucket = Garage::get().bucket().url("x").replace("s3://", "s3://no-such-");
    let cases: [(&[&str], &str); 5] = [
        (&["--chunks", &missing_bucket], "does not exist"),
        (&["--meta", &unreachable], &format!("127.0.0.1:{free_port}")),
        (&["--meta", "mysql://db/volebarn"], "\"mysql\""),
        (&["--chunks", "gs://bucket/prefix"], "\"gs\""),
        (&["--meta", &pg_cluster().url("missing_db")], "missing_db"),
    ];
    let garage_env = {
        let b = Garage::get().bucket();
        Shared {
            meta: String::new(),
            chunks: String::new(),
            s3: b.settings,
        }
        .s3_env()
    };
    for (args, expect) in cases {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_volebarn-server"))
            .args(["--data-dir", &dir.path().display().to_string(), "--port", "0"])
            .args(args)
            .envs(garage_env.clone())
            .env("RUST_LOG", "off")
            .output()
            .expect("run volebarn-server");
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(elapsed < Duration::from_secs(15), "{args:?} took {elapsed:?}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line, got {stderr:?}"
        );
        assert!(
            stderr.contains(expect),
            "{args:?}: {stderr:?} should name {expect}"
        );
    }
}

/// `volebarn-server fsck` on the shared stores: clean after real uploads, and a chunk gone
/// from the bucket is reported with the file that uses it (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_checks_a_postgres_and_s3_store() {
    let shared = Shared::postgres_s3().await;
    let mut a = shared.replica().await;
    // 200 KiB: one chunk, in the bucket (above the inline threshold); 2 KiB: inline.
    let big = Bytes::from(pseudo_random(200 * 1024, 7));
    a.client
        .upload_file("big.bin", big.clone())
        .await
        .expect("upload");
    a.client
        .upload_file("small.txt", Bytes::from_static(b"small"))
        .await
        .expect("upload");
    a.server
        .take()
        .expect("running")
        .shutdown()
        .await
        .expect("clean shutdown");
    let (data, meta, chunks, env) = (
        a.dir.path().join("data"),
        shared.meta.clone(),
        shared.chunks.clone(),
        shared.s3_env(),
    );
    let fsck = move || {
        let out = Command::new(env!("CARGO_BIN_EXE_volebarn-server"))
            .args(["fsck", "--data-dir"])
            .arg(&data)
            .args(["--meta", &meta, "--chunks", &chunks])
            .envs(env.clone())
            .env("RUST_LOG", "warn")
            .env_remove("VOLEBARN_CONFIG")
            .output()
            .expect("run fsck");
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        eprintln!(
            "fsck → {:?}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().expect("exit code"), stdout)
    };
    let (code, stdout) = tokio::task::spawn_blocking(fsck.clone()).await.expect("fsck");
    assert_eq!(code, 0, "clean: {stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("summary: 0 problems")),
        "{stdout}"
    );

    let id = volebarn_core::ChunkId::of(&big);
    S3ChunkStore::open(&shared.chunks, &shared.s3)
        .await
        .expect("open bucket")
        .delete(&id)
        .await
        .expect("delete the chunk object");
    let (code, stdout) = tokio::task::spawn_blocking(fsck).await.expect("fsck");
    assert_eq!(code, 1, "{stdout}");
    let missing: Vec<&str> = stdout.lines().filter(|l| l.starts_with("missing")).collect();
    assert_eq!(missing.len(), 1, "{stdout}");
    assert!(
        missing[0].contains(&id.to_hex()) && missing[0].contains("big.bin"),
        "{stdout}"
    );
}
