//! Server configuration: flags > `VOLEBARN_*` environment > TOML file > defaults.

use clap::Parser;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Command line of `volebarn-server`.
#[derive(Debug, Parser, Default)]
#[command(name = "volebarn-server", version, about = "Volebarn file-sync server")]
pub struct Cli {
    /// TOML config file (sections [server], [tls], [versions]).
    #[arg(long, env = "VOLEBARN_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Where metadata, chunks, the generated certificate and token live.
    #[arg(long, env = "VOLEBARN_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "VOLEBARN_HOST")]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one [default: 3000].
    #[arg(long, env = "VOLEBARN_PORT")]
    pub port: Option<u16>,
    /// Serve plain HTTP (only on loopback unless --allow-insecure).
    #[arg(long, env = "VOLEBARN_NO_TLS")]
    pub no_tls: bool,
    /// Allow plain HTTP on a non-loopback address.
    #[arg(long, env = "VOLEBARN_ALLOW_INSECURE")]
    pub allow_insecure: bool,
    /// PEM certificate chain (default: a self-signed one generated into DATA/tls/).
    #[arg(long, env = "VOLEBARN_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching --tls-cert.
    #[arg(long, env = "VOLEBARN_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// API token (default: generated into DATA/token and printed once).
    #[arg(long, env = "VOLEBARN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest accepted file, e.g. 100MB, 1GiB or a byte count [default: 100MB].
    #[arg(long, env = "VOLEBARN_MAX_FILE_SIZE", value_name = "SIZE")]
    pub max_file_size: Option<String>,
    /// Metadata store: `postgres://USER@HOST:PORT/DB` (shared by replicas) or a directory for
    /// the embedded RocksDB [default: DATA/meta].
    #[arg(long, env = "VOLEBARN_META", value_name = "URL", global = true)]
    pub meta: Option<String>,
    /// Chunk store: `s3://BUCKET/PREFIX` (credentials and endpoint from the AWS_* environment)
    /// or a directory [default: DATA/chunks].
    #[arg(long, env = "VOLEBARN_CHUNKS", value_name = "URL", global = true)]
    pub chunks: Option<String>,
    /// Requests per second allowed per client address, in bursts of twice as many; over it
    /// the server answers 429 with Retry-After [default: no limit].
    #[arg(long, env = "VOLEBARN_RATE_LIMIT", value_name = "N")]
    pub rate_limit: Option<u32>,
    /// Largest accepted request body as a whole, e.g. a `/bulk/upload` with all its parts:
    /// 4GiB, 500MB or a byte count; over it the server answers 413 [default: 4GiB].
    #[arg(long, env = "VOLEBARN_MAX_REQUEST_SIZE", value_name = "SIZE")]
    pub max_request_size: Option<String>,
    /// Without a subcommand the server starts.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `volebarn-server` does instead of serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the stores offline: re-hash every chunk, check every file's chunks and size,
    /// recount references, list orphans. Stop the server first. Exit status: 0 clean,
    /// 1 problems found, 2 could not run.
    Fsck {
        /// Fix reference counts and remove orphans (never deletes a file record).
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub versions: VersionsSection,
    #[serde(default)]
    pub chunks: ChunksSection,
    #[serde(default)]
    pub journal: JournalSection,
    #[serde(default)]
    pub gc: GcSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub limits: LimitsSection,
}

/// `[limits]`: per-address request rate and the brute-force guard.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Requests per second per address (0 or absent: no limit).
    pub requests_per_second: Option<u32>,
    /// Failed authentications per address per minute before it gets 429s (default 10).
    pub auth_failures_per_minute: Option<u32>,
    /// Largest request body as a whole (`"4GiB"` or bytes; default 4 GiB).
    pub max_request_size: Option<SizeValue>,
}

/// `[storage]`: where metadata and chunks live (the same values as `--meta` / `--chunks`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub meta: Option<String>,
    pub chunks: Option<String>,
}

/// Where the metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaBackend {
    /// The embedded RocksDB in this directory.
    Rocks(PathBuf),
    /// A PostgreSQL database, shareable by several servers.
    Postgres(String),
}

/// Where chunk bytes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkBackend {
    /// A directory (local, or a filesystem several servers mount).
    Fs(PathBuf),
    /// `s3://BUCKET/PREFIX` on any S3-compatible server.
    S3(String),
}

impl MetaBackend {
    /// `postgres://…` / `postgresql://…`, or a directory path (`file://` allowed).
    pub fn parse(s: &str) -> Result<Self, String> {
        match scheme(s) {
            Some("postgres" | "postgresql") => Ok(MetaBackend::Postgres(s.to_string())),
            Some("file") => Ok(MetaBackend::Rocks(PathBuf::from(&s["file://".len()..]))),
            Some(other) => Err(format!(
                "unknown metadata store {other:?} in {s:?}: use postgres://USER@HOST:PORT/DB or a directory"
            )),
            None if s.is_empty() => Err("the metadata store must not be empty".into()),
            None => Ok(MetaBackend::Rocks(PathBuf::from(s))),
        }
    }
}

impl ChunkBackend {
    /// `s3://BUCKET/PREFIX`, or a directory path (`file://` allowed).
    pub fn parse(s: &str) -> Result<Self, String> {
        match scheme(s) {
            Some("s3") => Ok(ChunkBackend::S3(s.to_string())),
            Some("file") => Ok(ChunkBackend::Fs(PathBuf::from(&s["file://".len()..]))),
            Some(other) => Err(format!(
                "unknown chunk store {other:?} in {s:?}: use s3://BUCKET/PREFIX or a directory"
            )),
            None if s.is_empty() => Err("the chunk store must not be empty".into()),
            None => Ok(ChunkBackend::Fs(PathBuf::from(s))),
        }
    }
}

/// The scheme of `s` when it is a URL (`scheme://…`).
fn scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    (!scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
    .then_some(scheme)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub max_file_size: Option<SizeValue>,
    pub data_dir: Option<PathBuf>,
    pub token: Option<String>,
    pub allow_insecure: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub enabled: Option<bool>,
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsSection {
    pub keep: Option<usize>,
    /// e.g. "30d"
    pub max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunksSection {
    /// e.g. "24h"
    pub orphan_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    pub keep: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcSection {
    /// e.g. "1h"
    pub interval: Option<String>,
}

/// Parses `30d`, `24h`, `90s`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// `max_file_size = "100MB"` or `max_file_size = 1048576`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// A size from the command line (or environment), else from the config file.
fn size_setting(flag: Option<String>, file: Option<SizeValue>) -> Result<Option<u64>, String> {
    match (flag, file) {
        (Some(s), _) => parse_size(&s).map(Some),
        (None, Some(SizeValue::Bytes(n))) => Ok(Some(n)),
        (None, Some(SizeValue::Text(s))) => parse_size(&s).map(Some),
        (None, None) => Ok(None),
    }
}

/// Parses `100MB`, `1GiB`, `512 KiB` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size {s:?}: {e}"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP.
    Off,
    /// A certificate generated into `<data>/tls/` on first run.
    SelfSigned,
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
}

/// Everything the server needs to start, fully resolved.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub tls: TlsMode,
    pub allow_insecure: bool,
    pub token: Option<String>,
    pub max_file_size: u64,
    pub versions_keep: usize,
    pub retention: crate::service::Retention,
    /// How often the background GC runs.
    pub gc_interval: std::time::Duration,
    /// `None`: the embedded RocksDB in `DATA/meta`.
    pub meta: Option<MetaBackend>,
    /// `None`: the filesystem store in `DATA/chunks`.
    pub chunks: Option<ChunkBackend>,
    /// S3 endpoint and credentials for an `s3://` chunk store; `None` reads the standard
    /// `AWS_*` environment at start (tests set it here instead of in the process environment).
    pub s3: Option<crate::storage::chunks::s3::S3Settings>,
    pub limits: crate::api::limits::LimitsConfig,
}

pub const DEFAULT_MAX_FILE_SIZE: u64 = 100_000_000;
pub const DEFAULT_VERSIONS_KEEP: usize = 10;

impl ServerConfig {
    /// Defaults for a data directory: loopback, port 3000, self-signed TLS.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 3000,
            data_dir: data_dir.into(),
            tls: TlsMode::SelfSigned,
            allow_insecure: false,
            token: None,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            versions_keep: DEFAULT_VERSIONS_KEEP,
            retention: crate::service::Retention::default(),
            gc_interval: std::time::Duration::from_secs(3600),
            meta: None,
            chunks: None,
            s3: None,
            limits: crate::api::limits::LimitsConfig::default(),
        }
    }

    /// Merges the command line (which already holds the environment) over the config file.
    pub fn resolve(cli: Cli) -> Result<Self, String> {
        let file = match &cli.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = cli
            .data_dir
            .or(file.server.data_dir)
            .unwrap_or_else(|| PathBuf::from("./volebarn-data"));
        let mut cfg = ServerConfig::new(data_dir);
        if let Some(h) = cli.host.or(file.server.host) {
            cfg.host = h;
        }
        if let Some(p) = cli.port.or(file.server.port) {
            cfg.port = p;
        }
        cfg.max_file_size =
            size_setting(cli.max_file_size, file.server.max_file_size)?.unwrap_or(DEFAULT_MAX_FILE_SIZE);
        if let Some(n) = size_setting(cli.max_request_size, file.limits.max_request_size)? {
            if n == 0 {
                return Err("the maximum request size must be greater than zero".into());
            }
            cfg.limits.max_request_size = n;
        }
        cfg.token = cli.token.or(file.server.token).filter(|t| !t.is_empty());
        cfg.allow_insecure = cli.allow_insecure || file.server.allow_insecure.unwrap_or(false);
        if let Some(k) = file.versions.keep {
            cfg.versions_keep = k;
        }
        if let Some(d) = &file.versions.max_age {
            cfg.retention.versions_max_age = parse_duration(d)?;
        }
        if let Some(d) = &file.chunks.orphan_grace {
            cfg.retention.orphan_grace = parse_duration(d)?;
        }
        if let Some(k) = file.journal.keep {
            cfg.retention.journal_keep = k;
        }
        if let Some(d) = &file.gc.interval {
            cfg.gc_interval = parse_duration(d)?;
            if cfg.gc_interval.is_zero() {
                return Err("gc.interval must be greater than zero".into());
            }
        }
        if let Some(m) = cli.meta.or(file.storage.meta) {
            cfg.meta = Some(MetaBackend::parse(&m)?);
        }
        if let Some(c) = cli.chunks.or(file.storage.chunks) {
            cfg.chunks = Some(ChunkBackend::parse(&c)?);
        }
        cfg.limits.requests_per_second = cli
            .rate_limit
            .or(file.limits.requests_per_second)
            .and_then(std::num::NonZeroU32::new);
        if let Some(n) = file.limits.auth_failures_per_minute {
            if n == 0 {
                return Err("limits.auth_failures_per_minute must be at least 1".into());
            }
            cfg.limits.auth_failures = n;
        }
        let tls_enabled = !cli.no_tls && file.tls.enabled.unwrap_or(true);
        let cert = cli.tls_cert.or(file.tls.cert_path);
        let key = cli.tls_key.or(file.tls.key_path);
        cfg.tls = match (tls_enabled, cert, key) {
            (false, _, _) => TlsMode::Off,
            (true, None, None) => TlsMode::SelfSigned,
            (true, Some(cert), Some(key)) => TlsMode::Files { cert, key },
            (true, _, _) => return Err("a TLS certificate needs both cert and key paths".into()),
        };
        Ok(cfg)
    }
}

fn load_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "[server]\nhost = \"0.0.0.0\"\nport = 4000\nmax_file_size = \"1GiB\"\n\
             [tls]\nenabled = true\ncert_path = \"c.pem\"\nkey_path = \"k.pem\"\n[versions]\nkeep = 3\nmax_age = \"7d\"\n\
             [chunks]\norphan_grace = \"2h\"\n[journal]\nkeep = 500\n[gc]\ninterval = \"10m\"\n\
             [limits]\nrequests_per_second = 50\nauth_failures_per_minute = 5\nmax_request_size = \"2GiB\"\n",
        )
        .expect("write");
        let cli = Cli {
            config: Some(file.clone()),
            port: Some(5000),
            ..Cli::default()
        };
        let cfg = ServerConfig::resolve(cli).expect("resolve");
        assert_eq!(cfg.host, "0.0.0.0");
        assert_eq!(cfg.port, 5000);
        assert_eq!(cfg.max_file_size, 1 << 30);
        assert_eq!(cfg.versions_keep, 3);
        assert_eq!(
            cfg.retention.versions_max_age,
            std::time::Duration::from_secs(7 * 86400)
        );
        assert_eq!(cfg.retention.orphan_grace, std::time::Duration::from_secs(7200));
        assert_eq!(cfg.retention.journal_keep, 500);
        assert_eq!(cfg.gc_interval, std::time::Duration::from_secs(600));
        assert_eq!(cfg.limits.requests_per_second, std::num::NonZeroU32::new(50));
        assert_eq!(cfg.limits.auth_failures, 5);
        assert_eq!(cfg.limits.max_request_size, 2 << 30);
        assert_eq!(
            cfg.tls,
            TlsMode::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
        let cli = Cli {
            config: Some(file),
            no_tls: true,
            ..Cli::default()
        };
        assert_eq!(ServerConfig::resolve(cli).expect("resolve").tls, TlsMode::Off);
        let cfg = ServerConfig::resolve(Cli::default()).expect("defaults");
        assert_eq!((cfg.port, cfg.max_file_size), (3000, DEFAULT_MAX_FILE_SIZE));
        assert_eq!(cfg.limits.max_request_size, 4 << 30);
        let cfg = ServerConfig::resolve(Cli {
            max_request_size: Some("64MiB".into()),
            ..Cli::default()
        })
        .expect("flag");
        assert_eq!(cfg.limits.max_request_size, 64 << 20);
        assert_eq!(cfg.data_dir, PathBuf::from("./volebarn-data"));
    }

    #[test]
    fn storage_backends_from_flags_file_and_urls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "[storage]\nmeta = \"postgres://vb@db:5432/volebarn\"\nchunks = \"s3://bucket/prefix\"\n",
        )
        .expect("write");
        let cfg = ServerConfig::resolve(Cli {
            config: Some(file.clone()),
            ..Cli::default()
        })
        .expect("resolve");
        assert_eq!(
            cfg.meta,
            Some(MetaBackend::Postgres("postgres://vb@db:5432/volebarn".into()))
        );
        assert_eq!(cfg.chunks, Some(ChunkBackend::S3("s3://bucket/prefix".into())));
        let cfg = ServerConfig::resolve(Cli {
            config: Some(file),
            chunks: Some("/srv/chunks".into()),
            ..Cli::default()
        })
        .expect("resolve");
        assert_eq!(cfg.chunks, Some(ChunkBackend::Fs("/srv/chunks".into())));
        assert_eq!(
            ServerConfig::resolve(Cli::default()).expect("defaults").meta,
            None
        );
        assert_eq!(
            MetaBackend::parse("file:///var/meta"),
            Ok(MetaBackend::Rocks("/var/meta".into()))
        );
        let err = MetaBackend::parse("mysql://db/x").unwrap_err();
        assert!(err.contains("\"mysql\"") && err.contains("postgres://"), "{err}");
        let err = ChunkBackend::parse("gs://bucket").unwrap_err();
        assert!(err.contains("\"gs\"") && err.contains("s3://"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[server]\nprot = 1\n").expect("write");
        let err = ServerConfig::resolve(Cli {
            config: Some(file),
            ..Cli::default()
        })
        .unwrap_err();
        assert!(err.contains("prot"), "{err}");
    }
}
