//! The SQLite store's statements beyond those both SQL stores share:
//! clean-up, and the lease steps with the claims on the next turn.

use crate::store::sql::{Dialect, Statements, Table, TURN_SUFFIX};

/// The statements, with the table name filled in once.
pub(super) struct Sql {
    pub(super) table: Statements,
    pub(super) clean: String,
    pub(super) clean_leases: String,
    pub(super) acquire: String,
    pub(super) claim_turn: String,
    pub(super) end_turn: String,
    pub(super) renew: String,
    pub(super) release: String,
}

impl Sql {
    pub(super) fn new(table: &Table) -> Self {
        let t = table.sql("");
        let l = table.sql("_locks");
        Sql {
            table: Statements::new(table, Dialect::Sqlite),
            clean: format!(
                "DELETE FROM {t} WHERE rowid IN (\
                   SELECT rowid FROM {t} WHERE expires_at <= ?1 LIMIT ?2) RETURNING id, user_id"
            ),
            clean_leases: format!(
                "DELETE FROM {l} WHERE rowid IN (\
                   SELECT rowid FROM {l} WHERE lease_expires <= ?1 LIMIT ?2)"
            ),
            // Taken when free, or when its holder's lease ran out, unless
            // another waiter's turn is claimed (`lease.rs`: turns). A
            // turn's row is the key's with TURN_SUFFIX, in the same table,
            // so clean-up drops the lapsed ones with the lapsed leases.
            acquire: format!(
                "INSERT INTO {l} (id, owner, lease_expires) \
                 SELECT ?1, ?2, ?3 WHERE NOT EXISTS (\
                   SELECT 1 FROM {l} WHERE id = ?1 || '{TURN_SUFFIX}' \
                   AND owner <> ?2 AND lease_expires > ?4) \
                 ON CONFLICT (id) DO UPDATE \
                 SET owner = excluded.owner, lease_expires = excluded.lease_expires \
                 WHERE {l}.lease_expires <= ?4"
            ),
            // The next turn, claimed if nobody else's claim is live, and
            // renewed by its owner.
            claim_turn: format!(
                "INSERT INTO {l} (id, owner, lease_expires) VALUES (?1 || '{TURN_SUFFIX}', ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE \
                 SET owner = excluded.owner, lease_expires = excluded.lease_expires \
                 WHERE {l}.owner = excluded.owner OR {l}.lease_expires <= ?4"
            ),
            end_turn: format!("DELETE FROM {l} WHERE id = ?1 || '{TURN_SUFFIX}' AND owner = ?2"),
            renew: format!("UPDATE {l} SET lease_expires = ?3 WHERE id = ?1 AND owner = ?2"),
            release: format!("DELETE FROM {l} WHERE id = ?1 AND owner = ?2"),
        }
    }
}
