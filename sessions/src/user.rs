//! The user a session belongs to. What the library does with a user's
//! sessions — list them, end them all, end all but the current one — is in
//! [`store`](crate::store) ([`user_sessions`](crate::store::user_sessions),
//! [`end_user_sessions`](crate::store::end_user_sessions)), since it works
//! on a store.
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

use crate::id::{HexKey, StoreKey};
#[cfg(doc)]
use crate::store::SessionStore;

/// The longest user id, in bytes ([`UserId::MAX_LEN`]).
pub(crate) const MAX_USER_LEN: usize = 256;

/// Who a session belongs to: the application's own id for its user (a
/// name, an email address, a number as text). 1 to [`MAX_LEN`](Self::MAX_LEN) bytes
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
    /// Longer than [`UserId::MAX_LEN`] bytes.
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
    /// The longest user id, in bytes.
    pub const MAX_LEN: usize = MAX_USER_LEN;

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
}
