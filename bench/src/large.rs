//! Scenario "large": one file of incompressible bytes (1 GiB; `--large-mib M`) sent with the
//! client library's chunked, resumable upload (`Client::upload_path`, what `volebarn put`
//! does) to a fresh durable TLS server running as a process of its own, against `rsync -a` of
//! the same file to an rsync daemon on loopback; then one byte in the middle is changed and
//! both send the file again (volebarn re-chunks and sends only the chunks the server lacks;
//! rsync runs its delta transfer against its previous copy).
//!
//! Printed: wall times and their ratio, the bytes each side put on the wire for the edit
//! (volebarn's counted by a proxy, TLS and HTTP/2 included; rsync's from `--stats`), and the
//! server process's peak RSS (`VmHWM`).

use crate::console::thousands;
use crate::proxy::CountingProxy;
use crate::rsync::{RsyncDaemon, RsyncStats};
use crate::server::{client_at, client_for, cpu_time, spawn_server, stop_profiler, Profiler};
use crate::tree;
use anyhow::ensure;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const FILE: &str = "big.bin";
/// The size the targets are stated for.
const TARGET_MIB: u64 = 1024;
/// Targets: first upload ≤ 0.7× rsync's time, server peak RSS < 100 MiB; a 1-byte edit
/// ≤ 0.25× rsync's time with < 2 MiB sent.
const FIRST_RATIO: f64 = 0.7;
const EDIT_RATIO: f64 = 0.25;
const RSS_LIMIT: u64 = 100 << 20;
const EDIT_BYTES_LIMIT: u64 = 2 << 20;

pub async fn run(work: &Path, mib: u64) -> anyhow::Result<()> {
    let size = mib << 20;
    let src = work.join("large-src");
    let file = src.join(FILE);
    tree::make_large(&file, size)?;
    println!(
        "large: one file of {} MiB, incompressible; volebarn: chunked upload (Client::upload_path) \
         over TLS on loopback to a volebarn-server process, durable; rsync -a to an rsync daemon \
         on loopback, no fsync",
        thousands(mib as usize)
    );

    let rsync_dir = work.join("large-rsync");
    std::fs::create_dir_all(&rsync_dir)?;
    let daemon = RsyncDaemon::start(&rsync_dir)?;
    if daemon.is_none() {
        println!("rsync not installed: its column stays empty (make bench installs it)");
    }

    let limit = (2 * size).max(1 << 30).to_string();
    let server = spawn_server(&work.join("large-srv"), &["--max-file-size", &limit]).await?;
    let client = client_for(&server)?;
    client.ping().await?;
    let idle_rss = server.peak_rss()?.unwrap_or(0);

    // First upload.
    crate::settle()?;
    let prof = Profiler::start(&server, "large-first")?;
    let cpu = Cpu::start(&server)?;
    let start = Instant::now();
    let meta = client.upload_path(FILE, &file, false).await?;
    let first = start.elapsed();
    let first_cpu = cpu.stop(&server)?;
    stop_profiler(prof)?;
    ensure!(
        meta.size == size,
        "the server stored {} bytes, not {size}",
        meta.size
    );
    let first_sent = client.metrics().bytes_sent;
    let first_rss = server.peak_rss()?.unwrap_or(0);
    let rs_first = daemon.as_ref().map(|d| d.push_stats(&src, &[])).transpose()?;

    // One byte in the middle, changed in place (the mtime moves on, the size stays).
    flip_byte(&file, size / 2)?;

    // The edit, from a new client whose every byte goes through a counting proxy.
    let proxy = CountingProxy::start(server.addr).await?;
    let edit_client = client_at(&server, &format!("https://127.0.0.1:{}", proxy.port))?;
    crate::settle()?;
    let prof = Profiler::start(&server, "large-edit")?;
    let cpu = Cpu::start(&server)?;
    let start = Instant::now();
    let meta = edit_client.upload_path(FILE, &file, true).await?;
    let edit = start.elapsed();
    let edit_cpu = cpu.stop(&server)?;
    stop_profiler(prof)?;
    ensure!(
        meta.size == size,
        "the server stored {} bytes, not {size}",
        meta.size
    );
    let edit_metrics = edit_client.metrics();
    let (wire_up, wire_down) = (proxy.sent(), proxy.received());
    drop(edit_client);
    drop(proxy);
    let edit_rss = server.peak_rss()?.unwrap_or(0);
    drop(client);
    server.shutdown().await?;
    let rs_edit = daemon.as_ref().map(|d| d.push_stats(&src, &[])).transpose()?;
    drop(daemon);

    let judge = mib == TARGET_MIB;
    let verdict = |ok: bool| match (judge, ok) {
        (false, _) => "",
        (true, true) => "met",
        (true, false) => "MISSED",
    };
    println!(
        "  {:<34} {:>12} {:>12} {:>8}   target",
        "step", "volebarn", "rsync", "ratio"
    );
    let time_row = |name: &str, v: Duration, r: Option<(Duration, RsyncStats)>, target: f64| {
        let ratio = r.map(|(d, _)| v.as_secs_f64() / d.as_secs_f64());
        let line = format!(
            "  {:<34} {:>12} {:>12} {:>8}   ≤ {target:.2}x rsync  {}",
            name,
            seconds(v),
            r.map_or("—".into(), |(d, _)| seconds(d)),
            ratio.map_or("—".into(), |x| format!("{x:.2}x")),
            ratio.map_or("", |x| verdict(x <= target)),
        );
        println!("{}", line.trim_end());
    };
    time_row("first upload", first, rs_first, FIRST_RATIO);
    time_row("1-byte edit", edit, rs_edit, EDIT_RATIO);
    let line = format!(
        "  {:<34} {:>12} {:>12} {:>8}   < {} MiB         {}",
        "1-byte edit: bytes sent",
        mib_str(wire_up),
        rs_edit.map_or("—".into(), |(_, s)| mib_str(s.sent)),
        "",
        EDIT_BYTES_LIMIT >> 20,
        verdict(wire_up < EDIT_BYTES_LIMIT),
    );
    println!("{}", line.trim_end());
    let line = format!(
        "  {:<34} {:>12} {:>12} {:>8}   < {} MiB       {}",
        "server peak RSS (VmHWM)",
        mib_str(first_rss.max(edit_rss)),
        "—",
        "",
        RSS_LIMIT >> 20,
        verdict(first_rss.max(edit_rss) < RSS_LIMIT),
    );
    println!("{}", line.trim_end());
    println!(
        "  first upload: {} of chunk content sent; server RSS idle {}, peak after the first \
         upload {}, after the edit {}",
        mib_str(first_sent),
        mib_str(idle_rss),
        mib_str(first_rss),
        mib_str(edit_rss)
    );
    println!(
        "  volebarn edit: {} of chunk content (TransferMetrics), {} requests; on the wire \
         (TLS, HTTP/2, JSON, handshake included) {} up, {} down",
        bytes_str(edit_metrics.bytes_sent),
        edit_metrics.requests,
        bytes_str(wire_up),
        bytes_str(wire_down)
    );
    println!(
        "  CPU time (user + system): first upload: client {}, server {} ({:.1} cores busy of \
         {}); edit: client (and its counting proxy) {}, server {}",
        seconds(first_cpu.client),
        first_cpu.server.map_or("—".into(), seconds),
        first_cpu.cores(first),
        seconds(first),
        seconds(edit_cpu.client),
        edit_cpu.server.map_or("—".into(), seconds),
    );
    if let (Some((_, f)), Some((_, e))) = (rs_first, rs_edit) {
        println!(
            "  rsync --stats: first copy sent {}, received {}; edit sent {}, received {}",
            mib_str(f.sent),
            bytes_str(f.received),
            bytes_str(e.sent),
            bytes_str(e.received)
        );
    }
    if !judge {
        println!(
            "  the targets are for {} MiB: not judged",
            thousands(TARGET_MIB as usize)
        );
    }
    Ok(())
}

/// CPU time the client (this process) and the server process spent on one step.
struct Cpu {
    client: Duration,
    server: Option<Duration>,
}

impl Cpu {
    fn start(server: &crate::server::BenchServer) -> anyhow::Result<Cpu> {
        Ok(Cpu {
            client: cpu_time("self")?,
            server: server.cpu_time()?,
        })
    }

    /// The time used since `start`.
    fn stop(self, server: &crate::server::BenchServer) -> anyhow::Result<Cpu> {
        Ok(Cpu {
            client: cpu_time("self")?.saturating_sub(self.client),
            server: server
                .cpu_time()?
                .zip(self.server)
                .map(|(now, then)| now.saturating_sub(then)),
        })
    }

    /// How many cores were busy on average over `wall`.
    fn cores(&self, wall: Duration) -> f64 {
        (self.client + self.server.unwrap_or_default()).as_secs_f64() / wall.as_secs_f64()
    }
}

/// Inverts the byte at `offset` in place, durably.
fn flip_byte(path: &Path, offset: u64) -> anyhow::Result<()> {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset)?;
    b[0] ^= 0xFF;
    f.write_all_at(&b, offset)?;
    f.sync_all()?;
    Ok(())
}

fn seconds(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn bytes_str(bytes: u64) -> String {
    format!("{} bytes", thousands(bytes as usize))
}

fn mib_str(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / 1048576.0)
}
