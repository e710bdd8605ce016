//! A loaded session: its data, times and user as this request holds them,
//! and the one place that decides what marks it changed (and so saved in
//! full rather than only refreshed). The handle's
//! [`SessionData`](crate::SessionData) works through these methods.

use std::time::Duration;

use serde_json::Value;

use super::save::expiry;
use super::Data;
use crate::config::SessionConfig;
use crate::id::{SessionId, StoreKey};
use crate::record::{now_millis, Millis};
use crate::user::UserId;

/// A loaded (or newly created) session.
pub(crate) struct Loaded {
    pub(super) id: SessionId,
    /// `id`'s store key, hashed once per request.
    pub(super) key: StoreKey,
    pub(super) data: Data,
    pub(super) created: Millis,
    /// The expiry of the stored record (0 while none is stored): a
    /// request that changes nothing refreshes it only when due.
    pub(super) stored_expires: Millis,
    /// The session's own idle timeout, if it set one; kept in its record.
    pub(super) timeout: Option<Duration>,
    /// The user the session is tied to, kept in its record.
    pub(super) user: Option<UserId>,
    /// The stored session this one was regenerated from, until the new one
    /// is saved in its place.
    pub(super) replaces: Option<SessionId>,
    /// A live record under `id` is in the store. False for a new or
    /// regenerated session, whose id nobody else can know yet: it needs no
    /// store lock.
    pub(super) stored: bool,
    /// The handler used the session: save it, or refresh its expiry.
    pub(super) used: bool,
    /// The data differs from what is stored.
    pub(super) changed: bool,
}

impl Loaded {
    /// A session that is not stored yet, under a fresh `id`.
    pub(super) fn fresh(id: SessionId, now: Millis) -> Self {
        Loaded {
            id,
            key: id.store_key(),
            data: Data::new(),
            created: now,
            stored_expires: 0,
            timeout: None,
            user: None,
            replaces: None,
            stored: false,
            used: false,
            changed: true,
        }
    }

    /// A new session that holds nothing yet — no data, no user, no timeout
    /// of its own, not regenerated from a stored one: what
    /// `save_uninitialized = false` leaves unsaved.
    pub(super) fn uninitialized(&self) -> bool {
        !self.stored
            && self.replaces.is_none()
            && self.data.is_empty()
            && self.user.is_none()
            && self.timeout.is_none()
    }

    /// The session's id.
    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    /// When the session was created.
    pub(crate) fn created(&self) -> Millis {
        self.created
    }

    /// The expiry the session gets if it is saved now.
    pub(crate) fn expires_now(&self, config: &SessionConfig) -> Millis {
        expiry(config, self, now_millis())
    }

    /// The idle timeout that applies: the session's own, or the config's.
    pub(crate) fn timeout(&self, config: &SessionConfig) -> Duration {
        self.timeout.unwrap_or(config.timeout)
    }

    /// Sets (or with `None` drops) the session's own idle timeout.
    pub(crate) fn set_own_timeout(&mut self, timeout: Option<Duration>) {
        if self.timeout != timeout {
            self.timeout = timeout;
            self.changed = true;
        }
    }

    /// The data, to read.
    pub(crate) fn data(&self) -> &Data {
        &self.data
    }

    /// Stores `value` under `key`: in place when the key is there (no new
    /// `String` for it), and no change at all when the value is the same.
    pub(crate) fn insert_value(&mut self, key: &str, value: Value) {
        match self.data.get_mut(key) {
            Some(old) if *old == value => return,
            Some(old) => *old = value,
            None => {
                self.data.insert(key.into(), value);
            }
        }
        self.changed = true;
    }

    /// Removes `key`, returning its value if it was there.
    pub(crate) fn remove_value(&mut self, key: &str) -> Option<Value> {
        let old = self.data.remove(key);
        self.changed |= old.is_some();
        old
    }

    /// Removes every key.
    pub(crate) fn clear(&mut self) {
        self.changed |= !self.data.is_empty();
        self.data.clear();
    }

    /// The user the session is tied to, if any.
    pub(crate) fn user(&self) -> Option<&UserId> {
        self.user.as_ref()
    }

    /// Ties the session to `user`, or with `None` unties it.
    pub(crate) fn set_user(&mut self, user: Option<UserId>) {
        if self.user != user {
            self.user = user;
            self.changed = true;
        }
    }
}
