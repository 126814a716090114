//! Scenario "concurrent": 16 clients at once, each with its own `Client` (own connections),
//! upload the tree's N small files between them, one request per file (`Client::upload_file`,
//! one file after another per client), to one fresh durable TLS server. Beside the aggregate
//! rate it prints what this machine's filesystem allows: the "batched-create limit" (create the
//! same files in a fresh directory beside the server's data, then one `sync`), the
//! "fsync-per-file" rate (create and fsync each file, then fsync the directories), and `rsync
//! -a` of the same tree to an rsync daemon on loopback (no fsync).

use crate::rsync::RsyncDaemon;
use crate::server::{client_for, fresh_server, stop_profiler, Profiler};
use crate::tree;
use crate::upload::rate;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Clients uploading at once.
const CLIENTS: usize = 16;

pub async fn run(work: &Path, n: usize) -> anyhow::Result<()> {
    let src = work.join("concurrent-src");
    let files = tree::make_tree(&src, n)?;
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    println!(
        "concurrent: {CLIENTS} clients at once, one request per file (upload_file), {} files, \
         {:.1} MiB, 1–16 KiB each; TLS over loopback, durable",
        files.len(),
        bytes as f64 / 1048576.0
    );

    let (server, first) = fresh_server(&work.join("concurrent-srv")).await?;
    let mut clients = vec![first];
    while clients.len() < CLIENTS {
        let c = client_for(&server)?;
        c.ping().await?;
        clients.push(c);
    }
    // Client i sends files i, i + 16, i + 32, …: every client writes into every directory.
    let shares: Vec<Vec<(String, Bytes)>> = (0..CLIENTS)
        .map(|i| files.iter().skip(i).step_by(CLIENTS).cloned().collect())
        .collect();
    crate::settle()?;
    let prof = Profiler::start(&server, "concurrent")?;
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(shares)
        .map(|(c, share)| {
            tokio::spawn(async move {
                for (p, b) in share {
                    c.upload_file(&p, b).await?;
                }
                Ok::<_, volebarn_client::ClientError>(())
            })
        })
        .collect();
    let results = futures_util::future::join_all(tasks).await;
    let volebarn = start.elapsed();
    stop_profiler(prof)?;
    for r in results {
        r??;
    }
    server.shutdown().await?;

    let batched = create_then_sync(&work.join("concurrent-batched"), &files)?;
    let per_file = fsync_each(&work.join("concurrent-fsync"), &files)?;
    let rsync_dir = work.join("concurrent-rsync");
    std::fs::create_dir_all(&rsync_dir)?;
    let rsync = match RsyncDaemon::start(&rsync_dir)? {
        Some(d) => Some(d.push(&src, &[])?),
        None => {
            println!("rsync not installed: skipped (make bench installs it)");
            None
        }
    };

    let n = files.len();
    let rows = [
        (
            format!("volebarn, {CLIENTS} clients, one request per file"),
            Some(volebarn),
        ),
        (
            "filesystem: create all, then one sync (batched limit)".into(),
            Some(batched),
        ),
        (
            "filesystem: create + fsync each file, fsync dirs".into(),
            Some(per_file),
        ),
        ("rsync -a to rsync daemon (loopback, no fsync)".into(), rsync),
    ];
    for (name, d) in &rows {
        if let Some(d) = d {
            println!("  {name:<56} {}", rate(n, *d));
        }
    }
    println!(
        "  volebarn reaches {:.0}% of the batched-create limit and {:.2}x the fsync-per-file rate",
        100.0 * batched.as_secs_f64() / volebarn.as_secs_f64(),
        per_file.as_secs_f64() / volebarn.as_secs_f64()
    );
    Ok(())
}

/// Creates every file under `root` (fresh), then one `sync`; timed after a `settle`.
fn create_then_sync(root: &Path, files: &[(String, Bytes)]) -> anyhow::Result<Duration> {
    crate::settle()?;
    let start = Instant::now();
    for (rel, data) in files {
        create(root, rel, data)?;
    }
    crate::settle()?;
    Ok(start.elapsed())
}

/// Creates and fsyncs every file under `root` (fresh), then fsyncs every directory touched;
/// timed after a `settle`.
fn fsync_each(root: &Path, files: &[(String, Bytes)]) -> anyhow::Result<Duration> {
    crate::settle()?;
    let start = Instant::now();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for (rel, data) in files {
        create(root, rel, data)?.sync_all()?;
        let path = root.join(rel);
        let mut dir = path.parent();
        while let Some(d) = dir {
            if !dirs.insert(d.to_path_buf()) || d == root {
                break;
            }
            dir = d.parent();
        }
    }
    dirs.insert(root.to_path_buf());
    if let Some(up) = root.parent() {
        dirs.insert(up.to_path_buf());
    }
    for d in &dirs {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(start.elapsed())
}

fn create(root: &Path, rel: &str, data: &[u8]) -> anyhow::Result<std::fs::File> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        if !parent.is_dir() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let mut f = std::fs::File::create(&path)?;
    f.write_all(data)?;
    Ok(f)
}
