//! [`StorageConfig`]: which store holds the sessions and every store's
//! settings, with their defaults; [`StorageUrl`], a URL that does not print
//! its password; and (feature `config-file`) the meaning of each store key
//! of a file and the settings each store cannot do without.
//!
//! Each store reads the settings it needs itself (its `from_config`);
//! a new store's settings are a field here, its default, its key, and, if
//! it needs one, its line in `missing`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::minutes;
use crate::store::Keep;

/// Which store holds the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageType {
    /// In this process's memory.
    Ram,
    /// Files in `storage_path`.
    File,
    /// Redis at `storage_url`.
    Redis,
    /// PostgreSQL at `storage_url`.
    Postgres,
    /// An SQLite database file at `storage_path`.
    Sqlite,
    /// memcached at `servers` (or a `memcache://` `storage_url`).
    Memcached,
    /// MySQL or MariaDB at `storage_url`.
    Mysql,
    /// Nothing on the server: each session sealed in its visitor's cookie
    /// ([`CookieStore`](crate::store::CookieStore)); needs keys.
    Cookie,
}

impl StorageType {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageType::Ram => "ram",
            StorageType::File => "file",
            StorageType::Redis => "redis",
            StorageType::Postgres => "postgres",
            StorageType::Sqlite => "sqlite",
            StorageType::Memcached => "memcached",
            StorageType::Mysql => "mysql",
            StorageType::Cookie => "cookie",
        }
    }
}

/// A storage URL (`storage_url`, `postgres_listen_url`): kept as given, for
/// the store to connect with, and shown by `Debug` and `Display` with any
/// password replaced by `***` (in each of several comma-separated URLs,
/// and a `password=` setting too), so that a printed or logged config — or
/// anything that holds one — never carries it.
///
/// ```
/// use server_sessions::config::StorageUrl;
///
/// let url = StorageUrl::from("redis://app:hunter2@cache.internal:6379/0");
/// assert_eq!(url.to_string(), "redis://app:***@cache.internal:6379/0");
/// assert_eq!(format!("{url:?}"), r#""redis://app:***@cache.internal:6379/0""#);
/// assert_eq!(url.expose(), "redis://app:hunter2@cache.internal:6379/0");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StorageUrl(String);

impl StorageUrl {
    /// The URL `url`.
    pub fn new(url: impl Into<String>) -> Self {
        StorageUrl(url.into())
    }

    /// The URL as given, password included: for connecting to the store,
    /// never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for StorageUrl {
    fn from(url: String) -> Self {
        StorageUrl(url)
    }
}

impl From<&str> for StorageUrl {
    fn from(url: &str) -> Self {
        StorageUrl(url.to_owned())
    }
}

impl fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&crate::redact::url(&self.0), f)
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::redact::url(&self.0))
    }
}

/// Where the sessions are stored. One store serves a whole server, so these
/// keys must agree across every section that has sessions on.
///
/// Its `Debug` is derived: the URLs are [`StorageUrl`]s, which show any
/// password as `***`, so that a logged or printed config (or a
/// [`SessionLayer`](crate::SessionLayer)) never carries one.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StorageConfig {
    /// `storage_type` (or CherryPy's `storage_class`).
    pub kind: StorageType,
    /// `storage_path`: the file store's directory, or the SQLite file.
    pub path: Option<PathBuf>,
    /// `storage_url`: `redis://…` (one node), several `redis://…`
    /// comma-separated or `redis+cluster://…` (Redis Cluster),
    /// `redis+sentinel://…/MASTER` (Sentinel), `postgres://…`,
    /// `mysql://…` or `mariadb://…` (MySQL, MariaDB), or
    /// `memcache://host:port[,host:port…]` (memcached, instead of
    /// `servers`).
    pub url: Option<StorageUrl>,
    /// `file_fsync`: fsync file-store writes (default false).
    pub file_fsync: bool,
    /// `servers`: the memcached servers, `host:port` each (CherryPy's key:
    /// a Python list in INI, an array in TOML).
    pub servers: Vec<String>,
    /// `redis_prefix`: key prefix in Redis (default `session:`).
    pub redis_prefix: String,
    /// `memcached_prefix`: key prefix in memcached (default `session:`).
    pub memcached_prefix: String,
    /// `max_sessions`: the most sessions the RAM store holds; at the bound
    /// new sessions answer 503 (default: no count, only `max_memory`).
    pub max_sessions: Option<usize>,
    /// `max_memory`: the most bytes the RAM store's sessions take; at the
    /// bound new sessions answer 503 (default: a quarter of memory, see
    /// [`MemoryStore`](crate::store::MemoryStore)).
    pub max_memory: Option<usize>,
    /// `redis_wait_replicas`: after a save, `WAIT` until this many replicas
    /// have it, or answer 503 (default 0: do not wait).
    pub redis_wait_replicas: u32,
    /// `table`: the SQL stores' table (default `sessions`).
    pub table: String,
    /// `auto_migrate`: create or upgrade the SQL table on start (default true).
    pub auto_migrate: bool,
    /// `postgres_prepared`: whether PostgreSQL statements are prepared and
    /// cached per connection. `None` (the default, or `'auto'`): prepared
    /// when the server was reached at the address the store dials, unnamed
    /// through a pooler such as PgBouncer; `Some(true)` always prepared,
    /// `Some(false)` never (`PostgresStore::with_prepared_statements`).
    pub postgres_prepared: Option<bool>,
    /// `postgres_listen_url`: where PostgreSQL's `LISTEN` connection for lock
    /// wake-ups goes, when `storage_url` goes through PgBouncer (default: the
    /// `storage_url`).
    pub postgres_listen_url: Option<StorageUrl>,
    /// `clean_freq`: time between background clean-ups; zero turns them off.
    pub clean_freq: Duration,
    /// What a process keeps of the sessions it used between requests, on
    /// the stores that can (Redis, PostgreSQL): `keep_sessions` (0 turns
    /// keeping off), `keep_idle` (seconds) and `keep_bytes`; `None`: off.
    /// Default [`Keep::default`].
    pub keep: Option<Keep>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageType::Ram,
            path: None,
            url: None,
            file_fsync: false,
            servers: Vec::new(),
            redis_prefix: "session:".into(),
            memcached_prefix: "session:".into(),
            max_sessions: None,
            max_memory: None,
            redis_wait_replicas: 0,
            table: "sessions".into(),
            auto_migrate: true,
            postgres_prepared: None,
            postgres_listen_url: None,
            clean_freq: minutes(5.0),
            keep: Some(Keep::default()),
        }
    }
}

#[cfg(feature = "config-file")]
mod file_keys {
    //! The store keys of a config file.

    use std::path::PathBuf;

    use std::time::Duration;

    use super::super::keys::{boolean, duration_minutes, number, string, Value};
    use super::{Keep, StorageConfig, StorageType, StorageUrl};

    impl StorageType {
        /// Accepts our names and CherryPy's `storage_class` spellings.
        fn parse(s: &str) -> Option<Self> {
            let last = s.rsplit('.').next().unwrap_or(s).to_ascii_lowercase();
            Some(match last.trim_end_matches("session") {
                "ram" | "memory" => StorageType::Ram,
                "file" => StorageType::File,
                "redis" => StorageType::Redis,
                "postgres" | "postgresql" => StorageType::Postgres,
                "sqlite" => StorageType::Sqlite,
                "memcached" => StorageType::Memcached,
                "mysql" | "mariadb" => StorageType::Mysql,
                "cookie" => StorageType::Cookie,
                _ => return None,
            })
        }
    }

    impl StorageConfig {
        /// Gives the store key `key` (without its `tools.sessions.` prefix)
        /// its meaning; `Ok(false)` if it is not one.
        pub(in crate::config) fn set(&mut self, key: &str, v: &Value) -> Result<bool, String> {
            match key {
                "storage_type" | "storage_class" => {
                    let s = match v {
                        Value::Str(s) | Value::Name(s) => s,
                        _ => return Err(format!("expected a store name, got {v}")),
                    };
                    self.kind = StorageType::parse(s).ok_or_else(|| {
                        format!(
                            "unknown store {s:?} (ram, file, redis, postgres, mysql, sqlite, memcached or cookie)"
                        )
                    })?;
                }
                "storage_path" => self.path = Some(PathBuf::from(string(v)?)),
                "storage_url" => self.url = Some(StorageUrl::new(string(v)?)),
                "file_fsync" => self.file_fsync = boolean(v)?,
                "servers" => {
                    self.servers = match v {
                        Value::List(items) => items.iter().map(string).collect::<Result<_, _>>()?,
                        Value::Str(s) => s.split(',').map(|s| s.trim().to_owned()).collect(),
                        _ => return Err(format!("expected a list of host:port, got {v}")),
                    }
                }
                "redis_prefix" => self.redis_prefix = string(v)?,
                "memcached_prefix" => self.memcached_prefix = string(v)?,
                "max_sessions" => {
                    self.max_sessions = match v {
                        Value::Int(n) if *n > 0 => Some(usize::try_from(*n).unwrap_or(usize::MAX)),
                        _ => return Err(format!("expected a number of sessions above 0, got {v}")),
                    }
                }
                "max_memory" => {
                    self.max_memory = match v {
                        Value::Int(n) if *n > 0 => Some(usize::try_from(*n).unwrap_or(usize::MAX)),
                        _ => return Err(format!("expected a number of bytes above 0, got {v}")),
                    }
                }
                "redis_wait_replicas" => {
                    self.redis_wait_replicas = match v {
                        Value::Int(n) => u32::try_from(*n)
                            .map_err(|_| format!("expected a number of replicas, got {v}"))?,
                        _ => return Err(format!("expected a number of replicas, got {v}")),
                    }
                }
                "table" => self.table = string(v)?,
                "auto_migrate" => self.auto_migrate = boolean(v)?,
                "postgres_prepared" => {
                    self.postgres_prepared = match v {
                        Value::Bool(on) => Some(*on),
                        Value::Str(s) if s == "auto" => None,
                        _ => return Err(format!("expected True, False or 'auto', got {v}")),
                    }
                }
                "postgres_listen_url" => {
                    self.postgres_listen_url = Some(StorageUrl::new(string(v)?))
                }
                "clean_freq" => self.clean_freq = duration_minutes(v)?,
                "keep_sessions" => {
                    let sessions = match v {
                        Value::Int(n) => usize::try_from(*n)
                            .map_err(|_| format!("expected a number of sessions, got {v}"))?,
                        _ => return Err(format!("expected a number of sessions, got {v}")),
                    };
                    self.keep = (sessions > 0).then(|| Keep {
                        sessions,
                        ..self.keep.unwrap_or_default()
                    });
                }
                "keep_idle" => {
                    let idle = Duration::try_from_secs_f64(number(v)?)
                        .map_err(|_| format!("expected a number of seconds, got {v}"))?;
                    if let Some(keep) = &mut self.keep {
                        keep.idle = idle;
                    }
                }
                "keep_bytes" => {
                    let bytes = match v {
                        Value::Int(n) if *n > 0 => usize::try_from(*n).unwrap_or(usize::MAX),
                        _ => return Err(format!("expected a number of bytes above 0, got {v}")),
                    };
                    if let Some(keep) = &mut self.keep {
                        keep.bytes = bytes;
                    }
                }
                _ => return Ok(false),
            }
            Ok(true)
        }

        /// The setting this kind of store cannot do without, when it is
        /// missing: its key and what it is. A file is checked when it
        /// loads; [`store::open`](crate::store::open) checks settings given
        /// in code.
        pub(in crate::config) fn missing(&self) -> Option<(&'static str, &'static str)> {
            match self.kind {
                StorageType::File if self.path.is_none() => Some(("storage_path", "the directory")),
                StorageType::Sqlite if self.path.is_none() => {
                    Some(("storage_path", "the database file"))
                }
                StorageType::Redis | StorageType::Postgres | StorageType::Mysql
                    if self.url.is_none() =>
                {
                    Some(("storage_url", "the server's URL"))
                }
                StorageType::Memcached if self.url.is_none() && self.servers.is_empty() => Some((
                    "servers",
                    "the memcached servers, e.g. ['127.0.0.1:11211'] (or a memcache:// storage_url)",
                )),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Debug` is derived, and hides the passwords all the same: a field
    /// added later is shown without a line written for it.
    #[test]
    fn debug_shows_every_field_but_no_password() {
        let storage = StorageConfig {
            kind: StorageType::Postgres,
            url: Some("postgres://app:hunter2@db:5432/app".into()),
            postgres_listen_url: Some("host=db user=app password=hunter2".into()),
            redis_wait_replicas: 3,
            ..StorageConfig::default()
        };
        for shown in [format!("{storage:?}"), format!("{storage:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("postgres://app:***@db:5432/app"), "{shown}");
            assert!(shown.contains("password=***"), "{shown}");
            assert!(shown.contains("redis_wait_replicas"), "{shown}");
            assert!(shown.contains('3'), "{shown}");
        }
        let session = crate::SessionConfig {
            storage,
            ..crate::SessionConfig::default()
        };
        assert!(!format!("{session:?}").contains("hunter2"));
    }

    #[test]
    fn a_url_is_kept_as_given_and_shown_masked() {
        let url = StorageUrl::new("redis://u:hunter2@a:1,redis://u:hunter2@b:2");
        assert_eq!(url.expose(), "redis://u:hunter2@a:1,redis://u:hunter2@b:2");
        assert_eq!(url.to_string(), "redis://u:***@a:1,redis://u:***@b:2");
        assert_eq!(
            format!("{url:?}"),
            "\"redis://u:***@a:1,redis://u:***@b:2\""
        );
        let plain = StorageUrl::from("redis://127.0.0.1:6379/0".to_string());
        assert_eq!(plain.to_string(), plain.expose());
    }
}

/// The store keys as files write them.
#[cfg(all(test, feature = "config-file"))]
mod file_tests {
    use super::super::{Config, Error};
    use super::*;

    #[test]
    fn storage_class_spellings() {
        for (s, kind) in [
            ("\"RamSession\"", StorageType::Ram),
            ("cherrypy.lib.sessions.RamSession", StorageType::Ram),
            ("cherrypy.lib.sessions.FileSession", StorageType::File),
            ("'redis'", StorageType::Redis),
        ] {
            let text = format!(
                "[/]\ntools.sessions.on = True\ntools.sessions.storage_class = {s}\n\
                 tools.sessions.storage_path = '/tmp/x'\ntools.sessions.storage_url = 'redis://h'\n"
            );
            let c = Config::from_ini_str(&text, "x").unwrap();
            assert_eq!(c.storage().kind, kind, "{s}");
        }
    }

    #[test]
    fn ram_bounds_are_positive_numbers() {
        for name in ["max_sessions", "max_memory"] {
            let load = |v: &str| {
                Config::from_ini_str(
                    &format!("[/]\ntools.sessions.on = True\ntools.sessions.{name} = {v}\n"),
                    "m.conf",
                )
            };
            let bound = |c: Config| match name {
                "max_sessions" => c.storage().max_sessions,
                _ => c.storage().max_memory,
            };
            assert_eq!(bound(load("5000").unwrap()), Some(5000), "{name}");
            for bad in ["0", "-1", "'many'", "1.5"] {
                let err = load(bad).unwrap_err();
                let key = format!("tools.sessions.{name}");
                assert!(
                    matches!(&err, Error::Key { key: k, .. } if *k == key),
                    "{name} = {bad}: {err}"
                );
            }
            assert_eq!(bound(Config::default()), None, "{name}");
        }
    }

    #[test]
    fn memcached_servers_in_both_syntaxes() {
        let ini = Config::from_ini_str(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'memcached'\n\
             tools.sessions.servers = ['127.0.0.1:11211', \"10.0.0.2:11211\"]\n",
            "m.conf",
        )
        .unwrap();
        assert_eq!(ini.storage().kind, StorageType::Memcached);
        assert_eq!(ini.storage().servers, ["127.0.0.1:11211", "10.0.0.2:11211"]);
        let toml = Config::from_toml_str(
            "[\"/\"]\nsessions.on = true\nsessions.storage_type = \"memcached\"\n\
             sessions.servers = [\"h:11211\"]\n",
            "m.toml",
        )
        .unwrap();
        assert_eq!(toml.storage().servers, ["h:11211"]);
        let url = Config::from_ini_str(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'memcached'\n\
             tools.sessions.storage_url = 'memcache://a:1,b:2'\n",
            "u.conf",
        )
        .unwrap();
        assert_eq!(
            url.storage().url.as_ref().map(StorageUrl::expose),
            Some("memcache://a:1,b:2")
        );
        // Neither: the error names the key.
        let err = Config::from_ini_str(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'memcached'\n",
            "n.conf",
        )
        .unwrap_err();
        assert!(err.to_string().contains("servers"), "{err}");
        let err =
            Config::from_ini_str("[/]\ntools.sessions.servers = [1, 2]\n", "b.conf").unwrap_err();
        assert!(matches!(&err, Error::Key { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn redis_wait_replicas_in_both_syntaxes() {
        let ini = Config::from_ini_str(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'redis'\n\
             tools.sessions.storage_url = 'redis+sentinel://h:26379/m'\n\
             tools.sessions.redis_wait_replicas = 2\n",
            "r.conf",
        )
        .unwrap();
        assert_eq!(ini.storage().redis_wait_replicas, 2);
        let toml = Config::from_toml_str(
            "[\"/\"]\nsessions.on = true\nsessions.storage_type = \"redis\"\n\
             sessions.storage_url = \"redis+cluster://h:7000,h:7001\"\n\
             sessions.redis_wait_replicas = 1\n",
            "r.toml",
        )
        .unwrap();
        assert_eq!(toml.storage().redis_wait_replicas, 1);
        let default = Config::from_ini_str("[/]\ntools.sessions.on = True\n", "d").unwrap();
        assert_eq!(default.storage().redis_wait_replicas, 0);
        for bad in ["-1", "'one'", "1.5", "5000000000"] {
            let text = format!("[/]\ntools.sessions.redis_wait_replicas = {bad}\n");
            let err = Config::from_ini_str(&text, "b.conf").unwrap_err();
            assert!(
                matches!(&err, Error::Key { line: 2, key, .. } if key == "tools.sessions.redis_wait_replicas"),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn postgres_prepared_is_auto_unless_set() {
        let default = Config::from_ini_str("[/]\ntools.sessions.on = True\n", "d").unwrap();
        assert_eq!(default.storage().postgres_prepared, None);
        for (value, expected) in [
            ("True", Some(true)),
            ("False", Some(false)),
            ("'auto'", None),
        ] {
            let text = format!("[/]\ntools.sessions.postgres_prepared = {value}\n");
            let c = Config::from_ini_str(&text, "p.conf").unwrap();
            assert_eq!(c.storage().postgres_prepared, expected, "{value}");
        }
        let toml =
            Config::from_toml_str("[\"/\"]\nsessions.postgres_prepared = \"auto\"\n", "p.toml")
                .unwrap();
        assert_eq!(toml.storage().postgres_prepared, None);
        for bad in ["'yes'", "1"] {
            let text = format!("[/]\ntools.sessions.postgres_prepared = {bad}\n");
            let err = Config::from_ini_str(&text, "b.conf").unwrap_err();
            assert!(
                matches!(&err, Error::Key { line: 2, key, .. } if key == "tools.sessions.postgres_prepared"),
                "{bad}: {err:?}"
            );
        }
    }
}
