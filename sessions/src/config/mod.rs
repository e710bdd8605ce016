//! Configuration: the keys of CherryPy's `tools.sessions.*` with their
//! defaults, and (feature `config-file`) config files in CherryPy's INI
//! syntax or in TOML.
//!
//! A file has sections named by URL path (`[/]`, `[/admin]`); each section
//! inherits its parent's settings key by key, so `[/admin]` can switch
//! sessions off or give its own cookie name while keeping the rest.
//!
//! ```
//! # #[cfg(feature = "config-file")] {
//! use server_sessions::Config;
//!
//! let config = Config::from_ini_str(
//!     "[/]\n\
//!      tools.sessions.on = True\n\
//!      tools.sessions.timeout = 30\n\
//!      [/static]\n\
//!      tools.sessions.on = False\n",
//!     "site.conf",
//! )
//! .unwrap();
//! assert!(config.resolve("/cart").on);
//! assert_eq!(config.resolve("/cart").timeout.as_secs(), 30 * 60);
//! assert!(!config.resolve("/static/logo.png").on);
//! # }
//! ```
//!
//! Which store these settings build, and how, is each store's own
//! business: its `from_config` (e.g.
//! [`MemoryStore::from_config`](crate::store::MemoryStore::from_config)),
//! which [`store::open`](crate::store::open) picks by `storage_type`.

use std::sync::Arc;
use std::time::Duration;

// Each part lives with its owner: `SessionConfig`, its defaults, its checks
// and its keys in `session.rs`; `StorageConfig` and the store keys in
// `storage.rs`; with the `config-file` feature, a file's values and the
// dispatch of its keys in `keys.rs`, per-path sections and their
// inheritance in `path.rs`, the two syntaxes in `ini.rs` and `toml.rs`.
mod auth;
mod session;
mod storage;

#[cfg(feature = "config-file")]
mod ini;
#[cfg(feature = "config-file")]
mod keys;
#[cfg(feature = "config-file")]
mod path;
#[cfg(feature = "config-file")]
mod toml;

pub use auth::SessionAuthConfig;
pub(crate) use session::is_cookie_path;
pub use session::SessionConfig;
pub use storage::{StorageConfig, StorageType, StorageUrl};

/// How a request's session is locked (docs/spec.md §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    /// The lock is taken just before the data is first loaded and held until
    /// it is saved. The default.
    Implicit,
    /// The lock is taken before the handler runs.
    Early,
    /// The handler calls [`Session::acquire_lock`](crate::Session::acquire_lock)
    /// and [`Session::release_lock`](crate::Session::release_lock).
    Explicit,
}

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Strict`
    Strict,
    /// `SameSite=Lax`
    Lax,
    /// `SameSite=None` (browsers then require `Secure`).
    None,
}

/// The `[global]` section's server settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// `server.socket_host`.
    pub host: Option<String>,
    /// `server.socket_port`.
    pub port: Option<u16>,
}

/// Per-path session settings and the server settings, as a config file
/// gives them (`Config::load`, `from_ini_str` and `from_toml_str`, feature
/// `config-file`), or one setting for every path ([`Config::single`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// The `[global]` server settings.
    pub server: ServerConfig,
    /// Resolved sections, longest path first, always ending with `/`.
    routes: Vec<(String, Arc<SessionConfig>)>,
}

impl Default for Config {
    fn default() -> Self {
        Config::single(SessionConfig::default())
    }
}

impl Config {
    /// A config with one setting for every path.
    pub fn single(config: SessionConfig) -> Self {
        Config {
            server: ServerConfig::default(),
            routes: vec![("/".into(), Arc::new(config))],
        }
    }

    /// The settings for a request path: those of the longest section path
    /// that is a prefix of it on a segment boundary.
    pub fn resolve(&self, path: &str) -> &Arc<SessionConfig> {
        self.routes
            .iter()
            .find(|(prefix, _)| covers(prefix, path))
            .map(|(_, c)| c)
            .unwrap_or(&self.routes[self.routes.len() - 1].1)
    }

    /// The settings of every section, root first.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &SessionConfig)> {
        self.routes.iter().rev().map(|(p, c)| (p.as_str(), &**c))
    }

    /// The store settings: those of the sections with sessions on (which
    /// a config file is checked to agree on when it loads), or the root's.
    pub fn storage(&self) -> &StorageConfig {
        self.sections()
            .find(|(_, c)| c.on)
            .map_or(&self.routes[self.routes.len() - 1].1.storage, |(_, c)| {
                &c.storage
            })
    }

    /// The largest `max_size` of any section: what a store that bounds its
    /// reads must let through.
    #[cfg_attr(
        not(any(all(feature = "file", unix), feature = "redis", feature = "memcached")),
        allow(dead_code)
    )]
    pub(crate) fn largest_max_size(&self) -> usize {
        self.sections()
            // A sealed record's data is longer than what the handler wrote.
            .map(|(_, c)| {
                c.max_size
                    + if c.seal_records {
                        crate::seal::OVERHEAD
                    } else {
                        0
                    }
            })
            .max()
            .unwrap_or(64 * 1024)
    }
}

/// A config file could not be used. Every variant names the file, and the
/// line and key where there is one.
#[cfg(feature = "config-file")]
#[cfg_attr(docsrs, doc(cfg(feature = "config-file")))]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {file}")]
    Io {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid INI or TOML.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A key is unknown, has a value of the wrong type, or is missing.
    #[error("{file}:{line}: {key}: {message}")]
    Key {
        /// The file.
        file: String,
        /// 1-based line (of the section header for a missing key).
        line: usize,
        /// The key as written (or as it should be written, when missing).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Whether the section path `prefix` covers the request path `path`.
fn covers(prefix: &str, path: &str) -> bool {
    if prefix == "/" || prefix.is_empty() {
        return true;
    }
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn minutes(m: f64) -> Duration {
    Duration::from_millis((m * 60_000.0).round() as u64)
}
