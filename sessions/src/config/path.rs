//! A config file's sections: read in either syntax, `[global]` split into
//! server settings and settings for every path, each `[/path]` inheriting
//! its parent's settings key by key, and the whole checked (required store
//! settings, cookie rules, one store per server) into a [`Config`].

use std::path::Path;
use std::sync::Arc;

use super::keys::{apply, apply_global, Entry};
use super::{covers, ini, toml, Config, Error, ServerConfig, SessionConfig, StorageConfig};

/// A parsed section, before inheritance.
#[derive(Debug, Clone)]
pub(super) struct RawSection {
    pub(super) name: String,
    pub(super) line: usize,
    pub(super) entries: Vec<Entry>,
}

#[cfg_attr(docsrs, doc(cfg(feature = "config-file")))]
impl Config {
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

/// A section with sessions on names what its store needs.
fn check_storage(config: &SessionConfig, file: &str, line: usize) -> Result<(), Error> {
    let s = &config.storage;
    match s.missing() {
        None => Ok(()),
        Some((key, what)) => Err(Error::Key {
            file: file.into(),
            line,
            key: format!("tools.sessions.{key}"),
            message: format!(
                "required for storage_type = \"{}\": {what}",
                s.kind.as_str()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Locking, SameSite, StorageType};
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
}
