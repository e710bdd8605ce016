//! The `sessions` command: a demo site, CherryPy's session test app, and
//! admin commands over any configured store.

use clap::{Parser, Subcommand};

mod apps;
mod cmd;

/// Server-side HTTP sessions: demo, conformance app and admin.
#[derive(Debug, Parser)]
#[command(name = "sessions", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the demo site (default) or CherryPy's session test app.
    Serve(cmd::serve::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => cmd::serve::run(args).await,
    }
}
