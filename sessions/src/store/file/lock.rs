//! The file store's lock: an advisory `flock` on `session-<key>.lock`,
//! asked for by the task at the front of this process's queue and polled
//! with the crate's backoff; the held lock (`FileLock`) and its release;
//! the removal of lock files nobody holds.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{blocking, exists, refused, remove, turn, FileStore, Inner};
use crate::id::{SessionId, StoreKey};
use crate::record::Record;
use crate::store::{Error, LocalGuard, SaveIf, SessionLock};

impl FileStore {
    /// Takes the session's lock, loading the record in the same trip to the
    /// blocking pool when `load` is set.
    pub(super) async fn take_lock(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(FileLock, Option<Record>), Error> {
        // Tasks of this process queue here first: waiting on an async lock
        // costs no thread and no polling, and only the task at the front
        // competes with other processes for the flock.
        let mut waiter = self.inner.locks.enter(key, wait).await?;
        let context = if load {
            "locking and loading a session"
        } else {
            "locking a session"
        };
        // Names this waiter's claim on the next turn (`file/turn.rs`).
        let owner: Arc<str> = SessionId::generate()
            .map_err(|e| Error::unavailable("drawing a lock owner token", e))?
            .to_string()
            .into();
        let mut opened = None;
        let key = *key;
        loop {
            let (inner, mine) = (Arc::clone(&self.inner), Arc::clone(&owner));
            let attempt = blocking(context, move || {
                let turn = inner.turn_path(&key);
                let flock = if turn::others(&turn, &mine)? {
                    Flock::Busy(opened)
                } else {
                    inner.try_flock(&key, opened)?
                };
                match flock {
                    Flock::Held(file) => {
                        turn::end(&turn, &mine)?;
                        let record = if load { inner.load(&key)? } else { None };
                        Ok(Ok((file, record)))
                    }
                    Flock::Busy(file) => {
                        turn::claim(&turn, &mine)?;
                        Ok(Err(file))
                    }
                }
            })
            .await?;
            match attempt {
                Ok((file, record)) => {
                    let held = Held {
                        file,
                        local: waiter.granted(),
                        inner: Arc::clone(&self.inner),
                        key,
                    };
                    return Ok((FileLock(Some(held)), record));
                }
                Err(file) => opened = file,
            }
            // flock has no bounded wait, and a blocking one would hold a
            // pool thread for as long as the other process keeps the lock;
            // nor does it notify: poll it, with the crate's backoff, which
            // stays short because session locks are held for a request.
            if let Err(timeout) = waiter.pause().await {
                // Giving up: the claim on the next turn goes too, so that
                // nobody waits for it to lapse (a waiter that is dropped
                // instead leaves it to lapse, and to clean-up).
                let path = self.inner.turn_path(&key);
                let _ = blocking(context, move || turn::withdraw(&path, &owner)).await;
                return Err(timeout);
            }
        }
    }
}

/// A held session lock: the flocked lock file and the in-process lock.
pub(super) struct FileLock(Option<Held>);

#[async_trait]
impl SessionLock for FileLock {
    async fn save_and_release(
        mut self: Box<Self>,
        record: &Record,
        write: SaveIf,
    ) -> Result<bool, Error> {
        let Some(held) = self.0.take() else {
            return Ok(false);
        };
        let bytes = match held.inner.encode(record) {
            Ok(bytes) => bytes,
            Err(e) => {
                drop(FileLock(Some(held)));
                return Err(e);
            }
        };
        let user = record.user.clone();
        // One trip to the pool for both; the release happens even when the
        // save fails.
        blocking("saving a session", move || {
            let saved = held.inner.save(&held.key, &bytes, user, write);
            held.release();
            saved
        })
        .await
    }
}

struct Held {
    file: File,
    local: LocalGuard,
    inner: Arc<Inner>,
    key: StoreKey,
}

impl Held {
    /// Removes the lock file if the session has no data, then releases the
    /// flock and the in-process lock. Blocking.
    fn release(self) {
        let Held {
            file,
            local,
            inner,
            key,
        } = self;
        // A lock taken on a session that was never saved (a client can send
        // any well-formed id) or was deleted would leave an empty file behind
        // until clean-up: unbounded for a client sending random ids. It is
        // removed while the flock is still held, the order clean-up uses,
        // so that a process waiting on this file notices and opens anew.
        if matches!(exists(&inner.data_path(&key)), Ok(false)) {
            let _ = fs::remove_file(inner.lock_path(&key));
        }
        // Closing the file releases the flock before the local lock lets the
        // next task of this process try for it.
        drop(file);
        drop(local);
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let Some(held) = self.0.take() else { return };
        // Releasing touches the file system, so it goes to the blocking pool
        // when there is one. Should the runtime be shutting down and drop
        // the task unrun, dropping `held` still closes the file, which
        // releases the flock; only the tidying is skipped.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || held.release())),
            Err(_) => held.release(),
        }
    }
}

/// The outcome of one try for the flock.
enum Flock {
    Held(File),
    /// Someone else holds it; the open lock file, if any, for the next try.
    Busy(Option<File>),
}

impl Inner {
    /// Opens (or creates) a lock file; it must be a regular file of this
    /// user.
    fn open_lock_file(&self, path: &Path, create: bool) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.uid() != self.uid {
            return Err(refused(
                path,
                "is not a regular file owned by this user; not used as a lock",
            ));
        }
        Ok(file)
    }

    /// One try for the session's flock, without waiting.
    ///
    /// A lock on a file that clean-up (or a release) has unlinked meanwhile
    /// would exclude nobody, since the next locker creates a new file; so
    /// after taking the flock, the file held must still be the one at the
    /// path, or it is dropped and the new one tried. Lock files are only
    /// ever unlinked by a holder of their flock, which makes a file that
    /// passes this check stay at its path for as long as it is held.
    fn try_flock(&self, key: &StoreKey, opened: Option<File>) -> io::Result<Flock> {
        let path = self.lock_path(key);
        let mut file = match opened {
            Some(file) => file,
            None => self.open_lock_file(&path, true)?,
        };
        // Each retry means the file was removed just now; a few in a row
        // can only be a storm of clean-ups, and the caller's next round
        // tries again.
        for _ in 0..4 {
            match flock_nb(&file) {
                Ok(()) if same_file(&file, &path)? => return Ok(Flock::Held(file)),
                Ok(()) => file = self.open_lock_file(&path, true)?,
                Err(TryLockError::WouldBlock) => return Ok(Flock::Busy(Some(file))),
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(Flock::Busy(None))
    }

    /// The session's flock if it is free right now and the lock file is (or,
    /// with `create`, can be made) in place; `None` otherwise.
    pub(super) fn flock_now(&self, path: &Path, create: bool) -> io::Result<Option<File>> {
        let file = match self.open_lock_file(path, create) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match flock_nb(&file) {
            Ok(()) if same_file(&file, path)? => Ok(Some(file)),
            Ok(()) | Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Removes the session's lock file if nobody holds or awaits the lock and
    /// the session has no data.
    pub(super) fn remove_orphan_lock(&self, key: &StoreKey) -> io::Result<bool> {
        // In use here: its release tidies up. Checked first because it
        // costs no table entry.
        if self.locks.is_busy(key) {
            return Ok(false);
        }
        let Some(_local) = self.locks.try_local(key) else {
            return Ok(false);
        };
        let path = self.lock_path(key);
        let Some(file) = self.flock_now(&path, false)? else {
            return Ok(false);
        };
        let _shard = self.shard(key);
        if exists(&self.data_path(key))? {
            return Ok(false);
        }
        let removed = remove(&path)?;
        drop(file);
        Ok(removed)
    }
}

/// `flock(LOCK_EX | LOCK_NB)`, through std (Rust 1.89+) rather than libc's
/// `flock`, which would be an `unsafe` call the crate forbids.
fn flock_nb(file: &File) -> Result<(), TryLockError> {
    file.try_lock()
}

/// Whether `file` is the file now at `path`.
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::scratch;
    use super::*;
    use crate::store::SessionStore;

    #[tokio::test]
    async fn release_removes_the_lock_file_of_a_session_without_data() {
        let (store, dir) = scratch();
        let key = StoreKey::generate().unwrap();
        let lock_path = store.inner.lock_path(&key);
        let guard = store.lock(&key, Duration::from_secs(1)).await.unwrap();
        assert!(lock_path.exists());
        drop(guard);
        // The release runs on the blocking pool.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lock_path.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!lock_path.exists());
        assert!(store.inner.locks.is_idle());
        fs::remove_dir_all(dir).unwrap();
    }
}
