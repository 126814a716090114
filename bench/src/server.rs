//! The servers the scenarios talk to: in this process (`volebarn_server::start`) or, with
//! `--server-process` and always for the `large` scenario, the release `volebarn-server` binary
//! as a process of its own, so its peak RSS can be read from `/proc` and a profiler can attach
//! to it alone (`--profile CMD`, see [`Profiler`]).

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use volebarn_client::{Client, ClientConfig};
use volebarn_server::config::ServerConfig;

/// Options that reach every scenario: set once by `main` from the command line.
#[derive(Debug, Default)]
pub struct Options {
    /// Every fresh server is a `volebarn-server` process (the `large` scenario's always is).
    pub server_process: bool,
    /// A command run around timed steps against a server process; `{pid}` and `{step}` are
    /// replaced (e.g. `perf record -g -o /tmp/{step}.data -p {pid}`).
    pub profile: Option<String>,
}

static OPTIONS: OnceLock<Options> = OnceLock::new();

pub fn set_options(o: Options) {
    let _ = OPTIONS.set(o);
}

fn options() -> &'static Options {
    OPTIONS.get_or_init(Options::default)
}

/// A fresh durable TLS server with its data in `dir`.
pub struct BenchServer {
    pub url: String,
    pub token: String,
    pub ca_cert: Option<PathBuf>,
    pub addr: SocketAddr,
    kind: Kind,
}

enum Kind {
    InProcess(volebarn_server::RunningServer),
    Process(ServerProcess),
}

impl BenchServer {
    /// The server's process id when it runs as a process of its own.
    pub fn pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::InProcess(_) => None,
            Kind::Process(p) => Some(p.child.id()),
        }
    }

    /// Peak resident set (`VmHWM`) of a server process, in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<Option<u64>> {
        match self.pid() {
            None => Ok(None),
            Some(pid) => proc_status_kib(pid, "VmHWM:").map(|k| Some(k * 1024)),
        }
    }

    /// CPU time (user + system) the server process has used so far, for a process.
    pub fn cpu_time(&self) -> anyhow::Result<Option<Duration>> {
        self.pid().map(|pid| cpu_time(&pid.to_string())).transpose()
    }

    /// Stops the server and waits until its storage is closed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        match self.kind {
            Kind::InProcess(s) => s.shutdown().await,
            Kind::Process(p) => tokio::task::spawn_blocking(move || p.stop()).await?,
        }
    }
}

/// A fresh server in `dir` (a process with `--server-process`) and a client for it.
pub async fn fresh_server(dir: &Path) -> anyhow::Result<(BenchServer, Client)> {
    let server = if options().server_process {
        spawn_server(dir, &[]).await?
    } else {
        in_process(dir).await?
    };
    let client = client_for(&server)?;
    client.ping().await?;
    Ok((server, client))
}

/// A server in this process on `127.0.0.1:0`.
pub async fn in_process(dir: &Path) -> anyhow::Result<BenchServer> {
    let mut cfg = ServerConfig::new(dir);
    cfg.port = 0;
    let s = volebarn_server::start(cfg).await?;
    Ok(BenchServer {
        url: s.url.clone(),
        token: s.token.clone(),
        ca_cert: s.ca_cert.clone(),
        addr: s.addr,
        kind: Kind::InProcess(s),
    })
}

/// A client of its own (own connections) for `server`.
pub fn client_for(server: &BenchServer) -> anyhow::Result<Client> {
    client_at(server, &server.url)
}

/// A client of `server` that connects to `url` instead (a proxy in front of it); the
/// certificate names 127.0.0.1, so any loopback port will do.
pub fn client_at(server: &BenchServer, url: &str) -> anyhow::Result<Client> {
    let mut ccfg = ClientConfig::new(url.to_string(), server.token.clone());
    ccfg.ca_cert = server.ca_cert.clone();
    Ok(Client::new(ccfg)?)
}

/// The release `volebarn-server` binary: beside this benchmark's own binary.
fn server_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let bin = exe
        .parent()
        .context("the bench binary's directory")?
        .join("volebarn-server");
    if !bin.is_file() {
        bail!(
            "{} not found: build it first with `cargo build --release -p volebarn-server`",
            bin.display()
        );
    }
    Ok(bin)
}

struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    /// SIGTERM (graceful: drains requests, closes RocksDB), then waits; SIGKILL after 30 s.
    fn stop(mut self) -> anyhow::Result<()> {
        signal(self.child.id(), "TERM")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("volebarn-server exited with {status}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("volebarn-server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Only a server not stopped by `stop` (an error on the way) is still running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed: {status}");
    }
    Ok(())
}

/// Starts `volebarn-server --data-dir dir --port 0 <extra…>` and reads what it prints: the
/// generated token, the `--ca-cert` path and the URL it listens on. Its log goes to
/// `<dir>.log`.
pub async fn spawn_server(dir: &Path, extra: &[&str]) -> anyhow::Result<BenchServer> {
    spawn_server_env(dir, extra, &[]).await
}

/// [`spawn_server`] with extra environment variables (S3 credentials). With `--token T` among
/// `extra`, the server prints no token and `T` is the one clients use.
pub async fn spawn_server_env(
    dir: &Path,
    extra: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<BenchServer> {
    let bin = server_binary()?;
    let log = dir.with_extension("log");
    let mut child = Command::new(&bin)
        .arg("--data-dir")
        .arg(dir)
        .args(["--port", "0"])
        .args(extra)
        .env_remove("VOLEBARN_TOKEN")
        .env_remove("VOLEBARN_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let process = ServerProcess { child };
    let (token, ca_cert, url, lines) = tokio::task::spawn_blocking(move || read_banner(stdout)).await??;
    let given = extra
        .iter()
        .position(|a| *a == "--token")
        .and_then(|i| extra.get(i + 1))
        .map(|t| t.to_string());
    let token = token.or(given);
    // Keep reading what it prints (nothing, normally) so it never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    let (Some(token), Some(url)) = (token, url) else {
        bail!("volebarn-server printed no token or URL (log: {})", log.display());
    };
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {url}"))?;
    if port == 0 {
        bail!("volebarn-server printed port 0 in {url}");
    }
    eprintln!(
        "  (volebarn-server pid {} listening on {url})",
        process.child.id()
    );
    Ok(BenchServer {
        url,
        token,
        ca_cert,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        kind: Kind::Process(process),
    })
}

type Banner = (
    Option<String>,
    Option<PathBuf>,
    Option<String>,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
);

/// Reads the server's first lines until the `listening on` one (or its stdout closes).
fn read_banner(stdout: std::process::ChildStdout) -> anyhow::Result<Banner> {
    let mut lines = BufReader::new(stdout).lines();
    let (mut token, mut ca, mut url) = (None, None, None);
    let mut token_next = false;
    for line in lines.by_ref() {
        let line = line?;
        if token_next {
            token = Some(line.trim().to_string());
            token_next = false;
        } else if line.starts_with("volebarn-server generated an API token") {
            token_next = true;
        } else if let Some(p) = line.split("--ca-cert ").nth(1) {
            ca = Some(PathBuf::from(p.trim()));
        } else if let Some(u) = line.strip_prefix("volebarn-server listening on ") {
            url = Some(u.trim().to_string());
            break;
        }
    }
    Ok((token, ca, url, lines))
}

/// A value in kB from `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`).
fn proc_status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// CPU time (user + system, all threads) of process `pid` (a number or `self`), from
/// `/proc/<pid>/stat`, whose times are in clock ticks of 1/100 s on Linux (`USER_HZ`).
pub fn cpu_time(pid: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no field {} in /proc/{pid}/stat", i + 3))
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// The `--profile` command, attached to a server process for one timed step.
pub struct Profiler {
    child: Child,
}

impl Profiler {
    /// Starts the `--profile` command for `step` when one was given and `server` is a process;
    /// gives it a second to attach.
    pub fn start(server: &BenchServer, step: &str) -> anyhow::Result<Option<Profiler>> {
        let (Some(cmd), Some(pid)) = (&options().profile, server.pid()) else {
            return Ok(None);
        };
        let cmd = cmd.replace("{pid}", &pid.to_string()).replace("{step}", step);
        eprintln!("  (profiling {step}: {cmd})");
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .stdin(Stdio::null())
            .spawn()
            .context("starting the profiler")?;
        std::thread::sleep(Duration::from_secs(1));
        Ok(Some(Profiler { child }))
    }

    /// SIGINT (perf and strace then write their results), and waits for it to finish.
    pub fn stop(mut self) -> anyhow::Result<()> {
        signal(self.child.id(), "INT")?;
        self.child.wait()?;
        Ok(())
    }
}

/// Stops a profiler started by [`Profiler::start`], if any.
pub fn stop_profiler(p: Option<Profiler>) -> anyhow::Result<()> {
    match p {
        Some(p) => p.stop(),
        None => Ok(()),
    }
}
