//! The names in the session directory: each session's paths, and what a
//! directory entry's name says it is.

use std::path::{Path, PathBuf};

use super::{Inner, TEMP_PREFIX};
use crate::id::{SessionId, StoreKey};

/// What a directory entry's name says it is. Only names this store could
/// have made are ever acted on.
pub(super) enum Name {
    Data(StoreKey),
    Lock(StoreKey),
    Turn(StoreKey),
    Temp,
    /// `session-<id>` (or its `.lock`, when `lock`), as versions before
    /// store keys named them, and as CherryPy names them: never loaded.
    Earlier {
        lock: bool,
    },
    Other,
}

impl Name {
    pub(super) fn of(name: &[u8]) -> Name {
        if let Some(rest) = name.strip_prefix(b"session-") {
            if let Some(hex) = rest.strip_suffix(b".turn") {
                return match StoreKey::from_bytes(hex) {
                    Ok(key) => Name::Turn(key),
                    Err(_) => Name::Other,
                };
            }
            let (hex, lock) = match rest.strip_suffix(b".lock") {
                Some(hex) => (hex, true),
                None => (rest, false),
            };
            match StoreKey::from_bytes(hex) {
                Ok(key) if lock => Name::Lock(key),
                Ok(key) => Name::Data(key),
                Err(_) if SessionId::from_bytes(hex).is_ok() => Name::Earlier { lock },
                Err(_) => Name::Other,
            }
        } else if name.starts_with(TEMP_PREFIX.as_bytes()) {
            Name::Temp
        } else {
            Name::Other
        }
    }
}

impl Inner {
    pub(super) fn data_path(&self, key: &StoreKey) -> PathBuf {
        self.dir.join(format!("session-{}", &*key.as_hex()))
    }

    pub(super) fn lock_path(&self, key: &StoreKey) -> PathBuf {
        self.dir.join(format!("session-{}.lock", &*key.as_hex()))
    }

    pub(super) fn turn_path(&self, key: &StoreKey) -> PathBuf {
        self.dir.join(format!("session-{}.turn", &*key.as_hex()))
    }
}

/// `session-<…>.lock` beside `session-<…>`.
pub(super) fn lock_path_of(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let key = StoreKey::generate().unwrap();
        let hex = key.as_hex();
        assert!(
            matches!(Name::of(format!("session-{}", &*hex).as_bytes()), Name::Data(i) if i == key)
        );
        assert!(
            matches!(Name::of(format!("session-{}.lock", &*hex).as_bytes()), Name::Lock(i) if i == key)
        );
        assert!(matches!(Name::of(b".tmp-abc"), Name::Temp));
        for other in [
            &b"session-"[..],
            b"session-../../etc/passwd",
            format!("session-{}", hex.to_uppercase()).as_bytes(),
            format!("session-{}.lock.lock", &*hex).as_bytes(),
            format!("xsession-{}", &*hex).as_bytes(),
        ] {
            assert!(matches!(Name::of(other), Name::Other));
        }
    }
}
