//! `volebarn-server`: stores files durably and serves them over HTTPS.
//!
//! Layers: [`api`] (HTTP, knows nothing of RocksDB) → [`service`] (the operations and their
//! write order) → [`storage`] (`MetaStore` + `ChunkStore` traits and their implementations).
//! `main.rs` only parses flags and calls [`run`]; tests call [`start`] on `127.0.0.1:0`.

pub mod api;
pub mod config;
pub mod error;
pub mod fsck;
pub mod service;
pub mod storage;
pub mod tls;

use anyhow::{anyhow, Context};
use config::{ChunkBackend, MetaBackend, ServerConfig, TlsMode};
use service::{Service, ServiceConfig};
use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use storage::chunks::fs::FsChunkStore;
use storage::chunks::s3::{S3ChunkStore, S3Settings};
use storage::meta::postgres::PgMetaStore;
use storage::meta::rocks::RocksMetaStore;
use storage::{ChunkStore, MetaStore};

const H2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
const H2_STREAM_WINDOW: u32 = 16 * 1024 * 1024;

/// How long graceful shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes a file readable only by its owner (tokens, private keys), durably.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The API token: configured, else read from `<data>/token`, else generated there.
/// Returns the token and whether it was generated just now (to be printed once).
fn load_token(cfg: &ServerConfig) -> anyhow::Result<(String, bool)> {
    if let Some(t) = &cfg.token {
        return Ok((t.clone(), false));
    }
    let path = cfg.data_dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok((t, false));
        }
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, token.as_bytes())?;
    Ok((token, true))
}

/// Everything opened and ready; not yet listening.
pub struct Prepared {
    app: axum::Router,
    service: Service,
    gc_interval: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    pub token: String,
    pub token_generated: bool,
    /// The certificate clients should trust (`--ca-cert`) when it was generated here.
    pub ca_cert: Option<PathBuf>,
}

/// Opens the configured metadata store: the embedded RocksDB in `DATA/meta` by default.
pub(crate) async fn open_meta(cfg: &ServerConfig) -> anyhow::Result<Arc<dyn MetaStore>> {
    let backend = cfg
        .meta
        .clone()
        .unwrap_or_else(|| MetaBackend::Rocks(cfg.data_dir.join("meta")));
    // Both open calls block (a database open, a connection with a timeout).
    tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<dyn MetaStore>> {
        Ok(match backend {
            MetaBackend::Rocks(dir) => Arc::new(
                RocksMetaStore::open(&dir)
                    .map_err(|e| anyhow!("opening metadata in {}: {e}", dir.display()))?,
            ),
            MetaBackend::Postgres(url) => {
                Arc::new(PgMetaStore::connect(&url).map_err(|e| anyhow!("opening the metadata store: {e}"))?)
            }
        })
    })
    .await
    .map_err(|e| anyhow!("opening the metadata store: {e}"))?
}

/// Opens the configured chunk store: the filesystem store in `DATA/chunks` by default.
pub(crate) async fn open_chunks(cfg: &ServerConfig) -> anyhow::Result<Arc<dyn ChunkStore>> {
    Ok(match &cfg.chunks {
        None => Arc::new(
            FsChunkStore::open(&cfg.data_dir.join("chunks"), &cfg.data_dir.join("tmp"))
                .map_err(|e| anyhow!("opening chunk store: {e}"))?,
        ),
        // Staging inside the directory keeps it on the same filesystem (renames stay atomic);
        // the store's listing skips names that are not chunk ids.
        Some(ChunkBackend::Fs(dir)) => Arc::new(
            FsChunkStore::open(dir, &dir.join(".staging"))
                .map_err(|e| anyhow!("opening chunk store {}: {e}", dir.display()))?,
        ),
        Some(ChunkBackend::S3(url)) => {
            let settings = cfg.s3.clone().unwrap_or_else(S3Settings::from_env);
            Arc::new(
                S3ChunkStore::open(url, &settings)
                    .await
                    .map_err(|e| anyhow!("opening the chunk store: {e}"))?,
            )
        }
    })
}

/// Opens storage, loads or generates the token and TLS material, builds the router.
pub async fn prepare(cfg: &ServerConfig) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let meta = open_meta(cfg).await?;
    let chunks = open_chunks(cfg).await?;
    let service = Service::new(
        meta,
        chunks,
        ServiceConfig {
            max_file_size: cfg.max_file_size,
            versions_keep: cfg.versions_keep,
            retention: cfg.retention.clone(),
        },
    )
    .map_err(|e| anyhow!("starting the service: {e}"))?;
    let (token, token_generated) = load_token(cfg)?;
    let (tls, ca_cert) = match &cfg.tls {
        TlsMode::Off => (None, None),
        TlsMode::SelfSigned => {
            let (cert, key) = tls::ensure_self_signed(&cfg.data_dir)?;
            (Some(tls::server_config(&cert, &key)?), Some(cert))
        }
        TlsMode::Files { cert, key } => (Some(tls::server_config(cert, key)?), None),
    };
    // The local stores whose free space the disk guard watches (api::space).
    let mut local_stores = Vec::new();
    match &cfg.meta {
        None => local_stores.push(cfg.data_dir.join("meta")),
        Some(MetaBackend::Rocks(dir)) => local_stores.push(dir.clone()),
        Some(MetaBackend::Postgres(_)) => {}
    }
    match &cfg.chunks {
        None => local_stores.push(cfg.data_dir.join("chunks")),
        Some(ChunkBackend::Fs(dir)) => local_stores.push(dir.clone()),
        Some(ChunkBackend::S3(_)) => {}
    }
    let app = api::router(
        api::AppState::new(
            service.clone(),
            token.clone(),
            Some(cfg.data_dir.clone()),
            cfg.limits.clone(),
        )
        .with_local_stores(local_stores),
    );
    Ok(Prepared {
        app,
        service,
        gc_interval: cfg.gc_interval,
        tls,
        token,
        token_generated,
        ca_cert,
    })
}

/// Binds the configured address, refusing plain HTTP off loopback unless allowed.
pub fn bind(cfg: &ServerConfig) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
        .with_context(|| format!("binding {}:{}", cfg.host, cfg.port))?;
    let addr = listener.local_addr()?;
    if cfg.tls == TlsMode::Off && !addr.ip().is_loopback() && !cfg.allow_insecure {
        return Err(anyhow!(
            "refusing plain HTTP on {addr}: use TLS, a loopback address, or --allow-insecure"
        ));
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    prepared: Prepared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = prepared.app;
    let gc = tokio::spawn(gc_loop(prepared.service.clone(), prepared.gc_interval));
    let verifier = tokio::spawn(verify_loop(prepared.service.clone()));
    let served = match prepared.tls {
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                h.graceful_shutdown(Some(DRAIN_TIMEOUT));
            });
            // TCP_NODELAY: without it a small answer written in two parts (TLS records,
            // headers then body) waits for the client's delayed ACK, ~40 ms a request.
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
                axum_server::tls_rustls::RustlsConfig::from_config(tls),
            )
            .acceptor(axum_server::accept::NoDelayAcceptor::new());
            let mut server = axum_server::Server::from_tcp(listener)
                .acceptor(acceptor)
                .handle(handle);
            // Large HTTP/2 windows: fast big uploads, and room for the many small DATA frames
            // a multipart body of small files arrives in (h2 refuses a connection whose
            // buffered small frames exceed half its window).
            server
                .http_builder()
                .http2()
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .initial_stream_window_size(H2_STREAM_WINDOW);
            server
                .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .await
                .context("serving HTTPS")
        }
        None => {
            let listener =
                axum::serve::ListenerExt::tap_io(tokio::net::TcpListener::from_std(listener)?, |tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::warn!(error = %e, "could not set TCP_NODELAY");
                    }
                });
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")
        }
    };
    // The background tasks hold the service (and so the database): stop them before
    // returning.
    for task in [gc, verifier] {
        task.abort();
        let _ = task.await;
    }
    served
}

/// Runs garbage collection every `interval` (versions past their age, unreferenced and
/// orphan chunks).
async fn gc_loop(service: Service, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: skip it, start-up is busy enough
    loop {
        tick.tick().await;
        match service.gc(volebarn_core::timefmt::now_nanos()).await {
            Ok(r) => tracing::info!(
                versions = r.versions_dropped,
                orphans = r.orphans_deleted,
                "gc pass"
            ),
            Err(e) => tracing::warn!(error = %e, "gc pass failed"),
        }
    }
}

/// Settles the whole-file hashes claimed by chunked commits, woken by every commit (of any
/// server sharing the store) and once at start for claims an earlier run left open.
async fn verify_loop(service: Service) {
    let mut head = service.subscribe_head();
    loop {
        match service.verify_claims().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(claims = n, "verified chunked commits"),
            // Left open: checked again after the next commit, and before the file is served.
            Err(e) => tracing::warn!(error = %e, "verifying chunked commits failed"),
        }
        if head.changed().await.is_err() {
            return;
        }
    }
}

/// The URL clients use for a bound address.
pub fn base_url(cfg: &ServerConfig, addr: SocketAddr) -> String {
    let scheme = if cfg.tls == TlsMode::Off { "http" } else { "https" };
    let host = match addr.ip() {
        ip if ip.is_loopback() && ip.is_ipv4() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("{scheme}://{host}:{}", addr.port())
}

/// Runs the server the way `main` does: prints the listening line (and a generated token
/// once), serves until SIGINT/SIGTERM.
pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    let prepared = prepare(&cfg).await?;
    let listener = bind(&cfg)?;
    let addr = listener.local_addr()?;
    if prepared.token_generated {
        println!(
            "volebarn-server generated an API token (saved in {}):",
            cfg.data_dir.join("token").display()
        );
        println!("  {}", prepared.token);
    }
    if let Some(ca) = &prepared.ca_cert {
        println!("clients trust this server with --ca-cert {}", ca.display());
    }
    println!("volebarn-server listening on {}", base_url(&cfg, addr));
    serve(listener, prepared, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}

/// A server running in this process (tests, embedding).
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The service itself, for tests that drive GC with an injected clock.
    pub service: Service,
    pub url: String,
    pub token: String,
    pub ca_cert: Option<PathBuf>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops gracefully and waits until storage is closed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let RunningServer {
            service, stop, task, ..
        } = self;
        drop(service);
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        task.await.map_err(|e| anyhow!("server task: {e}"))?
    }
}

/// Starts a server on the configured address (use port 0 in tests) in the background.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<RunningServer> {
    let prepared = prepare(&cfg).await?;
    let listener = bind(&cfg)?;
    let addr = listener.local_addr()?;
    let (token, ca_cert) = (prepared.token.clone(), prepared.ca_cert.clone());
    let service = prepared.service.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, prepared, async move {
        let _ = stopped.await;
    }));
    Ok(RunningServer {
        addr,
        service,
        url: base_url(&cfg, addr),
        token,
        ca_cert,
        stop: Some(stop),
        task,
    })
}
