//! The Redis store's user index: a sorted set per user, in the user's own
//! slot, of its sessions' keys, each kept until its session expires (and
//! [`INDEX_SLACK`] more); written before the record, taken out after it.

use super::{bounded, RedisStore};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::{Error, INDEX_SLACK};
use crate::user::UserId;

impl RedisStore {
    /// `{prefix}user:{<user's index key>}`: the user's own slot.
    pub(super) fn user_key(&self, user: &UserId) -> String {
        format!("{}user:{{{}}}", self.prefix, &*user.index_key())
    }

    /// Lists the session under its record's user, before the record is
    /// written: a save that fails after this leaves an entry too many
    /// (which expires with the session), never one too few. Waited for
    /// like the save, with `redis_wait_replicas`.
    pub(super) async fn index(&self, key: &StoreKey, record: &Record) -> Result<(), Error> {
        match &record.user {
            Some(user) => self.index_entry(key, user, record.expires).await,
            None => Ok(()),
        }
    }

    /// Takes a removed record out of its user's index: `head` is the
    /// record's header as the removing script answered it. The record went
    /// first, so the index never lacks a live session.
    pub(super) async fn unindex(
        &self,
        key: &StoreKey,
        head: &[u8],
        context: &'static str,
    ) -> Result<(), Error> {
        if let Some(user) = Record::user_in_header(head) {
            let mut conn = self.conn.clone();
            let mut zrem = ::redis::cmd("ZREM");
            zrem.arg(self.user_key(&user)).arg(&*key.as_hex());
            let _: i64 = bounded(context, zrem.query_async(&mut conn)).await?;
        }
        Ok(())
    }

    /// Lists `key` under `user` until `expires` (and [`INDEX_SLACK`] more).
    pub(super) async fn index_entry(
        &self,
        key: &StoreKey,
        user: &UserId,
        expires: Millis,
    ) -> Result<(), Error> {
        const CONTEXT: &str = "indexing a user's session";
        let mut call = self.scripts.index.prepare_invoke();
        call.key(self.user_key(user))
            .arg(&*key.as_hex())
            .arg(expires.saturating_add(INDEX_SLACK))
            .arg(now_millis());
        match self.wait() {
            None => {
                let mut conn = self.conn.clone();
                let _: i64 = bounded(CONTEXT, call.invoke_async(&mut conn)).await?;
            }
            Some(wait) => {
                let mut conn = self.durable().await?;
                let (_, acked): (i64, u64) =
                    bounded(CONTEXT, call.invoke_and_wait(&mut conn, wait)).await?;
                self.check_replicated(acked)?;
            }
        }
        Ok(())
    }
}
