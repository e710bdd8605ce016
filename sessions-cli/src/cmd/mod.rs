//! One module per subcommand, and what the admin commands share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use sessions::store::SessionAdmin;
use sessions::{Config, SessionId};

pub(crate) mod clean;
pub(crate) mod delete;
pub(crate) mod list;
pub(crate) mod migrate;
pub(crate) mod serve;
pub(crate) mod show;
pub(crate) mod stats;

/// The store to work on.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreArgs {
    /// The config file naming the store (CherryPy INI, or TOML).
    #[arg(long)]
    pub(crate) config: PathBuf,
}

impl StoreArgs {
    /// Loads the config.
    pub(crate) fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(&self.config)?)
    }

    /// Loads the config and opens its store.
    pub(crate) async fn open(&self) -> anyhow::Result<Arc<dyn SessionAdmin>> {
        let config = self.load()?;
        let kind = config.storage().kind.as_str();
        sessions::store::open(&config)
            .await
            .with_context(|| format!("cannot open the {kind} store"))
    }
}

/// One session of the store.
#[derive(Debug, clap::Args)]
pub(crate) struct IdArgs {
    /// The session id (40 hex characters).
    id: String,
    #[command(flatten)]
    store: StoreArgs,
}

impl IdArgs {
    /// The id, strictly parsed, and the opened store.
    pub(crate) async fn open(&self) -> anyhow::Result<(SessionId, Arc<dyn SessionAdmin>)> {
        let id = parse_id(&self.id)?;
        Ok((id, self.store.open().await?))
    }
}

/// Parses an id given on the command line, strictly.
fn parse_id(text: &str) -> anyhow::Result<SessionId> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a session id (40 lowercase hex characters)"))
}

/// An instant as an HTTP date, the form the cookie uses too.
pub(crate) fn when(ms: sessions::Millis) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}
