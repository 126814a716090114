//! `volebarn-bench`: measures Volebarn against rsync on the same machine and the same data,
//! and prints the figures. Run with `make bench` (or `cargo run -p volebarn-bench --release`).
//!
//! Scenarios (`--scenario upload|console|all`, default all; `--files N`, default 10,000 files
//! of 1–16 KiB):
//! - `upload` (`upload.rs`): the client library's per-file and bulk uploads to a fresh server;
//! - `console` (`console.rs`): the console's sync engine, pass by pass, for DESIGN.md §7's rows
//!   (first sync, no-op resync, 100 edits + 100 adds + 100 deletes, a second client following).
//!
//! Each prints rsync's figures to an rsync daemon on loopback (`rsync.rs`) on the same run.

mod console;
mod rsync;
mod tree;
mod upload;

use anyhow::{bail, Context};
use std::path::Path;
use volebarn_client::{Client, ClientConfig};
use volebarn_server::config::ServerConfig;

const USAGE: &str = "usage: volebarn-bench [--scenario upload|console|all] [--files N]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Upload,
    Console,
    All,
}

struct Args {
    scenario: Scenario,
    files: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        scenario: Scenario::All,
        files: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--files" => args.files = it.next().context("--files N")?.parse()?,
            "--scenario" => {
                args.scenario = match it.next().context("--scenario upload|console|all")?.as_str() {
                    "upload" => Scenario::Upload,
                    "console" => Scenario::Console,
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
    Ok(args)
}

/// A fresh durable TLS server on `127.0.0.1:0` with its data in `dir`, and a client for it.
async fn fresh_server(dir: &Path) -> anyhow::Result<(volebarn_server::RunningServer, Client)> {
    let mut cfg = ServerConfig::new(dir);
    cfg.port = 0;
    let server = volebarn_server::start(cfg).await?;
    let client = client_for(&server)?;
    client.ping().await?;
    Ok((server, client))
}

/// A client of its own (own connections) for `server`.
fn client_for(server: &volebarn_server::RunningServer) -> anyhow::Result<Client> {
    let mut ccfg = ClientConfig::new(server.url.clone(), server.token.clone());
    ccfg.ca_cert = server.ca_cert.clone();
    Ok(Client::new(ccfg)?)
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
    let work = tempfile::tempdir()?;
    if matches!(args.scenario, Scenario::Upload | Scenario::All) {
        upload::run(work.path(), args.files).await?;
    }
    if matches!(args.scenario, Scenario::Console | Scenario::All) {
        if args.scenario == Scenario::All {
            println!();
        }
        console::run(work.path(), args.files).await?;
    }
    Ok(())
}
