//! Configuration: the keys of CherryPy's `tools.sessions.*` with their
//! defaults, and config files in CherryPy's INI syntax or in TOML.
//!
//! A file has sections named by URL path (`[/]`, `[/admin]`); each section
//! inherits its parent's settings key by key, so `[/admin]` can switch
//! sessions off or give its own cookie name while keeping the rest.
//!
//! ```
//! use sessions::Config;
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
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod ini;
mod toml;

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
        }
    }

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
            _ => return None,
        })
    }
}

/// Where the sessions are stored. One store serves a whole server, so these
/// keys must agree across every section that has sessions on.
///
/// Its `Debug` shows `url` with any password replaced by `***`, so that a
/// logged or printed config (or a [`SessionLayer`](crate::SessionLayer))
/// never carries one.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct StorageConfig {
    /// `storage_type` (or CherryPy's `storage_class`).
    pub kind: StorageType,
    /// `storage_path`: the file store's directory, or the SQLite file.
    pub path: Option<PathBuf>,
    /// `storage_url`: `redis://…` (one node), several `redis://…`
    /// comma-separated or `redis+cluster://…` (Redis Cluster),
    /// `redis+sentinel://…/MASTER` (Sentinel), `postgres://…`, or
    /// `memcache://host:port[,host:port…]` (memcached, instead of
    /// `servers`).
    pub url: Option<String>,
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
    pub postgres_listen_url: Option<String>,
    /// `clean_freq`: time between background clean-ups; zero turns them off.
    pub clean_freq: Duration,
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written out rather than derived only for `url`: a new field must
        // be added here too.
        f.debug_struct("StorageConfig")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("url", &self.url.as_deref().map(crate::redact::url))
            .field("file_fsync", &self.file_fsync)
            .field("servers", &self.servers)
            .field("max_sessions", &self.max_sessions)
            .field("max_memory", &self.max_memory)
            .field("redis_prefix", &self.redis_prefix)
            .field("memcached_prefix", &self.memcached_prefix)
            .field("table", &self.table)
            .field("auto_migrate", &self.auto_migrate)
            .field("postgres_prepared", &self.postgres_prepared)
            .field(
                "postgres_listen_url",
                &self.postgres_listen_url.as_deref().map(crate::redact::url),
            )
            .field("clean_freq", &self.clean_freq)
            .finish()
    }
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
        }
    }
}

/// The settings of one path (docs/spec.md §2). `Default` gives the
/// documented defaults with sessions **on**, which is what a program that
/// installs the layer wants; a config file starts from `on = false`, as in
/// CherryPy.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// `on`: sessions for this path and below.
    pub on: bool,
    /// The store.
    pub storage: StorageConfig,
    /// `timeout`: idle time after which a session ends; every save slides it.
    /// memcached keeps nothing past 2038-01-19: over 30 days, it must end
    /// a year before that ([`store::open`](crate::store::open) checks).
    pub timeout: Duration,
    /// `absolute_timeout`: time since creation after which a session ends
    /// whatever its activity.
    pub absolute_timeout: Option<Duration>,
    /// `locking`.
    pub locking: Locking,
    /// `lock_timeout`: how long to wait for a lock before answering 503.
    pub lock_timeout: Duration,
    /// `name`: the cookie name, an RFC 6265 token (letters, digits and
    /// ``!#$%&'*+-.^_`|~``).
    pub name: String,
    /// `cookie`: carry the id in a cookie (default true). False, with a
    /// `header`, serves API clients that keep no cookies.
    pub cookie: bool,
    /// `header`: also (or, with `cookie = False`, only) carry the id in this
    /// header: read from the request, written to the response when the
    /// session is saved, empty when it ends.
    pub header: Option<http::HeaderName>,
    /// `path`: the cookie path, starting with `/`.
    pub path: String,
    /// `path_header`: a request header to take the cookie path from.
    pub path_header: Option<http::HeaderName>,
    /// `domain`: the cookie domain, a host name.
    pub domain: Option<String>,
    /// `secure`: the cookie's `Secure` attribute.
    pub secure: bool,
    /// `httponly`: the cookie's `HttpOnly` attribute.
    pub httponly: bool,
    /// `samesite`: the cookie's `SameSite` attribute.
    pub samesite: Option<SameSite>,
    /// `persistent`: false makes a browser-session cookie (no expiry).
    pub persistent: bool,
    /// `max_size`: the largest encoded session in bytes.
    pub max_size: usize,
    /// `debug`: log the session life cycle at info level.
    pub debug: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            on: true,
            storage: StorageConfig::default(),
            timeout: minutes(60.0),
            absolute_timeout: None,
            locking: Locking::Implicit,
            lock_timeout: Duration::from_secs(30),
            name: "session_id".into(),
            cookie: true,
            header: None,
            path: "/".into(),
            path_header: None,
            domain: None,
            secure: false,
            httponly: true,
            samesite: Some(SameSite::Lax),
            persistent: true,
            max_size: 64 * 1024,
            debug: false,
        }
    }
}

impl SessionConfig {
    /// Checks what would otherwise leave every request without its session,
    /// silently: no way to carry the id (`cookie = False` without a
    /// `header`); a cookie `name` that is not an RFC 6265 token (`a=b`, a
    /// space, a separator), a `path` that does not start with `/` or a
    /// `domain` that is not a host name; or a cookie the browser drops
    /// because its name's prefix has rules the settings break — a
    /// `__Host-` cookie must be `secure`, for `path = "/"` (no
    /// `path_header`) and without a `domain`; a `__Secure-` cookie must be
    /// `secure`. Answers the first setting at fault, and why. Config files
    /// are checked when they load, and [`SessionLayer`](crate::SessionLayer)
    /// checks what it is given.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !self.cookie && self.header.is_none() {
            return Some((
                "cookie",
                "False needs a header to carry the id (tools.sessions.header)".into(),
            ));
        }
        // Browsers match the prefixes without regard to case.
        let starts = |prefix: &str| {
            self.name
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        if !self.cookie {
            return None;
        }
        if let Err(why) = cookie_name(&self.name) {
            return Some(("name", why));
        }
        if let Err(why) = cookie_path(&self.path) {
            return Some(("path", why));
        }
        if let Some(Err(why)) = self.domain.as_deref().map(cookie_domain) {
            return Some(("domain", why));
        }
        let (host, secure) = (starts("__Host-"), starts("__Secure-"));
        let named = |rule: &str| format!("a cookie named {:?} {rule}", self.name);
        if (host || secure) && !self.secure {
            return Some(("secure", named("must be secure (secure = True)")));
        }
        if host {
            if self.path != "/" {
                return Some(("path", named("must have path = \"/\"")));
            }
            if self.path_header.is_some() {
                return Some((
                    "path_header",
                    named("has the path \"/\", not one from a header"),
                ));
            }
            if self.domain.is_some() {
                return Some(("domain", named("must not set a domain")));
            }
        }
        None
    }
}

fn minutes(m: f64) -> Duration {
    Duration::from_millis((m * 60_000.0).round() as u64)
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

/// A loaded config file: server settings and the per-path session settings.
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

/// A config file could not be used. Every variant names the file, and the
/// line and key where there is one.
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

/// A value from a file, before it is given a meaning by its key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// An unquoted dotted name, as CherryPy's `storage_class` takes.
    Name(String),
    None,
    /// A list, as CherryPy's memcached `servers` takes.
    List(Vec<Value>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Name(n) => f.write_str(n),
            Value::None => f.write_str("None"),
            // Items shown as an error shows them, a URL's password hidden
            // (a list where a URL was expected must not print it).
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match item {
                        Value::Str(s) => write!(f, "{:?}", crate::redact::url(s))?,
                        other => write!(f, "{other}")?,
                    }
                }
                f.write_str("]")
            }
        }
    }
}

/// One `key = value` of a section, with where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The key as written, e.g. `tools.sessions.timeout`.
    pub(crate) key: String,
    pub(crate) value: Value,
    pub(crate) line: usize,
}

/// A parsed section, before inheritance.
#[derive(Debug, Clone)]
pub(crate) struct RawSection {
    pub(crate) name: String,
    pub(crate) line: usize,
    pub(crate) entries: Vec<Entry>,
}

impl Config {
    /// A config with one setting for every path.
    pub fn single(config: SessionConfig) -> Self {
        Config {
            server: ServerConfig::default(),
            routes: vec![("/".into(), Arc::new(config))],
        }
    }

    /// Reads a file: TOML if its name ends in `.toml`, CherryPy INI otherwise.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            file: file.clone(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "toml") {
            Self::from_toml_str(&text, &file)
        } else {
            Self::from_ini_str(&text, &file)
        }
    }

    /// Parses CherryPy's INI syntax; `file` names the source in errors.
    pub fn from_ini_str(text: &str, file: &str) -> Result<Self, Error> {
        Self::build(ini::parse(text, file)?, file)
    }

    /// Parses TOML (`["/"]` tables with `sessions.*` keys); `file` names the
    /// source in errors.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Self, Error> {
        Self::build(toml::parse(text, file)?, file)
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
    /// [`load`](Self::load) checked agree), or the root's.
    pub fn storage(&self) -> &StorageConfig {
        self.sections()
            .find(|(_, c)| c.on)
            .map_or(&self.routes[self.routes.len() - 1].1.storage, |(_, c)| {
                &c.storage
            })
    }

    fn build(raw: Vec<RawSection>, file: &str) -> Result<Self, Error> {
        let mut server = ServerConfig::default();
        let base = SessionConfig {
            on: false,
            ..SessionConfig::default()
        };
        let mut paths: Vec<(RawSection, SessionConfig)> = Vec::new();
        let mut sections = Vec::new();
        for section in raw {
            if section.name == "global" {
                for e in &section.entries {
                    apply_global(&mut server, e).map_err(|m| key_error(file, e, m))?;
                }
                // CherryPy also allows `tools.sessions.*` in [global]; it
                // then applies to every path.
                let sessions: Vec<Entry> = section
                    .entries
                    .into_iter()
                    .filter(|e| !e.key.starts_with("server."))
                    .collect();
                sections.push(RawSection {
                    name: String::new(),
                    line: section.line,
                    entries: sessions,
                });
            } else if section.name.starts_with('/') {
                sections.push(section);
            } else {
                return Err(Error::Syntax {
                    file: file.into(),
                    line: section.line,
                    message: format!(
                        "section [{}] is neither [global] nor a path starting with /",
                        section.name
                    ),
                });
            }
        }
        // Parents before children: "" (global) < "/" < "/a" < "/a/b".
        sections.sort_by_key(|s| depth(&s.name));
        for section in sections {
            let parent = paths
                .iter()
                .rev()
                .find(|(p, _)| p.name.is_empty() || covers(&p.name, &section.name))
                .map_or_else(|| base.clone(), |(_, c)| c.clone());
            let mut config = parent;
            for e in &section.entries {
                apply(&mut config, e).map_err(|m| key_error(file, e, m))?;
            }
            paths.push((section, config));
        }
        let mut routes: Vec<(String, Arc<SessionConfig>)> = Vec::new();
        let mut storage: Option<(&str, usize, &StorageConfig)> = None;
        for (section, config) in &paths {
            if config.on {
                check_storage(config, file, section.line)?;
                if let Some((key, message)) = config.problem() {
                    return Err(Error::Key {
                        file: file.into(),
                        line: section.line,
                        key: format!("tools.sessions.{key}"),
                        message,
                    });
                }
                match storage {
                    None => storage = Some((&section.name, section.line, &config.storage)),
                    Some((name, _, s)) if s != &config.storage => {
                        return Err(Error::Key {
                            file: file.into(),
                            line: section.line,
                            key: "tools.sessions.storage_type".into(),
                            message: format!(
                                "section [{}] sets up a different store than [{}]; one server has one store",
                                section.name,
                                if name.is_empty() { "global" } else { name }
                            ),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        for (section, config) in paths {
            let name = if section.name.is_empty() {
                "/".to_string()
            } else {
                section.name.trim_end_matches('/').to_string()
            };
            let name = if name.is_empty() { "/".into() } else { name };
            routes.retain(|(p, _)| *p != name);
            routes.push((name, Arc::new(config)));
        }
        if !routes.iter().any(|(p, _)| p == "/") {
            routes.push(("/".into(), Arc::new(base)));
        }
        // Longest first, so `resolve` takes the first match.
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Ok(Config { server, routes })
    }
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

fn depth(name: &str) -> usize {
    if name.is_empty() {
        0
    } else {
        1 + name.trim_end_matches('/').matches('/').count()
    }
}

fn key_error(file: &str, e: &Entry, message: String) -> Error {
    Error::Key {
        file: file.into(),
        line: e.line,
        key: e.key.clone(),
        message,
    }
}

fn check_storage(config: &SessionConfig, file: &str, line: usize) -> Result<(), Error> {
    let s = &config.storage;
    let missing = |key: &str, what: &str| Error::Key {
        file: file.into(),
        line,
        key: format!("tools.sessions.{key}"),
        message: format!(
            "required for storage_type = \"{}\": {what}",
            s.kind.as_str()
        ),
    };
    match s.kind {
        StorageType::File if s.path.is_none() => Err(missing("storage_path", "the directory")),
        StorageType::Sqlite if s.path.is_none() => {
            Err(missing("storage_path", "the database file"))
        }
        StorageType::Redis | StorageType::Postgres if s.url.is_none() => {
            Err(missing("storage_url", "the server's URL"))
        }
        StorageType::Memcached if s.url.is_none() && s.servers.is_empty() => Err(missing(
            "servers",
            "the memcached servers, e.g. ['127.0.0.1:11211'] (or a memcache:// storage_url)",
        )),
        _ => Ok(()),
    }
}

fn apply_global(server: &mut ServerConfig, e: &Entry) -> Result<(), String> {
    match e.key.as_str() {
        "server.socket_host" => server.host = Some(string(&e.value)?),
        "server.socket_port" => {
            server.port = Some(match e.value {
                Value::Int(p) => u16::try_from(p).map_err(|_| "not a port number".to_string())?,
                _ => return Err(format!("expected a port number, got {}", e.value)),
            })
        }
        k if k.starts_with("server.") => return Err("unknown server key".into()),
        _ => {}
    }
    Ok(())
}

/// Gives a session key its meaning. Accepts `tools.sessions.X` (CherryPy)
/// and `sessions.X` (TOML) spellings.
fn apply(c: &mut SessionConfig, e: &Entry) -> Result<(), String> {
    let key = e
        .key
        .strip_prefix("tools.sessions.")
        .or_else(|| e.key.strip_prefix("sessions."))
        .ok_or_else(|| "unknown key (session keys are tools.sessions.*)".to_string())?;
    let v = &e.value;
    match key {
        "on" => c.on = boolean(v)?,
        "storage_type" | "storage_class" => {
            let s = match v {
                Value::Str(s) | Value::Name(s) => s,
                _ => return Err(format!("expected a store name, got {v}")),
            };
            c.storage.kind = StorageType::parse(s).ok_or_else(|| {
                format!("unknown store {s:?} (ram, file, redis, postgres, sqlite or memcached)")
            })?;
        }
        "storage_path" => c.storage.path = Some(PathBuf::from(string(v)?)),
        "storage_url" => c.storage.url = Some(string(v)?),
        "file_fsync" => c.storage.file_fsync = boolean(v)?,
        "servers" => {
            c.storage.servers = match v {
                Value::List(items) => items.iter().map(string).collect::<Result<_, _>>()?,
                Value::Str(s) => s.split(',').map(|s| s.trim().to_owned()).collect(),
                _ => return Err(format!("expected a list of host:port, got {v}")),
            }
        }
        "redis_prefix" => c.storage.redis_prefix = string(v)?,
        "memcached_prefix" => c.storage.memcached_prefix = string(v)?,
        "max_sessions" => {
            c.storage.max_sessions = match v {
                Value::Int(n) if *n > 0 => Some(usize::try_from(*n).unwrap_or(usize::MAX)),
                _ => return Err(format!("expected a number of sessions above 0, got {v}")),
            }
        }
        "max_memory" => {
            c.storage.max_memory = match v {
                Value::Int(n) if *n > 0 => Some(usize::try_from(*n).unwrap_or(usize::MAX)),
                _ => return Err(format!("expected a number of bytes above 0, got {v}")),
            }
        }
        "redis_wait_replicas" => {
            c.storage.redis_wait_replicas = match v {
                Value::Int(n) => u32::try_from(*n)
                    .map_err(|_| format!("expected a number of replicas, got {v}"))?,
                _ => return Err(format!("expected a number of replicas, got {v}")),
            }
        }
        "table" => c.storage.table = string(v)?,
        "auto_migrate" => c.storage.auto_migrate = boolean(v)?,
        "postgres_prepared" => {
            c.storage.postgres_prepared = match v {
                Value::Bool(on) => Some(*on),
                Value::Str(s) if s == "auto" => None,
                _ => return Err(format!("expected True, False or 'auto', got {v}")),
            }
        }
        "postgres_listen_url" => c.storage.postgres_listen_url = Some(string(v)?),
        "clean_freq" => c.storage.clean_freq = duration_minutes(v)?,
        "timeout" => {
            c.timeout = duration_minutes(v)?;
            if c.timeout.is_zero() {
                return Err("must be more than zero".into());
            }
        }
        "absolute_timeout" => {
            c.absolute_timeout = match v {
                Value::None => None,
                _ => Some(duration_minutes(v)?).filter(|d| !d.is_zero()),
            }
        }
        "locking" => {
            c.locking = match string(v)?.as_str() {
                "implicit" => Locking::Implicit,
                "early" => Locking::Early,
                "explicit" => Locking::Explicit,
                other => {
                    return Err(format!(
                        "expected implicit, early or explicit, got {other:?}"
                    ))
                }
            }
        }
        "lock_timeout" => c.lock_timeout = Duration::from_secs_f64(number(v)?),
        "name" => c.name = cookie_word(v, cookie_name)?,
        "cookie" => c.cookie = boolean(v)?,
        "header" => {
            c.header = match v {
                Value::None => None,
                _ => Some(id_header(&string(v)?)?),
            }
        }
        "path" => c.path = cookie_word(v, cookie_path)?,
        "path_header" => {
            c.path_header = match v {
                Value::None => None,
                _ => Some(
                    http::HeaderName::try_from(string(v)?)
                        .map_err(|_| "not a valid header name".to_string())?,
                ),
            }
        }
        "domain" => {
            c.domain = match v {
                Value::None => None,
                _ => Some(cookie_word(v, cookie_domain)?),
            }
        }
        "secure" => c.secure = boolean(v)?,
        "httponly" => c.httponly = boolean(v)?,
        "samesite" => {
            c.samesite = match v {
                Value::None => None,
                _ => match string(v)?.to_ascii_lowercase().as_str() {
                    "strict" => Some(SameSite::Strict),
                    "lax" => Some(SameSite::Lax),
                    "none" => Some(SameSite::None),
                    other => return Err(format!("expected Strict, Lax or None, got {other:?}")),
                },
            }
        }
        "persistent" => c.persistent = boolean(v)?,
        "max_size" => {
            c.max_size = match v {
                Value::Int(n) if *n > 0 => *n as usize,
                _ => return Err(format!("expected a positive number of bytes, got {v}")),
            }
        }
        "debug" => c.debug = boolean(v)?,
        _ => return Err("unknown session key".into()),
    }
    Ok(())
}

fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        _ => Err(format!("expected True or False, got {v}")),
    }
}

fn string(v: &Value) -> Result<String, String> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        _ => Err(format!("expected a quoted string, got {v}")),
    }
}

fn number(v: &Value) -> Result<f64, String> {
    let x = match v {
        Value::Int(i) => *i as f64,
        Value::Float(x) => *x,
        // "1/60": a fraction, as CherryPy configs write minutes.
        Value::Str(s) => fraction(s).ok_or_else(|| format!("expected a number, got {v}"))?,
        _ => return Err(format!("expected a number, got {v}")),
    };
    if (0.0..1e9).contains(&x) {
        Ok(x)
    } else {
        Err(format!("expected a non-negative number, got {v}"))
    }
}

/// `a / b` with numbers on both sides.
pub(crate) fn fraction(s: &str) -> Option<f64> {
    let (a, b) = s.split_once('/')?;
    let (a, b): (f64, f64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (b != 0.0).then(|| a / b)
}

fn duration_minutes(v: &Value) -> Result<Duration, String> {
    Ok(minutes(number(v)?))
}

/// A header that can carry the session id: a valid name that HTTP or this
/// crate does not already use for something else.
fn id_header(name: &str) -> Result<http::HeaderName, String> {
    let header =
        http::HeaderName::try_from(name).map_err(|_| format!("{name:?} is not a header name"))?;
    use http::header::*;
    let taken = [
        COOKIE,
        SET_COOKIE,
        HOST,
        CONTENT_LENGTH,
        CONTENT_TYPE,
        TRANSFER_ENCODING,
        PROXY_AUTHORIZATION,
        EXPECT,
        VARY,
        CACHE_CONTROL,
        ORIGIN,
        CONNECTION,
        AUTHORIZATION,
        RETRY_AFTER,
        LOCATION,
        UPGRADE,
        TE,
        TRAILER,
    ];
    if taken.contains(&header) {
        return Err(format!("{name:?} has a meaning of its own in HTTP"));
    }
    Ok(header)
}

/// A cookie name, path or domain, as a string that `rule` accepts: at the
/// key's own line in a file. [`SessionConfig::problem`] applies the same
/// rules to settings given in code, so that writing the `Set-Cookie`
/// header (`cookie.rs`) never has to fail.
fn cookie_word(v: &Value, rule: fn(&str) -> Result<(), String>) -> Result<String, String> {
    let s = string(v)?;
    rule(&s)?;
    Ok(s)
}

/// A cookie's name is an RFC 6265 token: letters, digits and
/// ``!#$%&'*+-.^_`|~``. Browsers read `=` as the end of the name, `;` as
/// the end of the cookie, and drop or mangle a cookie with a space, a
/// quote or another separator in its name: no session would ever come
/// back.
fn cookie_name(name: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!(
            "{name:?} is not a cookie name: letters, digits and !#$%&'*+-.^_`|~ only"
        ));
    }
    Ok(())
}

/// A cookie's path starts with `/` (browsers replace any other with the
/// request's directory) and holds visible ASCII but `;` and `,`.
fn cookie_path(path: &str) -> Result<(), String> {
    if !is_cookie_path(path) {
        return Err(format!(
            "{path:?} is not a cookie path: it starts with / and holds visible ASCII but ; and ,"
        ));
    }
    Ok(())
}

/// A cookie's domain is a host name: letters, digits, `-`, `_` and `.`
/// (a leading dot is allowed, and ignored by browsers). A browser drops a
/// cookie whose domain does not match the site, as one with a port, a
/// path or a separator never does.
fn cookie_domain(domain: &str) -> Result<(), String> {
    let host = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    if domain.trim_start_matches('.').is_empty() || !domain.bytes().all(host) {
        return Err(format!(
            "{domain:?} is not a cookie domain: a host name (letters, digits, -, _ and .)"
        ));
    }
    Ok(())
}

/// Whether `s` may be a cookie's `Path`: it starts with `/`, and holds
/// visible ASCII only, no `;` or `,` (they would end the attribute or the
/// header value). The middleware applies it to a path taken from a
/// request header too.
pub(crate) fn is_cookie_path(s: &str) -> bool {
    s.starts_with('/')
        && s.bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b';' && b != b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of CherryPy's session documentation (docs/spec.md
    /// §2.2), verbatim, indented with tabs as it is there.
    const SEED: &str = "\t[/]\n\ttools.sessions.on = True\n\ttools.sessions.storage_type = \"file\"\n\ttools.sessions.storage_path = \"/home/site/sessions\"\n\ttools.sessions.timeout = 60\n";

    #[test]
    fn seed_example_loads() {
        let c = Config::from_ini_str(SEED, "seed.conf").unwrap();
        let root = c.resolve("/");
        assert!(root.on);
        assert_eq!(root.storage.kind, StorageType::File);
        assert_eq!(
            root.storage.path.as_deref(),
            Some(Path::new("/home/site/sessions"))
        );
        assert_eq!(root.timeout, Duration::from_secs(3600));
        assert_eq!(c.storage().kind, StorageType::File);
    }

    /// The defaults of docs/spec.md §2.1 (and the README's table).
    #[test]
    fn defaults_match_the_spec() {
        let c = Config::from_ini_str("[/]\ntools.sessions.on = True\n", "x").unwrap();
        let r = c.resolve("/anything");
        assert_eq!(r.storage.kind, StorageType::Ram);
        assert_eq!(r.timeout, Duration::from_secs(3600));
        assert_eq!(r.storage.clean_freq, Duration::from_secs(300));
        assert_eq!(r.locking, Locking::Implicit);
        assert_eq!(r.lock_timeout, Duration::from_secs(30));
        assert_eq!(r.name, "session_id");
        assert_eq!(r.path, "/");
        assert!(r.httponly && r.persistent && !r.secure && !r.debug);
        assert_eq!(r.samesite, Some(SameSite::Lax));
        assert_eq!(r.max_size, 65536);
        assert_eq!(r.absolute_timeout, None);
        // A file with no session keys leaves sessions off.
        assert!(!Config::from_ini_str("", "x").unwrap().resolve("/").on);
    }

    #[test]
    fn sections_inherit_key_by_key() {
        let text = "[/]\ntools.sessions.on = True\ntools.sessions.timeout = 0.016666\n\
                    tools.sessions.clean_freq = 1/60\n\
                    [/session_cookie]\ntools.sessions.name = 'temp'\n\
                    tools.sessions.path = '/session_cookie'\ntools.sessions.persistent = False\n\
                    [/static]\ntools.sessions.on = False\n";
        let c = Config::from_ini_str(text, "t.conf").unwrap();
        let sc = c.resolve("/session_cookie");
        assert!(sc.on);
        assert_eq!(sc.name, "temp");
        assert!(!sc.persistent);
        assert_eq!(sc.timeout, Duration::from_millis(1000));
        assert_eq!(sc.storage.clean_freq, Duration::from_secs(1));
        assert_eq!(c.resolve("/session_cookie/x").name, "temp");
        assert_eq!(c.resolve("/session_cookies").name, "session_id");
        assert!(!c.resolve("/static").on);
        assert!(c.resolve("/").on);
    }

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
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "[/]\ntools.sessions.on = True\ntools.sessions.timout = 5\n",
                3,
                "tools.sessions.timout",
            ),
            ("[/]\n\ntools.sessions.on = 'yes'\n", 3, "tools.sessions.on"),
            (
                "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = \"file\"\n",
                1,
                "tools.sessions.storage_path",
            ),
            (
                "[/]\ntools.sessions.locking = 'sometimes'\n",
                2,
                "tools.sessions.locking",
            ),
            (
                "[/]\ntools.sessions.name = 'a;b'\n",
                2,
                "tools.sessions.name",
            ),
            (
                "[/]\ntools.sessions.storage_type = 'mongodb'\n",
                2,
                "tools.sessions.storage_type",
            ),
            (
                "[global]\nserver.socket_port = 99999\n",
                2,
                "server.socket_port",
            ),
            ("[/]\nlog.screen = True\n", 2, "log.screen"),
        ];
        for (text, line, key) in cases {
            match Config::from_ini_str(text, "site.conf") {
                Err(Error::Key {
                    file,
                    line: l,
                    key: k,
                    ..
                }) => {
                    assert_eq!(
                        (file.as_str(), l, k.as_str()),
                        ("site.conf", line, key),
                        "{text}"
                    )
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    /// `header` names a header that can carry the id; `cookie = False`
    /// needs one.
    #[test]
    fn the_id_header_and_cookie_switch() {
        let load = |body: &str| {
            Config::from_ini_str(&format!("[/]\ntools.sessions.on = True\n{body}"), "h.conf")
        };
        let c = load("tools.sessions.header = \"X-Session-Id\"\ntools.sessions.cookie = False\n")
            .unwrap();
        let root = c.resolve("/");
        assert_eq!(
            root.header.as_ref().map(|h| h.as_str()),
            Some("x-session-id")
        );
        assert!(!root.cookie);
        let err = load("tools.sessions.cookie = False\n").unwrap_err();
        assert!(
            matches!(&err, Error::Key { key, .. } if key == "tools.sessions.cookie"),
            "{err}"
        );
        for bad in [
            "\"Set-Cookie\"",
            "\"Cookie\"",
            "\"Authorization\"",
            "\"bad header\"",
            "1",
        ] {
            let err = load(&format!("tools.sessions.header = {bad}\n")).unwrap_err();
            assert!(
                matches!(&err, Error::Key { key, .. } if key == "tools.sessions.header"),
                "{bad}: {err}"
            );
        }
        // No cookie, no cookie rules.
        assert!(load(
            "tools.sessions.header = \"X-Session-Id\"\ntools.sessions.cookie = False\n\
             tools.sessions.name = \"__Host-s\"\n"
        )
        .is_ok());
    }

    /// A cookie name is an RFC 6265 token, a path starts with `/`, a
    /// domain is a host name, and the id header is a header name: anything
    /// else fails to load, in either syntax, naming the key at its line
    /// (a browser would split, drop or misfile the cookie and no session
    /// would ever come back). Settings given in code are held to the same
    /// rules.
    #[test]
    fn cookie_words_and_the_header_are_checked() {
        let ini = |key: &str, value: &str| {
            Config::from_ini_str(
                &format!("[/]\ntools.sessions.on = True\ntools.sessions.{key} = {value:?}\n"),
                "c.conf",
            )
        };
        let toml = |key: &str, value: &str| {
            Config::from_toml_str(
                &format!("[\"/\"]\nsessions.on = true\nsessions.{key} = {value:?}\n"),
                "c.toml",
            )
        };
        let bad = [
            ("name", "a=b"),
            ("name", "session id"),
            ("name", "a;b"),
            ("name", "\"quoted\""),
            ("name", "a/b"),
            ("name", "a:b"),
            ("name", "(s)"),
            ("name", "sessión"),
            ("name", ""),
            ("path", "app"),
            ("path", "/a b"),
            ("path", "/a;b"),
            ("path", "/a\tb"),
            ("domain", "example.com:8080"),
            ("domain", "a=b"),
            ("domain", "example.com/x"),
            ("domain", "."),
            ("domain", ""),
            ("header", "X=Y"),
            ("header", "X Session"),
            ("header", "X:Id"),
            ("header", ""),
        ];
        for (key, value) in bad {
            for (err, prefix) in [
                (ini(key, value).unwrap_err(), "tools.sessions."),
                (toml(key, value).unwrap_err(), "sessions."),
            ] {
                assert!(
                    matches!(&err, Error::Key { line: 3, key: k, .. } if *k == format!("{prefix}{key}")),
                    "{key} = {value:?}: {err}"
                );
            }
        }
        let good = [
            ("name", "session_id"),
            ("name", "s-1.x!#$%&'*+^`|~"),
            ("path", "/app/x-1"),
            ("domain", "example.com"),
            ("domain", ".sub.example.com"),
            ("header", "X-Session-Id"),
        ];
        for (key, value) in good {
            assert!(ini(key, value).is_ok(), "{key} = {value:?}");
            assert!(toml(key, value).is_ok(), "{key} = {value:?}");
        }
        let problem = |c: SessionConfig| c.problem().map(|(key, _)| key);
        let code = SessionConfig::default;
        assert_eq!(problem(code()), None);
        assert_eq!(
            problem(SessionConfig {
                name: "a=b".into(),
                ..code()
            }),
            Some("name")
        );
        assert_eq!(
            problem(SessionConfig {
                path: "app".into(),
                ..code()
            }),
            Some("path")
        );
        assert_eq!(
            problem(SessionConfig {
                domain: Some("example.com;x".into()),
                ..code()
            }),
            Some("domain")
        );
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
        assert_eq!(url.storage().url.as_deref(), Some("memcache://a:1,b:2"));
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

    #[test]
    fn one_store_per_server() {
        let text = "[/]\ntools.sessions.on = True\n[/a]\ntools.sessions.storage_type = 'file'\ntools.sessions.storage_path = '/x'\n";
        let err = Config::from_ini_str(text, "f").unwrap_err().to_string();
        assert!(err.contains("one server has one store"), "{err}");
    }

    #[test]
    fn global_server_settings() {
        let text = "[global]\nserver.socket_host = '0.0.0.0'\nserver.socket_port = 8081\n\
                    tools.sessions.on = True\n[/x]\ntools.sessions.timeout = 2\n";
        let c = Config::from_ini_str(text, "g").unwrap();
        assert_eq!(c.server.host.as_deref(), Some("0.0.0.0"));
        assert_eq!(c.server.port, Some(8081));
        assert!(c.resolve("/").on);
        assert!(c.resolve("/x").on);
        assert_eq!(c.resolve("/x").timeout, Duration::from_secs(120));
    }

    #[test]
    fn toml_means_the_same() {
        let text = "[global]\nserver.socket_port = 9000\n\n[\"/\"]\nsessions.on = true\n\
                    sessions.storage_type = \"file\"\nsessions.storage_path = \"/home/site/sessions\"\n\
                    sessions.timeout = 60\n\n[\"/session_cookie\"]\nsessions.name = \"temp\"\n\
                    sessions.persistent = false\nsessions.lock_timeout = 0.5\n";
        let c = Config::from_toml_str(text, "s.toml").unwrap();
        assert_eq!(c.server.port, Some(9000));
        assert_eq!(c.storage().kind, StorageType::File);
        assert_eq!(c.resolve("/session_cookie").name, "temp");
        assert_eq!(
            c.resolve("/session_cookie").lock_timeout,
            Duration::from_millis(500)
        );
        assert_eq!(
            c.resolve("/session_cookie").timeout,
            Duration::from_secs(3600)
        );
        let err = Config::from_toml_str(
            "[\"/\"]\nsessions.on = true\nsessions.bogus = 1\n",
            "s.toml",
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Key { line: 3, key, .. } if key == "sessions.bogus"),
            "{err:?}"
        );
    }

    /// `__Host-` and `__Secure-` names: the browsers' rules, each broken one
    /// a load error naming the setting; settings that keep them load.
    #[test]
    fn cookie_prefixes_are_checked() {
        let load = |body: &str| {
            Config::from_ini_str(&format!("[/]\ntools.sessions.on = True\n{body}"), "p.conf")
        };
        let ok = "tools.sessions.name = \"__Host-session\"\ntools.sessions.secure = True\n";
        assert_eq!(load(ok).unwrap().resolve("/").name, "__Host-session");
        for (extra, key) in [
            (
                "tools.sessions.name = \"__Host-s\"\n",
                "tools.sessions.secure",
            ),
            (
                "tools.sessions.name = \"__host-s\"\n",
                "tools.sessions.secure",
            ),
            (
                "tools.sessions.name = \"__Secure-s\"\n",
                "tools.sessions.secure",
            ),
            (
                &format!("{ok}tools.sessions.path = \"/app\"\n"),
                "tools.sessions.path",
            ),
            (
                &format!("{ok}tools.sessions.domain = \"example.com\"\n"),
                "tools.sessions.domain",
            ),
            (
                &format!("{ok}tools.sessions.path_header = \"X-Path\"\n"),
                "tools.sessions.path_header",
            ),
        ] {
            let err = load(extra).unwrap_err();
            assert!(
                matches!(&err, Error::Key { key: k, .. } if k == key),
                "{extra}: {err}"
            );
            assert!(err.to_string().contains("a cookie named"), "{err}");
        }
        let secure = "tools.sessions.name = \"__Secure-s\"\ntools.sessions.secure = True\n\
                      tools.sessions.path = \"/app\"\ntools.sessions.domain = \"example.com\"\n";
        assert!(load(secure).is_ok());
        // Off, a section sets no cookie and is not checked.
        assert!(
            Config::from_ini_str("[/]\ntools.sessions.name = \"__Host-s\"\n", "p.conf").is_ok()
        );
    }

    #[test]
    #[should_panic(expected = "needs a header to carry the id")]
    fn the_layer_refuses_settings_that_carry_no_id() {
        let config = SessionConfig {
            cookie: false,
            ..SessionConfig::default()
        };
        let _ = crate::SessionLayer::new(crate::store::MemoryStore::new()).with_config(config);
    }

    #[test]
    #[should_panic(expected = "must be secure")]
    fn the_layer_refuses_a_host_cookie_that_is_not_secure() {
        let config = SessionConfig {
            name: "__Host-session".into(),
            ..SessionConfig::default()
        };
        let _ = crate::SessionLayer::new(crate::store::MemoryStore::new()).with_config(config);
    }
}
