//! Shared set-up: a real server on 127.0.0.1:0 with a generated TLS certificate, in a temp
//! data directory, and a real `Client` that trusts it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use volebarn_client::{Client, ClientConfig};
use volebarn_server::config::ServerConfig;
use volebarn_server::RunningServer;

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub client: Client,
    pub cfg: ServerConfig,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ServerConfig::new(dir.path().join("data"));
        cfg.port = 0;
        adjust(&mut cfg);
        let server = volebarn_server::start(cfg.clone()).await.expect("server starts");
        let client = client_for(&server);
        TestServer {
            server: Some(server),
            client,
            cfg,
            dir,
        }
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    pub fn data(&self) -> PathBuf {
        self.cfg.data_dir.clone()
    }

    /// Stops the server (closing RocksDB) and starts it again on the same data directory.
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        let server = volebarn_server::start(self.cfg.clone())
            .await
            .expect("server restarts");
        self.client = client_for(&server);
        self.server = Some(server);
    }

    /// A plain HTTP client trusting the server's certificate, for requests the typed
    /// client refuses to build (bad paths, missing tokens).
    pub fn raw(&self) -> reqwest::Client {
        let pem = std::fs::read(self.server().ca_cert.as_ref().expect("generated cert")).expect("cert");
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
            .build()
            .expect("raw client")
    }

    pub fn url(&self, rest: &str) -> String {
        format!("{}{}", self.server().url, rest)
    }

    pub fn token(&self) -> &str {
        &self.server().token
    }

    /// Every chunk file on disk.
    pub fn chunk_files(&self) -> Vec<PathBuf> {
        files_under(&self.data().join("chunks"))
    }

    pub fn tmp_files(&self) -> Vec<PathBuf> {
        files_under(&self.data().join("tmp"))
    }
}

pub fn client_for(server: &RunningServer) -> Client {
    let mut cfg = ClientConfig::new(server.url.clone(), server.token.clone());
    cfg.ca_cert = server.ca_cert.clone();
    Client::new(cfg).expect("client")
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Deterministic incompressible test data.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
/// For effects that happen after a response (a server noticing a dropped connection).
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
