//! Shared by the console's tests of the `volebarn` binary (the server, folders and trees come
//! from `volebarn_testkit`): running the binary the way a user does.
#![allow(dead_code)]

use std::path::Path;
use volebarn_testkit::TestServer;

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

/// For tests of the binary: a server in this process, and a scratch directory (a `home/` for
/// `$HOME`, folders beside it).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub srv: TestServer,
}

impl Env {
    pub async fn start() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let srv = TestServer::start().await;
        std::fs::create_dir_all(dir.path().join("home")).expect("mkdir");
        Env { dir, srv }
    }

    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}
