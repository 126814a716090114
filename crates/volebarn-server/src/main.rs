//! `volebarn-server` binary: parse flags, then hand over to the library.

use clap::Parser;
use volebarn_server::config::{Cli, Command, ServerConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cli = Cli::parse();
    let command = cli.command.take();
    let cfg = match ServerConfig::resolve(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("volebarn-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(Command::Fsck { repair }) = command {
        return std::process::ExitCode::from(volebarn_server::fsck::run(&cfg, repair).await);
    }
    match volebarn_server::run(cfg).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("volebarn-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
