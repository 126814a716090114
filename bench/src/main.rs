//! `volebarn-bench`: measures Volebarn against rsync on the same machine and the same data,
//! and prints the figures. Run with `make bench` (or `cargo run -p volebarn-bench --release`).
//!
//! Scenarios (`--scenario upload|console|process|large|concurrent|backends|webdav|all`, default all; `--files N`,
//! default 10,000 files of 1–16 KiB; `--large-mib M`, default 1,024):
//! - `upload` (`upload.rs`): the client library's per-file and bulk uploads to a fresh server;
//! - `console` (`console.rs`): the console's sync engine, pass by pass, for docs/design.md §7's rows
//!   (first sync, no-op resync, 100 edits + 100 adds + 100 deletes, a second client following);
//! - `process` (`process.rs`): the `volebarn` binary as a whole process (first sync up, no-op,
//!   the 100/100/100 change, first sync down, pull), timed with its peak RSS beside rsync's,
//!   and `volebarn watch` on two folders: how long a new file takes from A to B;
//! - `large` (`large.rs`): one 1 GiB file through the chunked upload, then a 1-byte edit of it,
//!   to a `volebarn-server` process whose peak RSS is read from `/proc`;
//! - `concurrent` (`concurrent.rs`): 16 clients uploading one file per request at once, beside
//!   the filesystem's own create-then-sync and fsync-per-file rates;
//! - `backends` (`backends.rs`): the small-file tree and the large file against RocksDB +
//!   filesystem, PostgreSQL + filesystem and PostgreSQL + S3 (a throwaway cluster and Garage
//!   node), and 16 concurrent clients against one vs two replicas;
//! - `webdav` (`webdav.rs`): `rclone sync` of the small-file tree to `/dav/`, again, and back,
//!   beside the same against `rclone serve webdav`.
//!
//! Each prints rsync's figures to an rsync daemon on loopback (`rsync.rs`) on the same run.
//!
//! `--server-process` runs every server as the release `volebarn-server` binary (built by
//! `cargo build --release -p volebarn-server`, found beside this binary) instead of in this
//! process; `--profile CMD` then runs `CMD` around each timed step against it, with `{pid}`
//! and `{step}` replaced, and stops it with SIGINT (`server.rs`); a server process logs to
//! `<work>/<name>.log` (`RUST_LOG` reaches it). `--work DIR` keeps the data, logs included,
//! in `DIR` instead of a temporary directory.

mod backends;
mod concurrent;
mod console;
mod large;
mod process;
mod proxy;
mod rsync;
mod server;
mod tree;
mod upload;
mod webdav;

use anyhow::{bail, Context};

const USAGE: &str =
    "usage: volebarn-bench [--scenario upload|console|process|large|concurrent|backends|webdav|all] [--files N] \
                     [--large-mib M] [--server-process] [--profile 'CMD with {pid} {step}'] \
                     [--work DIR] [--volebarn PATH]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Upload,
    Console,
    Process,
    Large,
    Concurrent,
    Backends,
    Webdav,
    All,
}

struct Args {
    scenario: Scenario,
    files: usize,
    large_mib: u64,
    /// Where the data goes (kept afterwards); a temporary directory when not given.
    work: Option<std::path::PathBuf>,
    options: server::Options,
    /// The `volebarn` binary for the `process` scenario (default: beside this one).
    volebarn: Option<std::path::PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        scenario: Scenario::All,
        files: 10_000,
        large_mib: 1024,
        work: None,
        options: server::Options::default(),
        volebarn: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--files" => args.files = it.next().context("--files N")?.parse()?,
            "--large-mib" => args.large_mib = it.next().context("--large-mib M")?.parse()?,
            "--work" => args.work = Some(it.next().context("--work DIR")?.into()),
            "--volebarn" => args.volebarn = Some(it.next().context("--volebarn PATH")?.into()),
            "--server-process" => args.options.server_process = true,
            "--profile" => args.options.profile = Some(it.next().context("--profile CMD")?),
            "--scenario" => {
                args.scenario = match it
                    .next()
                    .context("--scenario upload|console|process|large|concurrent|backends|webdav|all")?
                    .as_str()
                {
                    "upload" => Scenario::Upload,
                    "console" => Scenario::Console,
                    "process" => Scenario::Process,
                    "large" => Scenario::Large,
                    "concurrent" => Scenario::Concurrent,
                    "backends" => Scenario::Backends,
                    "webdav" => Scenario::Webdav,
                    "all" => Scenario::All,
                    other => bail!("unknown scenario {other} ({USAGE})"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} ({USAGE})"),
        }
    }
    if args.large_mib == 0 {
        bail!("--large-mib must be at least 1");
    }
    Ok(args)
}

/// Flushes dirty pages (`sync`) before a timed step, so the writeback of earlier steps (rsync
/// leaves ~80 MiB unsynced) does not land in the time of the next one.
fn settle() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .context("running sync")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    Ok(())
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
    server::set_options(args.options);
    let temp = tempfile::tempdir()?;
    let work = match &args.work {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                bail!("--work {}: not empty", dir.display());
            }
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let wanted = |s: Scenario| args.scenario == s || args.scenario == Scenario::All;
    let mut first = true;
    let mut gap = || {
        if !std::mem::take(&mut first) {
            println!();
        }
    };
    if wanted(Scenario::Upload) {
        gap();
        upload::run(&work, args.files).await?;
    }
    if wanted(Scenario::Console) {
        gap();
        console::run(&work, args.files).await?;
    }
    if wanted(Scenario::Process) {
        gap();
        let volebarn = process::find_volebarn(args.volebarn.as_deref())?;
        process::run(&work, args.files, &volebarn).await?;
    }
    if wanted(Scenario::Concurrent) {
        gap();
        concurrent::run(&work, args.files).await?;
    }
    if wanted(Scenario::Large) {
        gap();
        large::run(&work, args.large_mib).await?;
    }
    if wanted(Scenario::Backends) {
        gap();
        backends::run(&work, args.files, args.large_mib).await?;
    }
    if wanted(Scenario::Webdav) {
        gap();
        webdav::run(&work, args.files).await?;
    }
    Ok(())
}
