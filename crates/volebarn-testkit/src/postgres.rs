//! A throwaway PostgreSQL cluster, started once per test binary (the Debian `postgresql`
//! package, which `make test` installs when it is missing): `initdb` and `pg_ctl` run as the
//! `postgres` user when the tests run as root (PostgreSQL refuses to run as root), on a free
//! port on loopback, its socket and data in a temp directory. Every test asks for a fresh
//! database with [`PgCluster::database`], so tests never see each other's rows.
//!
//! The cluster outlives no test process: a watchdog (a small shell loop, the only sleeping
//! code in the kit) stops it and removes its directory once the test process has exited.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub struct PgCluster {
    port: u16,
    bin: PathBuf,
    as_postgres: bool,
    next: AtomicU32,
}

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

/// The cluster of this test binary, started on first use (about 2–3 s).
pub fn pg_cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| PgCluster::start().unwrap_or_else(|e| panic!("PostgreSQL test cluster: {e}")))
}

/// The newest installed PostgreSQL's `bin` directory.
fn bin_dir() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            format!("/usr/lib/postgresql: {e} (is the postgresql package installed? `make test` installs it)")
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_string())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl PgCluster {
    fn start() -> Result<PgCluster, String> {
        let bin = bin_dir()?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("volebarn-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        }
        let data = dir.join("data");
        let cluster = |port| PgCluster {
            port,
            bin: bin.clone(),
            as_postgres,
            next: AtomicU32::new(0),
        };
        let probe = cluster(0);
        run(probe.pg("initdb").arg("-D").arg(&data).args([
            "--auth=trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]))?;
        // A port picked now may be taken before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                dir.display()
            );
            let started = run(probe
                .pg("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("log"))
                .args(["-w", "-t", "30", "-o", &opts, "start"]));
            match started {
                Ok(()) => {
                    watchdog(&probe, &dir, &data);
                    return Ok(cluster(port));
                }
                Err(e) => last = e,
            }
        }
        Err(format!(
            "pg_ctl start failed: {last}; log: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        ))
    }

    /// A command from the cluster's `bin` directory, run as `postgres` when we are root.
    fn pg(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.current_dir("/");
        c
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database; returns its URL (`postgres://postgres@127.0.0.1:PORT/NAME`).
    pub fn database(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        run(self.pg("createdb").args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            &name,
        ]))
        .unwrap_or_else(|e| panic!("createdb {name}: {e}"));
        self.url(&name)
    }

    /// The URL of database `name` in this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Stops the cluster and removes `dir` once this process has exited.
fn watchdog(cluster: &PgCluster, dir: &Path, data: &Path) {
    let stop = cluster.pg("pg_ctl");
    let mut stop_line: Vec<String> = std::iter::once(stop.get_program())
        .chain(stop.get_args())
        .map(|s| shell_quote(&s.to_string_lossy()))
        .collect();
    stop_line.extend(
        ["-D", &data.to_string_lossy(), "-m", "immediate", "stop"]
            .iter()
            .map(|s| shell_quote(s)),
    );
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        stop = stop_line.join(" "),
        dir = shell_quote(&dir.to_string_lossy()),
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
