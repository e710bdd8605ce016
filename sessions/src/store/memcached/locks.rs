//! The memcached store's steps of the shared lease rules (`store/lease.rs`):
//! the lock item, added with the holder's token and renewed or released by
//! compare-and-swap; the claim on the next turn; the save under the lease.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::expiry::exptime;
use super::proto::{Mode, Op, Outcome};
use super::{precondition, MemcachedStore};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::lease::{self, LeaseBackend, Released, Taken};
use crate::store::{Error, LockWaits, SaveIf};

impl MemcachedStore {
    /// The lock's holder token and CAS, if it is locked.
    async fn lock_holder(&self, key: &StoreKey) -> Result<Option<(Vec<u8>, u64)>, Error> {
        let item = self
            .server(key)
            .get(&self.lock_key(key), 64)
            .await
            .map_err(|e| Error::unavailable("checking a session lock", e))?;
        Ok(item.map(|item| (item.value, item.cas)))
    }

    /// A save under `owner`'s lease in two round trips: the lock and the
    /// record read together (the lease must still be ours, the record meet
    /// the precondition), then the record written with compare-and-swap
    /// together with the lock's release — or, with `keep_until`, its
    /// renewal for a hand-over. Both are on the session's one server.
    async fn save_under_lease(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
        keep_until: Option<Millis>,
    ) -> Result<Released, Error> {
        const CONTEXT: &str = "saving a session";
        let fail = |e| Error::unavailable(CONTEXT, e);
        self.check_record(record)?;
        self.index(key, record).await?;
        let (server, lock_key, data_key) =
            (self.server(key), self.lock_key(key), self.data_key(key));
        let reads = [
            Op::Get {
                key: &lock_key,
                limit: 64,
            },
            Op::Get {
                key: &data_key,
                limit: self.read_limit(),
            },
        ];
        let mut answers = server.batch(&reads).await.map_err(fail)?.into_iter();
        let (Some(lock), Some(data)) = (answers.next(), answers.next()) else {
            return Err(fail(io::Error::other("memcached answered too little")));
        };
        let lock_cas = match lock.item().map_err(fail)? {
            Some(item) if item.value == owner.as_bytes() => item.cas,
            _ => return Ok(Released::Lost),
        };
        let Some((mode, cas)) = precondition(only, self.stored(key, data.item())?) else {
            // Nothing to write; the lease goes (or stays) all the same.
            self.end_lease(key, owner, keep_until).await?;
            return Ok(Released::Saved(false));
        };
        let bytes = record.encode();
        let write = Op::Set {
            key: &data_key,
            value: &bytes,
            exptime: exptime(record.expires)?,
            mode,
            cas,
        };
        let lease = match keep_until {
            Some(until) => Op::Set {
                key: &lock_key,
                value: owner.as_bytes(),
                exptime: exptime(until)?,
                mode: Mode::Set,
                cas: Some(lock_cas),
            },
            None => Op::Delete {
                key: &lock_key,
                cas: Some(lock_cas),
            },
        };
        let mut answers = server
            .batch(&[write, lease])
            .await
            .map_err(fail)?
            .into_iter();
        let (Some(written), Some(leased)) = (answers.next(), answers.next()) else {
            return Err(fail(io::Error::other("memcached answered too little")));
        };
        let (written, leased) = (
            written.outcome().map_err(fail)?,
            leased.outcome().map_err(fail)?,
        );
        if leased == Outcome::Changed {
            // The renewal task moved the lease in between: still ours.
            self.end_lease(key, owner, keep_until).await?;
        }
        Ok(match written {
            Outcome::Done => Released::Saved(true),
            // Gone (deleted) or there (added) since the read: the
            // precondition no longer holds.
            Outcome::NotFound | Outcome::NotStored => Released::Saved(false),
            // Another write since the read: another holder after a lost
            // lease, or a writer without the lock. Never written over.
            Outcome::Changed => Released::Lost,
        })
    }

    /// Releases `owner`'s lease, or with `keep_until` renews it.
    async fn end_lease(
        &self,
        key: &StoreKey,
        owner: &str,
        keep_until: Option<Millis>,
    ) -> Result<(), Error> {
        match keep_until {
            Some(until) => self.renew(key, owner, until).await.map(drop),
            None => self.release(key, owner).await,
        }
    }
}

#[async_trait]
impl LeaseBackend for MemcachedStore {
    async fn lease_site(&self) -> Result<(&Arc<LockWaits>, Duration), Error> {
        Ok((&self.inner.waits, self.inner.lease))
    }

    fn check(&self, record: &Record) -> Result<(), Error> {
        self.check_record(record)
    }

    async fn take(
        &self,
        key: &StoreKey,
        owner: &str,
        until: Millis,
        load: bool,
    ) -> Result<Taken, Error> {
        let fail = |e| Error::unavailable("taking a session lock", e);
        let (lock_key, data_key) = (self.lock_key(key), self.data_key(key));
        let turn_key = self.turn_key(key);
        // Whose turn it is, read in the same round trip as the take
        // (`lease.rs`: turns). memcached has no step that adds the lock
        // only if the turn is free: a take that lands on another waiter's
        // turn gives the lock straight back.
        let turn = Op::Get {
            key: &turn_key,
            limit: 64,
        };
        let take = Op::Set {
            key: &lock_key,
            value: owner.as_bytes(),
            exptime: exptime(until)?,
            mode: Mode::Add,
            cas: None,
        };
        // With the record in the same round trip: the lock and the record
        // are on one server, which answers in order, so the read sees what
        // the previous holder saved before it released.
        let read = Op::Get {
            key: &data_key,
            limit: self.read_limit(),
        };
        let ops: &[Op<'_>] = if load {
            &[turn, take, read]
        } else {
            &[turn, take]
        };
        let server = self.server(key);
        let mut answers = server.batch(ops).await.map_err(fail)?.into_iter();
        let turn = answers
            .next()
            .map(|a| a.item())
            .transpose()
            .map_err(fail)?
            .flatten();
        let added = answers
            .next()
            .map(|a| a.outcome())
            .transpose()
            .map_err(fail)?;
        let others_turn = turn.as_ref().is_some_and(|t| t.value != owner.as_bytes());
        if added == Some(Outcome::Done) && others_turn {
            self.release(key, owner).await?;
        }
        if added != Some(Outcome::Done) || others_turn {
            if !others_turn {
                // Ours comes next: claimed, or renewed.
                let (mode, cas) = match &turn {
                    Some(t) => (Mode::Set, Some(t.cas)),
                    None => (Mode::Add, None),
                };
                let until = exptime(lease::turn_until(now_millis()))?;
                server
                    .set(&turn_key, owner.as_bytes(), until, mode, cas)
                    .await
                    .map_err(fail)?;
            }
            return Ok(Taken::Busy);
        }
        if let Some(t) = turn {
            // Our turn came: it ends with the take.
            server.delete(&turn_key, Some(t.cas)).await.map_err(fail)?;
        }
        let Some(read) = answers.next() else {
            return Ok(Taken::Ours(None));
        };
        let now = now_millis();
        let record = self
            .stored(key, read.item())?
            .and_then(|(record, _)| record)
            .filter(|r| !r.is_expired(now));
        Ok(Taken::Ours(record))
    }

    async fn renew(&self, key: &StoreKey, owner: &str, until: Millis) -> Result<bool, Error> {
        let Some((holder, cas)) = self.lock_holder(key).await? else {
            return Ok(false);
        };
        if holder != owner.as_bytes() {
            return Ok(false);
        }
        let renewed = self
            .server(key)
            .set(
                &self.lock_key(key),
                owner.as_bytes(),
                exptime(until)?,
                Mode::Set,
                Some(cas),
            )
            .await
            .map_err(|e| Error::unavailable("renewing a session lock", e))?;
        Ok(renewed == Outcome::Done)
    }

    async fn release(&self, key: &StoreKey, owner: &str) -> Result<(), Error> {
        if let Some((holder, cas)) = self.lock_holder(key).await? {
            if holder == owner.as_bytes() {
                self.server(key)
                    .delete(&self.lock_key(key), Some(cas))
                    .await
                    .map_err(|e| Error::unavailable("releasing a session lock", e))?;
            }
        }
        Ok(())
    }

    async fn save_and_keep(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
        until: Millis,
    ) -> Result<Released, Error> {
        self.save_under_lease(key, owner, record, only, Some(until))
            .await
    }

    async fn save_and_release(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
    ) -> Result<Released, Error> {
        self.save_under_lease(key, owner, record, only, None).await
    }
}
