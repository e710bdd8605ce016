//! The MySQL store's steps of the shared lease rules (`store/lease.rs`):
//! a take is a few statements on one connection, a save that keeps or
//! releases the lease one transaction with it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, TxOpts};

use super::conn::{execute, is_duplicate, is_lock_conflict, key_value, named};
use super::{Inner, MysqlStore};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::lease::{self, LeaseBackend, Released, Taken};
use crate::store::sql::{check_size, to_sql_ms};
use crate::store::{Error, LockWaits, SaveIf};

/// The lease statements, for the rules in `store/lease.rs`. MySQL cannot
/// notify another process, so its waiters poll on the backoff, claiming
/// the next turn as they do.
#[async_trait]
impl LeaseBackend for MysqlStore {
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
        let inner = self.prepared().await?;
        inner
            .timed("mysql: lock", async {
                let mut conn = inner.pool.get_conn().await?;
                let now = now_millis();
                let step = |until: Millis| {
                    named([
                        key_value(key),
                        owner.into(),
                        to_sql_ms(until).into(),
                        to_sql_ms(now).into(),
                    ])
                };
                // Each statement commits by itself: the lock row once
                // inserted is ours, and a read after it sees what the
                // previous holder committed with its release.
                let taken = match held(&mut conn, &inner.sql.acquire, step(until)).await? {
                    Some(taken) => taken,
                    // Held, or a lease that ran out: taken over only then.
                    None => held(&mut conn, &inner.sql.take_over, step(until))
                        .await?
                        .unwrap_or(false),
                };
                if !taken {
                    // Held (or another waiter's turn): ours comes next,
                    // unless another waiter claimed it first. Only a
                    // courtesy: a claim lost to a lock conflict is not an
                    // error.
                    let turn = step(lease::turn_until(now));
                    held(&mut conn, &inner.sql.claim_turn, turn).await?;
                    return Ok(Taken::Busy);
                }
                let ours = || named([key_value(key), owner.into()]);
                let rest = async {
                    conn.exec_drop(&inner.sql.end_turn, ours()).await?;
                    match load {
                        true => inner.load_on(&mut conn, key).await,
                        false => Ok(None),
                    }
                }
                .await;
                match rest {
                    Ok(record) => Ok(Taken::Ours(record)),
                    Err(e) => {
                        // The lock is ours but the take failed: give it
                        // back now rather than leave it locked a lease.
                        let _ = conn.exec_drop(&inner.sql.release, ours()).await;
                        Err(e)
                    }
                }
            })
            .await
    }

    async fn renew(&self, key: &StoreKey, owner: &str, until: Millis) -> Result<bool, Error> {
        let inner = &self.inner;
        let params = named([key_value(key), owner.into(), to_sql_ms(until).into()]);
        inner
            .timed("mysql: renew lock", async {
                let mut conn = inner.pool.get_conn().await?;
                Ok(execute(&mut conn, &inner.sql.renew, params).await? == 1)
            })
            .await
    }

    async fn release(&self, key: &StoreKey, owner: &str) -> Result<(), Error> {
        let inner = &self.inner;
        inner
            .timed("mysql: unlock", async {
                let mut conn = inner.pool.get_conn().await?;
                conn.exec_drop(&inner.sql.release, named([key_value(key), owner.into()]))
                    .await
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
        // The session is written only if our lock row is still there, and
        // the row's lease moves on with it.
        let params = named([key_value(key), owner.into(), to_sql_ms(until).into()]);
        let inner = &self.inner;
        inner
            .timed(
                "mysql: save",
                inner.leased_save(&inner.sql.renew, params, key, record, only),
            )
            .await
    }

    async fn save_and_release(
        &self,
        key: &StoreKey,
        owner: &str,
        record: &Record,
        only: SaveIf,
    ) -> Result<Released, Error> {
        // The session is written only if this deleted our lock row. A
        // waiter's insert of the row waits for the commit, and then reads
        // what it wrote.
        let params = named([key_value(key), owner.into()]);
        let inner = &self.inner;
        inner
            .timed(
                "mysql: save",
                inner.leased_save(&inner.sql.release, params, key, record, only),
            )
            .await
    }
}

impl Inner {
    /// One transaction: `lease_step` (which finds our lock row, or not),
    /// then the save only if it did.
    async fn leased_save(
        &self,
        lease_step: &str,
        params: Params,
        key: &StoreKey,
        record: &Record,
        only: SaveIf,
    ) -> mysql_async::Result<Released> {
        let mut conn = self.pool.get_conn().await?;
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        if execute(&mut tx, lease_step, params).await? != 1 {
            tx.rollback().await?;
            return Ok(Released::Lost);
        }
        let saved = self.save_on(&mut tx, key, record, only).await?;
        tx.commit().await?;
        Ok(Released::Saved(saved))
    }
}

/// Runs a lease step: `Some(true)` if it found one row (the lock is ours,
/// or the turn claimed), `Some(false)` if none, `None` if the key was
/// taken (a duplicate key) or another transaction's row lock was in the
/// way — both mean someone else holds it now.
async fn held(conn: &mut Conn, sql: &str, params: Params) -> mysql_async::Result<Option<bool>> {
    match execute(conn, sql, params).await {
        Ok(n) => Ok(Some(n >= 1)),
        Err(e) if is_duplicate(&e) || is_lock_conflict(&e) => Ok(None),
        Err(e) => Err(e),
    }
}
