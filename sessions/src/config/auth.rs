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

#[cfg(all(test, feature = "config-file"))]
mod tests {
    use crate::Config;

    #[test]
    fn session_auth_keys_are_read_and_inherited() {
        let ini = "[/]\ntools.sessions.on = True\ntools.sessions.save_uninitialized = False\n\
                   [/admin]\ntools.session_auth.on = True\n\
                   tools.session_auth.htpasswd = '/etc/users'\n\
                   tools.session_auth.session_key = 'login'\n\
                   [/admin/open]\ntools.session_auth.on = False\n";
        let c = Config::from_ini_str(ini, "t.ini").unwrap();
        assert!(!c.resolve("/").auth.on);
        assert!(!c.resolve("/").save_uninitialized);
        let admin = &c.resolve("/admin/page").auth;
        assert!(admin.on);
        assert_eq!(
            admin.htpasswd.as_deref(),
            Some(std::path::Path::new("/etc/users"))
        );
        assert_eq!(admin.session_key, "login");
        let open = &c.resolve("/admin/open").auth;
        assert!(!open.on);
        assert_eq!(open.session_key, "login", "inherited key by key");

        let toml =
            "[\"/\"]\nsessions.on = true\nsession_auth.on = true\nsession_auth.htpasswd = \"u\"\n";
        let c = Config::from_toml_str(toml, "t.toml").unwrap();
        assert!(c.resolve("/x").auth.on);
        assert!(c.resolve("/x").save_uninitialized, "CherryPy's default");
    }

    #[test]
    fn bad_session_auth_keys_name_the_line() {
        for (ini, says) in [
            (
                "[/]\ntools.session_auth.colour = 'red'\n",
                "t.ini:2: tools.session_auth.colour: unknown session_auth key",
            ),
            (
                "[/]\ntools.session_auth.on = 'yes'\n",
                "t.ini:2: tools.session_auth.on: expected True or False",
            ),
            (
                "[/]\ntools.session_auth.session_key = ''\n",
                "must not be empty",
            ),
            (
                "[/]\ntools.session_auth.htpasswd = 3\n",
                "expected a quoted string",
            ),
        ] {
            let e = Config::from_ini_str(ini, "t.ini").unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
