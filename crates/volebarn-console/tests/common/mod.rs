//! Shared by the console's end-to-end tests: a real TLS server on 127.0.0.1:0, engines over
//! temp folders, and helpers that look at folders the way a user would.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use volebarn_client::{Client, ClientConfig, ConflictStrategy};
use volebarn_console::engine::{Engine, EngineConfig};
use volebarn_server::config::ServerConfig;

pub async fn server(dir: &Path) -> volebarn_server::RunningServer {
    let mut cfg = ServerConfig::new(dir.join("server-data"));
    cfg.port = 0;
    volebarn_server::start(cfg).await.expect("server")
}

pub fn client(srv: &volebarn_server::RunningServer) -> Client {
    let mut cfg = ClientConfig::new(srv.url.clone(), srv.token.clone());
    cfg.ca_cert = srv.ca_cert.clone();
    cfg.retry.max_retries = 1;
    cfg.retry.max_delay = Duration::from_millis(200);
    cfg.connect_timeout = Duration::from_secs(2);
    Client::new(cfg).expect("client")
}

pub fn engine(srv: &volebarn_server::RunningServer, root: &Path, strategy: ConflictStrategy) -> Engine {
    std::fs::create_dir_all(root).expect("mkdir");
    Engine::open(
        root,
        client(srv),
        EngineConfig {
            strategy,
            max_delete_percent: 50,
        },
    )
    .expect("engine")
}

/// Every file below `root` (outside `.volebarn/`) with its content.
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    tree_and_dirs(root).0
}

/// Every regular file below `root` with its bytes, and every directory (no symlinks, no
/// `.volebarn/` at the root). Entries that vanish during the walk are left out.
pub fn tree_and_dirs(root: &Path) -> (BTreeMap<String, Vec<u8>>, BTreeSet<String>) {
    let (mut files, mut dirs) = (BTreeMap::new(), BTreeSet::new());
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if rel.is_empty() && name == ".volebarn" {
                continue;
            }
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                dirs.insert(path.clone());
                stack.push((e.path(), path));
            } else if ft.is_file() {
                if let Ok(b) = std::fs::read(e.path()) {
                    files.insert(path, b);
                }
            }
        }
    }
    (files, dirs)
}

pub fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, content).expect("write");
}

/// Sets every file's mtime below `root` a minute back: files that existed before the sync
/// started, rather than files written in the very moment a scan reads them (which the scan
/// reads once more on the next pass; see `scan::RACY_NANOS`).
pub fn age(root: &Path) {
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    for p in tree(root).keys() {
        let f = std::fs::File::options()
            .write(true)
            .open(root.join(p))
            .expect("open");
        f.set_modified(past).expect("set mtime");
    }
}

/// Every file on the server with its content.
pub async fn server_tree(c: &Client) -> BTreeMap<String, Vec<u8>> {
    let m = c.get_manifest(None).await.expect("manifest");
    let mut out = BTreeMap::new();
    for (p, f) in m.files {
        if !f.is_directory {
            out.insert(p.clone(), c.download_file(&p).await.expect("download").to_vec());
        }
    }
    out
}

/// Waits until `cond` holds, checking every 50 ms, failing after `secs` seconds.
pub async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one run of the `volebarn` binary showed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The single `volebarn: …` line a failed command prints.
    pub fn error_line(&self) -> &str {
        assert_ne!(self.code, 0, "expected failure: {self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:?}");
        assert!(lines[0].starts_with("volebarn: "), "{self:?}");
        lines[0]
    }
}

/// Runs the `volebarn` binary in `cwd` with `home` as `$HOME` and no `VOLEBARN_*` settings
/// from the environment, so nothing of the user's own setup leaks in.
pub fn volebarn(cwd: &Path, home: &Path, args: &[&std::ffi::OsStr]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_volebarn"))
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("VOLEBARN_CONFIG")
        .env_remove("VOLEBARN_SERVER")
        .env_remove("VOLEBARN_TOKEN")
        .env_remove("VOLEBARN_CA_CERT")
        .env_remove("VOLEBARN_LOG")
        .args(args)
        .output()
        .expect("run volebarn");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// For tests of the binary: a server in this process, and a scratch directory (the server's
/// data in `server-data/`, a `home/` for `$HOME`, folders beside them).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub srv: volebarn_server::RunningServer,
}

impl Env {
    pub async fn start() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let srv = server(dir.path()).await;
        std::fs::create_dir_all(dir.path().join("home")).expect("mkdir");
        Env { dir, srv }
    }

    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}
