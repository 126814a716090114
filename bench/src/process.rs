//! Scenario "process": the `volebarn` binary as a person runs it — the whole process (start-up,
//! config, opening the folder's index, scan, pass, exit) — timed from outside, with its peak
//! resident set from GNU time (`%M`), beside `rsync -a --delete` to an rsync daemon on the same
//! run (also under GNU time). Rows:
//! 1. `volebarn sync` of folder A (N files of 1–16 KiB) to a fresh server: time and peak RSS
//!    (and per tracked file: above the peak of an empty folder's first sync, run before it);
//! 2. a no-op `volebarn sync` (files and bytes the pass read: must be 0), median of 3 runs
//!    (rsync's too);
//! 3. 100 edits + 100 adds + 100 deletes in A, then `volebarn sync`;
//! 4. `volebarn sync` of an empty folder B (first sync down): time and peak RSS;
//! 5. `volebarn watch` running on A and on B: a new file written in A, the time until B holds it
//!    (20 probes; p50 and p90).
//!
//! The server runs in the bench's process (or its own with `--server-process`).

use crate::console::thousands;
use crate::rsync::RsyncDaemon;
use crate::server::fresh_server;
use crate::tree;
use anyhow::{bail, ensure, Context};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use volebarn_sync::STATE_DIR;

const CHANGES: usize = 100;
const PROBES: usize = 20;
const GNU_TIME: &str = "/usr/bin/time";

/// Runs of each no-op (volebarn's and rsync's), of which the median is reported: a single
/// run of a 0.1 s command is at the mercy of whatever else the machine does in that moment.
const NOOP_RUNS: usize = 3;

/// The run with the median wall time.
fn median_of<T>(mut runs: Vec<T>, wall: impl Fn(&T) -> Option<Duration>) -> T {
    runs.sort_by_key(|r| wall(r));
    runs.swap_remove(runs.len() / 2)
}

/// One measured run of a command.
struct Measured {
    wall: Duration,
    /// Peak resident set in bytes (GNU time's `%M`), when GNU time is there.
    peak_rss: Option<u64>,
    stdout: String,
}

/// Runs `program args…` under GNU time (when installed) after a `settle`.
fn measured(
    work: &Path,
    program: &Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &Path)],
) -> anyhow::Result<Measured> {
    crate::settle()?;
    let time_file = work.join("gnu-time.out");
    let with_time = Path::new(GNU_TIME).exists();
    let mut cmd = if with_time {
        let mut c = Command::new(GNU_TIME);
        c.arg("-f").arg("%M").arg("-o").arg(&time_file).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let wall = start.elapsed();
    // volebarn: 2 means "done, but something needs you"; the rows check the report.
    if !matches!(out.status.code(), Some(0 | 2)) {
        bail!(
            "{} {:?} failed: {}\n{}",
            program.display(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let peak_rss = if with_time {
        let text = std::fs::read_to_string(&time_file)?;
        text.lines()
            .last()
            .and_then(|l| l.trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    } else {
        None
    };
    Ok(Measured {
        wall,
        peak_rss,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// The `volebarn` binary: `--volebarn PATH`, or beside this one (`cargo build --release -p
/// volebarn-console` puts it there).
pub fn find_volebarn(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary's directory")?
            .join("volebarn"),
    };
    ensure!(
        path.is_file(),
        "no volebarn binary at {} (build it: cargo build --release -p volebarn-console, or pass --volebarn PATH)",
        path.display()
    );
    Ok(path)
}

/// A folder the `volebarn` binary syncs, with its own config file and HOME.
struct Folder {
    root: PathBuf,
    config: PathBuf,
    home: PathBuf,
}

impl Folder {
    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a std::ffi::OsStr> {
        let mut v: Vec<&std::ffi::OsStr> =
            vec!["--config".as_ref(), self.config.as_os_str(), "--json".as_ref()];
        v.extend(rest.iter().map(|s| std::ffi::OsStr::new(*s)));
        v
    }
}

fn field(report: &serde_json::Value, name: &str) -> u64 {
    report.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

fn count(report: &serde_json::Value, name: &str) -> usize {
    report
        .get("result")
        .and_then(|r| r.get(name))
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("–".into(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

pub async fn run(work: &Path, n: usize, volebarn: &Path) -> anyhow::Result<()> {
    let changes = CHANGES.min(n / 3);
    let dir = work.join("process");
    std::fs::create_dir_all(&dir)?;
    let files = tree::make_tree(&dir.join("A"), n)?;
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    drop(files);
    println!(
        "volebarn process: {} files, {:.1} MiB, 1–16 KiB each; the `volebarn` binary (whole process) over \
         TLS on loopback, durable; rsync -a --delete (whole process) to an rsync daemon on loopback, no fsync; \
         peak RSS from GNU time",
        thousands(n),
        bytes as f64 / 1048576.0
    );
    let rsync_dir = dir.join("rsync");
    std::fs::create_dir_all(&rsync_dir)?;
    let daemon = RsyncDaemon::start(&rsync_dir)?;
    let rsync = which("rsync");
    let rsync_push = |src: &Path| -> anyhow::Result<Option<Measured>> {
        let (Some(d), Some(bin)) = (&daemon, &rsync) else {
            return Ok(None);
        };
        let from = format!("{}/", src.display());
        let url = d.url();
        let words = [
            "-a",
            "--delete",
            "--exclude=/.volebarn/",
            from.as_str(),
            url.as_str(),
        ];
        let args: Vec<&std::ffi::OsStr> = words.iter().map(std::ffi::OsStr::new).collect();
        measured(&dir, bin, &args, &[]).map(Some)
    };
    let rs_first = rsync_push(&dir.join("A"))?;
    let rs_noop = median_of(
        (0..NOOP_RUNS)
            .map(|_| rsync_push(&dir.join("A")))
            .collect::<anyhow::Result<Vec<_>>>()?,
        |r| r.as_ref().map(|m| m.wall),
    );

    let (server, _client) = fresh_server(&dir.join("server")).await?;
    let folder = |name: &str| -> anyhow::Result<Folder> {
        let root = dir.join(name);
        std::fs::create_dir_all(&root)?;
        let f = Folder {
            config: dir.join(format!("{name}.toml")),
            home: dir.join(format!("{name}-home")),
            root,
        };
        std::fs::create_dir_all(&f.home)?;
        let mut init: Vec<&std::ffi::OsStr> = vec![
            "--config".as_ref(),
            f.config.as_os_str(),
            "init".as_ref(),
            "--folder".as_ref(),
            f.root.as_os_str(),
            "--server".as_ref(),
            server.url.as_ref(),
            "--token".as_ref(),
            server.token.as_ref(),
        ];
        if let Some(ca) = &server.ca_cert {
            init.push("--ca-cert".as_ref());
            init.push(ca.as_os_str());
        }
        measured(&dir, volebarn, &init, &[("HOME", &f.home)])?;
        Ok(f)
    };
    let a = folder("A")?;
    let b = folder("B")?;
    let empty = folder("E")?;
    let sync = |f: &Folder| -> anyhow::Result<(Measured, serde_json::Value)> {
        let m = measured(&dir, volebarn, &f.args(&["sync"]), &[("HOME", &f.home)])?;
        let report: serde_json::Value = serde_json::from_str(&m.stdout)
            .with_context(|| format!("volebarn sync --json printed {:?}", m.stdout))?;
        Ok((m, report))
    };

    // The process with nothing to track, against the still-empty server: what every run
    // costs (binary, runtime, TLS, the index's store) before the first file.
    let (baseline, _) = sync(&empty)?;
    let (first, r) = sync(&a)?;
    ensure!(
        count(&r, "uploaded") == n,
        "first sync of A uploaded {} files, not {n}",
        count(&r, "uploaded")
    );
    let (noop, r_noop) = median_of(
        (0..NOOP_RUNS)
            .map(|_| sync(&a))
            .collect::<anyhow::Result<Vec<_>>>()?,
        |r| Some(r.0.wall),
    );
    ensure!(
        count(&r_noop, "uploaded") == 0,
        "the no-op sync uploaded something"
    );
    let (down, r) = sync(&b)?;
    ensure!(
        count(&r, "downloaded") == n,
        "first sync of B downloaded {} files, not {n}",
        count(&r, "downloaded")
    );

    let ch = tree::change_tree(&a.root, n, changes)?;
    let rs_change = rsync_push(&a.root)?;
    let (change, r_change) = sync(&a)?;
    let sent = ch.edited.len() + ch.added.len();
    ensure!(
        count(&r_change, "uploaded") == sent,
        "the change uploaded {} files, not {sent}",
        count(&r_change, "uploaded")
    );
    let (pull, r_pull) = sync(&b)?;
    ensure!(
        count(&r_pull, "downloaded") == sent,
        "B pulled {} files, not {sent}",
        count(&r_pull, "downloaded")
    );
    ensure!(
        tree::read_tree(&a.root, STATE_DIR)? == tree::read_tree(&b.root, STATE_DIR)?,
        "folders A and B differ after the sync"
    );

    let propagation = watch_propagation(volebarn, &a, &b)?;
    server.shutdown().await?;
    drop(daemon);

    let ratio = |v: Duration, r: &Option<Measured>| match r {
        Some(r) => format!("{:.2}×", v.as_secs_f64() / r.wall.as_secs_f64()),
        None => "–".into(),
    };
    let rs_wall = |r: &Option<Measured>| {
        r.as_ref()
            .map_or("–".into(), |m| format!("{:.3} s", m.wall.as_secs_f64()))
    };
    let rs_rss = |r: &Option<Measured>| mib(r.as_ref().and_then(|m| m.peak_rss));
    println!("| `volebarn` process, {} files | volebarn | peak RSS | files read / bytes read | rsync | rsync peak RSS | ratio |", thousands(n));
    println!("|---|---|---|---|---|---|---|");
    let row = |name: &str, m: &Measured, rep: Option<&serde_json::Value>, rs: &Option<Measured>| {
        let read = rep.map_or("–".into(), |r| {
            // A pass that listed the server's whole tree (rather than asking for the changes
            // since its cursor) is marked.
            let listed = if r["listed_remote"].as_bool() == Some(true) {
                " (listed the server)"
            } else {
                ""
            };
            format!(
                "{} / {}{listed}",
                thousands(field(r, "hashed") as usize),
                thousands(field(r, "bytes_read") as usize)
            )
        });
        println!(
            "| {name} | {:.3} s | {} | {read} | {} | {} | {} |",
            m.wall.as_secs_f64(),
            mib(m.peak_rss),
            rs_wall(rs),
            rs_rss(rs),
            ratio(m.wall, rs)
        );
    };
    row("A: first sync up", &first, None, &rs_first);
    row("A: no-op sync", &noop, Some(&r_noop), &rs_noop);
    row(
        &format!("A: {changes} edits + {changes} adds + {changes} deletes"),
        &change,
        Some(&r_change),
        &rs_change,
    );
    row("B: first sync down", &down, None, &None);
    row("B: pull A's change", &pull, Some(&r_pull), &None);
    let per_file = |m: &Measured| match (m.peak_rss, baseline.peak_rss) {
        (Some(peak), Some(base)) => format!(
            "{} bytes ({} with the process's own {})",
            peak.saturating_sub(base) / n as u64,
            peak / n as u64,
            mib(Some(base))
        ),
        _ => "–".into(),
    };
    println!(
        "peak RSS per tracked file, above an empty folder's first sync: {} (first sync up), {} (first sync down)",
        per_file(&first),
        per_file(&down)
    );
    let mut ms: Vec<f64> = propagation.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "watch propagation A → server → B ({} probes, a new file in A until B holds it): p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms.len(),
        ms[ms.len() / 2],
        ms[ms.len() * 9 / 10],
        ms[ms.len() - 1]
    );
    Ok(())
}

/// Full path of `program` on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// A running `volebarn watch` whose JSON lines (one per pass) arrive on a channel.
struct Watch {
    child: Child,
    passes: mpsc::Receiver<String>,
}

impl Watch {
    fn start(volebarn: &Path, f: &Folder) -> anyhow::Result<Watch> {
        let mut child = Command::new(volebarn)
            .args(f.args(&["watch"]))
            .env("HOME", &f.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting volebarn watch")?;
        let out = child.stdout.take().context("watch stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Watch { child, passes: rx })
    }

    /// Waits for the watch's first pass (it syncs at start).
    fn first_pass(&self) -> anyhow::Result<()> {
        self.passes
            .recv_timeout(Duration::from_secs(600))
            .context("volebarn watch reported no pass")?;
        Ok(())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Times [`PROBES`] new files from A's folder to B's, with `volebarn watch` on both.
fn watch_propagation(volebarn: &Path, a: &Folder, b: &Folder) -> anyhow::Result<Vec<Duration>> {
    let wa = Watch::start(volebarn, a)?;
    let wb = Watch::start(volebarn, b)?;
    wa.first_pass()?;
    wb.first_pass()?;
    let mut out = Vec::with_capacity(PROBES);
    for i in 0..PROBES {
        let rel = format!("probe/p{i}.txt");
        let content = format!("probe {i} at {:?}", Instant::now());
        std::fs::create_dir_all(a.root.join("probe"))?;
        let target = b.root.join(&rel);
        let start = Instant::now();
        std::fs::write(a.root.join(&rel), &content)?;
        // A benchmark, not a test: polling the destination every millisecond is the measurement.
        loop {
            if std::fs::read(&target).is_ok_and(|got| got == content.as_bytes()) {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("{rel} did not reach B within 60 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        out.push(start.elapsed());
    }
    Ok(out)
}
