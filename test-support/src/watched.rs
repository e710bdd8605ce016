//! A store wrapper for the tests that must see what the middleware asks of
//! a store, or make the store fail: it records which operation was given
//! which id, counts the calls, and fails every call while switched off, as
//! a backend that went down would.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use server_sessions::store::{self, LockGuard, SaveIf, SessionAdmin, SessionLock, SessionStore};
use server_sessions::store::{Millis, Record, StoreKey};

/// Wraps a store; clones share the records and the switch.
#[derive(Debug, Clone)]
pub struct Watched {
    inner: Arc<dyn SessionAdmin>,
    seen: Arc<Mutex<Vec<(&'static str, StoreKey)>>>,
    /// Calls that name a session (everything but count, ids, clean-up).
    pub calls: Arc<AtomicU64>,
    /// Clean-ups asked for, whether they failed or not.
    pub clean_ups: Arc<AtomicU32>,
    down: Arc<AtomicBool>,
}

impl Watched {
    pub fn new(inner: impl SessionAdmin) -> Self {
        Watched {
            inner: Arc::new(inner),
            seen: Arc::default(),
            calls: Arc::default(),
            clean_ups: Arc::default(),
            down: Arc::default(),
        }
    }

    /// Switches the store off (every call fails as unavailable) or on.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), store::Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(store::Error::unavailable(
                "test store",
                std::io::Error::other("switched off"),
            ));
        }
        Ok(())
    }

    fn note(&self, op: &'static str, key: &StoreKey) -> Result<(), store::Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push((op, *key));
        self.check()
    }

    /// Records that a read of `key` was answered (`loaded`): a test that
    /// must act after a request read its session waits for this, not for
    /// the question.
    fn answered(&self, key: &StoreKey) {
        self.seen.lock().unwrap().push(("loaded", *key));
    }

    /// The keys the store was asked about, by operation: `load`, `lock`,
    /// `new` (a save of a new session), `save`, `touch`, `delete`; and
    /// `loaded`, the reads answered.
    pub fn keys_of(&self, op: &str) -> BTreeSet<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, key)| key.to_string())
            .collect()
    }

    /// Waits until the store was asked to `op` on the session `id` (a
    /// request reached its store call), at most five seconds.
    pub async fn wait_for(&self, op: &str, id: &str) {
        let key = super::records::key_of(id).to_string();
        for _ in 0..500 {
            if self.keys_of(op).contains(&key) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {op} of the session within 5 s");
    }

    /// Every key the store was asked about.
    pub fn all_keys(&self) -> BTreeSet<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|(_, key)| key.to_string()).collect()
    }
}

fn new_or_save(w: SaveIf) -> &'static str {
    if w == SaveIf::Absent {
        "new"
    } else {
        "save"
    }
}

#[async_trait]
impl SessionStore for Watched {
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, store::Error> {
        self.note("load", key)?;
        let r = self.inner.load(key).await;
        self.answered(key);
        r
    }
    async fn save(&self, key: &StoreKey, r: &Record, w: SaveIf) -> Result<bool, store::Error> {
        self.note(new_or_save(w), key)?;
        self.inner.save(key, r, w).await
    }
    async fn touch(&self, key: &StoreKey, e: Millis) -> Result<bool, store::Error> {
        self.note("touch", key)?;
        self.inner.touch(key, e).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<(), store::Error> {
        self.note("delete", key)?;
        self.inner.delete(key).await
    }
    async fn end(&self, key: &StoreKey) -> Result<(), store::Error> {
        self.note("delete", key)?;
        self.inner.end(key).await
    }
    async fn exists(&self, key: &StoreKey) -> Result<bool, store::Error> {
        self.note("load", key)?;
        self.inner.exists(key).await
    }
    async fn acquire(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(LockGuard, Option<Record>), store::Error> {
        self.note("lock", key)?;
        if load {
            self.note("load", key)?;
        }
        let (guard, record) = self.inner.acquire(key, wait, load).await?;
        if load {
            self.answered(key);
        }
        let lock = WatchedLock {
            watched: self.clone(),
            key: *key,
            guard,
        };
        Ok((LockGuard::new(lock), record))
    }
    async fn sessions_of(
        &self,
        user: &server_sessions::UserId,
    ) -> Result<Vec<(StoreKey, Record)>, store::Error> {
        self.inner.sessions_of(user).await
    }
    fn expirations(&self) -> Option<BoxStream<'static, StoreKey>> {
        self.inner.expirations()
    }
}

/// A lock of the watched store: its save is watched too.
struct WatchedLock {
    watched: Watched,
    key: StoreKey,
    guard: LockGuard,
}

#[async_trait]
impl SessionLock for WatchedLock {
    async fn save_and_release(
        self: Box<Self>,
        r: &Record,
        w: SaveIf,
    ) -> Result<bool, store::Error> {
        self.watched.note(new_or_save(w), &self.key)?;
        self.guard.save_and_release(r, w).await
    }
}

#[async_trait]
impl SessionAdmin for Watched {
    async fn count(&self) -> Result<u64, store::Error> {
        self.check()?;
        self.inner.count().await
    }
    fn keys(&self) -> BoxStream<'_, Result<StoreKey, store::Error>> {
        self.inner.keys()
    }
    async fn clean_up_and_report(
        &self,
        expired: server_sessions::store::OnExpired<'_>,
    ) -> Result<u64, store::Error> {
        self.clean_ups.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.clean_up_and_report(expired).await
    }
}
