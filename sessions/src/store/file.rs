//! The file store: one file per session in a directory, locked across
//! processes with advisory locks on a lock file per session (CherryPy's
//! `FileSession`, with its races closed).
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use server_sessions::{store::FileStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, server_sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), server_sessions::store::Error> {
//! let store = FileStore::open("/var/lib/myapp/sessions")?.with_fsync(true);
//! let app: Router = Router::new()
//!     .route("/cart", get(cart))
//!     .layer(SessionLayer::new(store));
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! Layout of the directory (mode 0700, every file 0600), where `<key>` is
//! the session's [`StoreKey`] (64 hex characters, never the id):
//!
//! | name | what |
//! |---|---|
//! | `session-<key>` | the record, in [`Record::encode`]'s checksummed format |
//! | `session-<key>.lock` | the lock file; `flock`ed while the session is locked |
//! | `session-<key>.turn` | another process's claim on the lock's next turn, while it waits (`file/turn.rs`) |
//! | `.tmp-…` | a record being written; renamed over `session-<key>` when complete |
//! | `users/<user>/<key>` | the user index: an empty file per session of a user (see below) |
//!
//! `<user>` is the user id's [`index_key`](crate::UserId::index_key), the
//! SHA-256 of the id, so no user name reaches a file name. How the index
//! stays in step with the records, crashes included, is described in
//! `file/users.rs`: an entry too many is possible for a while, one too few
//! never.
//!
//! Everything that touches the file system runs on tokio's blocking pool,
//! never on an async worker.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{Error, LockGuard, LockWaits, SaveIf, SessionAdmin, SessionStore};
use crate::id::{shard_of, KeyMap, StoreKey};
use crate::record::{now_millis, Millis, Record};
use crate::user::UserId;

mod lock;
mod names;
mod records;
mod scan;
mod turn;
mod users;

use self::records::Fingerprint;
use self::users::UserIndex;

const SHARDS: usize = 64;
const DEFAULT_MAX_SIZE: usize = 64 * 1024;
const TEMP_PREFIX: &str = ".tmp-";
/// A temporary file this old belongs to a writer that died: no live writer
/// takes a minute between creating its file and renaming it.
const STALE_TEMP: Duration = Duration::from_secs(60);
/// Directory entries handled per trip to the blocking pool.
const BATCH: usize = 256;
/// Bound on the memory spent remembering which bad files were logged.
const WARNED_MAX: usize = 4096;

/// Sessions kept as files in one directory (CherryPy's `FileSession`),
/// shared by every process on the host — or on hosts sharing the volume —
/// that opens the same directory.
///
/// - **Writes are atomic**: a record is written to a temporary file in the
///   same directory and renamed over the old one, so a reader, or a
///   restart after `kill -9`, sees the old record or the new one, never a
///   mix. [`with_fsync`](Self::with_fsync) makes them durable across a power
///   loss too.
/// - **Locks work across processes**: tasks of one process queue on an
///   in-process async lock, and the one at the front takes an advisory
///   `flock` on `session-<key>.lock`, which a process that dies releases
///   with its file descriptors.
/// - **Nothing is trusted**: files are opened with `O_NOFOLLOW`, must be
///   regular files of this user, are read only up to the size limit, and a
///   damaged, foreign or oversized record is logged once and treated as
///   missing.
/// - **One limit across processes**: a save checks its precondition and
///   renames its record into place under a lock of this process only, so
///   a delete by *another* process without the session's lock (an admin
///   command, or ending a user's sessions there) that falls between the
///   two is undone by the save. Requests that hold the session's lock
///   (the default, implicit locking) never meet this among themselves.
///
/// Cloning is cheap and shares the store.
///
/// ```no_run
/// use server_sessions::store::{FileStore, SessionStore, SaveIf};
/// use server_sessions::{SessionId, store::Record};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), server_sessions::store::Error> {
/// let store = FileStore::open("/var/lib/myapp/sessions")?.with_fsync(true);
/// let key = SessionId::generate().unwrap().store_key();
/// let now = server_sessions::store::now_millis();
/// let record = Record { data: br#"{"n":1}"#.to_vec(), created: now, expires: now + 60_000, timeout: None, user: None };
/// let (guard, loaded) = store.lock_and_load(&key, Duration::from_secs(30)).await?;
/// assert_eq!(loaded, None);
/// guard.save_and_release(&record, SaveIf::Absent).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    dir: PathBuf,
    /// This process's user, learnt from a file it created (see `probe_uid`).
    uid: u32,
    /// The size of a record's header, so reads can be bounded to
    /// `max_size + header` bytes.
    header: usize,
    fsync: bool,
    max_size: usize,
    locks: Arc<LockWaits>,
    /// Serialise the check and the rename of a conditional save against
    /// other writers of the same session in this process.
    shards: Arc<[Mutex<()>]>,
    /// The bad files already logged, so a client that keeps sending the id
    /// of a damaged session does not flood the log.
    warned: Arc<Mutex<KeyMap<Fingerprint>>>,
    users: UserIndex,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .field("fsync", &self.inner.fsync)
            .field("max_size", &self.inner.max_size)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens the store in `dir`, creating the directory (mode 0700) if it
    /// is missing.
    ///
    /// Refuses a path that is a symbolic link, not a directory, or owned by
    /// another user. An existing directory that other users can enter is
    /// restricted to 0700, with a warning: file names are store keys, which
    /// open no session, but a listing would still show every session.
    ///
    /// This does a little blocking I/O; call it at start-up.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore, Error> {
        let dir = dir.as_ref().to_path_buf();
        let fail = |e| Error::unavailable("opening the session directory", e);
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(fail)?,
            Err(e) => return Err(fail(e)),
            Ok(_) => {}
        }
        let meta = fs::symlink_metadata(&dir).map_err(fail)?;
        if meta.file_type().is_symlink() {
            return Err(fail(refused(&dir, "is a symbolic link")));
        }
        if !meta.is_dir() {
            return Err(fail(refused(&dir, "is not a directory")));
        }
        let uid = probe_uid(&dir).map_err(fail)?;
        if meta.uid() != uid {
            return Err(fail(refused(&dir, "is owned by another user")));
        }
        if meta.mode() & 0o077 != 0 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(fail)?;
            tracing::warn!(
                dir = %dir.display(),
                "the session directory was open to other users; its mode is now 0700"
            );
        }
        Ok(FileStore {
            inner: Arc::new(Inner {
                users: UserIndex::new(&dir),
                dir,
                uid,
                header: Record::MAX_HEADER,
                fsync: false,
                max_size: DEFAULT_MAX_SIZE,
                locks: LockWaits::new(),
                shards: (0..SHARDS).map(|_| Mutex::new(())).collect(),
                warned: Arc::default(),
            }),
        })
    }

    /// Whether to `fsync` each written file and the directory after each
    /// rename or removal, so that a save or a delete survives a power loss
    /// (default: off; atomicity against crashes of the process does not
    /// need it).
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        Arc::make_mut(&mut self.inner).fsync = fsync;
        self
    }

    /// The largest session data, in bytes, the store writes or reads
    /// (default 64 KiB). A larger stored file is treated as missing without
    /// being read; a larger save is an error. Set it to at least the
    /// layer's `max_size`.
    pub fn with_max_size(mut self, max_size: usize) -> Self {
        Arc::make_mut(&mut self.inner).max_size = max_size;
        self
    }

    fn encode(&self, record: &Record) -> Result<Vec<u8>, Error> {
        self.inner.encode(record)
    }
}

impl FileStore {
    /// The file store a config describes: [`open`](Self::open) in its
    /// `storage_path`, with its `file_fsync`, holding sessions up to the
    /// largest `max_size` of any section (what
    /// [`store::open`](crate::store::open) builds for `storage_type =
    /// "file"`).
    pub fn from_config(config: &crate::Config) -> Result<FileStore, super::OpenError> {
        let storage = config.storage();
        Ok(Self::open(super::open::path(storage)?)?
            .with_fsync(storage.file_fsync)
            .with_max_size(config.largest_max_size()))
    }
}

#[async_trait]
impl SessionStore for FileStore {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, Error> {
        let (inner, key) = (Arc::clone(&self.inner), *key);
        blocking("loading a session", move || inner.load(&key)).await
    }

    async fn save(&self, key: &StoreKey, record: &Record, write: SaveIf) -> Result<bool, Error> {
        let (bytes, user) = (self.encode(record)?, record.user.clone());
        let (inner, key) = (Arc::clone(&self.inner), *key);
        blocking("saving a session", move || {
            inner.save(&key, &bytes, user, write)
        })
        .await
    }

    async fn touch(&self, key: &StoreKey, expires: Millis) -> Result<bool, Error> {
        let (inner, key) = (Arc::clone(&self.inner), *key);
        blocking("refreshing a session", move || inner.touch(&key, expires)).await
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), Error> {
        let (inner, key) = (Arc::clone(&self.inner), *key);
        blocking("deleting a session", move || inner.delete(&key)).await
    }

    async fn acquire(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        let (lock, record) = self.take_lock(key, wait, load).await?;
        Ok((LockGuard::new(lock), record))
    }

    async fn sessions_of(&self, user: &UserId) -> Result<Vec<(StoreKey, Record)>, Error> {
        let (inner, user) = (Arc::clone(&self.inner), user.clone());
        blocking("listing a user's sessions", move || {
            inner.sessions_of(&user)
        })
        .await
    }
}

/// The blocking half of the store, here and in each part's `impl Inner`
/// (`lock.rs`, `names.rs`, `records.rs`, `scan.rs`). Every method here does
/// file I/O and runs on the blocking pool.
impl Inner {
    /// The record's bytes, or the refusal of one this store could not read
    /// back (which would be a silent loss).
    fn encode(&self, record: &Record) -> Result<Vec<u8>, Error> {
        if record.data.len() > self.max_size {
            return Err(Error::TooLarge {
                size: record.data.len(),
                max: self.max_size,
            });
        }
        Ok(record.encode())
    }

    fn shard(&self, key: &StoreKey) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a panic while it was held leaves
        // nothing inconsistent.
        self.shards[shard_of(key, self.shards.len())]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The live sessions listed under `user` whose record names that user.
    fn sessions_of(&self, user: &UserId) -> io::Result<Vec<(StoreKey, Record)>> {
        let now = now_millis();
        let mut found = Vec::new();
        for entry in self.users.entries(user)? {
            let record = self.live(&entry.key, &self.data_path(&entry.key), now)?;
            if let Some(record) = record.filter(|r| r.user.as_ref() == Some(user)) {
                found.push((entry.key, record));
            }
        }
        Ok(found)
    }
}

/// Runs file I/O on the blocking pool.
async fn blocking<T, F>(context: &'static str, f: F) -> Result<T, Error>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(done) => done.map_err(|e| Error::unavailable(context, e)),
        // A panic in the store is a bug, but still only this request's
        // failure: answer it as an unavailable store.
        Err(e) => Err(Error::unavailable(context, e)),
    }
}

/// The uid of this process, from a file it creates: `geteuid` would need
/// `unsafe`. The probe also proves the directory writable before the first
/// request finds out.
fn probe_uid(dir: &Path) -> io::Result<u32> {
    let path = dir.join(format!("{TEMP_PREFIX}open-{:016x}", random()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    let uid = file.metadata().map(|meta| meta.uid());
    fs::remove_file(&path)?;
    uid
}

/// Whether `path` is a file, a symlink or anything else, without following it.
fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a file; `false` if it was already gone.
fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{} {why}", path.display()),
    )
}

/// A number for temporary file names. They only need to differ, and
/// `O_EXCL` makes a clash harmless, so a failing random source falls back
/// to a counter.
fn random() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    getrandom::u64().unwrap_or_else(|_| {
        (u64::from(std::process::id()) << 32) ^ NEXT.fetch_add(1, Ordering::Relaxed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a directory of its own, for the unit tests of each part.
    pub(super) fn scratch() -> (FileStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "sessions-file-unit-{}",
            &*StoreKey::generate().unwrap().as_hex()
        ));
        (FileStore::open(&dir).unwrap(), dir)
    }
}
