//! The MySQL store's statements beyond those the SQL stores share:
//! clean-up, and the lease steps with the claims on the next turn, in the
//! SQL MySQL 8 and MariaDB share (no `RETURNING`, no conditional upsert:
//! where SQLite says `ON CONFLICT … WHERE`, a step here is an insert that
//! fails on a duplicate key, then an update with the condition).

use crate::store::sql::{Dialect, Statements, Table, CLEAN_BATCH, TURN_SUFFIX};

/// The statements, with the table name filled in once. Parameters are
/// named `:p1`, `:p2`, … as in the shared ones.
pub(super) struct Sql {
    pub(super) table: Statements,
    /// Locks up to `:p2` expired rows (skipping rows another clean-up
    /// holds) and reads their `id, user_id`.
    pub(super) clean_select: String,
    /// Deletes the rows `clean_select` locked: `now`, then
    /// [`CLEAN_BATCH`] ids, positional (repeat one to fill the list).
    pub(super) clean_delete: String,
    pub(super) clean_leases: String,
    pub(super) acquire: String,
    pub(super) take_over: String,
    pub(super) claim_turn: String,
    pub(super) end_turn: String,
    pub(super) renew: String,
    pub(super) release: String,
}

impl Sql {
    pub(super) fn new(table: &Table) -> Self {
        let t = table.sql("");
        let l = table.sql("_locks");
        let ids = vec!["?"; CLEAN_BATCH as usize].join(", ");
        let turn = format!("CONCAT(:p1, '{TURN_SUFFIX}')");
        Sql {
            table: Statements::new(table, Dialect::Mysql),
            clean_select: format!(
                "SELECT id, user_id FROM {t} WHERE expires_at <= :p1 LIMIT :p2 \
                 FOR UPDATE SKIP LOCKED"
            ),
            clean_delete: format!("DELETE FROM {t} WHERE expires_at <= ? AND id IN ({ids})"),
            clean_leases: format!("DELETE FROM {l} WHERE lease_expires <= :p1 LIMIT :p2"),
            // Parameters of the lease steps: (key, owner, until, now).
            // Inserted when free and no other waiter's turn is claimed
            // (`lease.rs`: turns); a duplicate key means held, or a lease
            // that ran out, which `take_over` then takes.
            acquire: format!(
                "INSERT INTO {l} (id, owner, lease_expires) SELECT :p1, :p2, :p3 FROM DUAL \
                 WHERE NOT EXISTS (SELECT 1 FROM {l} WHERE id = {turn} \
                   AND owner <> :p2 AND lease_expires > :p4)"
            ),
            take_over: format!(
                "UPDATE {l} SET owner = :p2, lease_expires = :p3 \
                 WHERE id = :p1 AND lease_expires <= :p4"
            ),
            // The next turn, claimed if nobody else's claim is live, and
            // renewed by its owner. Assignments run left to right: the
            // owner changes only if the claim had lapsed, and the end moves
            // only if the owner (by then) is us.
            claim_turn: format!(
                "INSERT INTO {l} (id, owner, lease_expires) VALUES ({turn}, :p2, :p3) \
                 ON DUPLICATE KEY UPDATE owner = IF(lease_expires <= :p4, :p2, owner), \
                   lease_expires = IF(owner = :p2, :p3, lease_expires)"
            ),
            end_turn: format!("DELETE FROM {l} WHERE id = {turn} AND owner = :p2"),
            renew: format!("UPDATE {l} SET lease_expires = :p3 WHERE id = :p1 AND owner = :p2"),
            release: format!("DELETE FROM {l} WHERE id = :p1 AND owner = :p2"),
        }
    }
}
