//! One module per subcommand, and what the admin commands share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use server_sessions::store::SessionAdmin;
use server_sessions::{
    store::{Millis, Record, StoreKey},
    Config, SessionId,
};

pub(crate) mod clean;
pub(crate) mod delete;
pub(crate) mod keygen;
pub(crate) mod list;
pub(crate) mod logout;
pub(crate) mod migrate;
pub(crate) mod serve;
mod serve_actix;
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
        server_sessions::store::open(&config)
            .await
            .with_context(|| format!("cannot open the {kind} store"))
    }
}

/// One session of the store.
#[derive(Debug, clap::Args)]
pub(crate) struct IdArgs {
    /// The session id (40 hex characters, the cookie's value), or its store
    /// key (64 hex characters, as `list --full` prints it).
    id: String,
    #[command(flatten)]
    store: StoreArgs,
}

impl IdArgs {
    /// The session's store key, and the opened store.
    pub(crate) async fn open(&self) -> anyhow::Result<(StoreKey, Arc<dyn SessionAdmin>)> {
        let key = parse_session(&self.id)?;
        Ok((key, self.store.open().await?))
    }

    /// The session id, when one was given rather than a store key.
    pub(crate) fn id(&self) -> Option<SessionId> {
        unsigned(&self.id).parse().ok()
    }
}

/// The store key of a session named on the command line: an id is hashed
/// (stores hold keys, never ids), a key is taken as it is; both strictly.
fn parse_session(text: &str) -> anyhow::Result<StoreKey> {
    if let Ok(id) = unsigned(text).parse::<SessionId>() {
        return Ok(id.store_key());
    }
    text.parse().map_err(|_| {
        anyhow::anyhow!(
            "{text:?} is neither a session id (40 lowercase hex characters) \
             nor a store key (64)"
        )
    })
}

/// The id part of a cookie's value: with `sign_ids` the cookie carries
/// `ID.SIGNATURE`, and an admin pastes what the browser shows.
fn unsigned(text: &str) -> &str {
    text.split_once('.').map_or(text, |(id, _)| id)
}

/// An instant as an HTTP date, the form the cookie uses too. One past the
/// last an HTTP date can name (`httpdate` panics on the year 10000), which
/// only a damaged record holds, is shown as its number, so that one such
/// record never stops a listing.
pub(crate) fn when(ms: Millis) -> String {
    if ms > Record::MAX_TIME {
        return format!("{ms} ms (out of range)");
    }
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

/// [`when`] for a `SystemTime`.
pub(crate) fn when_at(t: SystemTime) -> String {
    when(millis_at(t))
}

/// A `SystemTime` in milliseconds since the epoch: 0 for one before it,
/// `Millis::MAX` for one too late for `Millis` (shown as out of range),
/// never cut to the low 64 bits.
pub(crate) fn millis_at(t: SystemTime) -> Millis {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
    })
}
