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
use sessions::store::{self, LockGuard, SaveIf, SessionAdmin, SessionStore};
use sessions::{Millis, Record, SessionId};

/// Wraps a store; clones share the records and the switch.
#[derive(Debug, Clone)]
pub struct Watched {
    inner: Arc<dyn SessionAdmin>,
    seen: Arc<Mutex<Vec<(&'static str, SessionId)>>>,
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

    fn note(&self, op: &'static str, id: &SessionId) -> Result<(), store::Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push((op, *id));
        self.check()
    }

    /// The ids the store was asked about, by operation: `load`, `lock`,
    /// `new` (a save of a new session), `save`, `touch`, `delete`.
    pub fn ids(&self, op: &str) -> BTreeSet<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, id)| id.to_string())
            .collect()
    }

    /// Waits until the store was asked to `op` on `id` (a request reached
    /// its store call), at most five seconds.
    pub async fn wait_for(&self, op: &str, id: &str) {
        for _ in 0..500 {
            if self.ids(op).contains(id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {op} of the session within 5 s");
    }

    /// Every id the store was asked about.
    pub fn all_ids(&self) -> BTreeSet<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|(_, id)| id.to_string()).collect()
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
    async fn load(&self, id: &SessionId) -> Result<Option<Record>, store::Error> {
        self.note("load", id)?;
        self.inner.load(id).await
    }
    async fn save(&self, id: &SessionId, r: &Record, w: SaveIf) -> Result<bool, store::Error> {
        self.note(new_or_save(w), id)?;
        self.inner.save(id, r, w).await
    }
    async fn touch(&self, id: &SessionId, e: Millis) -> Result<bool, store::Error> {
        self.note("touch", id)?;
        self.inner.touch(id, e).await
    }
    async fn delete(&self, id: &SessionId) -> Result<(), store::Error> {
        self.note("delete", id)?;
        self.inner.delete(id).await
    }
    async fn exists(&self, id: &SessionId) -> Result<bool, store::Error> {
        self.note("load", id)?;
        self.inner.exists(id).await
    }
    async fn lock(&self, id: &SessionId, wait: Duration) -> Result<LockGuard, store::Error> {
        self.note("lock", id)?;
        self.inner.lock(id, wait).await
    }
    async fn lock_and_load(
        &self,
        id: &SessionId,
        wait: Duration,
    ) -> Result<(LockGuard, Option<Record>), store::Error> {
        self.note("lock", id)?;
        self.note("load", id)?;
        self.inner.lock_and_load(id, wait).await
    }
    async fn save_and_unlock(
        &self,
        id: &SessionId,
        r: &Record,
        w: SaveIf,
        guard: LockGuard,
    ) -> Result<bool, store::Error> {
        self.note(new_or_save(w), id)?;
        self.inner.save_and_unlock(id, r, w, guard).await
    }
}

#[async_trait]
impl SessionAdmin for Watched {
    async fn count(&self) -> Result<u64, store::Error> {
        self.check()?;
        self.inner.count().await
    }
    fn ids(&self) -> BoxStream<'_, Result<SessionId, store::Error>> {
        self.inner.ids()
    }
    async fn clean_up(&self) -> Result<u64, store::Error> {
        self.clean_ups.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.clean_up().await
    }
}
