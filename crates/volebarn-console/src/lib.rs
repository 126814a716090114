//! The `volebarn` console app: command line, configuration, output and progress bars, the
//! folder watcher, and the remote file commands. The folder sync itself (scan, index, ignore
//! rules, plan, apply, status) is `volebarn-sync`'s; this crate parses, calls it, and prints.

pub mod cli;
pub mod commands;
pub mod config;
pub mod output;
pub mod remote;
pub mod watch;

/// The sync engine and the folder's state, as the console's callers (and tests) knew them.
pub use volebarn_sync::{engine, state};

use clap::Parser;
use std::process::ExitCode;

/// Parses the command line, runs the command, prints a one-line error on failure.
pub fn main() -> ExitCode {
    tune_malloc();
    let cli = cli::Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_tracing(cli.global.verbose, cli.global.quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("volebarn: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("volebarn: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that allocates an arena of its own (up to 8 per core), and memory
/// freed into one arena is not reused by another: the runtime's workers and the threads that
/// scan the folder and read upload batches each kept their own. Two arenas took a first sync of
/// 10,000 files from 44–46 MB to 40 MB of peak RSS, and a 100,000-file no-op from 84 to 76–80
/// MB, in the same time. One is what the engine needs: with two, the first sync of 100,000
/// files peaked at 43–44 MB in some runs and 47–50 MB in others, by which runtime worker went on
/// with the pass after its uploads. The plan and the upload's temporaries were freed in one
/// arena, and the new index was built in fresh memory in the other. With one arena every run
/// peaks at 43–44 MB. The threads' extra waits for the arena's lock cost no measurable time:
/// first syncs of 10,000 and 100,000 files and their no-ops take as long as with two.
///
/// glibc also raises the size from which it maps a block of its own (freed straight back to
/// the system) to the largest such block freed so far. After one, a pass's large temporaries
/// (the sorted runs a scan or the index is built from, the list of index changes) land in
/// the heap among long-lived entries and leave it fragmented. A fixed 1 MiB threshold took a
/// first sync of 100,000 files from 94-96 MB to 83 MB of peak RSS, in the same time (at
/// 128 KiB it cost a second of system time in mapping and unmapping).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    // SAFETY: mallopt only tunes glibc's allocator, and it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// `error: cause: cause` on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// The same for a typed error: its message and each cause's, joined by `: `.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line.replace('\n', " ")
}

fn init_tracing(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOLEBARN_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "volebarn_console={level},volebarn_sync={level},volebarn_client={level}"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
