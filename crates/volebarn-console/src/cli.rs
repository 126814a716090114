//! The command line: global options, every subcommand, and dispatch.

use crate::config::{self, ConfigFile, Overrides, Settings};
use crate::output::Output;
use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use volebarn_client::{Client, ConflictStrategy};

#[derive(Debug, Parser)]
#[command(
    name = "volebarn",
    version,
    about = "Keep a folder in sync with a Volebarn server, and work with the server's files",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file [default: ~/.config/volebarn/config.toml]
    #[arg(long, global = true, env = "VOLEBARN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Server URL, e.g. https://127.0.0.1:3000
    #[arg(long, global = true, env = "VOLEBARN_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// API token
    #[arg(
        long,
        global = true,
        env = "VOLEBARN_TOKEN",
        hide_env_values = true,
        value_name = "T"
    )]
    pub token: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. the server's <data>/tls/cert.pem
    #[arg(long, global = true, env = "VOLEBARN_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Machine-readable output (one JSON document on stdout)
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v info, -vv debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    PreferLocal,
    PreferRemote,
    PreferNewer,
    Manual,
}

impl From<Strategy> for ConflictStrategy {
    fn from(s: Strategy) -> Self {
        match s {
            Strategy::PreferLocal => ConflictStrategy::PreferLocal,
            Strategy::PreferRemote => ConflictStrategy::PreferRemote,
            Strategy::PreferNewer => ConflictStrategy::PreferNewer,
            Strategy::Manual => ConflictStrategy::Manual,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// Keep the local version at the path; the other is removed (recoverable from versions)
    Local,
    /// Keep the remote version at the path; the other is removed (recoverable from versions)
    Remote,
    /// Keep both files and stop listing the conflict
    Both,
}

#[derive(Debug, Args)]
pub struct FolderArg {
    /// The synced folder [default: local_folder from the config]
    #[arg(long, value_name = "DIR")]
    pub folder: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the config file: which folder to sync with which server.
    Init {
        /// The local folder to keep in sync (created if missing)
        #[arg(long, value_name = "DIR")]
        folder: PathBuf,
    },
    /// One full three-way sync of the folder, then exit.
    Sync {
        #[command(flatten)]
        folder: FolderArg,
        /// How to settle a file changed on both sides [default: config, else prefer_newer]
        #[arg(long, value_enum)]
        strategy: Option<Strategy>,
        /// Print the plan; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Apply deletions the safety rails held back (more than max_delete, or a missing
        /// root marker: re-adopt the folder without deleting anything)
        #[arg(long)]
        force: bool,
    },
    /// Sync, then keep syncing: local changes within about a second, remote ones as they happen.
    Watch {
        #[command(flatten)]
        folder: FolderArg,
    },
    /// Pending changes, conflicts, held deletions, errors, last sync, server health.
    Status {
        #[command(flatten)]
        folder: FolderArg,
    },
    /// List unresolved conflicts, or settle one.
    Conflicts {
        #[command(flatten)]
        folder: FolderArg,
        #[command(subcommand)]
        action: Option<ConflictsAction>,
    },
    #[command(flatten)]
    Remote(crate::remote::RemoteCommand),
    /// Check that the server answers.
    Ping,
    /// Print a shell completion script, e.g. `volebarn completions bash > /etc/bash_completion.d/volebarn`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConflictsAction {
    /// Settle a conflict: which version stays at PATH.
    Resolve {
        /// The conflicted path (relative to the folder)
        path: String,
        #[arg(long, value_enum)]
        keep: Keep,
    },
}

/// What every command gets: resolved settings, where the config lives, how to print.
pub struct Ctx {
    pub settings: Settings,
    pub config_path: Option<PathBuf>,
    pub out: Output,
}

impl Ctx {
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(self.settings.client_config()).context("connecting")
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.global;
    let out = Output {
        json: g.json,
        quiet: g.quiet,
    };
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "volebarn", &mut std::io::stdout());
        return Ok(ExitCode::SUCCESS);
    }
    let config_path = g.config.clone().or_else(config::default_path);
    let file = match &config_path {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::default(),
    };
    let folder = match &cli.command {
        Command::Sync { folder, .. }
        | Command::Watch { folder }
        | Command::Status { folder }
        | Command::Conflicts { folder, .. } => folder.folder.clone(),
        Command::Remote(r) => r.folder().cloned(),
        _ => None,
    };
    let overrides = Overrides {
        server: g.server.clone(),
        token: g.token.clone(),
        ca_cert: g.ca_cert.clone(),
        folder,
    };
    let settings = Settings::resolve(&file, &overrides)?;
    if !settings.verify_integrity {
        out.note(
            "volebarn: verify_integrity = false is ignored: every upload and download is checked \
             against its xxh3",
        );
    }
    let ctx = Ctx {
        settings,
        config_path,
        out,
    };
    match cli.command {
        Command::Init { folder } => crate::commands::init(&ctx, file, &overrides, &folder),
        Command::Sync {
            strategy,
            dry_run,
            force,
            ..
        } => crate::commands::sync(&ctx, strategy.map(Into::into), dry_run, force).await,
        Command::Watch { .. } => crate::commands::watch(&ctx).await,
        Command::Status { .. } => crate::commands::status(&ctx).await,
        Command::Conflicts { action, .. } => match action {
            None => crate::commands::conflicts(&ctx),
            Some(ConflictsAction::Resolve { path, keep }) => {
                crate::commands::resolve(&ctx, &path, keep).await
            }
        },
        Command::Remote(r) => crate::remote::run(&ctx, r).await,
        Command::Ping => {
            let h = ctx.client()?.ping().await?;
            ctx.out
                .emit(&h, || format!("server is {} (version {})", h.status, h.version));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { .. } => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
