//! Opening the store a configuration names: the one place that turns
//! `storage_type` and its settings into a store, for an app, `sessions
//! serve`, the admin commands and `sessions migrate` alike. It knows the
//! stores' constructors and the config's keys, and nothing of HTTP.
//!
//! ```no_run
//! use sessions::Config;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("site.conf")?;
//! let store = sessions::store::open(&config).await?;
//! let layer = sessions::SessionLayer::from_arc(store).with_file_config(config);
//! # let _ = layer;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use super::{Error, MemoryStore, SessionAdmin};
use crate::config::{Config, StorageConfig, StorageType};

#[cfg(all(feature = "file", unix))]
use super::FileStore;
#[cfg(feature = "memcached")]
use super::MemcachedStore;
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
pub async fn open(config: &Config) -> Result<Arc<dyn SessionAdmin>, OpenError> {
    let storage = config.storage();
    // Only the file, Redis and memcached stores bound their reads by it.
    #[cfg_attr(
        not(any(feature = "file", feature = "redis", feature = "memcached")),
        allow(unused_variables)
    )]
    let max_size = config
        .sections()
        .map(|(_, c)| c.max_size)
        .max()
        .unwrap_or(64 * 1024);
    match storage.kind {
        StorageType::Ram => {
            let mut store = MemoryStore::new();
            if let Some(max) = storage.max_sessions {
                store = store.with_max_sessions(max);
            }
            if let Some(max) = storage.max_memory {
                store = store.with_max_memory(max);
            }
            Ok(Arc::new(store))
        }
        #[cfg(all(feature = "file", unix))]
        StorageType::File => Ok(Arc::new(
            FileStore::open(path(storage)?)?
                .with_fsync(storage.file_fsync)
                .with_max_size(max_size),
        )),
        #[cfg(feature = "redis")]
        StorageType::Redis => Ok(Arc::new(
            RedisStore::connect(url(storage)?)
                .await?
                .with_prefix(storage.redis_prefix.clone())
                .with_max_size(max_size)
                .with_wait_replicas(storage.redis_wait_replicas),
        )),
        #[cfg(feature = "postgres")]
        StorageType::Postgres => {
            let store = postgres(storage, storage.auto_migrate)?;
            store.ready().await?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "sqlite")]
        StorageType::Sqlite => {
            let store = sqlite(storage, storage.auto_migrate)?;
            store.ready().await?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "memcached")]
        StorageType::Memcached => {
            memcached_lifetimes(config)?;
            let store = match &storage.url {
                Some(url) if storage.servers.is_empty() => MemcachedStore::connect_url(url).await?,
                _ => MemcachedStore::connect(&storage.servers).await?,
            };
            let store = store.with_prefix(storage.memcached_prefix.clone())?;
            Ok(Arc::new(store.with_max_size(max_size)))
        }
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
        StorageType::Postgres => Ok(postgres(storage, false)?.migrate().await?),
        #[cfg(feature = "sqlite")]
        StorageType::Sqlite => Ok(sqlite(storage, false)?.migrate().await?),
        StorageType::Ram | StorageType::File | StorageType::Redis | StorageType::Memcached => {
            Err(OpenError::NoSchema(storage.kind.as_str()))
        }
        #[allow(unreachable_patterns)]
        other => Err(not_built(other)),
    }
}

/// Refuses, before connecting, a section whose sessions would outlive what
/// memcached can keep (its expiry ends in 2038): every save of them would
/// fail. A session lives its `timeout`, or its `absolute_timeout` if that
/// is shorter; the error names whichever decides.
#[cfg(feature = "memcached")]
fn memcached_lifetimes(config: &Config) -> Result<(), Error> {
    for (path, section) in config.sections().filter(|(_, c)| c.on) {
        let (key, lifetime) = match section.absolute_timeout {
            Some(absolute) if absolute < section.timeout => ("absolute_timeout", absolute),
            _ => ("timeout", section.timeout),
        };
        super::memcached::check_lifetime(path, lifetime).map_err(|e| Error::config(key, e))?;
    }
    Ok(())
}

/// The PostgreSQL store of `storage`, not yet connected.
#[cfg(feature = "postgres")]
fn postgres(storage: &StorageConfig, auto_migrate: bool) -> Result<PostgresStore, OpenError> {
    let mut store = PostgresStore::new(url(storage)?)?
        .with_table(&storage.table)?
        .with_auto_migrate(auto_migrate);
    // Unset is the store's own default, auto: prepared only when the
    // server was reached at the address dialed (`postgres/naming.rs`).
    if let Some(on) = storage.postgres_prepared {
        store = store.with_prepared_statements(on);
    }
    match &storage.postgres_listen_url {
        Some(listen) => Ok(store.with_listen_url(listen)?),
        None => Ok(store),
    }
}

/// The SQLite store of `storage`, not yet opened.
#[cfg(feature = "sqlite")]
fn sqlite(storage: &StorageConfig, auto_migrate: bool) -> Result<SqliteStore, OpenError> {
    Ok(SqliteStore::new(path(storage)?)
        .with_table(&storage.table)?
        .with_auto_migrate(auto_migrate))
}

#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
fn url(storage: &StorageConfig) -> Result<&str, OpenError> {
    storage.url.as_deref().ok_or(OpenError::Missing {
        kind: storage.kind.as_str(),
        key: "storage_url",
    })
}

#[cfg_attr(
    not(any(all(feature = "file", unix), feature = "sqlite")),
    allow(dead_code)
)]
fn path(storage: &StorageConfig) -> Result<&std::path::Path, OpenError> {
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
