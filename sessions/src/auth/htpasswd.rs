//! [`Htpasswd`]: users from an Apache htpasswd file, bcrypt entries only
//! (`htpasswd -B`), as a log-in [`Backend`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{AuthUser, Backend};
use crate::user::UserId;

/// A user of an htpasswd file: the name and the stored hash, which is the
/// fingerprint (so `htpasswd -B FILE name` ends that user's other sessions).
#[derive(Debug, Clone)]
pub struct HtpasswdUser {
    name: UserId,
    hash: Arc<str>,
}

impl HtpasswdUser {
    /// The user's name.
    pub fn name(&self) -> &UserId {
        &self.name
    }
}

impl AuthUser for HtpasswdUser {
    fn id(&self) -> UserId {
        self.name.clone()
    }
    fn fingerprint(&self) -> &[u8] {
        self.hash.as_bytes()
    }
}

/// An htpasswd file, read again whenever it changes (its modification time
/// or size), so that `htpasswd -B` takes effect without a restart. Lines
/// are `name:hash`; `#` comments and blank lines are skipped. Only bcrypt
/// hashes (`$2y$`, `$2b$`, `$2a$`) are accepted: an entry in another
/// scheme (MD5 `$apr1$`, SHA-1, crypt) can never log in, and is logged
/// once per read of the file.
#[derive(Debug, Clone)]
pub struct Htpasswd {
    path: PathBuf,
    cache: Arc<Mutex<Option<Read>>>,
}

#[derive(Debug)]
struct Read {
    stamp: (Option<SystemTime>, u64),
    users: Arc<HashMap<String, Arc<str>>>,
}

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the htpasswd file {path}")]
pub struct HtpasswdError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl Htpasswd {
    /// Users from the file at `path` (read on first use).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Htpasswd {
            path: path.into(),
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The users, from the cache while the file is unchanged. Blocking:
    /// called on tokio's blocking pool.
    fn users(&self) -> Result<Arc<HashMap<String, Arc<str>>>, HtpasswdError> {
        let error = |source| HtpasswdError {
            path: self.path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(error)?;
        let stamp = (meta.modified().ok(), meta.len());
        // A poisoned cache only means a panic while it was replaced.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(read) = &*cache {
            if read.stamp == stamp {
                return Ok(Arc::clone(&read.users));
            }
        }
        let text = std::fs::read_to_string(&self.path).map_err(error)?;
        let users = Arc::new(parse(&text, &self.path));
        *cache = Some(Read {
            stamp,
            users: Arc::clone(&users),
        });
        Ok(users)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Htpasswd) -> Result<T, HtpasswdError> + Send + 'static,
    ) -> Result<T, HtpasswdError> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || f(&this)).await {
            Ok(r) => r,
            Err(e) => Err(HtpasswdError {
                path: self.path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

fn parse(text: &str, path: &Path) -> HashMap<String, Arc<str>> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            tracing::warn!(file = %path.display(), line = n + 1, "htpasswd line without ':' skipped");
            continue;
        };
        if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
            tracing::warn!(
                file = %path.display(),
                line = n + 1,
                "htpasswd entry is not bcrypt (use htpasswd -B); it cannot log in"
            );
            continue;
        }
        users.insert(name.to_owned(), Arc::from(hash));
    }
    users
}

impl Backend for Htpasswd {
    type User = HtpasswdUser;
    /// A user name and a password.
    type Credentials = (String, String);
    type Error = HtpasswdError;

    async fn authenticate(
        &self,
        (name, password): (String, String),
    ) -> Result<Option<HtpasswdUser>, HtpasswdError> {
        // bcrypt is slow on purpose: off the async workers.
        self.blocking(move |this| {
            let users = this.users()?;
            let Some(hash) = users.get(&name) else {
                return Ok(None);
            };
            let Ok(id) = UserId::new(name.as_str()) else {
                return Ok(None);
            };
            Ok(bcrypt::verify(&password, hash)
                .unwrap_or(false)
                .then(|| HtpasswdUser {
                    name: id,
                    hash: Arc::clone(hash),
                }))
        })
        .await
    }

    async fn get_user(&self, id: &UserId) -> Result<Option<HtpasswdUser>, HtpasswdError> {
        let id = id.clone();
        self.blocking(move |this| {
            let users = this.users()?;
            Ok(users.get(id.as_str()).map(|hash| HtpasswdUser {
                name: id,
                hash: Arc::clone(hash),
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bcrypt_entries_log_in_others_do_not() {
        let dir = std::env::temp_dir().join(format!("htpasswd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users");
        // Cost 4: the lowest bcrypt allows, to keep the test fast.
        let hash = bcrypt::hash("s3cret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        std::fs::write(
            &file,
            format!("# users\nalice:{hash}\nbob:$apr1$abc$def\nbroken line\n"),
        )
        .unwrap();
        let users = Htpasswd::new(&file);
        let ok = |n: &str, p: &str| (n.to_owned(), p.to_owned());
        let alice = users
            .authenticate(ok("alice", "s3cret"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alice.name().as_str(), "alice");
        assert_eq!(alice.fingerprint(), hash.as_bytes());
        assert!(users
            .authenticate(ok("alice", "wrong"))
            .await
            .unwrap()
            .is_none());
        assert!(
            users.authenticate(ok("bob", "x")).await.unwrap().is_none(),
            "MD5 refused"
        );
        assert!(users
            .authenticate(ok("carol", "x"))
            .await
            .unwrap()
            .is_none());
        let id = UserId::new("alice").unwrap();
        assert!(users.get_user(&id).await.unwrap().is_some());
        // A change of the file is seen (a new size, whatever the clock).
        std::fs::write(&file, "# nobody\n").unwrap();
        assert!(users.get_user(&id).await.unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            users.get_user(&id).await.is_err(),
            "a missing file is an error"
        );
    }
}
