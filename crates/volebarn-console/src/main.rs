//! `volebarn`: the console app that keeps a local folder in sync with a Volebarn server.
//!
//! Only `volebarn ping` exists so far; the sync engine and remote commands are their own
//! issue ("4. Console app").

use clap::{Parser, Subcommand};
use volebarn_client::{Client, ClientConfig};

#[derive(Parser)]
#[command(
    name = "volebarn",
    version,
    about = "Keep a folder in sync with a Volebarn server"
)]
struct Cli {
    /// Server URL, e.g. https://127.0.0.1:3000
    #[arg(
        long,
        env = "VOLEBARN_SERVER",
        global = true,
        default_value = "https://127.0.0.1:3000"
    )]
    server: String,
    /// API token
    #[arg(
        long,
        env = "VOLEBARN_TOKEN",
        global = true,
        hide_env_values = true,
        default_value = ""
    )]
    token: String,
    /// Extra CA certificate (PEM) to trust
    #[arg(long, env = "VOLEBARN_CA_CERT", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the server answers.
    Ping,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut cfg = ClientConfig::new(cli.server, cli.token);
    cfg.ca_cert = cli.ca_cert;
    let result = async {
        let client = Client::new(cfg)?;
        match cli.command {
            Command::Ping => {
                let h = client.ping().await?;
                println!("server is {} (version {})", h.status, h.version);
            }
        }
        Ok::<(), volebarn_client::ClientError>(())
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("volebarn: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
