//! The `sessions` command: a demo site, CherryPy's session test app, and
//! admin commands over any configured store.

use std::process::ExitCode;

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
    /// List the stored sessions.
    List(cmd::list::Args),
    /// Show one session's data as JSON (a sealed record's only by its id;
    /// by its store key, its times).
    Show(cmd::IdArgs),
    /// Delete one session.
    Delete(cmd::IdArgs),
    /// End every session of one user.
    Logout(cmd::logout::Args),
    /// Remove expired sessions now.
    Clean(cmd::StoreArgs),
    /// Count, sizes and expiry of the stored sessions.
    Stats(cmd::StoreArgs),
    /// Create or upgrade the table of the PostgreSQL or SQLite store.
    Migrate(cmd::StoreArgs),
    /// Print a new random key, a line for a `keys_file`.
    Keygen,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never into a log file
        // or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match Cli::parse().command {
        Command::Serve(args) => cmd::serve::run(args).await,
        Command::List(args) => cmd::list::run(args).await,
        Command::Show(args) => cmd::show::run(args).await,
        Command::Delete(args) => cmd::delete::run(args).await,
        Command::Logout(args) => cmd::logout::run(args).await,
        Command::Clean(args) => cmd::clean::run(args).await,
        Command::Stats(args) => cmd::stats::run(args).await,
        Command::Migrate(args) => cmd::migrate::run(args).await,
        Command::Keygen => cmd::keygen::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("sessions: {e:#}");
            ExitCode::FAILURE
        }
    }
}
