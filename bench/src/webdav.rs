//! Scenario "webdav": rclone's webdav backend against Volebarn's `/dav/` and, in the same run,
//! against `rclone serve webdav` (rclone's own WebDAV server, over TLS with the same
//! certificate, writing into a plain directory), with an rsync daemon's figures beside them.
//!
//! For each server: `rclone sync` of the small-file tree up, a no-op `rclone sync` again (a
//! whole listing of both sides), and `rclone sync` of the server's copy down into an empty
//! directory, whose bytes are then compared with the source. Both remotes use `vendor=other`
//! and rclone's defaults but for 8 transfers and 8 checkers (as the WebDAV tests do).

use crate::rsync::RsyncDaemon;
use crate::server::fresh_server;
use crate::tree;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One WebDAV server as rclone sees it: the environment that defines remote `dav:`.
struct Remote {
    env: Vec<(String, String)>,
    ca_cert: PathBuf,
}

/// Wall times of one server's round trip.
struct Trip {
    up: Duration,
    again: Duration,
    down: Duration,
}

pub async fn run(work: &Path, n: usize) -> anyhow::Result<()> {
    if Command::new("rclone")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("webdav: rclone not installed: skipped (make bench installs it)");
        return Ok(());
    }
    let src = work.join("webdav-src");
    let files = tree::make_tree(&src, n)?;
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    println!(
        "webdav: rclone sync of {} files ({:.1} MiB, 1–16 KiB each) up, again, and down; TLS over loopback",
        files.len(),
        bytes as f64 / 1048576.0
    );

    let (server, _client) = fresh_server(&work.join("webdav-srv")).await?;
    let ca_cert = server
        .ca_cert
        .clone()
        .context("the bench server has no certificate")?;
    let volebarn = Remote::new(work, &format!("{}/dav/", server.url), &server.token, &ca_cert)?;
    let (s, w) = (src.clone(), work.to_path_buf());
    let vb =
        tokio::task::spawn_blocking(move || volebarn.round_trip(&s, &w.join("webdav-back-vb"))).await??;
    server.shutdown().await?;

    // rclone's own server, on the certificate the Volebarn server generated.
    let key = ca_cert.with_file_name("key.pem");
    let peer = PeerServer::start(&work.join("webdav-peer"), &ca_cert, &key, "bench-secret")?;
    let remote = Remote::new(work, &peer.url, "bench-secret", &ca_cert)?;
    let (s, w) = (src.clone(), work.to_path_buf());
    let rc =
        tokio::task::spawn_blocking(move || remote.round_trip(&s, &w.join("webdav-back-peer"))).await??;
    drop(peer);

    let rsync_dir = work.join("webdav-rsync");
    std::fs::create_dir_all(&rsync_dir)?;
    let rsync = match RsyncDaemon::start(&rsync_dir)? {
        Some(daemon) => Some(Trip {
            up: daemon.push(&src, &[])?,
            again: daemon.push(&src, &[])?,
            down: daemon.pull(&work.join("webdav-back-rsync"), &[])?,
        }),
        None => {
            println!("rsync not installed: skipped (make bench installs it)");
            None
        }
    };

    println!("  {:<46} {:>10} {:>10} {:>10}", "", "up", "again", "down");
    let row = |name: &str, t: &Trip| {
        println!(
            "  {name:<46} {:>9.2}s {:>9.2}s {:>9.2}s",
            t.up.as_secs_f64(),
            t.again.as_secs_f64(),
            t.down.as_secs_f64()
        )
    };
    row("rclone → volebarn /dav/ (durable)", &vb);
    row("rclone → rclone serve webdav (no fsync)", &rc);
    if let Some(r) = &rsync {
        row("rsync -a ↔ rsync daemon (no fsync)", r);
    }
    println!(
        "volebarn /dav/ vs rclone serve webdav: up {:.2}x, again {:.2}x, down {:.2}x the time",
        vb.up.as_secs_f64() / rc.up.as_secs_f64(),
        vb.again.as_secs_f64() / rc.again.as_secs_f64(),
        vb.down.as_secs_f64() / rc.down.as_secs_f64()
    );
    Ok(())
}

impl Remote {
    /// Remote `dav:` at `url` with Basic credentials (any user, `password`), through rclone's
    /// environment configuration (the password obscured, as rclone requires).
    fn new(work: &Path, url: &str, password: &str, ca_cert: &Path) -> anyhow::Result<Remote> {
        let out = Command::new("rclone")
            .args(["obscure", password])
            .output()
            .context("running rclone obscure")?;
        if !out.status.success() {
            bail!("rclone obscure failed: {}", out.status);
        }
        let obscured = String::from_utf8(out.stdout)?.trim().to_string();
        let env = [
            ("RCLONE_CONFIG", work.join("rclone.conf").display().to_string()),
            ("RCLONE_CONFIG_DAV_TYPE", "webdav".to_string()),
            ("RCLONE_CONFIG_DAV_URL", url.to_string()),
            ("RCLONE_CONFIG_DAV_VENDOR", "other".to_string()),
            ("RCLONE_CONFIG_DAV_USER", "bench".to_string()),
            ("RCLONE_CONFIG_DAV_PASS", obscured),
        ];
        Ok(Remote {
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ca_cert: ca_cert.to_path_buf(),
        })
    }

    /// `rclone sync src dav:tree` twice, then `rclone sync dav:tree back`; checks that `back`
    /// holds the bytes of `src`.
    fn round_trip(&self, src: &Path, back: &Path) -> anyhow::Result<Trip> {
        let src_s = src.display().to_string();
        let back_s = back.display().to_string();
        let up = self.rclone(&["sync", &src_s, "dav:tree"])?;
        let again = self.rclone(&["sync", &src_s, "dav:tree"])?;
        let down = self.rclone(&["sync", "dav:tree", &back_s])?;
        if tree::read_tree(back, "")? != tree::read_tree(src, "")? {
            bail!("rclone's copy back from {back_s} differs from the source");
        }
        Ok(Trip { up, again, down })
    }

    /// One rclone run after a `settle`; its wall time.
    fn rclone(&self, args: &[&str]) -> anyhow::Result<Duration> {
        crate::settle()?;
        let start = Instant::now();
        let status = Command::new("rclone")
            .args(args)
            .arg("--ca-cert")
            .arg(&self.ca_cert)
            .args(["--transfers", "8", "--checkers", "8"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .status()
            .context("running rclone")?;
        let elapsed = start.elapsed();
        if !status.success() {
            bail!("rclone {} failed: {status}", args.join(" "));
        }
        Ok(elapsed)
    }
}

/// `rclone serve webdav DIR` over TLS on a free loopback port, stopped on drop.
struct PeerServer {
    child: Child,
    url: String,
}

impl PeerServer {
    fn start(dir: &Path, cert: &Path, key: &Path, password: &str) -> anyhow::Result<PeerServer> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("rclone")
            .args(["serve", "webdav"])
            .arg(dir)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["--user", "bench", "--pass", password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting rclone serve webdav")?;
        let peer = PeerServer {
            child,
            url: format!("https://127.0.0.1:{port}/"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("rclone serve webdav did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(peer)
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
