//! Reading and writing records: reads that trust no file and are bounded
//! by the size limit, each bad file logged once, and conditional saves
//! written to a temporary file and renamed into place.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{random, remove, Inner, TEMP_PREFIX, WARNED_MAX};
use crate::id::StoreKey;
use crate::record::{now_millis, DecodeError, Millis, Record};
use crate::store::SaveIf;
use crate::user::UserId;

/// What was found at a session's data path.
pub(super) enum Stored {
    Absent,
    Record(Record),
    Unusable(Fingerprint, Problem),
}

/// Why a session file was not used.
#[derive(Debug)]
pub(super) enum Problem {
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
pub(super) struct Fingerprint {
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

impl Inner {
    pub(super) fn load(&self, key: &StoreKey) -> io::Result<Option<Record>> {
        self.live(key, &self.data_path(key), now_millis())
    }

    /// The record at `path` if it is live; a bad file is logged and counts
    /// as no record.
    pub(super) fn live(
        &self,
        key: &StoreKey,
        path: &Path,
        now: Millis,
    ) -> io::Result<Option<Record>> {
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
    pub(super) fn read(&self, path: &Path) -> io::Result<Stored> {
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
    pub(super) fn warn_once(&self, key: &StoreKey, print: Fingerprint, problem: &Problem) -> bool {
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
    pub(super) fn save(
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
    pub(super) fn touch(&self, key: &StoreKey, expires: Millis) -> io::Result<bool> {
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

    pub(super) fn delete(&self, key: &StoreKey) -> io::Result<()> {
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

    pub(super) fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
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

#[cfg(test)]
mod tests {
    use super::super::tests::scratch;
    use super::*;

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
}
