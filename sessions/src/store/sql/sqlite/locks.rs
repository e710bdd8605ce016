//! The SQLite store's steps of the shared lease rules (`store/lease.rs`):
//! each one transaction on the blocking pool, the claim on the next turn
//! included, and the save in the same transaction as the lease step.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, TransactionBehavior};

use super::{Inner, SqliteStore};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::lease::{self, LeaseBackend, Released, Taken};
use crate::store::sql::{check_size, to_sql_ms};
use crate::store::{Error, LockWaits, SaveIf};

/// The lease statements, for the rules in `sql/lease.rs`. SQLite cannot
/// notify another process, so its waiters poll on the backoff.
#[async_trait]
impl LeaseBackend for SqliteStore {
    async fn lease_site(&self) -> Result<(&Arc<LockWaits>, Duration), Error> {
        self.prepared().await?;
        Ok((&self.inner.waits, self.inner.opts.lease))
    }

    fn check(&self, record: &Record) -> Result<(), Error> {
        check_size(record)
    }

    async fn take(
        &self,
        key: &StoreKey,
        owner: &str,
        until: Millis,
        load: bool,
    ) -> Result<Taken, Error> {
        self.prepared().await?;
        let (key, owner) = (*key, owner.to_owned());
        self.blocking("sqlite: lock", move |inner, conn| {
            let (hex, now) = (key.as_hex(), now_millis());
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let taken = tx.prepare_cached(&inner.sql.acquire)?.execute((
                &*hex,
                &owner,
                to_sql_ms(until),
                to_sql_ms(now),
            ))? == 1;
            if !taken {
                // Held (or another waiter's turn): ours comes next, unless
                // another waiter claimed it first.
                let until = to_sql_ms(lease::turn_until(now));
                tx.prepare_cached(&inner.sql.claim_turn)?.execute((
                    &*hex,
                    &owner,
                    until,
                    to_sql_ms(now),
                ))?;
                tx.commit()?;
                return Ok(Taken::Busy);
            }
            tx.prepare_cached(&inner.sql.end_turn)?
                .execute((&*hex, &owner))?;
            // SQLite writes one transaction at a time: the previous
            // holder's save committed before this take could.
            let record = if load { inner.load(&tx, &key)? } else { None };
            tx.commit()?;
            Ok(Taken::Ours(record))
        })
        .await
    }

    async fn renew(&self, key: &StoreKey, owner: &str, until: Millis) -> Result<bool, Error> {
        let (key, owner) = (*key, owner.to_owned());
        self.blocking("sqlite: renew lock", move |inner, conn| {
            Ok(conn.prepare_cached(&inner.sql.renew)?.execute((
                &*key.as_hex(),
                &owner,
                to_sql_ms(until),
            ))? == 1)
        })
        .await
    }

    async fn release(&self, key: &StoreKey, owner: &str) -> Result<(), Error> {
        let (key, owner) = (*key, owner.to_owned());
        self.blocking("sqlite: unlock", move |inner, conn| {
            inner.release(conn, &key, &owner).map(drop)
        })
        .await
    }

    async fn save_and_keep(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
        until: Millis,
    ) -> Result<Released, Error> {
        let (key, owner, record) = (*key, owner.to_owned(), record.clone());
        // One transaction: the session is written only if our lock row is
        // still there, and the row's lease is moved on with it.
        self.blocking("sqlite: save", move |inner, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let renewed = tx.prepare_cached(&inner.sql.renew)?.execute((
                &*key.as_hex(),
                &owner,
                to_sql_ms(until),
            ))? == 1;
            if !renewed {
                return Ok(Released::Lost);
            }
            let saved = inner.save(&tx, &key, &record, only)?;
            tx.commit()?;
            Ok(Released::Saved(saved))
        })
        .await
    }

    async fn save_and_release(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
    ) -> Result<Released, Error> {
        let (key, owner, record) = (*key, owner.to_owned(), record.clone());
        // One transaction: the session is written only if this deleted our
        // lock row. Once spawned it runs to the end even if the caller is
        // dropped, so the lease is released.
        self.blocking("sqlite: save", move |inner, conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !inner.release(&tx, &key, &owner)? {
                return Ok(Released::Lost);
            }
            let saved = inner.save(&tx, &key, &record, only)?;
            tx.commit()?;
            Ok(Released::Saved(saved))
        })
        .await
    }
}

impl Inner {
    /// Deletes the lock row if it is still `owner`'s; whether it was.
    fn release(&self, conn: &Connection, key: &StoreKey, owner: &str) -> rusqlite::Result<bool> {
        Ok(conn
            .prepare_cached(&self.sql.release)?
            .execute((&*key.as_hex(), owner))?
            == 1)
    }
}
