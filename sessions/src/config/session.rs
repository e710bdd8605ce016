//! [`SessionConfig`]: the settings of one path, their defaults, the checks
//! that keep a session's id coming back, and (feature `config-file`) the
//! meaning of each session key of a file.

use std::time::Duration;

use super::{minutes, Locking, SameSite, SessionAuthConfig, StorageConfig};

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
    /// `save_uninitialized`: store (and cookie) a new session that the
    /// handler only read, as CherryPy does (the default). False keeps a
    /// new visitor's session out of the store until something is put in
    /// it — its data, a user, a timeout of its own — so that bots and
    /// one-page visits leave nothing behind (express's
    /// `saveUninitialized = false`, tower-sessions' behaviour).
    pub save_uninitialized: bool,
    /// `tools.session_auth.*`: CherryPy's log-in tool for this path.
    pub auth: SessionAuthConfig,
    /// `max_size`: the largest encoded session in bytes.
    pub max_size: usize,
    /// `debug`: log the session life cycle at info level.
    pub debug: bool,
    /// `refresh_after` (seconds): a request that changes nothing writes
    /// the session's new expiry only once it would move by at least this
    /// much; until then the request costs the store no write, and the
    /// cookie carries the stored expiry, so it never outlives the record.
    /// `None` (the default): a tenth of the idle timeout. Zero refreshes
    /// at every request, as CherryPy does.
    pub refresh_after: Option<Duration>,
    /// `pipelined_saves`: when requests of one session queue in this
    /// process, the next one starts on what the one before saved while that
    /// save is still on its way to the store, and saves queued meanwhile go
    /// as one (on the stores with leases: Redis, PostgreSQL, MySQL, SQLite,
    /// memcached). Every response still waits for its own save, and for
    /// the saves it ran on; if one fails, every request that ran on it
    /// answers 503. What a handler may see is the previous request's result
    /// before the store acknowledged it. Off: the next request starts only
    /// once it is acknowledged. Default on.
    pub pipelined_saves: bool,
    /// The server keys, read from `keys_file` or `keys_env` (never written
    /// in the config itself): what `sign_ids` signs with.
    pub keys: Option<crate::Keys>,
    /// `sign_ids`: the cookie and the id header carry the id and its
    /// signature by the first key; an id no key signed is no id, refused
    /// before any store is asked. Needs `keys`.
    pub sign_ids: bool,
    /// `seal_records`: every store keeps the session's data encrypted under
    /// a key derived from its id, which no store holds (see
    /// [`Record::open_data`](crate::store::Record::open_data)). Needs no key.
    pub seal_records: bool,
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
            save_uninitialized: true,
            auth: SessionAuthConfig::default(),
            max_size: 64 * 1024,
            debug: false,
            refresh_after: None,
            pipelined_saves: true,
            keys: None,
            sign_ids: false,
            seal_records: false,
        }
    }
}

impl SessionConfig {
    /// The keys that sign ids, when `sign_ids` is on.
    pub(crate) fn signer(&self) -> Option<&crate::Keys> {
        self.keys.as_ref().filter(|_| self.sign_ids)
    }

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
        if self.storage.kind == super::StorageType::Cookie {
            if self.keys.is_none() {
                return Some((
                    "storage_type",
                    "\"cookie\" seals sessions with keys (tools.sessions.keys_file or keys_env)"
                        .into(),
                ));
            }
            if !self.cookie || self.header.is_some() {
                return Some((
                    "header",
                    "the cookie store carries the session in the cookie only (no header, cookie = True)"
                        .into(),
                ));
            }
        }
        if self.sign_ids && self.keys.is_none() {
            return Some((
                "sign_ids",
                "True needs keys (tools.sessions.keys_file or keys_env)".into(),
            ));
        }
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

#[cfg(feature = "config-file")]
mod file_keys {
    //! The session keys of a config file.

    use std::time::Duration;

    use super::super::keys::{boolean, duration_minutes, number, string, Value};
    use super::super::{Locking, SameSite};
    use super::{cookie_domain, cookie_name, cookie_path, SessionConfig};

    impl SessionConfig {
        /// Gives the session key `key` (without its `tools.sessions.`
        /// prefix) its meaning; `Ok(false)` if it is not one.
        pub(in crate::config) fn set(&mut self, key: &str, v: &Value) -> Result<bool, String> {
            match key {
                "on" => self.on = boolean(v)?,
                "timeout" => {
                    self.timeout = duration_minutes(v)?;
                    if self.timeout.is_zero() {
                        return Err("must be more than zero".into());
                    }
                }
                "absolute_timeout" => {
                    self.absolute_timeout = match v {
                        Value::None => None,
                        _ => Some(duration_minutes(v)?).filter(|d| !d.is_zero()),
                    }
                }
                "locking" => {
                    self.locking = match string(v)?.as_str() {
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
                "lock_timeout" => self.lock_timeout = Duration::from_secs_f64(number(v)?),
                "name" => self.name = cookie_word(v, cookie_name)?,
                "cookie" => self.cookie = boolean(v)?,
                "header" => {
                    self.header = match v {
                        Value::None => None,
                        _ => Some(id_header(&string(v)?)?),
                    }
                }
                "path" => self.path = cookie_word(v, cookie_path)?,
                "path_header" => {
                    self.path_header = match v {
                        Value::None => None,
                        _ => Some(
                            http::HeaderName::try_from(string(v)?)
                                .map_err(|_| "not a valid header name".to_string())?,
                        ),
                    }
                }
                "domain" => {
                    self.domain = match v {
                        Value::None => None,
                        _ => Some(cookie_word(v, cookie_domain)?),
                    }
                }
                "secure" => self.secure = boolean(v)?,
                "httponly" => self.httponly = boolean(v)?,
                "samesite" => {
                    self.samesite = match v {
                        Value::None => None,
                        _ => match string(v)?.to_ascii_lowercase().as_str() {
                            "strict" => Some(SameSite::Strict),
                            "lax" => Some(SameSite::Lax),
                            "none" => Some(SameSite::None),
                            other => {
                                return Err(format!("expected Strict, Lax or None, got {other:?}"))
                            }
                        },
                    }
                }
                "persistent" => self.persistent = boolean(v)?,
                "save_uninitialized" => self.save_uninitialized = boolean(v)?,
                "max_size" => {
                    self.max_size = match v {
                        Value::Int(n) if *n > 0 => *n as usize,
                        _ => return Err(format!("expected a positive number of bytes, got {v}")),
                    }
                }
                "debug" => self.debug = boolean(v)?,
                "pipelined_saves" => self.pipelined_saves = boolean(v)?,
                "refresh_after" => {
                    self.refresh_after = match v {
                        Value::None => None,
                        _ => Some(Duration::try_from_secs_f64(number(v)?).map_err(|_| {
                            format!("expected a number of seconds, 0 or more, got {v}")
                        })?),
                    }
                }
                // Keys are read where they are kept, never written in the
                // config text; the error names no part of a key.
                "keys_file" => {
                    let path = string(v)?;
                    let keys = crate::Keys::from_file(std::path::Path::new(&path))
                        .map_err(|e| error_chain(&e))?;
                    self.keys = Some(keys);
                }
                "keys_env" => {
                    let keys = crate::Keys::from_env(&string(v)?).map_err(|e| e.to_string())?;
                    self.keys = Some(keys);
                }
                "sign_ids" => self.sign_ids = boolean(v)?,
                "seal_records" => self.seal_records = boolean(v)?,
                _ => return Ok(false),
            }
            Ok(true)
        }
    }

    /// An error and its sources on one line.
    fn error_chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    /// A header that can carry the session id: a valid name that HTTP or
    /// this crate does not already use for something else.
    fn id_header(name: &str) -> Result<http::HeaderName, String> {
        let header = http::HeaderName::try_from(name)
            .map_err(|_| format!("{name:?} is not a header name"))?;
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

    /// A cookie name, path or domain, as a string that `rule` accepts: at
    /// the key's own line in a file. [`SessionConfig::problem`] applies the
    /// same rules to settings given in code, so that writing the
    /// `Set-Cookie` header (`cookie.rs`) never has to fail.
    fn cookie_word(v: &Value, rule: fn(&str) -> Result<(), String>) -> Result<String, String> {
        let s = string(v)?;
        rule(&s)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

/// The session keys as files write them: checked at their own line, in
/// both syntaxes.
#[cfg(all(test, feature = "config-file"))]
mod file_tests {
    use super::super::{Config, Error};
    use super::*;

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

    /// `sign_ids` needs keys; keys come from a file or the environment,
    /// and `seal_records` needs none.
    #[test]
    fn signing_needs_keys_and_sealing_does_not() {
        let load = |body: &str| {
            Config::from_ini_str(&format!("[/]\ntools.sessions.on = True\n{body}"), "k.conf")
        };
        let err = load("tools.sessions.sign_ids = True\n").unwrap_err();
        assert!(
            matches!(&err, Error::Key { key, .. } if key == "tools.sessions.sign_ids"),
            "{err}"
        );
        let c = load("tools.sessions.seal_records = True\n").unwrap();
        assert!(c.resolve("/").seal_records && c.resolve("/").keys.is_none());
        let err = load("tools.sessions.keys_file = '/nonexistent/keys'\n").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/keys"), "{err}");
        let name = "SESSIONS_TEST_KEYS_CONFIG";
        std::env::set_var(name, format!("{}, {}", "11".repeat(32), "22".repeat(32)));
        let c = load(&format!(
            "tools.sessions.keys_env = '{name}'\ntools.sessions.sign_ids = True\n"
        ))
        .unwrap();
        assert_eq!(c.resolve("/").keys.as_ref().map(crate::Keys::len), Some(2));
        assert!(c.resolve("/").signer().is_some());
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
}
