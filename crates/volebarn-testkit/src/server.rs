//! [`TestServer`]: a real server in a temp directory, and the clients that talk to it.

use crate::proxy::{Fault, FaultProxy};
use std::path::{Path, PathBuf};
use std::time::Duration;
use volebarn_client::{Client, ClientConfig};
use volebarn_server::config::ServerConfig;
use volebarn_server::RunningServer;

/// The real server on `127.0.0.1:0`, TLS on with its generated certificate, its data in
/// `dir/data`. Any setting (limits, retention, TLS, and later the storage backend) is one
/// [`TestServer::start_with`] away.
pub struct TestServer {
    /// `None` only while [`TestServer::restart`] is between the two servers.
    pub server: Option<RunningServer>,
    /// A client made at start (made again by [`TestServer::restart`]); [`TestServer::client`]
    /// makes another.
    pub client: Client,
    /// What the server was started with (and is restarted with).
    pub cfg: ServerConfig,
    /// The temp directory: the server's data in `data/`, room beside it for the test.
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// A server with the defaults of `ServerConfig::new` (TLS on, self-signed).
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server whose config `adjust` changed first (the port stays 0 unless it says otherwise).
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        TestServer::try_start_with(adjust).await.expect("server starts")
    }

    /// As [`TestServer::start_with`], for tests of a start that must fail.
    pub async fn try_start_with(adjust: impl FnOnce(&mut ServerConfig)) -> anyhow::Result<TestServer> {
        crate::install_crypto();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ServerConfig::new(dir.path().join("data"));
        cfg.port = 0;
        adjust(&mut cfg);
        let server = volebarn_server::start(cfg.clone()).await?;
        let client = client_for(&server, |_| {});
        Ok(TestServer {
            server: Some(server),
            client,
            cfg,
            dir,
        })
    }

    /// Stops the server gracefully (storage closed) and starts it again on the same data
    /// directory; `self.client` is replaced by one for the new address.
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        let server = volebarn_server::start(self.cfg.clone())
            .await
            .expect("server restarts");
        self.client = client_for(&server, |_| {});
        self.server = Some(server);
    }

    /// Stops the server gracefully and waits until its storage is closed.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    /// A new client (its own connections, retries and breaker) that trusts the server.
    pub fn client(&self) -> Client {
        client_for(self.server(), |_| {})
    }

    /// A new client whose config `adjust` changed (retries, timeouts, the URL of a proxy).
    pub fn client_with(&self, adjust: impl FnOnce(&mut ClientConfig)) -> Client {
        client_for(self.server(), adjust)
    }

    /// A new client that talks to the server through `proxy`.
    pub fn client_via(&self, proxy: &FaultProxy, adjust: impl FnOnce(&mut ClientConfig)) -> Client {
        client_for(self.server(), |cfg| {
            cfg.server_url = proxy.url();
            adjust(cfg);
        })
    }

    /// A [`FaultProxy`] in front of this server.
    pub async fn proxy(&self, fault: Fault) -> FaultProxy {
        FaultProxy::start(self.server(), fault).await
    }

    /// A plain HTTP client trusting the server's certificate, for requests the typed client
    /// refuses to build (bad paths, missing tokens).
    pub fn raw(&self) -> reqwest::Client {
        crate::install_crypto();
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        if let Some(ca) = &self.server().ca_cert {
            let pem = std::fs::read(ca).expect("read the CA certificate");
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"));
        }
        builder.build().expect("raw client")
    }

    /// The server's base URL followed by `rest` (`"/files/a.txt"`; `""` for the base).
    pub fn url(&self, rest: &str) -> String {
        format!("{}{}", self.server().url, rest)
    }

    pub fn token(&self) -> &str {
        &self.server().token
    }

    /// The generated CA certificate clients trust (`--ca-cert`); TLS must be on.
    pub fn ca_cert(&self) -> &Path {
        self.server()
            .ca_cert
            .as_deref()
            .expect("TLS is on: the server generated a CA certificate")
    }

    /// The server's data directory.
    pub fn data(&self) -> PathBuf {
        self.cfg.data_dir.clone()
    }

    /// Every chunk file on disk (below `<data>/chunks`).
    pub fn chunk_files(&self) -> Vec<PathBuf> {
        crate::files_under(&self.data().join("chunks"))
    }

    /// Every temp file on disk (below `<data>/tmp`).
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        crate::files_under(&self.data().join("tmp"))
    }

    /// A sync engine over `root` (created if missing) with a [`fail_fast`] client and
    /// deletions held above 50 %.
    #[cfg(feature = "sync")]
    pub fn engine(
        &self,
        root: &Path,
        strategy: volebarn_client::ConflictStrategy,
    ) -> volebarn_sync::engine::Engine {
        std::fs::create_dir_all(root).expect("mkdir");
        volebarn_sync::engine::Engine::open(
            root,
            self.client_with(fail_fast),
            volebarn_sync::engine::EngineConfig {
                strategy,
                max_delete_percent: 50,
            },
        )
        .expect("engine")
    }
}

/// Client settings for tests where a failure should surface rather than be retried away:
/// one retry at most 200 ms later, 2 s to connect. For [`TestServer::client_with`].
pub fn fail_fast(cfg: &mut ClientConfig) {
    cfg.retry.max_retries = 1;
    cfg.retry.max_delay = Duration::from_millis(200);
    cfg.connect_timeout = Duration::from_secs(2);
}

fn client_for(server: &RunningServer, adjust: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut cfg = ClientConfig::new(server.url.clone(), server.token.clone());
    cfg.ca_cert = server.ca_cert.clone();
    adjust(&mut cfg);
    Client::new(cfg).expect("client")
}
