//! The user a session belongs to, and what the library does with a user's
//! sessions: list them, end them all, end all but the current one.
//!
//! A session is tied to a user by [`Session::set_user`](crate::Session::set_user);
//! the user is stored in the session's record and every store keeps an
//! index user → sessions beside it (see [`SessionStore::sessions_of`]).
//! Ending a user's sessions deletes their records: a request in flight on
//! one of them cannot bring it back, because its save finds the record
//! gone (the [`SaveIf::Live`](crate::store::SaveIf::Live) precondition).
//! One exception, the file store's own: a delete from another process can
//! fall between a save's check and its rename (see `FileStore`).

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::id::{HexKey, StoreKey};
use crate::record::{millis, system_time, Record};
use crate::store::{Error, SessionStore};

/// The longest user id, in bytes.
pub const MAX_USER_LEN: usize = 256;

/// How much longer than its session a user-index entry is kept by the
/// stores whose index expires by the clock (Redis, memcached): the
/// servers' clocks, kept close by NTP, may disagree by this much without
/// an entry leaving before its session. Readers check each entry's
/// record, so an entry too many costs nothing.
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) const INDEX_SLACK: crate::record::Millis = 2_000;

/// The sessions among `keys` (a store's index entries for `user`) that
/// are live and still `user`'s, each read afresh: an entry may name a
/// session that ended, or moved to another user, since it was written.
/// The one check every store's [`SessionStore::sessions_of`] makes of an
/// index that may hold an entry too many.
pub(crate) async fn checked_entries(
    store: &(impl SessionStore + ?Sized),
    user: &UserId,
    keys: impl IntoIterator<Item = StoreKey>,
) -> Result<Vec<(StoreKey, Record)>, Error> {
    let mut found = Vec::new();
    for key in keys {
        if let Some(record) = store.load(&key).await? {
            if record.user.as_ref() == Some(user) {
                found.push((key, record));
            }
        }
    }
    Ok(found)
}

/// Who a session belongs to: the application's own id for its user (a
/// name, an email address, a number as text). 1 to [`MAX_USER_LEN`] bytes
/// of UTF-8 without control characters, so that it cannot corrupt a log
/// line, an index key or a terminal; anything else is refused when it is
/// made, never stored.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Box<str>);

/// Why a text is not a [`UserId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidUser {
    /// The empty string.
    #[error("a user id may not be empty")]
    Empty,
    /// Longer than [`MAX_USER_LEN`] bytes.
    #[error("a user id of {0} bytes exceeds the limit of {MAX_USER_LEN}")]
    TooLong(usize),
    /// It holds a control character (a newline, a NUL, an escape).
    #[error("a user id may not hold control characters")]
    Control,
    /// Stored bytes that are not UTF-8.
    #[error("a user id must be UTF-8")]
    NotUtf8,
}

impl UserId {
    /// Checks `text` and makes it a user id.
    pub fn new(text: impl Into<String>) -> Result<Self, InvalidUser> {
        let text = text.into();
        if text.is_empty() {
            return Err(InvalidUser::Empty);
        }
        if text.len() > MAX_USER_LEN {
            return Err(InvalidUser::TooLong(text.len()));
        }
        if text.chars().any(char::is_control) {
            return Err(InvalidUser::Control);
        }
        Ok(UserId(text.into_boxed_str()))
    }

    /// A user id from the bytes a store kept, checked as [`new`](Self::new).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidUser> {
        let text = std::str::from_utf8(bytes).map_err(|_| InvalidUser::NotUtf8)?;
        UserId::new(text)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name stores give this user's index (a Redis key, a directory):
    /// the lowercase hex SHA-256 of the id, so that any id, however long
    /// or whatever it holds, makes a short name of safe characters.
    pub fn index_key(&self) -> HexKey {
        StoreKey::digest_of(self.0.as_bytes()).as_hex()
    }
}

impl std::str::FromStr for UserId {
    type Err = InvalidUser;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserId::new(s)
    }
}

impl TryFrom<&str> for UserId {
    type Error = InvalidUser;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        UserId::new(s)
    }
}

impl TryFrom<String> for UserId {
    type Error = InvalidUser;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UserId::new(s)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// One of a user's sessions, as [`user_sessions`] lists it. It carries the
/// session's store key, never its id: a listing grants nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    /// The session's store key ([`SessionId::store_key`](crate::SessionId::store_key)).
    pub key: StoreKey,
    /// When the session was created.
    pub created: SystemTime,
    /// When it was last saved or refreshed: its expiry less its idle
    /// timeout (the session's own, or `timeout`), never before `created`.
    /// Where an `absolute_timeout` cut the expiry short, earlier than the
    /// real last use.
    pub last_used: SystemTime,
    /// When it expires unless used again.
    pub expires: SystemTime,
}

impl UserSession {
    /// The listing entry of `record`, stored under `key`; `timeout` is the
    /// configured idle timeout, for a session without its own.
    pub fn new(key: StoreKey, record: &Record, timeout: Duration) -> Self {
        let idle = record.timeout.unwrap_or_else(|| millis(timeout));
        let last_used = record.expires.saturating_sub(idle).max(record.created);
        UserSession {
            key,
            created: system_time(record.created),
            last_used: system_time(last_used),
            expires: system_time(record.expires),
        }
    }
}

/// The live sessions of `user` in `store`, most recently used first;
/// `timeout` is the configured idle timeout (for
/// [`UserSession::last_used`]).
pub async fn user_sessions(
    store: &dyn SessionStore,
    user: &UserId,
    timeout: Duration,
) -> Result<Vec<UserSession>, Error> {
    let mut listed: Vec<UserSession> = store
        .sessions_of(user)
        .await?
        .into_iter()
        .map(|(key, record)| UserSession::new(key, &record, timeout))
        .collect();
    listed.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
    Ok(listed)
}

/// Ends every session of `user` but `keep` (the current one, for "log out
/// my other devices"; `None`: all of them), and returns how many ended.
///
/// Each is deleted whether or not a request holds its lock: that request's
/// save then finds the record gone and writes nothing. A session tied to
/// the user after the listing is not ended; call again after a password
/// change has taken effect to be sure.
pub async fn end_user_sessions(
    store: &dyn SessionStore,
    user: &UserId,
    keep: Option<&StoreKey>,
) -> Result<u64, Error> {
    let keep: Vec<StoreKey> = keep.into_iter().copied().collect();
    Ok(end_sessions_of(store, user, &keep).await?.len() as u64)
}

/// [`end_user_sessions`], keeping every session in `keep`, and saying
/// which sessions ended.
pub(crate) async fn end_sessions_of(
    store: &dyn SessionStore,
    user: &UserId,
    keep: &[StoreKey],
) -> Result<Vec<StoreKey>, Error> {
    let mut ended = Vec::new();
    // A log-in racing this may have moved a session to a new id after the
    // listing (its `replace` removed the old id this then deletes in
    // vain): the new id shows in the next listing. A few rounds end every
    // such session; a user who keeps logging in meanwhile is not chased
    // forever.
    for _ in 0..END_ROUNDS {
        let mut more = false;
        for (key, _) in store.sessions_of(user).await? {
            if !keep.contains(&key) && !ended.contains(&key) {
                store.delete(&key).await?;
                ended.push(key);
                more = true;
            }
        }
        if !more {
            break;
        }
    }
    Ok(ended)
}

/// How many listings [`end_sessions_of`] makes at most.
const END_ROUNDS: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_checked() {
        assert_eq!(UserId::new("alice").unwrap().as_str(), "alice");
        assert_eq!(
            UserId::new("élodie@example.com").unwrap().to_string(),
            "élodie@example.com"
        );
        assert_eq!(UserId::new(""), Err(InvalidUser::Empty));
        assert_eq!(UserId::new("a".repeat(257)), Err(InvalidUser::TooLong(257)));
        assert!(UserId::new("a".repeat(256)).is_ok());
        for bad in ["a\nb", "a\0", "\u{1b}[31m", "tab\there", "\u{85}"] {
            assert_eq!(UserId::new(bad), Err(InvalidUser::Control), "{bad:?}");
        }
        assert_eq!(UserId::from_bytes(b"\xff"), Err(InvalidUser::NotUtf8));
    }

    #[test]
    fn index_keys_are_the_sha256_of_the_id() {
        // sha256("alice")
        assert_eq!(
            &*UserId::new("alice").unwrap().index_key(),
            "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90"
        );
    }

    #[test]
    fn last_use_is_expiry_less_the_idle_timeout() {
        let key = StoreKey::generate().unwrap();
        let record = |timeout| Record {
            data: b"{}".to_vec(),
            created: 1_000_000,
            expires: 5_000_000,
            timeout,
            user: None,
        };
        let listed = UserSession::new(key, &record(None), Duration::from_secs(3_000));
        assert_eq!(listed.last_used, system_time(2_000_000));
        let own = UserSession::new(key, &record(Some(1_000_000)), Duration::from_secs(3_000));
        assert_eq!(own.last_used, system_time(4_000_000));
        let clipped = UserSession::new(key, &record(None), Duration::from_secs(9_000));
        assert_eq!(clipped.last_used, system_time(1_000_000));
    }
}
