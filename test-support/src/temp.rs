//! Fresh places for a test's data, so that tests and runs never meet:
//! directories removed when dropped, Redis key prefixes and PostgreSQL
//! table names of their own.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `n` random lowercase hex digits (at most 40).
pub fn random_hex(n: usize) -> String {
    server_sessions::SessionId::generate().unwrap().to_string()[..n].to_owned()
}

/// A new, empty directory `sessions-<tag>-<random>` under the system's
/// temporary directory, removed with everything in it when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sessions-{tag}-{}", random_hex(12)));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Redis key prefix of one test's own. Its keys carry TTLs, so what a
/// failed test leaves expires by itself.
pub fn unique_prefix() -> String {
    format!("test:{}:", random_hex(12))
}

/// A PostgreSQL table name of one test's own, `test_<unix seconds>_<random>`:
/// the seconds let `stores::postgres_admin` drop the tables of runs that
/// ended long ago without dropping their own.
pub fn unique_table() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("test_{secs}_{}", random_hex(12))
}
