//! A user's sessions over any store: listing them, ending them all or all
//! but one, and the one check of user-index entries every store's
//! [`SessionStore::sessions_of`] makes.

use std::time::{Duration, SystemTime};

use super::{Error, SessionStore};
use crate::id::StoreKey;
use crate::record::{millis, system_time, Record};
use crate::user::UserId;

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
    /// It is the session of the request that asked
    /// ([`Session::user_sessions`](crate::Session::user_sessions)); always
    /// false in a listing made outside a request.
    pub current: bool,
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
            current: false,
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
                store.end(&key).await?;
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
