//! The RAM store's table: each session one allocation (`Entry`), in
//! shards of hash tables found by the key's own bytes (`Shard`).

use hashbrown::hash_table::{Entry as Slot, HashTable};

use super::ENTRY_OVERHEAD;
use crate::id::{StoreKey, KEY_LEN};
use crate::record::{Millis, Record};
use crate::user::UserId;

/// One stored session in one allocation: the key, the times, the user's
/// id and the data, laid out as
///
/// `key (32) | created (8) | expires (8) | timeout and user length (8) |
/// user | data`,
///
/// numbers little-endian. The timeout (ms, 0: none) takes the low 48 bits
/// of its word (8,900 years; sessions allow 400 days), the user id's length
/// (at most 256) the top 16.
pub(super) struct Entry(Box<[u8]>);

const CREATED: usize = KEY_LEN;
const EXPIRES: usize = CREATED + 8;
const TIMEOUT_AND_USER_LEN: usize = EXPIRES + 8;
pub(super) const HEADER: usize = TIMEOUT_AND_USER_LEN + 8;
const TIMEOUT_BITS: u32 = 48;

impl Entry {
    pub(super) fn new(key: &StoreKey, record: &Record) -> Self {
        let user = record.user.as_ref().map_or("", UserId::as_str).as_bytes();
        let timeout = record.timeout.unwrap_or(0).min((1 << TIMEOUT_BITS) - 1);
        let mut bytes = Vec::with_capacity(HEADER + user.len() + record.data.len());
        bytes.extend_from_slice(key.as_bytes());
        bytes.extend_from_slice(&record.created.to_le_bytes());
        bytes.extend_from_slice(&record.expires.to_le_bytes());
        let packed = timeout | (user.len() as u64) << TIMEOUT_BITS;
        bytes.extend_from_slice(&packed.to_le_bytes());
        bytes.extend_from_slice(user);
        bytes.extend_from_slice(&record.data);
        Entry(bytes.into_boxed_slice())
    }

    pub(super) fn key(&self) -> StoreKey {
        let mut key = [0; KEY_LEN];
        key.copy_from_slice(&self.0[..KEY_LEN]);
        StoreKey::from_raw(key)
    }

    /// Its key's [`table_hash`], read in place (for rehashing).
    fn table_hash(&self) -> u64 {
        table_hash(&self.0[..KEY_LEN])
    }

    fn is(&self, key: &StoreKey) -> bool {
        self.0[..KEY_LEN] == key.as_bytes()[..]
    }

    fn word(&self, at: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(b)
    }

    pub(super) fn expires(&self) -> Millis {
        self.word(EXPIRES)
    }

    pub(super) fn set_expires(&mut self, expires: Millis) {
        self.0[EXPIRES..EXPIRES + 8].copy_from_slice(&expires.to_le_bytes());
    }

    pub(super) fn user_len(&self) -> usize {
        (self.word(TIMEOUT_AND_USER_LEN) >> TIMEOUT_BITS) as usize
    }

    pub(super) fn user_bytes(&self) -> &[u8] {
        &self.0[HEADER..HEADER + self.user_len()]
    }

    /// The user, if any. The bytes were a `UserId` when stored.
    pub(super) fn user(&self) -> Option<UserId> {
        let bytes = self.user_bytes();
        (!bytes.is_empty())
            .then(|| UserId::from_bytes(bytes).ok())
            .flatten()
    }

    pub(super) fn record(&self) -> Record {
        let timeout = self.word(TIMEOUT_AND_USER_LEN) & ((1 << TIMEOUT_BITS) - 1);
        Record {
            data: self.0[HEADER + self.user_len()..].to_vec(),
            created: self.word(CREATED),
            expires: self.expires(),
            timeout: (timeout > 0).then_some(timeout),
            user: self.user(),
        }
    }

    /// What the entry counts against the store's `max_memory`.
    pub(super) fn cost(&self) -> usize {
        self.0.len() + ENTRY_OVERHEAD
    }
}

/// The table's hash of a key's bytes: bytes the shard's choice does not
/// use, as keys are uniformly random (SHA-256).
fn table_hash(key: &[u8]) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&key[8..16]);
    u64::from_le_bytes(b)
}

/// One shard's table of entries, found by their key.
#[derive(Default)]
pub(super) struct Shard(pub(super) HashTable<Entry>);

impl Shard {
    pub(super) fn get(&self, key: &StoreKey) -> Option<&Entry> {
        self.0.find(table_hash(key.as_bytes()), |e| e.is(key))
    }

    pub(super) fn get_mut(&mut self, key: &StoreKey) -> Option<&mut Entry> {
        self.0.find_mut(table_hash(key.as_bytes()), |e| e.is(key))
    }

    /// Stores `entry`, answering what it replaced.
    pub(super) fn insert(&mut self, key: &StoreKey, entry: Entry) -> Option<Entry> {
        match self
            .0
            .entry(table_hash(key.as_bytes()), |e| e.is(key), Entry::table_hash)
        {
            Slot::Occupied(mut slot) => Some(std::mem::replace(slot.get_mut(), entry)),
            Slot::Vacant(slot) => {
                slot.insert(entry);
                None
            }
        }
    }

    pub(super) fn remove(&mut self, key: &StoreKey) -> Option<Entry> {
        let slot = self
            .0
            .find_entry(table_hash(key.as_bytes()), |e| e.is(key))
            .ok()?;
        Some(slot.remove().0)
    }

    /// Gives back the slots of a table left mostly empty (after a flood
    /// expired, or `clear`): a table never shrinks by itself, and its
    /// slots are outside what `max_memory` counts.
    pub(super) fn shrink_if_sparse(&mut self) {
        if self.0.capacity() > 4 * self.0.len() + 64 {
            self.0.shrink_to_fit(Entry::table_hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lock;
    use super::super::tests::{record, sized};
    use super::super::MemoryStore;
    use super::*;
    use crate::store::{SaveIf, SessionAdmin, SessionStore};
    use futures_util::StreamExt;
    use std::time::Duration;

    /// The tables give their slots back once a flood of sessions expired
    /// and clean-up dropped them.
    #[tokio::test]
    async fn clean_up_shrinks_what_a_flood_left_empty() {
        let store = MemoryStore::new();
        let slots = |store: &MemoryStore| -> usize {
            store
                .inner
                .shards
                .iter()
                .map(|s| lock(s).0.capacity())
                .sum()
        };
        for _ in 0..20_000 {
            let key = StoreKey::generate().unwrap();
            assert!(store.save(&key, &record(1), SaveIf::Absent).await.unwrap());
        }
        let flooded = slots(&store);
        assert!(flooded >= 20_000, "{flooded}");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.clean_up().await.unwrap(), 20_000);
        assert!(
            slots(&store) < flooded / 10,
            "{} of {flooded}",
            slots(&store)
        );
    }

    /// An entry gives back what it was stored with, with and without a
    /// user and its own timeout.
    #[tokio::test]
    async fn an_entry_keeps_every_field() {
        let store = MemoryStore::new();
        let key = StoreKey::generate().unwrap();
        let with_all = Record {
            timeout: Some(86_400_000),
            user: Some(UserId::new("ada@example.org").unwrap()),
            ..sized(60_000, 7)
        };
        for r in [record(60_000), with_all] {
            store.delete(&key).await.unwrap();
            assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
            let back = store.load(&key).await.unwrap().unwrap();
            assert_eq!(
                (
                    back.data,
                    back.created,
                    back.expires,
                    back.timeout,
                    back.user
                ),
                (r.data, r.created, r.expires, r.timeout, r.user)
            );
        }
        let mut keys: Vec<_> = store.keys().collect().await;
        assert_eq!(keys.pop().unwrap().unwrap(), key);
    }
}
