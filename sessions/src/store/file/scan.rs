//! The walk over the session directory, a batch of entries per trip to the
//! blocking pool: counting, listing, and clean-up (expired records, lock
//! files nobody holds, lapsed turns, stale temporary files, files of the
//! layout before store keys, and the user index).

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};

use super::names::{lock_path_of, Name};
use super::records::{Problem, Stored};
use super::{blocking, exists, remove, turn, users, FileStore, Inner, BATCH, STALE_TEMP};
use crate::id::StoreKey;
use crate::record::{now_millis, DecodeError, Millis};
use crate::store::{Error, OnExpired, SessionAdmin};
use crate::user::UserId;

impl FileStore {
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

impl Inner {
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
