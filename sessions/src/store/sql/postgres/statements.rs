//! The PostgreSQL store's statements beyond those both SQL stores share:
//! clean-up, and the lease steps with the saves and wake-ups they carry.

use crate::store::sql::{Dialect, Statements, Table, RECORD_COLUMNS};

/// The statements, with the table name filled in once.
pub(super) struct Sql {
    pub(super) table: Statements,
    pub(super) clean: String,
    pub(super) clean_locks: String,
    pub(super) take: String,
    pub(super) take_and_load: String,
    pub(super) renew: String,
    pub(super) release: String,
    pub(super) insert_and_release: String,
    pub(super) update_and_release: String,
    pub(super) insert_and_keep: String,
    pub(super) update_and_keep: String,
    /// The `NOTIFY` channel of this table's lock releases.
    pub(super) channel: String,
}

impl Sql {
    pub(super) fn new(table: &Table) -> Self {
        let t = table.sql("");
        let l = table.sql("_locks");
        // A released lock row stays, its lease ended, for the next take to
        // reuse: an update of a row in place instead of a delete and an
        // insert (and their index entries) per request. Clean-up removes
        // the rows of sessions no longer used. `waiters` is left as it was,
        // for the release to see whether to notify; a take resets it.
        // The owner goes too, so that a renewal already on its way when the
        // lease was released finds nothing to extend.
        let release = format!("UPDATE {l} SET lease_expires = 0, owner = ''");
        // A save under the lease: the lease step (`held`: our lock row
        // released, or kept with a new end) and the write are one
        // statement, and the write happens only if the lease step found our
        // row. Both counts come back: lock rows (0: the lease was lost) and
        // rows written. Releasing a lock someone waits for tells them in the
        // same transaction (a notification is sent at commit). `$1` is the
        // key, `$6` the owner, `$7` the channel or the lease's new end.
        let released =
            format!("held AS ({release} WHERE id = $1 AND owner = $6 RETURNING waiters)");
        let kept = format!(
            "held AS (UPDATE {l} SET lease_expires = $7 WHERE id = $1 AND owner = $6 \
             RETURNING waiters)"
        );
        let insert = format!(
            "written AS (\
               INSERT INTO {t} AS s (id, data, created_at, expires_at, timeout_ms, user_id) \
               SELECT $1, $2, $3, $4, $8, $9 WHERE EXISTS (SELECT 1 FROM held) \
               ON CONFLICT (id) DO UPDATE \
               SET data = excluded.data, created_at = excluded.created_at, \
                   expires_at = excluded.expires_at, timeout_ms = excluded.timeout_ms, \
                   user_id = excluded.user_id \
               WHERE s.expires_at <= $5 RETURNING 1)"
        );
        let update = format!(
            "written AS (\
               UPDATE {t} SET data = $2, created_at = $3, expires_at = $4, timeout_ms = $8, \
                 user_id = $9 \
               WHERE id = $1 AND expires_at > $5 AND EXISTS (SELECT 1 FROM held) \
               RETURNING 1)"
        );
        let counts = "SELECT (SELECT count(*) FROM held), (SELECT count(*) FROM written)";
        // Taken when there is no row or its lease ran out; otherwise the row
        // records that someone waits, so that its release notifies. Every
        // right-hand side sees the row as it was. One row comes back either
        // way: whether the lease is now ours.
        let taken = format!(
            "taken AS (\
               INSERT INTO {l} AS l (id, owner, lease_expires) VALUES ($1, $2, $3) \
               ON CONFLICT (id) DO UPDATE SET \
                 owner = CASE WHEN l.lease_expires <= $4 THEN excluded.owner ELSE l.owner END, \
                 lease_expires = CASE WHEN l.lease_expires <= $4 \
                   THEN excluded.lease_expires ELSE l.lease_expires END, \
                 waiters = l.lease_expires > $4 \
               RETURNING owner = $2 AS ours)"
        );
        // Only the lock row changes in a take, so its commit need not wait
        // for a WAL flush: should the server crash before the flush, the
        // row is simply gone after recovery — as if the lease had run out —
        // and the save that would release it finds it gone and writes
        // nothing. (`true`: for this statement's transaction only.)
        let async_commit = "set_config('synchronous_commit', 'off', true)";
        let notify = "(SELECT count(pg_notify($7, $1)) FROM held WHERE waiters)";
        let want = "(SELECT count(pg_notify($5, 'w' || $1)) FROM taken WHERE NOT ours)";
        Sql {
            table: Statements::new(table, Dialect::Postgres),
            // Rows a save is writing right now are skipped, not waited for;
            // the next clean-up takes them if they are still expired.
            clean: format!(
                "DELETE FROM {t} WHERE id IN (\
                   SELECT id FROM {t} WHERE expires_at <= $1 \
                   LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id, user_id"
            ),
            clean_locks: format!(
                "DELETE FROM {l} WHERE id IN (\
                   SELECT id FROM {l} WHERE lease_expires <= $1 \
                   LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
            // A take that finds the lock held also asks a process that
            // keeps the session to give it back (`w<key>` on `$5`).
            take: format!("WITH {taken} SELECT ours, {async_commit}, {want} FROM taken"),
            // The read locks the session row (`FOR NO KEY UPDATE`), which
            // makes it return the row as last committed, not as of the
            // statement's start: a take that had to wait for the previous
            // holder's save-and-release (which deletes the lock row and
            // writes the session in one transaction) reads what that save
            // wrote. A plain read would see the version from before it, and
            // the next save would overwrite an update. The row lock ends
            // with the statement.
            take_and_load: format!(
                "WITH {taken} \
                 SELECT taken.ours, {async_commit}, s.data, s.created_at, s.expires_at, \
                   s.timeout_ms, s.user_id, {want} \
                 FROM taken LEFT JOIN LATERAL (\
                   SELECT {RECORD_COLUMNS} FROM {t} \
                   WHERE id = $1 AND taken.ours FOR NO KEY UPDATE) AS s ON true"
            ),
            // A lock-only write: see `async_commit` for why it need not be
            // flushed.
            renew: format!(
                "UPDATE {l} SET lease_expires = $3 \
                 FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit \
                 WHERE id = $1 AND owner = $2 AND lease_expires > $4 RETURNING 1"
            ),
            release: format!(
                "WITH released AS ({release} WHERE id = $1 AND owner = $2 RETURNING waiters) \
                 SELECT set_config('synchronous_commit', 'off', true), \
                   (SELECT count(pg_notify($3, $1)) FROM released WHERE waiters)"
            ),
            insert_and_release: format!("WITH {released}, {insert} {counts}, {notify}"),
            update_and_release: format!("WITH {released}, {update} {counts}, {notify}"),
            insert_and_keep: format!("WITH {kept}, {insert} {counts}"),
            update_and_keep: format!("WITH {kept}, {update} {counts}"),
            channel: format!(
                "sessions_{:016x}",
                fnv1a(b"sessions-lock:", table.text().as_bytes())
            ),
        }
    }
}

/// FNV-1a, 64 bits: stable across builds and processes, unlike std's
/// hasher, so every instance derives the same lock keys.
pub(super) fn fnv1a(prefix: &[u8], text: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in prefix.iter().chain(text) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
