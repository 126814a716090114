//! [`Garage`]: a real S3 server (Garage, single node) for the tests of the S3 chunk store.
//!
//! One Garage per test binary, started on first use: its start-up (a second or two, plus
//! the cluster layout) is paid once, and every test gets a bucket of its own from
//! [`Garage::bucket`], so tests stay independent and run in parallel. Garage runs on free
//! ports in a temp directory; a watchdog shell kills it and removes the directory once the
//! test process is gone, however that process ends (a static is never dropped, so no
//! destructor could do it).
//!
//! Set-up goes through Garage's own CLI, as an operator would: `server`, `status` until it
//! answers, `node id`, `layout assign` + `layout apply`, `key create`; then per bucket
//! `bucket create` and `bucket allow`. These commands are the same in Garage v1 and v2.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use volebarn_server::storage::chunks::s3::S3Settings;

/// The region Garage is configured with (requests signed for another one are refused).
pub const GARAGE_REGION: &str = "garage";
/// How long a fresh Garage may take to answer `garage status`.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at starting Garage: a free port found by binding port 0 may be taken by
/// someone else before Garage binds it.
const START_ATTEMPTS: usize = 3;

/// The running Garage of this test process.
pub struct Garage {
    binary: PathBuf,
    dir: PathBuf,
    s3_port: u16,
    key_id: String,
    secret_key: String,
    /// How long start-up took, layout and key included (reported by tests that care).
    pub started_in: Duration,
}

/// A bucket of its own for one test, with what it takes to reach it.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    pub name: String,
    /// Endpoint, region, key and secret of the test Garage; plain HTTP allowed.
    pub settings: S3Settings,
}

impl S3Bucket {
    /// `s3://<bucket>/<prefix>` (`s3://<bucket>` for an empty prefix).
    pub fn url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}", self.name)
        } else {
            format!("s3://{}/{prefix}", self.name)
        }
    }
}

static GARAGE: OnceLock<Garage> = OnceLock::new();
static BUCKETS: AtomicU64 = AtomicU64::new(0);

impl Garage {
    /// The Garage of this test process, started on first call (blocks until it serves).
    /// Panics with the way out when Garage is not installed or does not start.
    pub fn get() -> &'static Garage {
        GARAGE.get_or_init(Garage::start)
    }

    /// A fresh, empty bucket that the test key may read, write and own.
    pub fn bucket(&self) -> S3Bucket {
        let name = format!("volebarn-test-{}", BUCKETS.fetch_add(1, Ordering::Relaxed));
        self.cli(&["bucket", "create", &name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &name,
            "--key",
            &self.key_id,
        ]);
        S3Bucket {
            name,
            settings: self.settings(),
        }
    }

    /// Where and as whom to reach this Garage.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint()),
            region: Some(GARAGE_REGION.to_string()),
            access_key_id: Some(self.key_id.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            allow_http: true,
        }
    }

    /// `http://127.0.0.1:<S3 port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    fn start() -> Garage {
        let binary = garage_binary();
        let started = Instant::now();
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match Garage::try_start(&binary) {
                Ok(mut garage) => {
                    garage.started_in = started.elapsed();
                    eprintln!(
                        "garage: serving S3 at {} (started in {:.1?}, logs in {})",
                        garage.endpoint(),
                        garage.started_in,
                        garage.dir.display()
                    );
                    return garage;
                }
                Err(e) => last_error = e,
            }
        }
        panic!("garage does not start: {last_error}");
    }

    /// One attempt: config, server, boot, layout, key. The server and the directory are in
    /// the watchdog's hands from the moment the server is spawned, so a failed attempt
    /// leaves nothing behind once the test process ends.
    fn try_start(binary: &Path) -> Result<Garage, String> {
        let dir = tempfile::Builder::new()
            .prefix("volebarn-garage-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?
            .keep();
        let [rpc_port, s3_port, admin_port] = free_ports();
        let config = dir.join("garage.toml");
        fs::write(&config, config_toml(&dir, rpc_port, s3_port, admin_port))
            .map_err(|e| format!("writing {}: {e}", config.display()))?;
        let log = |name: &str| {
            fs::File::create(dir.join(name))
                .map(Stdio::from)
                .map_err(|e| format!("creating {name}: {e}"))
        };
        let mut server = garage_command(binary, "garage=info")
            .arg("-c")
            .arg(&config)
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log("garage.log")?)
            .stderr(log("garage.err")?)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", binary.display()))?;
        reap_on_exit(server.id(), &dir)?;
        let mut garage = Garage {
            binary: binary.to_path_buf(),
            dir,
            s3_port,
            key_id: String::new(),
            secret_key: String::new(),
            started_in: Duration::ZERO,
        };
        let set_up = garage.set_up(&mut server);
        if set_up.is_err() {
            let _ = server.kill();
        }
        set_up.map(|()| garage)
    }

    /// Waits for the server, gives it a layout (one node, zone `dc1`, 1 GB) and the key.
    fn set_up(&mut self, server: &mut Child) -> Result<(), String> {
        self.wait_for_boot(server)?;
        let node = self.try_cli(&["node", "id", "--quiet"])?;
        let node = node.trim().split('@').next().unwrap_or_default().to_string();
        self.try_cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        self.try_cli(&["layout", "apply", "--version", "1"])?;
        let key = self.try_cli(&["key", "create", "volebarn"])?;
        self.key_id = field(&key, "Key ID:").ok_or_else(|| format!("no key id in: {key}"))?;
        self.secret_key = field(&key, "Secret key:").ok_or_else(|| format!("no secret in: {key}"))?;
        Ok(())
    }

    /// Polls `garage status` until the server answers, failing early if it exits.
    fn wait_for_boot(&self, server: &mut Child) -> Result<(), String> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.try_wait() {
                return Err(format!(
                    "garage server exited with {status}: {}",
                    self.server_log()
                ));
            }
            if self.try_cli(&["status"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "garage status does not answer after {BOOT_TIMEOUT:?}: {}",
                    self.server_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of the server's log, for a failure message.
    fn server_log(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let log = read("garage.err") + &read("garage.log");
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Runs `garage -c <config> <args>`; its stdout, or why it failed.
    fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out: Output = garage_command(&self.binary, "garage=warn")
            .arg("-c")
            .arg(self.dir.join("garage.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("garage {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "garage {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A command running Garage, untouched by the caller's `GARAGE_*` variables (which could
/// point the CLI at another cluster or replace the RPC secret) and its `RUST_LOG`.
fn garage_command(binary: &Path, log: &str) -> Command {
    let mut cmd = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GARAGE_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("RUST_LOG", log);
    cmd
}

/// The value after `label` on its line of the CLI's table output (`Key ID:   GK…`).
fn field(output: &str, label: &str) -> Option<String> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn config_toml(dir: &Path, rpc_port: u16, s3_port: u16, admin_port: u16) -> String {
    format!(
        r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"

[s3_api]
api_bind_addr = "127.0.0.1:{s3_port}"
s3_region = "{GARAGE_REGION}"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
"#,
        dir = dir.display(),
        secret = random_hex(32),
    )
}

/// Three distinct ports free right now (held together so they differ).
fn free_ports() -> [u16; 3] {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let held = [bind(), bind(), bind()];
    held.map(|l| l.local_addr().expect("local addr").port())
}

/// `n` random bytes in hex (the cluster's RPC secret; nothing else may join it).
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A detached shell that waits for this process to end, then kills Garage and removes its
/// directory. All its stdio is null, so it never holds the test harness's pipes open.
fn reap_on_exit(garage_pid: u32, dir: &Path) -> Result<(), String> {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 {garage_pid} 2>/dev/null; rm -rf '{dir}'",
        me = std::process::id(),
        dir = dir.display(),
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("starting the watchdog: {e}"))
}

/// `garage` on `PATH`, else `~/.cargo/bin/garage` (where `make tools` puts it).
fn garage_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("garage"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let in_cargo = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/garage"));
    on_path
        .into_iter()
        .chain(in_cargo)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "garage (the S3 server these tests run against) is not installed: not on PATH \
                 nor in ~/.cargo/bin. `make tools` (which `make test` runs) installs it."
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_fields_are_read_from_the_cli_table() {
        let out = "==== ACCESS KEY INFORMATION ====\nKey ID:       GK31c2f218a2e44f485b94239e\n\
                   Key name:     volebarn\nSecret key:   b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835\n";
        assert_eq!(
            field(out, "Key ID:").as_deref(),
            Some("GK31c2f218a2e44f485b94239e")
        );
        assert_eq!(
            field(out, "Secret key:").as_deref(),
            Some("b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835")
        );
        assert_eq!(field(out, "Expiration:"), None);
    }

    #[test]
    fn bucket_urls() {
        let b = S3Bucket {
            name: "b".into(),
            settings: S3Settings::default(),
        };
        assert_eq!(b.url(""), "s3://b");
        assert_eq!(b.url("/p/q/"), "s3://b/p/q");
    }
}
