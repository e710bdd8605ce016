//! The file store: one file per session in a directory, locked across
//! processes with advisory locks on a lock file per session (CherryPy's
//! `FileSession`, with its races closed).
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use sessions::{store::FileStore, Session, SessionLayer};
//!
//! async fn cart(session: Session) -> Result<String, sessions::Error> {
//!     let items: Vec<u32> = session.get("cart").await?.unwrap_or_default();
//!     Ok(format!("{} items", items.len()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sessions::store::Error> {
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
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};

use super::{
    Error, LocalGuard, LockGuard, LockWaits, OnExpired, SaveIf, SessionAdmin, SessionLock,
    SessionStore,
};
use crate::id::{shard_of, KeyMap};
use crate::id::{SessionId, StoreKey};
use crate::record::{now_millis, DecodeError, Millis, Record};
use crate::user::UserId;

mod turn;
mod users;

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
/// use sessions::store::{FileStore, SessionStore, SaveIf};
/// use sessions::{Record, SessionId};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sessions::store::Error> {
/// let store = FileStore::open("/var/lib/myapp/sessions")?.with_fsync(true);
/// let key = SessionId::generate().unwrap().store_key();
/// let now = sessions::now_millis();
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

    /// Takes the session's lock, loading the record in the same trip to the
    /// blocking pool when `load` is set.
    async fn take_lock(
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

    /// Walks the directory, `BATCH` entries per trip to the blocking pool,
    /// folding each entry into `acc`, and hands `acc` to `between` after
    /// each batch, back on the async side. The directory is streamed, never
    /// collected, and giving the pool back between batches keeps a huge
    /// directory from starving requests of threads and shard locks.
    async fn scan<A: Send + 'static>(
        &self,
        context: &'static str,
        mut acc: A,
        visit: Visit<A>,
        mut between: impl FnMut(&mut A) + Send,
    ) -> Result<A, Error> {
        let inner = Arc::clone(&self.inner);
        let mut entries = blocking(context, move || fs::read_dir(&inner.dir)).await?;
        loop {
            let inner = Arc::clone(&self.inner);
            let (rest, folded, done) = blocking(context, move || {
                let (mut entries, mut acc) = (entries, acc);
                let done = inner.batch(&mut entries, &mut acc, visit)?;
                Ok((entries, acc, done))
            })
            .await?;
            let mut folded = folded;
            between(&mut folded);
            if done {
                return Ok(folded);
            }
            (entries, acc) = (rest, folded);
            tokio::task::yield_now().await;
        }
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

#[async_trait]
impl SessionAdmin for FileStore {
    async fn count(&self) -> Result<u64, Error> {
        let counted = self
            .scan(
                "counting sessions",
                Count {
                    now: now_millis(),
                    live: 0,
                },
                Inner::count_entry,
                |_| {},
            )
            .await?;
        Ok(counted.live)
    }

    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        const CONTEXT: &str = "listing sessions";
        enum Listing {
            Start,
            Open(fs::ReadDir),
            Done,
        }
        let start = (Arc::clone(&self.inner), Listing::Start);
        stream::unfold(start, |(inner, listing)| async move {
            let entries = match listing {
                Listing::Done => return None,
                Listing::Open(entries) => entries,
                Listing::Start => {
                    let i = Arc::clone(&inner);
                    match blocking(CONTEXT, move || fs::read_dir(&i.dir)).await {
                        Ok(entries) => entries,
                        Err(e) => return Some((vec![Err(e)], (inner, Listing::Done))),
                    }
                }
            };
            let i = Arc::clone(&inner);
            let batch = blocking(CONTEXT, move || {
                let (mut entries, mut keys) = (entries, Vec::new());
                let done = i.batch(&mut entries, &mut keys, Inner::list_entry)?;
                Ok((entries, keys, done))
            })
            .await;
            Some(match batch {
                Ok((entries, keys, done)) => {
                    let next = if done {
                        Listing::Done
                    } else {
                        Listing::Open(entries)
                    };
                    (keys.into_iter().map(Ok).collect(), (inner, next))
                }
                Err(e) => (vec![Err(e)], (inner, Listing::Done)),
            })
        })
        .flat_map(stream::iter)
        .boxed()
    }

    async fn clean_up_and_report(&self, expired: OnExpired<'_>) -> Result<u64, Error> {
        // The index first, while the expired records it names are still
        // there to say so.
        let inner = Arc::clone(&self.inner);
        let dirs = blocking("cleaning up the user index", move || {
            inner.users.user_dirs()
        })
        .await?;
        for dir in dirs {
            let inner = Arc::clone(&self.inner);
            blocking("cleaning up the user index", move || {
                inner.clean_user_dir(&dir)
            })
            .await?;
        }
        let cleaned = self
            .scan(
                "cleaning up sessions",
                CleanUp {
                    now: now_millis(),
                    ..CleanUp::default()
                },
                Inner::clean_entry,
                |acc: &mut CleanUp| {
                    for (key, user) in acc.gone.drain(..) {
                        expired(key, user);
                    }
                },
            )
            .await?;
        if let Some(e) = &cleaned.first_error {
            tracing::warn!(
                skipped = cleaned.errors,
                "session clean-up skipped files it could not handle: {e}"
            );
        }
        tracing::debug!(removed = cleaned.removed, "session clean-up done");
        Ok(cleaned.removed)
    }
}

/// A held session lock: the flocked lock file and the in-process lock.
struct FileLock(Option<Held>);

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

/// What was found at a session's data path.
enum Stored {
    Absent,
    Record(Record),
    Unusable(Fingerprint, Problem),
}

/// Why a session file was not used.
#[derive(Debug)]
enum Problem {
    Symlink,
    NotRegular,
    OtherOwner,
    Unreadable(io::Error),
    Decode(DecodeError),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Symlink => f.write_str("a symbolic link"),
            Problem::NotRegular => f.write_str("not a regular file"),
            Problem::OtherOwner => f.write_str("owned by another user"),
            Problem::Unreadable(e) => write!(f, "unreadable: {e}"),
            Problem::Decode(e) => write!(f, "{e}"),
        }
    }
}

/// Tells one version of a file from another, so that each bad file is
/// logged once however often it is asked for, and again if it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Fingerprint {
    fn of(meta: &fs::Metadata) -> Self {
        Fingerprint {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// What a directory entry's name says it is. Only names this store could
/// have made are ever acted on.
enum Name {
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
    fn of(name: &[u8]) -> Name {
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

type Visit<A> = fn(&Inner, &fs::DirEntry, &mut A) -> io::Result<()>;

struct Count {
    now: Millis,
    live: u64,
}

#[derive(Default)]
struct CleanUp {
    now: Millis,
    removed: u64,
    /// The sessions removed since they were last told.
    gone: Vec<(StoreKey, Option<UserId>)>,
    errors: u64,
    first_error: Option<io::Error>,
}

/// A temporary file that is removed unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    installed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.installed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The blocking half of the store. Every method here does file I/O and runs
/// on the blocking pool.
impl Inner {
    fn data_path(&self, key: &StoreKey) -> PathBuf {
        self.dir.join(format!("session-{}", &*key.as_hex()))
    }

    fn lock_path(&self, key: &StoreKey) -> PathBuf {
        self.dir.join(format!("session-{}.lock", &*key.as_hex()))
    }

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

    fn turn_path(&self, key: &StoreKey) -> PathBuf {
        self.dir.join(format!("session-{}.turn", &*key.as_hex()))
    }

    fn shard(&self, key: &StoreKey) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a panic while it was held leaves
        // nothing inconsistent.
        self.shards[shard_of(key, self.shards.len())]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn load(&self, key: &StoreKey) -> io::Result<Option<Record>> {
        self.live(key, &self.data_path(key), now_millis())
    }

    /// The record at `path` if it is live; a bad file is logged and counts
    /// as no record.
    fn live(&self, key: &StoreKey, path: &Path, now: Millis) -> io::Result<Option<Record>> {
        Ok(match self.read(path)? {
            Stored::Record(record) if !record.is_expired(now) => Some(record),
            Stored::Record(_) | Stored::Absent => None,
            Stored::Unusable(print, problem) => {
                self.warn_once(key, print, &problem);
                None
            }
        })
    }

    /// Reads a data file, never following a symlink, never reading more
    /// than a record of `max_size` can take, never blocking on a FIFO.
    fn read(&self, path: &Path) -> io::Result<Stored> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::Absent),
            Err(e) => return open_failure(path, e),
        };
        let meta = file.metadata()?;
        let print = Fingerprint::of(&meta);
        if !meta.is_file() {
            return Ok(Stored::Unusable(print, Problem::NotRegular));
        }
        if meta.uid() != self.uid {
            return Ok(Stored::Unusable(print, Problem::OtherOwner));
        }
        let limit = self.max_size.saturating_add(self.header);
        if meta.len() > limit as u64 {
            let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
            let too_large = DecodeError::TooLarge {
                size,
                max: self.max_size,
            };
            return Ok(Stored::Unusable(print, Problem::Decode(too_large)));
        }
        // The file may grow between the fstat and the read; one byte past
        // the limit is enough for `decode` to refuse it.
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
        Ok(match Record::decode(&bytes, self.max_size) {
            Ok(record) => Stored::Record(record),
            Err(e) => Stored::Unusable(print, Problem::Decode(e)),
        })
    }

    /// Logs a bad file unless this version of it was logged already.
    /// Returns whether it logged.
    fn warn_once(&self, key: &StoreKey, print: Fingerprint, problem: &Problem) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.get(key) == Some(&print) {
            return false;
        }
        if warned.len() >= WARNED_MAX {
            warned.clear();
        }
        warned.insert(*key, print);
        drop(warned);
        tracing::warn!(
            session = %key.short(),
            "session file is {problem}; treating the session as missing"
        );
        true
    }

    /// A conditional save.
    ///
    /// The check of `write` and the rename happen under the key's shard
    /// lock, so they are atomic against every other save, touch, delete
    /// and clean-up of this process. Across processes they are not: a
    /// delete by another process may fall between the check and the rename
    /// and be undone. Callers of the request path hold the session's lock
    /// (which does exclude other processes) around load and save, and
    /// clean-up takes it too; an unlocked delete from another process, such
    /// as an admin command, is the remaining case.
    ///
    /// `user` is the record's, for the user index.
    fn save(
        &self,
        key: &StoreKey,
        bytes: &[u8],
        user: Option<UserId>,
        write: SaveIf,
    ) -> io::Result<bool> {
        // Written before taking the shard lock, so that the slow part does
        // not hold up other sessions of the shard; a refused save only costs
        // an unlink.
        let temp = self.write_temp(key, bytes)?;
        let path = self.data_path(key);
        let _shard = self.shard(key);
        let old = self.live(key, &path, now_millis())?;
        if old.is_some() != (write == SaveIf::Live) {
            return Ok(false);
        }
        let (old, new) = (old.and_then(|r| r.user), user);
        // On every save, not only when the user changes: an entry lost to
        // another process's clean-up or delete comes back with the next
        // save (an open of an existing file, nothing written).
        if let Some(new) = &new {
            self.users.add(new, key)?;
        }
        self.install(temp, &path)?;
        if old != new {
            if let Some(old) = &old {
                self.users.remove(old, key)?;
            }
        }
        Ok(true)
    }

    /// Moves the expiry: the whole file is rewritten, the same atomic way
    /// as a save, with only the header changed.
    fn touch(&self, key: &StoreKey, expires: Millis) -> io::Result<bool> {
        let path = self.data_path(key);
        let _shard = self.shard(key);
        let Some(mut record) = self.live(key, &path, now_millis())? else {
            return Ok(false);
        };
        record.expires = expires;
        let temp = self.write_temp(key, &record.encode())?;
        self.install(temp, &path)?;
        Ok(true)
    }

    fn delete(&self, key: &StoreKey) -> io::Result<()> {
        let removed = {
            let _shard = self.shard(key);
            let path = self.data_path(key);
            let user = match self.read(&path)? {
                Stored::Record(record) => record.user,
                _ => None,
            };
            let removed = remove(&path)?;
            if let Some(user) = user {
                self.users.remove(&user, key)?;
            }
            removed
        };
        // Otherwise a power loss could bring the session back.
        if removed && self.fsync {
            self.sync_dir()?;
        }
        // Usually the caller holds the lock, and its release removes the
        // lock file; this covers a delete without the lock. The session is
        // gone either way, so a failure here is for clean-up to retry, not
        // the caller's error.
        if let Err(e) = self.remove_orphan_lock(key) {
            tracing::debug!(session = %key.short(), "lock file left for clean-up: {e}");
        }
        Ok(())
    }

    /// Writes `bytes` to a new temporary file beside the data files: the
    /// same file system, so the rename that follows is atomic.
    fn write_temp(&self, key: &StoreKey, bytes: &[u8]) -> io::Result<TempFile> {
        let mut clashes = 0;
        loop {
            let name = format!("{TEMP_PREFIX}{}-{:016x}", &*key.as_hex(), random());
            let path = self.dir.join(name);
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            match file {
                Ok(mut file) => {
                    let temp = TempFile {
                        path,
                        installed: false,
                    };
                    file.write_all(bytes)?;
                    // Before the rename: otherwise a power loss can leave
                    // the new name pointing at an empty file.
                    if self.fsync {
                        file.sync_all()?;
                    }
                    return Ok(temp);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && clashes < 8 => clashes += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Renames a complete temporary file over the data file: readers see
    /// the old record or the new one, never a part of either.
    fn install(&self, mut temp: TempFile, path: &Path) -> io::Result<()> {
        fs::rename(&temp.path, path)?;
        temp.installed = true;
        if self.fsync {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

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
    fn flock_now(&self, path: &Path, create: bool) -> io::Result<Option<File>> {
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
    fn remove_orphan_lock(&self, key: &StoreKey) -> io::Result<bool> {
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

    /// Whether clean-up may remove this data file: an expired record, or a
    /// damaged one of this format that no reader will ever accept.
    /// Anything else that cannot be read may belong to someone else — a
    /// newer version of this library, a store with a larger `max_size`,
    /// CherryPy during a migration — and is left alone.
    ///
    /// `Some(its user)` if it is dead, `None` if not.
    fn is_dead(
        &self,
        key: &StoreKey,
        path: &Path,
        now: Millis,
    ) -> io::Result<Option<Option<UserId>>> {
        Ok(match self.read(path)? {
            Stored::Absent => None,
            Stored::Record(record) => record.is_expired(now).then_some(record.user),
            Stored::Unusable(
                _,
                Problem::Decode(DecodeError::Truncated | DecodeError::Checksum),
            ) => Some(None),
            Stored::Unusable(print, problem) => {
                self.warn_once(key, print, &problem);
                None
            }
        })
    }

    /// Removes a file of the layout before store keys as clean-up always
    /// did, so that no file named by an id outlives the session timeout
    /// after an upgrade: the data once it is an expired record of this
    /// format (anything else — CherryPy's, say — is left alone), the lock
    /// file once it is free and its data gone. Only data counts as a
    /// session removed.
    fn clean_earlier(&self, path: &Path, lock: bool, now: Millis) -> io::Result<bool> {
        if lock {
            let data = path.with_extension("");
            if exists(&data)? {
                return Ok(false);
            }
            if let Some(file) = self.flock_now(path, false)? {
                remove(path)?;
                drop(file);
            }
            return Ok(false);
        }
        match self.read(path)? {
            Stored::Record(record) if record.is_expired(now) => {
                let removed = remove(path)?;
                // Its lock file, if free, goes now rather than at the next
                // clean-up (the directory may list it first).
                self.clean_earlier(&lock_path_of(path), true, now)?;
                Ok(removed)
            }
            _ => Ok(false),
        }
    }

    /// Removes an expired session's data, and its lock file unless the
    /// lock is held or awaited.
    ///
    /// The data goes even while its lock is held. A record seen expired is
    /// dead: a holder that saved it afterwards would bring back a session
    /// that expired while its request ran, which the save's precondition
    /// refuses anyway. Under the shard lock the re-check and the unlink are
    /// atomic against saves of this process; a save by another process can
    /// only race with them at the instant of expiry, with the same outcome.
    ///
    /// The lock file is another matter: unlinked while held, it would let
    /// the next locker create a new file and lock that, beside the holder.
    /// So only a holder of its flock removes it: this clean-up when the
    /// lock is free, otherwise the holder's release, which removes the lock
    /// file of a session without data.
    ///
    /// `Some(its user)` if it removed the data.
    fn clean_data(&self, key: &StoreKey, now: Millis) -> io::Result<Option<Option<UserId>>> {
        let path = self.data_path(key);
        if self.is_dead(key, &path, now)?.is_none() {
            return Ok(None);
        }
        let local = self.locks.try_local(key);
        let lock_path = self.lock_path(key);
        let lock = match local {
            Some(_) => self.flock_now(&lock_path, false)?,
            None => None,
        };
        let removed = {
            let _shard = self.shard(key);
            match self.is_dead(key, &path, now)? {
                Some(user) if remove(&path)? => Some(user),
                _ => None,
            }
        };
        if removed.is_some() && self.fsync {
            self.sync_dir()?;
        }
        // Still holding the flock: a process that opened this lock file
        // and waits on it will find, once it gets the flock, that the file
        // is gone, and open a new one.
        if lock.is_some() && !exists(&path)? {
            remove(&lock_path)?;
        }
        drop(lock);
        drop(local);
        Ok(removed)
    }

    fn clean_entry(&self, entry: &fs::DirEntry, acc: &mut CleanUp) -> io::Result<()> {
        let done = match Name::of(entry.file_name().as_bytes()) {
            Name::Data(key) => self.clean_data(&key, acc.now).map(|gone| match gone {
                Some(user) => {
                    acc.gone.push((key, user));
                    true
                }
                None => false,
            }),
            Name::Lock(key) => match exists(&self.data_path(&key)) {
                Ok(true) => Ok(false),
                Ok(false) => self.remove_orphan_lock(&key).map(|_| false),
                Err(e) => Err(e),
            },
            // A waiter that gave up or died leaves its claim behind.
            Name::Turn(key) => {
                let path = self.turn_path(&key);
                match turn::lapsed(&path) {
                    Ok(true) => fs::remove_file(&path).map(|()| false),
                    Ok(false) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Name::Temp => clean_temp(entry).map(|_| false),
            Name::Earlier { lock } => self.clean_earlier(&entry.path(), lock, acc.now),
            Name::Other => Ok(false),
        };
        // One bad entry must not stop the clean-up of the others.
        match done {
            Ok(removed) => acc.removed += u64::from(removed),
            // Gone since the directory was read (deleted by a request or
            // another instance's clean-up): nothing left to do.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                acc.errors += 1;
                acc.first_error.get_or_insert(e);
            }
        }
        Ok(())
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

    /// Removes the entries of one user's directory that name no live
    /// session of that user (see `file/users.rs` for when), and the
    /// directory once it is empty.
    fn clean_user_dir(&self, dir: &Path) -> io::Result<()> {
        let now = now_millis();
        let user_key = dir.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
        for entry in users::read_entries(dir)? {
            let _shard = self.shard(&entry.key);
            // Held to the removal below.
            let (mut _local, mut _flock) = (None, None);
            let keep = match self.read(&self.data_path(&entry.key))? {
                // Only while nobody holds the session's lock, here or in
                // another process: a holder may be saving it anew.
                Stored::Record(record) if record.is_expired(now) => {
                    _local = self.locks.try_local(&entry.key);
                    if _local.is_some() {
                        _flock = self.flock_now(&self.lock_path(&entry.key), true)?;
                    }
                    _flock.is_none()
                }
                Stored::Record(record)
                    if record
                        .user
                        .as_ref()
                        .is_some_and(|u| u.index_key().as_bytes() == user_key) =>
                {
                    true
                }
                // Absent, unreadable or another user's: perhaps a save
                // between writing the entry and renaming its record.
                _ => !users::is_settled(&entry, STALE_TEMP),
            };
            if !keep {
                users::remove_entry(dir, &entry.key)?;
            }
        }
        users::remove_if_empty(dir)
    }

    fn count_entry(&self, entry: &fs::DirEntry, acc: &mut Count) -> io::Result<()> {
        if let Name::Data(key) = Name::of(entry.file_name().as_bytes()) {
            if self.live(&key, &entry.path(), acc.now)?.is_some() {
                acc.live += 1;
            }
        }
        Ok(())
    }

    fn list_entry(&self, entry: &fs::DirEntry, keys: &mut Vec<StoreKey>) -> io::Result<()> {
        if let Name::Data(key) = Name::of(entry.file_name().as_bytes()) {
            keys.push(key);
        }
        Ok(())
    }

    /// Visits up to `BATCH` entries; `true` when the directory is done.
    fn batch<A>(
        &self,
        entries: &mut fs::ReadDir,
        acc: &mut A,
        visit: Visit<A>,
    ) -> io::Result<bool> {
        for _ in 0..BATCH {
            match entries.next() {
                Some(entry) => visit(self, &entry?, acc)?,
                None => return Ok(true),
            }
        }
        Ok(false)
    }
}

/// `session-<…>.lock` beside `session-<…>`.
fn lock_path_of(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
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

/// Sorts an open failure into a problem with this one file (a symlink, a
/// mode that locks this user out), which makes the session missing, and a
/// problem with the store (I/O error, out of file descriptors), which is an
/// error: answering that with a fresh session would log the user out.
fn open_failure(path: &Path, e: io::Error) -> io::Result<Stored> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            Ok(Stored::Unusable(Fingerprint::of(&meta), Problem::Symlink))
        }
        Ok(meta) if e.kind() == io::ErrorKind::PermissionDenied => Ok(Stored::Unusable(
            Fingerprint::of(&meta),
            Problem::Unreadable(e),
        )),
        Err(gone) if gone.kind() == io::ErrorKind::NotFound => Ok(Stored::Absent),
        _ => Err(e),
    }
}

/// Removes a temporary file left by a writer that died.
fn clean_temp(entry: &fs::DirEntry) -> io::Result<bool> {
    // DirEntry's metadata does not follow a symlink.
    let meta = entry.metadata()?;
    let age = meta.modified()?.elapsed().unwrap_or_default();
    if meta.is_dir() || age < STALE_TEMP {
        return Ok(false);
    }
    remove(&entry.path())
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

    fn scratch() -> (FileStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "sessions-file-unit-{}",
            &*StoreKey::generate().unwrap().as_hex()
        ));
        (FileStore::open(&dir).unwrap(), dir)
    }

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

    #[test]
    fn bad_files_are_logged_once_per_version() {
        let (store, dir) = scratch();
        let key = StoreKey::generate().unwrap();
        let path = store.inner.data_path(&key);
        fs::write(&path, b"garbage").unwrap();
        let print = |p: &Path| Fingerprint::of(&fs::metadata(p).unwrap());
        let problem = Problem::Decode(DecodeError::Foreign);
        assert!(store.inner.warn_once(&key, print(&path), &problem));
        assert!(!store.inner.warn_once(&key, print(&path), &problem));
        fs::write(&path, b"other garbage").unwrap();
        assert!(store.inner.warn_once(&key, print(&path), &problem));
        assert!(!store.inner.warn_once(&key, print(&path), &problem));
        fs::remove_dir_all(dir).unwrap();
    }

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
