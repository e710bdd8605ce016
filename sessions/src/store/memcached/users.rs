//! The memcached store's user index: one item per user,
//! `<prefix>user:<user>`, its lines `<key> <expires ms>` changed with
//! compare-and-swap, each kept a little past its session.

use super::expiry::{exptime, latest_until};
use super::proto::{Mode, Outcome};
use super::{Contended, MemcachedStore, CAS_TRIES};
use crate::id::StoreKey;
use crate::record::{now_millis, Millis, Record};
use crate::store::{Error, INDEX_SLACK};
use crate::user::UserId;

impl MemcachedStore {
    /// Lists the session in its user's index, before the record is
    /// written: a save that fails after this leaves an entry too many
    /// (which the index drops once it expires), never one too few.
    pub(super) async fn index(&self, key: &StoreKey, record: &Record) -> Result<(), Error> {
        let Some(user) = &record.user else {
            return Ok(());
        };
        // Kept a while past the session: servers' clocks may disagree. But
        // no later than memcached can keep it: the record's expiry was
        // checked before (`exptime`), the slack may be lost at the limit.
        let until = record
            .expires
            .saturating_add(INDEX_SLACK)
            .min(latest_until(now_millis()));
        self.change_index(user, |entries| {
            match entries.iter_mut().find(|(k, _)| k == key) {
                // Far enough already: most saves of a session write nothing.
                Some((_, listed)) if *listed >= record.expires => return false,
                Some((_, listed)) => *listed = until,
                None => entries.push((*key, until)),
            }
            true
        })
        .await
    }

    /// Changes one user's index with compare-and-swap (`change` says
    /// whether it changed anything); what expired goes at each change, and
    /// the index expires with its last session.
    pub(super) async fn change_index(
        &self,
        user: &UserId,
        change: impl Fn(&mut Vec<(StoreKey, Millis)>) -> bool,
    ) -> Result<(), Error> {
        const CONTEXT: &str = "indexing a user's session";
        let (server, user_key) = (self.user_server(user), self.user_key(user));
        let fail = |e| Error::unavailable(CONTEXT, e);
        for _ in 0..CAS_TRIES {
            let item = server.get(&user_key, INDEX_LIMIT).await.map_err(fail)?;
            let (mut entries, cas) = match &item {
                Some(item) => (parse_index(&item.value), Some(item.cas)),
                None => (Vec::new(), None),
            };
            let (now, listed) = (now_millis(), entries.len());
            entries.retain(|(_, expires)| *expires > now);
            if !change(&mut entries) && entries.len() == listed {
                return Ok(());
            }
            let outcome = match (entries.iter().map(|(_, e)| *e).max(), cas) {
                (None, Some(cas)) => server.delete(&user_key, Some(cas)).await,
                (None, None) => return Ok(()),
                (Some(last), cas) => {
                    let mode = if cas.is_some() { Mode::Set } else { Mode::Add };
                    let value = format_index(&entries);
                    server
                        .set(&user_key, &value, exptime(last)?, mode, cas)
                        .await
                }
            }
            .map_err(fail)?;
            if outcome == Outcome::Done || (outcome == Outcome::NotFound && entries.is_empty()) {
                return Ok(());
            }
        }
        Err(Error::unavailable(CONTEXT, Contended))
    }
}

/// Index entries a user may have, as bytes: ample for thousands of
/// sessions of one user.
pub(super) const INDEX_LIMIT: usize = 512 * 1024;

/// The lines `<key> <expires ms>` of a user index; lines that do not parse
/// are dropped.
pub(super) fn parse_index(bytes: &[u8]) -> Vec<(StoreKey, Millis)> {
    std::str::from_utf8(bytes)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (key, expires) = line.split_once(' ')?;
            Some((key.parse().ok()?, expires.parse().ok()?))
        })
        .collect()
}

fn format_index(entries: &[(StoreKey, Millis)]) -> Vec<u8> {
    let mut out = String::with_capacity(entries.len() * 80);
    for (key, expires) in entries {
        out.push_str(&key.as_hex());
        out.push(' ');
        out.push_str(&expires.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lines_round_trip() {
        let key = StoreKey::generate().unwrap();
        let entries = vec![(key, 1_700_000_000_000)];
        assert_eq!(parse_index(&format_index(&entries)), entries);
        assert_eq!(parse_index(b"junk\nmore junk 5\n"), vec![]);
    }
}
