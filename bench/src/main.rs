//! `volebarn-bench`: measures Volebarn against rsync on the same machine and the same data,
//! and prints the figures. Run with `make bench` (or `cargo run -p volebarn-bench --release`).
//!
//! Scenario "small files": N files of 1–16 KiB (default 10,000), uploaded to a fresh TLS
//! server over loopback (durable: every 2xx is fsynced):
//! 1. one request per file (8 in flight),
//! 2. bulk upload, batches of 1,000 files, one after another,
//! 3. bulk upload, batches of 1,000 files, 4 in flight,
//! 4. for reference, rsync to an rsync daemon on loopback (no fsync), when rsync exists.

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use volebarn_client::{Client, ClientConfig, FileUpload};
use volebarn_server::config::ServerConfig;

struct Args {
    files: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { files: 10_000 };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--files" => args.files = it.next().context("--files N")?.parse()?,
            other => bail!("unknown argument {other} (usage: volebarn-bench [--files N])"),
        }
    }
    Ok(args)
}

/// Deterministic tree: `d{i % 100}/f{i}.bin`, sizes 1–16 KiB, incompressible.
fn make_tree(root: &Path, n: usize) -> anyhow::Result<Vec<(String, Bytes)>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let size = 1024 + (next() % (15 * 1024 + 1)) as usize;
        let mut data = Vec::with_capacity(size + 8);
        while data.len() < size {
            data.extend_from_slice(&next().to_le_bytes());
        }
        data.truncate(size);
        let rel = format!("d{:02}/f{i:05}.bin", i % 100);
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(&path, &data)?;
        files.push((rel, Bytes::from(data)));
    }
    Ok(files)
}

async fn fresh_server(dir: &Path) -> anyhow::Result<(volebarn_server::RunningServer, Client)> {
    let mut cfg = ServerConfig::new(dir);
    cfg.port = 0;
    let server = volebarn_server::start(cfg).await?;
    let mut ccfg = ClientConfig::new(server.url.clone(), server.token.clone());
    ccfg.ca_cert = server.ca_cert.clone();
    let client = Client::new(ccfg)?;
    client.ping().await?;
    Ok((server, client))
}

async fn per_file(client: &Client, files: &[(String, Bytes)]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let results: Vec<_> = futures_util::stream::iter(files.iter().cloned())
        .map(|(p, b)| {
            let c = client.clone();
            async move { c.upload_file(&p, b).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let elapsed = start.elapsed();
    for r in results {
        r?;
    }
    Ok(elapsed)
}

async fn bulk(client: &Client, files: &[(String, Bytes)], in_flight: usize) -> anyhow::Result<Duration> {
    let batches: Vec<Vec<FileUpload>> = files
        .chunks(1000)
        .map(|c| {
            c.iter()
                .map(|(p, b)| FileUpload {
                    path: p.clone(),
                    content: b.clone(),
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    let results: Vec<_> = futures_util::stream::iter(batches)
        .map(|batch| {
            let c = client.clone();
            async move { c.bulk_upload(batch).await }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = start.elapsed();
    for r in results {
        let r = r?;
        if !r.failed.is_empty() {
            bail!(
                "bulk upload failed for {} files: {:?}",
                r.failed.len(),
                r.failed.first()
            );
        }
    }
    Ok(elapsed)
}

/// rsync of `src` to an rsync daemon on loopback; `None` when rsync is not installed.
fn rsync_daemon(src: &Path, work: &Path) -> anyhow::Result<Option<Duration>> {
    if Command::new("rsync")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return Ok(None);
    }
    let dst = work.join("rsync-dst");
    std::fs::create_dir_all(&dst)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let conf = work.join("rsyncd.conf");
    // Run the daemon's transfers as the owner of the work dir (a root daemon would drop to
    // `nobody` and be refused).
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(work)?);
    let group = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(work)?);
    std::fs::write(
        &conf,
        format!(
            "use chroot = no\nuid = {owner}\ngid = {group}\nport = {port}\naddress = 127.0.0.1\npid file = {}\n[vb]\npath = {}\nread only = no\n",
            work.join("rsyncd.pid").display(),
            dst.display()
        ),
    )?;
    let mut daemon = Command::new("rsync")
        .arg("--daemon")
        .arg("--no-detach")
        .arg(format!("--config={}", conf.display()))
        .spawn()?;
    // Wait until the daemon accepts connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = daemon.kill();
            bail!("rsync daemon did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let status = Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", src.display()))
        .arg(format!("rsync://127.0.0.1:{port}/vb/"))
        .status()?;
    let elapsed = start.elapsed();
    let _ = daemon.kill();
    let _ = daemon.wait();
    if !status.success() {
        bail!("rsync failed: {status}");
    }
    Ok(Some(elapsed))
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>8.3} s  {:>9.0} files/s",
        d.as_secs_f64(),
        n as f64 / d.as_secs_f64()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args = parse_args()?;
    let work = tempfile::tempdir()?;
    let src: PathBuf = work.path().join("src");
    let files = make_tree(&src, args.files)?;
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    println!(
        "small files: {} files, {:.1} MiB, 1–16 KiB each; TLS over loopback, durable",
        files.len(),
        bytes as f64 / 1048576.0
    );

    let mut results = Vec::new();
    let (server, client) = fresh_server(&work.path().join("srv-a")).await?;
    results.push((
        "volebarn, one request per file (8 in flight)",
        per_file(&client, &files).await?,
    ));
    server.shutdown().await?;
    let (server, client) = fresh_server(&work.path().join("srv-b")).await?;
    results.push((
        "volebarn, bulk upload (1,000 per request)",
        bulk(&client, &files, 1).await?,
    ));
    server.shutdown().await?;
    let (server, client) = fresh_server(&work.path().join("srv-c")).await?;
    results.push((
        "volebarn, bulk upload (1,000 per request, 4 in flight)",
        bulk(&client, &files, 4).await?,
    ));
    server.shutdown().await?;
    match rsync_daemon(&src, work.path())? {
        Some(d) => results.push(("rsync -a to rsync daemon (loopback, no fsync)", d)),
        None => println!("rsync not installed: skipped (make bench installs it)"),
    }
    for (name, d) in &results {
        println!("  {name:<56} {}", rate(files.len(), *d));
    }
    if let (Some(single), Some(bulk)) = (results.first(), results.get(1)) {
        println!(
            "bulk upload is {:.1}x faster than one request per file",
            single.1.as_secs_f64() / bulk.1.as_secs_f64()
        );
    }
    Ok(())
}
