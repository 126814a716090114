//! The config file (`~/.config/volebarn/config.toml` unless `--config`): the seed's `[client]`
//! and `[tls]` keys plus ours. Precedence: command-line flag, then environment
//! (`VOLEBARN_SERVER`, `VOLEBARN_TOKEN`, `VOLEBARN_CA_CERT`), then the file, then defaults.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use volebarn_client::{ClientConfig, ConflictStrategy};

/// The file as written on disk; every key optional.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub client: ClientSection,
    #[serde(default)]
    pub tls: TlsSection,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_folder: Option<PathBuf>,
    /// While watching, how often the server is asked for changes when its change feed
    /// (long-poll) cannot be reached, e.g. "5s".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
    /// While watching, how often the whole folder is scanned to catch what the file watcher
    /// missed, e.g. "10m".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescan_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_integrity: Option<bool>,
    /// prefer_local | prefer_remote | prefer_newer | manual
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict_resolution: Option<ConflictStrategy>,
    /// Largest share of the synced files one pass may delete without `--force`, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_delete: Option<u8>,
    /// Quiet time after the last file event before local changes are pushed, e.g. "100ms".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debounce: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_certificates: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert_path: Option<PathBuf>,
}

/// Everything resolved: what commands use.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server_url: String,
    pub token: String,
    pub ca_cert: Option<PathBuf>,
    pub verify_certificates: bool,
    pub folder: Option<PathBuf>,
    pub poll_interval: Duration,
    pub rescan_interval: Duration,
    pub retry_attempts: u32,
    pub verify_integrity: bool,
    pub strategy: ConflictStrategy,
    pub max_delete_percent: u8,
    pub debounce: Duration,
}

pub const DEFAULT_SERVER: &str = "https://127.0.0.1:3000";

/// `~/.config/volebarn/config.toml` (or `$XDG_CONFIG_HOME/volebarn/config.toml`).
pub fn default_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("volebarn").join("config.toml"));
    }
    std::env::var_os("HOME").map(|h| {
        PathBuf::from(h)
            .join(".config")
            .join("volebarn")
            .join("config.toml")
    })
}

impl ConfigFile {
    /// Reads `path`; a missing file is an empty config, a malformed one an error.
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        match std::fs::read_to_string(path) {
            Ok(s) => toml::from_str(&s).with_context(|| format!("config file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(e).with_context(|| format!("reading config file {}", path.display())),
        }
    }

    /// Writes the file atomically, readable only by its owner (it holds the token).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(self)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        volebarn_client::durable::atomic_write_private(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Values given on the command line or in the environment (clap reads both).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub server: Option<String>,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub folder: Option<PathBuf>,
}

pub fn parse_duration(key: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s).with_context(|| format!("{key} = {s:?} is not a duration like \"5s\""))
}

impl Settings {
    pub fn resolve(file: &ConfigFile, o: &Overrides) -> anyhow::Result<Settings> {
        let c = &file.client;
        let max_delete_percent = c.max_delete.unwrap_or(50);
        if max_delete_percent > 100 {
            bail!("max_delete = {max_delete_percent} is not a percentage (0–100)");
        }
        Ok(Settings {
            server_url: o
                .server
                .clone()
                .or_else(|| c.server_url.clone())
                .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
            token: o.token.clone().or_else(|| c.token.clone()).unwrap_or_default(),
            ca_cert: o.ca_cert.clone().or_else(|| file.tls.ca_cert_path.clone()),
            verify_certificates: file.tls.verify_certificates.unwrap_or(true),
            folder: o.folder.clone().or_else(|| c.local_folder.clone()),
            poll_interval: parse_duration("poll_interval", c.poll_interval.as_deref().unwrap_or("5s"))?,
            rescan_interval: parse_duration(
                "rescan_interval",
                c.rescan_interval.as_deref().unwrap_or("10m"),
            )?,
            retry_attempts: c.retry_attempts.unwrap_or(5),
            verify_integrity: c.verify_integrity.unwrap_or(true),
            strategy: c.conflict_resolution.unwrap_or_default(),
            max_delete_percent,
            debounce: parse_duration("debounce", c.debounce.as_deref().unwrap_or("100ms"))?,
        })
    }

    /// The sync folder, or a clear error when none is configured.
    pub fn folder(&self) -> anyhow::Result<&Path> {
        match &self.folder {
            Some(f) => Ok(f),
            None => bail!("no folder: pass --folder DIR or run `volebarn init --folder DIR …` first"),
        }
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new(self.server_url.clone(), self.token.clone());
        cfg.ca_cert = self.ca_cert.clone();
        cfg.accept_invalid_certs = !self.verify_certificates;
        cfg.retry.max_retries = self.retry_attempts;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_defaults_fill_the_rest() {
        let file: ConfigFile = toml::from_str(
            "[client]\nserver_url = \"https://files.example:3000\"\ntoken = \"t1\"\npoll_interval = \"10s\"\n\
             conflict_resolution = \"manual\"\n[tls]\nca_cert_path = \"/etc/ca.pem\"\n",
        )
        .unwrap();
        let s = Settings::resolve(
            &file,
            &Overrides {
                token: Some("t2".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(s.server_url, "https://files.example:3000");
        assert_eq!(s.token, "t2");
        assert_eq!(s.poll_interval, Duration::from_secs(10));
        assert_eq!(s.rescan_interval, Duration::from_secs(600), "the default");
        assert_eq!(s.strategy, ConflictStrategy::Manual);
        assert_eq!(s.ca_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(s.max_delete_percent, 50);
        assert!(s.verify_certificates);
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let e = toml::from_str::<ConfigFile>("[client]\nserver = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("server"), "{e}");
        let file: ConfigFile = toml::from_str("[client]\npoll_interval = \"often\"\n").unwrap();
        let e = Settings::resolve(&file, &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("poll_interval"), "{e}");
        let file: ConfigFile = toml::from_str("[client]\nmax_delete = 150\n").unwrap();
        assert!(Settings::resolve(&file, &Overrides::default()).is_err());
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let mut file = ConfigFile::default();
        file.client.server_url = Some("https://h:1".into());
        file.client.local_folder = Some("/data/sync".into());
        file.save(&path).unwrap();
        let back = ConfigFile::load(&path).unwrap();
        assert_eq!(back.client.server_url.as_deref(), Some("https://h:1"));
        assert_eq!(back.client.local_folder.as_deref(), Some(Path::new("/data/sync")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
