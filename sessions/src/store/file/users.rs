//! The file store's user index: `users/<user>/<key>`, one empty file per
//! session of the user, where `<user>` is the user id's
//! [`index_key`](crate::UserId::index_key) and `<key>` the session's store
//! key. A directory per user makes listing one user's sessions a read of
//! that directory, however many sessions the store holds.
//!
//! The index is written around the session's file so that a crash can
//! only leave an entry too many, never one too few: every save of a user's
//! session makes sure of its entry before it renames the record into place
//! (so an entry lost to another process comes back with the next save),
//! and removes the previous user's entry after; a delete removes the entry
//! after the record. Every reader checks each entry against the record it
//! names, and clean-up removes the entries of expired sessions whose lock
//! it can take, and of absent ones or of another user once they are older
//! than a save can take.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::id::StoreKey;
use crate::user::UserId;

/// The index's directory, beside the session files.
pub(super) const DIR: &str = "users";

/// One entry: a session key under a user's directory, and when the entry
/// was written.
pub(super) struct Entry {
    pub(super) key: StoreKey,
    pub(super) written: SystemTime,
}

#[derive(Clone)]
pub(super) struct UserIndex {
    dir: PathBuf,
}

impl UserIndex {
    /// The index of the store in `store_dir`.
    pub(super) fn new(store_dir: &Path) -> Self {
        UserIndex {
            dir: store_dir.join(DIR),
        }
    }

    fn user_dir(&self, user: &UserId) -> PathBuf {
        self.dir.join(&*user.index_key())
    }

    /// Lists `key` under `user`. A clean-up that removed the user's empty
    /// directory in between is met by creating it again.
    pub(super) fn add(&self, user: &UserId, key: &StoreKey) -> io::Result<()> {
        let dir = self.user_dir(user);
        let path = dir.join(&*key.as_hex());
        let create = || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map(drop)
        };
        for _ in 0..3 {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            match create() {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                done => return done,
            }
        }
        create()
    }

    /// Takes `key` out of `user`'s entries, and the user's directory once
    /// it is empty.
    pub(super) fn remove(&self, user: &UserId, key: &StoreKey) -> io::Result<()> {
        let dir = self.user_dir(user);
        match fs::remove_file(dir.join(&*key.as_hex())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        remove_if_empty(&dir)
    }

    /// The entries under `user`: the sessions it may have.
    pub(super) fn entries(&self, user: &UserId) -> io::Result<Vec<Entry>> {
        read_entries(&self.user_dir(user))
    }

    /// Every user directory, for clean-up.
    pub(super) fn user_dirs(&self) -> io::Result<Vec<PathBuf>> {
        match fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .map(|e| e.map(|e| e.path()))
                .filter(|p| p.as_ref().map_or(true, |p| is_index_key(p)))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// The entries of one user's directory; names that are not store keys
/// are not ours and are left alone.
pub(super) fn read_entries(dir: &Path) -> io::Result<Vec<Entry>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(key) = StoreKey::from_bytes(entry.file_name().as_bytes()) else {
            continue;
        };
        let written = match entry.metadata() {
            Ok(meta) => meta.modified()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        found.push(Entry { key, written });
    }
    Ok(found)
}

/// Removes one entry from a user's directory (clean-up).
pub(super) fn remove_entry(dir: &Path, key: &StoreKey) -> io::Result<()> {
    match fs::remove_file(dir.join(&*key.as_hex())) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a user's directory if it holds nothing; one being filled by a
/// save at the same moment stays (the save creates it again if not).
pub(super) fn remove_if_empty(dir: &Path) -> io::Result<()> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether the entry was written longer ago than any save takes between
/// adding it and renaming its record into place.
pub(super) fn is_settled(entry: &Entry, settle: Duration) -> bool {
    entry.written.elapsed().unwrap_or_default() >= settle
}

/// Whether a path's last part is a user's directory name (64 hex).
fn is_index_key(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| StoreKey::from_bytes(name.as_bytes()).is_ok())
}
