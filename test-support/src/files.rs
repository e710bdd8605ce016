//! The file store's side of the disk, for the tests that look behind it:
//! where it keeps an id's data and lock, what a directory holds, and a wait
//! for what it tidies in the background.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use server_sessions::store::Error;
use server_sessions::store::StoreKey;

/// The file store's default largest record.
pub const MAX: usize = 64 * 1024;

pub fn data_path(dir: &Path, key: &StoreKey) -> PathBuf {
    dir.join(format!("session-{key}"))
}

pub fn lock_path(dir: &Path, key: &StoreKey) -> PathBuf {
    dir.join(format!("session-{key}.lock"))
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Waits for something the store does in the background (a released lock
/// is tidied on the blocking pool), at most five seconds.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether a lock call gave up waiting.
pub fn is_timeout<T>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::LockTimeout(_)))
}

/// Gives `path` to `nobody`, for the checks of files owned by another
/// user; false if this process may not (it does not run as root).
pub fn chown_to_nobody(path: &Path) -> bool {
    std::os::unix::fs::lchown(path, Some(65534), Some(65534)).is_ok()
}
