//! The values of a config file and the dispatch of its keys: a session key
//! to `SessionConfig::set` (`session.rs`) or `StorageConfig::set`
//! (`storage.rs`), which give it its meaning, a `server.*` key to
//! [`ServerConfig`]. Both syntaxes (`ini.rs`, `toml.rs`) read into
//! [`Value`]s, which the converters here check for each key's type.

use std::fmt;
use std::time::Duration;

use super::{minutes, ServerConfig, SessionConfig};

/// A value from a file, before it is given a meaning by its key.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
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
pub(super) struct Entry {
    /// The key as written, e.g. `tools.sessions.timeout`.
    pub(super) key: String,
    pub(super) value: Value,
    pub(super) line: usize,
}

/// Gives a `server.*` key of `[global]` its meaning; other keys are left
/// to [`apply`].
pub(super) fn apply_global(server: &mut ServerConfig, e: &Entry) -> Result<(), String> {
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

/// Gives a session key its meaning: a store key through the
/// [`StorageConfig`](super::StorageConfig), any other through the
/// [`SessionConfig`]. Accepts `tools.sessions.X` (CherryPy) and
/// `sessions.X` (TOML) spellings.
pub(super) fn apply(c: &mut SessionConfig, e: &Entry) -> Result<(), String> {
    // CherryPy's log-in tool, configured beside the sessions it runs on.
    let auth = e
        .key
        .strip_prefix("tools.session_auth.")
        .or_else(|| e.key.strip_prefix("session_auth."));
    if let Some(key) = auth {
        return match c.auth.set(key, &e.value)? {
            true => Ok(()),
            false => Err("unknown session_auth key (on, htpasswd, session_key, debug)".into()),
        };
    }
    let key = e
        .key
        .strip_prefix("tools.sessions.")
        .or_else(|| e.key.strip_prefix("sessions."))
        .ok_or_else(|| "unknown key (session keys are tools.sessions.*)".to_string())?;
    if c.storage.set(key, &e.value)? || c.set(key, &e.value)? {
        Ok(())
    } else {
        Err("unknown session key".into())
    }
}

pub(super) fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        _ => Err(format!("expected True or False, got {v}")),
    }
}

pub(super) fn string(v: &Value) -> Result<String, String> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        _ => Err(format!("expected a quoted string, got {v}")),
    }
}

pub(super) fn number(v: &Value) -> Result<f64, String> {
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
pub(super) fn fraction(s: &str) -> Option<f64> {
    let (a, b) = s.split_once('/')?;
    let (a, b): (f64, f64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (b != 0.0).then(|| a / b)
}

pub(super) fn duration_minutes(v: &Value) -> Result<Duration, String> {
    Ok(minutes(number(v)?))
}
