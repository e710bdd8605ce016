//! [`SessionAuthConfig`]: CherryPy's `tools.session_auth.*` keys, which
//! turn on the log-in tool ([`auth::SessionAuthLayer`](crate::auth)) for a
//! path and below.

use std::path::PathBuf;

/// The settings of CherryPy's `session_auth` tool for one path, read from
/// `tools.session_auth.*` (INI) or `session_auth.*` (TOML) and inherited
/// by sub-paths as the session keys are. They mean something only where a
/// `SessionAuthLayer` is installed and sessions are on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionAuthConfig {
    /// `on`: visitors of this path and below must log in.
    pub on: bool,
    /// `htpasswd`: an Apache htpasswd file of bcrypt entries
    /// (`htpasswd -B`) to check user names and passwords against.
    pub htpasswd: Option<PathBuf>,
    /// `session_key`: the session key that also holds the user name, as
    /// CherryPy keeps it (`username`), for handlers written for CherryPy.
    pub session_key: String,
    /// `debug`: log each decision at info level, as CherryPy's
    /// `TOOLS.SESSAUTH` messages.
    pub debug: bool,
}

impl Default for SessionAuthConfig {
    fn default() -> Self {
        SessionAuthConfig {
            on: false,
            htpasswd: None,
            session_key: "username".into(),
            debug: false,
        }
    }
}

#[cfg(feature = "config-file")]
impl SessionAuthConfig {
    /// Gives the key `key` (without its `tools.session_auth.` prefix) its
    /// meaning; `Ok(false)` if it is not one.
    pub(super) fn set(&mut self, key: &str, v: &super::keys::Value) -> Result<bool, String> {
        use super::keys::{boolean, string, Value};
        match key {
            "on" => self.on = boolean(v)?,
            "htpasswd" => {
                self.htpasswd = match v {
                    Value::None => None,
                    _ => Some(PathBuf::from(string(v)?)),
                }
            }
            "session_key" => {
                let k = string(v)?;
                if k.is_empty() {
                    return Err("must not be empty".into());
                }
                self.session_key = k;
            }
            "debug" => self.debug = boolean(v)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}
