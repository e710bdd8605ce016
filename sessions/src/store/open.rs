//! Opening the store a configuration names: the one place that turns
//! `storage_type` into a store, for an app, `sessions serve`, the admin
//! commands and `sessions migrate` alike. Each store reads its own
//! settings from the config (its `from_config`); this picks the store, and
//! knows nothing of HTTP.
//!
//! With the `config-file` feature, from a file:
//!
//! ```no_run
//! use server_sessions::Config;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("site.conf")?;
//! let store = server_sessions::store::open(&config).await?;
//! let layer = server_sessions::SessionLayer::from_arc(store).with_file_config(config);
//! # let _ = layer;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use super::{Error, MemoryStore, SessionAdmin};
use crate::config::{Config, StorageConfig, StorageType, StorageUrl};

#[cfg(all(feature = "file", unix))]
use super::FileStore;
#[cfg(feature = "memcached")]
use super::MemcachedStore;
#[cfg(feature = "mysql")]
use super::MysqlStore;
#[cfg(feature = "postgres")]
use super::PostgresStore;
#[cfg(feature = "redis")]
use super::RedisStore;
#[cfg(feature = "sqlite")]
use super::SqliteStore;

/// A store could not be opened (or migrated) from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// This build does not include the store: its cargo feature is off, or
    /// the store does not exist on this platform.
    #[error("storage_type = \"{kind}\" is not in this build (it needs the `{feature}` feature of sessions{platform})")]
    NotBuilt {
        /// The store, as the config names it.
        kind: &'static str,
        /// The cargo feature that builds it.
        feature: &'static str,
        /// What else it needs (the file store: a Unix system), or empty.
        platform: &'static str,
    },
    /// A required setting is missing.
    #[error("storage_type = \"{kind}\" needs {key}")]
    Missing {
        /// The store.
        kind: &'static str,
        /// The missing key.
        key: &'static str,
    },
    /// [`migrate`] was asked of a store that keeps no schema.
    #[error("storage_type = \"{0}\" has no schema to migrate")]
    NoSchema(&'static str),
    /// The store refused a setting ([`Error::Config`]) or its backend could
    /// not be reached.
    #[error(transparent)]
    Store(#[from] Error),
}

/// Opens the store a configuration names (`storage_type` and its
/// settings), checking now that it answers; the SQL stores also create or
/// upgrade their table unless `auto_migrate` is off. Reads are bounded by
/// the largest `max_size` of any section.
///
/// Each store reads its own settings (its `from_config`, e.g.
/// [`MemoryStore::from_config`]); this only picks the store.
pub async fn open(config: &Config) -> Result<Arc<dyn SessionAdmin>, OpenError> {
    match config.storage().kind {
        StorageType::Ram => Ok(Arc::new(MemoryStore::from_config(config))),
        StorageType::Cookie => Ok(Arc::new(super::CookieStore)),
        #[cfg(all(feature = "file", unix))]
        StorageType::File => Ok(Arc::new(FileStore::from_config(config)?)),
        #[cfg(feature = "redis")]
        StorageType::Redis => Ok(Arc::new(RedisStore::from_config(config).await?)),
        #[cfg(feature = "postgres")]
        StorageType::Postgres => {
            let store = PostgresStore::from_config(config)?;
            store.ready().await?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "sqlite")]
        StorageType::Sqlite => {
            let store = SqliteStore::from_config(config)?;
            store.ready().await?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "mysql")]
        StorageType::Mysql => {
            let store = MysqlStore::from_config(config)?;
            store.ready().await?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "memcached")]
        StorageType::Memcached => Ok(Arc::new(MemcachedStore::from_config(config).await?)),
        #[allow(unreachable_patterns)]
        other => Err(not_built(other)),
    }
}

/// Creates or upgrades the table of the SQL store a configuration names,
/// whatever its `auto_migrate`, and returns how many schema steps were
/// applied (0 when it was up to date). The other stores keep no schema:
/// [`OpenError::NoSchema`].
pub async fn migrate(config: &Config) -> Result<u32, OpenError> {
    let storage = config.storage();
    match storage.kind {
        // Off, so that building the store does not migrate before we do:
        // `migrate` then reports the steps it applied itself.
        #[cfg(feature = "postgres")]
        StorageType::Postgres => Ok(PostgresStore::from_config(config)?
            .with_auto_migrate(false)
            .migrate()
            .await?),
        #[cfg(feature = "sqlite")]
        StorageType::Sqlite => Ok(SqliteStore::from_config(config)?
            .with_auto_migrate(false)
            .migrate()
            .await?),
        #[cfg(feature = "mysql")]
        StorageType::Mysql => Ok(MysqlStore::from_config(config)?
            .with_auto_migrate(false)
            .migrate()
            .await?),
        StorageType::Ram
        | StorageType::File
        | StorageType::Redis
        | StorageType::Memcached
        | StorageType::Cookie => Err(OpenError::NoSchema(storage.kind.as_str())),
        #[allow(unreachable_patterns)]
        other => Err(not_built(other)),
    }
}

/// `storage_url`, which the store of `storage` cannot do without (for the
/// stores' `from_config`).
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "mysql")),
    allow(dead_code)
)]
pub(super) fn url(storage: &StorageConfig) -> Result<&str, OpenError> {
    storage
        .url
        .as_ref()
        .map(StorageUrl::expose)
        .ok_or(OpenError::Missing {
            kind: storage.kind.as_str(),
            key: "storage_url",
        })
}

/// `storage_path`, which the store of `storage` cannot do without (for the
/// stores' `from_config`).
#[cfg_attr(
    not(any(all(feature = "file", unix), feature = "sqlite")),
    allow(dead_code)
)]
pub(super) fn path(storage: &StorageConfig) -> Result<&std::path::Path, OpenError> {
    storage.path.as_deref().ok_or(OpenError::Missing {
        kind: storage.kind.as_str(),
        key: "storage_path",
    })
}

fn not_built(kind: StorageType) -> OpenError {
    OpenError::NotBuilt {
        kind: kind.as_str(),
        // The store's config name is its feature's name.
        feature: kind.as_str(),
        platform: if kind == StorageType::File {
            " and a Unix system"
        } else {
            ""
        },
    }
}
