//! Scenario "backends": the same uploads against every storage pair the server runs on —
//! RocksDB + filesystem (the default), PostgreSQL + filesystem and PostgreSQL + S3 (a
//! single-node Garage) — each a fresh `volebarn-server` process, printed side by side with
//! rsync to its daemon; then small files uploaded by 16 concurrent clients (one request per
//! file) to one replica and to two replicas on the same PostgreSQL + S3.
//!
//! PostgreSQL is a throwaway cluster and Garage a throwaway node, both started here through
//! the test kit (`make bench` installs them when missing). PostgreSQL runs with its defaults
//! (`fsync` and `synchronous_commit` on), so every acknowledged upload is durable, as with
//! the embedded store.

use crate::console::thousands;
use crate::rsync::RsyncDaemon;
use crate::server::{client_for, spawn_server_env, BenchServer};
use crate::tree;
use crate::upload::{bulk, rate};
use bytes::Bytes;
use std::path::Path;
use std::time::{Duration, Instant};
use volebarn_client::Client;
use volebarn_server::storage::chunks::s3::S3Settings;
use volebarn_testkit::{pg_cluster, Garage};

const CLIENTS: usize = 16;
const TOKEN: &str = "bench-backends-token-0123456789abcdef";

/// Where one server (or a set of replicas) keeps its data.
#[derive(Clone)]
struct Pair {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

fn s3_env(s: &S3Settings) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            env.push((k.to_string(), v.clone()));
        }
    };
    put("AWS_ENDPOINT", &s.endpoint);
    put("AWS_REGION", &s.region);
    put("AWS_ACCESS_KEY_ID", &s.access_key_id);
    put("AWS_SECRET_ACCESS_KEY", &s.secret_access_key);
    if s.allow_http {
        env.push(("AWS_ALLOW_HTTP".into(), "true".into()));
    }
    env
}

fn rocks_fs() -> Pair {
    Pair {
        name: "RocksDB + filesystem",
        args: Vec::new(),
        env: Vec::new(),
    }
}

fn postgres_fs(work: &Path, tag: &str) -> Pair {
    Pair {
        name: "PostgreSQL + filesystem",
        args: vec![
            "--meta".into(),
            pg_cluster().database(),
            "--chunks".into(),
            work.join(format!("{tag}-chunks")).display().to_string(),
        ],
        env: Vec::new(),
    }
}

fn postgres_s3(tag: &str) -> Pair {
    let bucket = Garage::get().bucket();
    Pair {
        name: "PostgreSQL + S3 (Garage)",
        args: vec![
            "--meta".into(),
            pg_cluster().database(),
            "--chunks".into(),
            bucket.url(tag),
        ],
        env: s3_env(&bucket.settings),
    }
}

async fn start(pair: &Pair, dir: &Path, max_file: &str) -> anyhow::Result<(BenchServer, Client)> {
    let mut args: Vec<&str> = pair.args.iter().map(String::as_str).collect();
    args.extend(["--max-file-size", max_file, "--token", TOKEN]);
    let server = spawn_server_env(dir, &args, &pair.env).await?;
    let client = client_for(&server)?;
    client.ping().await?;
    Ok((server, client))
}

pub async fn run(work: &Path, n: usize, large_mib: u64) -> anyhow::Result<()> {
    let src = work.join("backends-src");
    let files = tree::make_tree(&src, n)?;
    let big_dir = work.join("backends-large");
    let big = big_dir.join("big.bin");
    let size = large_mib << 20;
    tree::make_large(&big, size)?;
    let max_file = (2 * size).max(1 << 30).to_string();
    println!(
        "backends: {} small files (bulk upload, 1,000 per request, 4 in flight) and one {} MiB \
         file (chunked upload), each to a fresh volebarn-server process on each storage pair; \
         TLS over loopback, durable",
        thousands(files.len()),
        thousands(large_mib as usize)
    );
    // Garage and PostgreSQL start before anything is timed.
    let pairs = [rocks_fs(), postgres_fs(work, "backends"), postgres_s3("backends")];
    println!(
        "  {:<28} {:>30}   {:>24}",
        "storage",
        format!("{} small files", thousands(files.len())),
        format!("{} MiB file", thousands(large_mib as usize))
    );
    for (i, pair) in pairs.iter().enumerate() {
        let (server, client) = start(pair, &work.join(format!("backends-srv-{i}")), &max_file).await?;
        let small = bulk(&server, &client, &files, 4).await?;
        crate::settle()?;
        let started = Instant::now();
        let meta = client.upload_path("big.bin", &big, false).await?;
        let large = started.elapsed();
        anyhow::ensure!(meta.size == size, "stored {} bytes, not {size}", meta.size);
        server.shutdown().await?;
        println!(
            "  {:<28} {}   {}",
            pair.name,
            rate(files.len(), small),
            mib_rate(large_mib, large)
        );
    }
    let rsync_dir = work.join("backends-rsync");
    std::fs::create_dir_all(&rsync_dir)?;
    match RsyncDaemon::start(&rsync_dir)? {
        Some(daemon) => {
            let small = daemon.push(&src, &[])?;
            let large = daemon.push(&big_dir, &[])?;
            println!(
                "  {:<28} {}   {}",
                "rsync -a (daemon, no fsync)",
                rate(files.len(), small),
                mib_rate(large_mib, large)
            );
        }
        None => println!("  rsync not installed: skipped (make bench installs it)"),
    }

    println!();
    println!(
        "backends, replicas: {CLIENTS} clients at once, one request per file (upload_file), {} \
         files, on PostgreSQL + S3 (Garage); with two replicas, half the clients talk to each",
        thousands(files.len())
    );
    for replicas in [1usize, 2] {
        let pair = postgres_s3(&format!("replicas-{replicas}"));
        let mut servers = Vec::new();
        for r in 0..replicas {
            let dir = work.join(format!("backends-rep{replicas}-{r}"));
            servers.push(start(&pair, &dir, &max_file).await?);
        }
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let (server, _) = &servers[i % replicas];
            let c = client_for(server)?;
            c.ping().await?;
            clients.push(c);
        }
        crate::settle()?;
        let took = concurrent(clients, &files).await?;
        for (server, _) in servers {
            server.shutdown().await?;
        }
        println!(
            "  {replicas} replica{}: {}",
            if replicas == 1 { " " } else { "s" },
            rate(files.len(), took)
        );
    }
    Ok(())
}

/// Client `i` sends files `i`, `i + CLIENTS`, …, one after another; all clients at once.
async fn concurrent(clients: Vec<Client>, files: &[(String, Bytes)]) -> anyhow::Result<Duration> {
    let n = clients.len();
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let share: Vec<(String, Bytes)> = files.iter().skip(i).step_by(n).cloned().collect();
            tokio::spawn(async move {
                for (p, b) in share {
                    c.upload_file(&p, b).await?;
                }
                Ok::<_, volebarn_client::ClientError>(())
            })
        })
        .collect();
    for t in futures_util::future::join_all(tasks).await {
        t??;
    }
    Ok(started.elapsed())
}

fn mib_rate(mib: u64, d: Duration) -> String {
    format!(
        "{:>8.2} s  {:>7.0} MiB/s",
        d.as_secs_f64(),
        mib as f64 / d.as_secs_f64()
    )
}
