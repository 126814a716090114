//! Scenario "upload": N small files uploaded through the client library to a fresh TLS server
//! over loopback (durable: every 2xx is fsynced) — one request per file (8 in flight), bulk
//! batches of 1,000 one after another, bulk with 4 in flight — and, for reference, `rsync -a`
//! of the same tree to an rsync daemon on loopback (no fsync).

use crate::rsync::RsyncDaemon;
use crate::server::{fresh_server, stop_profiler, BenchServer, Profiler};
use crate::tree;
use anyhow::bail;
use bytes::Bytes;
use futures_util::StreamExt;
use std::path::Path;
use std::time::{Duration, Instant};
use volebarn_client::{Client, FileUpload};

pub async fn run(work: &Path, n: usize) -> anyhow::Result<()> {
    let src = work.join("upload-src");
    let files = tree::make_tree(&src, n)?;
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    println!(
        "upload: {} files, {:.1} MiB, 1–16 KiB each; TLS over loopback, durable",
        files.len(),
        bytes as f64 / 1048576.0
    );

    let mut results = Vec::new();
    let (server, client) = fresh_server(&work.join("upload-srv-a")).await?;
    results.push((
        "volebarn, one request per file (8 in flight)",
        per_file(&server, &client, &files).await?,
    ));
    server.shutdown().await?;
    let (server, client) = fresh_server(&work.join("upload-srv-b")).await?;
    results.push((
        "volebarn, bulk upload (1,000 per request)",
        bulk(&server, &client, &files, 1).await?,
    ));
    server.shutdown().await?;
    let (server, client) = fresh_server(&work.join("upload-srv-c")).await?;
    results.push((
        "volebarn, bulk upload (1,000 per request, 4 in flight)",
        bulk(&server, &client, &files, 4).await?,
    ));
    server.shutdown().await?;
    let rsync_dir = work.join("upload-rsync");
    std::fs::create_dir_all(&rsync_dir)?;
    match RsyncDaemon::start(&rsync_dir)? {
        Some(daemon) => results.push((
            "rsync -a to rsync daemon (loopback, no fsync)",
            daemon.push(&src, &[])?,
        )),
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

async fn per_file(
    server: &BenchServer,
    client: &Client,
    files: &[(String, Bytes)],
) -> anyhow::Result<Duration> {
    crate::settle()?;
    let prof = Profiler::start(server, "upload-per-file")?;
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
    stop_profiler(prof)?;
    for r in results {
        r?;
    }
    Ok(elapsed)
}

pub async fn bulk(
    server: &BenchServer,
    client: &Client,
    files: &[(String, Bytes)],
    in_flight: usize,
) -> anyhow::Result<Duration> {
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
    crate::settle()?;
    let prof = Profiler::start(server, &format!("upload-bulk-{in_flight}"))?;
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
    stop_profiler(prof)?;
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

pub fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>8.3} s  {:>9.0} files/s",
        d.as_secs_f64(),
        n as f64 / d.as_secs_f64()
    )
}
