//! The reference the benchmarks print next to Volebarn's figures: an rsync daemon on loopback
//! (no fsync on its side), started once per scenario so several rsync runs against the same
//! destination can be timed — a first copy, a no-op re-run, a run after changes, pulls.

use anyhow::{bail, Context};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RsyncDaemon {
    child: Child,
    port: u16,
}

impl RsyncDaemon {
    /// Starts a daemon in `dir` serving `dir/module` as `rsync://127.0.0.1:<port>/vb/`, and
    /// waits until it accepts connections; `None` when rsync is not installed.
    pub fn start(dir: &Path) -> anyhow::Result<Option<RsyncDaemon>> {
        if Command::new("rsync")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            return Ok(None);
        }
        let module_dir = dir.join("module");
        std::fs::create_dir_all(&module_dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = dir.join("rsyncd.conf");
        // Run the daemon's transfers as the owner of the directory (a root daemon would drop
        // to `nobody` and be refused).
        let meta = std::fs::metadata(dir)?;
        let owner = std::os::unix::fs::MetadataExt::uid(&meta);
        let group = std::os::unix::fs::MetadataExt::gid(&meta);
        std::fs::write(
            &conf,
            format!(
                "use chroot = no\nuid = {owner}\ngid = {group}\nport = {port}\naddress = 127.0.0.1\npid file = {}\n[vb]\npath = {}\nread only = no\n",
                dir.join("rsyncd.pid").display(),
                module_dir.display()
            ),
        )?;
        let child = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", conf.display()))
            .spawn()
            .context("starting the rsync daemon")?;
        // From here on, Drop stops the daemon, also when it never came up.
        let daemon = RsyncDaemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("rsync daemon did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(daemon))
    }

    pub fn url(&self) -> String {
        format!("rsync://127.0.0.1:{}/vb/", self.port)
    }

    /// `rsync -a <extra…> src/ rsync://…/vb/`; the wall time of the run (after a `settle`).
    pub fn push(&self, src: &Path, extra: &[&str]) -> anyhow::Result<Duration> {
        run_rsync(extra, &format!("{}/", src.display()), &self.url())
    }

    /// `rsync -a <extra…> rsync://…/vb/ dst/`; the wall time of the run (after a `settle`).
    pub fn pull(&self, dst: &Path, extra: &[&str]) -> anyhow::Result<Duration> {
        std::fs::create_dir_all(dst)?;
        run_rsync(extra, &self.url(), &format!("{}/", dst.display()))
    }

    /// [`RsyncDaemon::push`] with `--stats`: the wall time and what rsync says it moved.
    pub fn push_stats(&self, src: &Path, extra: &[&str]) -> anyhow::Result<(Duration, RsyncStats)> {
        let mut args = vec!["--stats"];
        args.extend_from_slice(extra);
        let (elapsed, out) = run_rsync_output(&args, &format!("{}/", src.display()), &self.url())?;
        Ok((elapsed, RsyncStats::parse(&out)?))
    }
}

/// From `rsync --stats`, on the sending side: `Total bytes sent` (file data and protocol) and
/// `Total bytes received` (the receiver's block checksums, acknowledgements).
#[derive(Debug, Clone, Copy)]
pub struct RsyncStats {
    pub sent: u64,
    pub received: u64,
}

impl RsyncStats {
    fn parse(out: &str) -> anyhow::Result<RsyncStats> {
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.replace([',', '.'], "").parse::<u64>().ok())
                .with_context(|| format!("no {name:?} in rsync --stats output:\n{out}"))
        };
        Ok(RsyncStats {
            sent: field("Total bytes sent:")?,
            received: field("Total bytes received:")?,
        })
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_rsync(extra: &[&str], from: &str, to: &str) -> anyhow::Result<Duration> {
    run_rsync_output(extra, from, to).map(|(d, _)| d)
}

/// `rsync -a <extra…> from to` after a `settle`: its wall time and what it printed.
fn run_rsync_output(extra: &[&str], from: &str, to: &str) -> anyhow::Result<(Duration, String)> {
    crate::settle()?;
    let start = Instant::now();
    let out = Command::new("rsync")
        .arg("-a")
        .args(extra)
        .arg(from)
        .arg(to)
        .stderr(Stdio::inherit())
        .output()
        .context("running rsync")?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!("rsync {from} {to} failed: {}", out.status);
    }
    Ok((elapsed, String::from_utf8_lossy(&out.stdout).into_owned()))
}
