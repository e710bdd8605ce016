//! The behaviour every [`SessionStore`](super::SessionStore) must show, as
//! async checks, and the [`store_conformance!`](crate::store_conformance)
//! macro that turns them into one `#[tokio::test]` each for a store.
//!
//! Enabled by the `test-suite` feature; use it to test a store of your own:
//!
//! ```no_run
//! server_sessions::store_conformance!(async { Some(server_sessions::store::MemoryStore::new()) });
//! ```
//!
//! The expression makes a fresh, empty store for each check, or `None` to
//! skip (a store whose server is unreachable outside CI).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{Error, SaveIf, SessionAdmin};
use crate::id::{SessionId, StoreKey};
use crate::record::{now_millis, Record};
use crate::user::UserId;

const LONG: Duration = Duration::from_secs(10);

fn key() -> StoreKey {
    SessionId::generate().expect("random source").store_key()
}

fn record(data: &str, ttl_ms: i64) -> Record {
    let now = now_millis();
    Record {
        data: data.as_bytes().to_vec(),
        created: now,
        expires: now.saturating_add_signed(ttl_ms),
        timeout: None,
        user: None,
    }
}

/// A user id no other check (or run) uses.
fn someone() -> UserId {
    UserId::new(format!("user-{}", key())).unwrap()
}

/// `record` tied to `user`.
fn of(user: &UserId, data: &str, ttl_ms: i64) -> Record {
    Record {
        user: Some(user.clone()),
        ..record(data, ttl_ms)
    }
}

/// The keys `sessions_of` lists for `user`, sorted.
async fn listed<S: SessionAdmin>(store: &S, user: &UserId) -> Vec<StoreKey> {
    let mut keys: Vec<StoreKey> = store
        .sessions_of(user)
        .await
        .unwrap()
        .into_iter()
        .map(|(key, record)| {
            assert_eq!(
                record.user.as_ref(),
                Some(user),
                "listed under the wrong user"
            );
            key
        })
        .collect();
    keys.sort();
    keys
}

fn sorted<const N: usize>(mut keys: [StoreKey; N]) -> Vec<StoreKey> {
    keys.sort();
    keys.to_vec()
}

/// The user index follows every write: a save lists a session under its
/// user (with its record), a locked save and a refresh keep it there, a
/// save under another user or none moves it, a delete takes it out; other
/// users' sessions are never listed.
pub async fn user_index<S: SessionAdmin>(store: &S) {
    let (alice, bob) = (someone(), someone());
    let (a1, a2, b1, nobody) = (key(), key(), key(), key());
    assert_eq!(listed(store, &alice).await, []);
    for (key, r) in [
        (a1, of(&alice, r#"{"n":1}"#, 60_000)),
        (a2, of(&alice, r#"{"n":2}"#, 60_000)),
        (b1, of(&bob, "{}", 60_000)),
        (nobody, record("{}", 60_000)),
    ] {
        assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
    }
    assert_eq!(listed(store, &alice).await, sorted([a1, a2]));
    assert_eq!(listed(store, &bob).await, [b1]);
    let listed_records = store.sessions_of(&alice).await.unwrap();
    let first = listed_records.iter().find(|(k, _)| *k == a1).unwrap();
    assert_eq!(Some(&first.1), store.load(&a1).await.unwrap().as_ref());

    // Locked saves and refreshes keep the session where it is.
    let (guard, loaded) = store.lock_and_load(&a1, LONG).await.unwrap();
    let mut r = loaded.unwrap();
    assert_eq!(r.user.as_ref(), Some(&alice));
    r.data = br#"{"n":3}"#.to_vec();
    assert!(guard.save_and_release(&r, SaveIf::Live).await.unwrap());
    assert!(store.touch(&a1, now_millis() + 120_000).await.unwrap());
    assert_eq!(listed(store, &alice).await, sorted([a1, a2]));

    // Another user, then none: the session moves, then leaves the index.
    assert!(store
        .save(&a2, &of(&bob, "{}", 60_000), SaveIf::Live)
        .await
        .unwrap());
    assert_eq!(listed(store, &alice).await, [a1]);
    assert_eq!(listed(store, &bob).await, sorted([a2, b1]));
    assert!(store
        .save(&a2, &record("{}", 60_000), SaveIf::Live)
        .await
        .unwrap());
    assert_eq!(listed(store, &bob).await, [b1]);
    store.delete(&a1).await.unwrap();
    assert_eq!(listed(store, &alice).await, []);
    store.delete(&b1).await.unwrap();
    assert_eq!(listed(store, &bob).await, []);
}

/// A user's expired sessions are not listed, and clean-up removes them
/// (what each store keeps of its index is checked by its own tests).
pub async fn user_index_expiry<S: SessionAdmin>(store: &S) {
    let user = someone();
    let (short, long) = (key(), key());
    assert!(store
        .save(&short, &of(&user, "{}", 300), SaveIf::Absent)
        .await
        .unwrap());
    assert!(store
        .save(&long, &of(&user, "{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(listed(store, &user).await, [long]);
    store.clean_up().await.unwrap();
    assert_eq!(listed(store, &user).await, [long]);
    store.delete(&long).await.unwrap();
    assert_eq!(listed(store, &user).await, []);
}

/// Ending a user's sessions ends one whose lock a request holds, and that
/// request's save does not bring it back; "all but this one" keeps it.
pub async fn ending_a_users_sessions<S: SessionAdmin>(store: &S) {
    let user = someone();
    let (current, other, locked) = (key(), key(), key());
    for k in [current, other, locked] {
        assert!(store
            .save(&k, &of(&user, r#"{"n":0}"#, 60_000), SaveIf::Absent)
            .await
            .unwrap());
    }
    let (guard, loaded) = store.lock_and_load(&locked, LONG).await.unwrap();
    // A store that keeps sessions in processes ends a locked one after its
    // request (it waits for the lock); the others at once, and the
    // request's save then finds it gone. Either way it ends.
    let ending = crate::store::end_user_sessions(store, &user, Some(&current));
    let request = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut in_flight = loaded.unwrap();
        in_flight.data = br#"{"n":1}"#.to_vec();
        guard.save_and_release(&in_flight, SaveIf::Live).await
    };
    let (ended, _) = tokio::join!(ending, request);
    assert_eq!(ended.unwrap(), 2);
    assert_eq!(listed(store, &user).await, [current]);
    assert_eq!(store.load(&locked).await.unwrap(), None);
    assert_eq!(listed(store, &user).await, [current]);
    let ended = crate::store::end_user_sessions(store, &user, None)
        .await
        .unwrap();
    assert_eq!((ended, listed(store, &user).await), (1, vec![]));
}

/// Save a new record and load it back unchanged.
pub async fn round_trip<S: SessionAdmin>(store: &S) {
    let key = key();
    assert_eq!(store.load(&key).await.unwrap(), None);
    let r = record(r#"{"a":1,"b":"x"}"#, 60_000);
    assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap(), Some(r.clone()));
    let r2 = Record {
        data: br#"{"a":2}"#.to_vec(),
        ..r
    };
    assert!(store.save(&key, &r2, SaveIf::Live).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap(), Some(r2));
}

/// A session's own timeout is kept with its record by every way of
/// writing it — a new save, a locked save, a refresh — and comes back.
pub async fn own_timeout<S: SessionAdmin>(store: &S) {
    let key = key();
    let month = 30 * 24 * 3_600_000;
    let r = Record {
        timeout: Some(month),
        ..record(r#"{"remember":true}"#, 60_000)
    };
    assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap(), Some(r.clone()));
    let (guard, loaded) = store.lock_and_load(&key, LONG).await.unwrap();
    assert_eq!(loaded.as_ref().and_then(|r| r.timeout), Some(month));
    let shorter = Record {
        timeout: Some(3_600_000),
        ..r.clone()
    };
    assert!(guard
        .save_and_release(&shorter, SaveIf::Live)
        .await
        .unwrap());
    assert_eq!(store.load(&key).await.unwrap(), Some(shorter));
    assert!(store.touch(&key, now_millis() + 120_000).await.unwrap());
    let touched = store.load(&key).await.unwrap().unwrap();
    assert_eq!(touched.timeout, Some(3_600_000));
    let cleared = Record {
        timeout: None,
        ..touched
    };
    assert!(store.save(&key, &cleared, SaveIf::Live).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap().unwrap().timeout, None);
}

/// An expired record loads as `None`, does not exist, and cannot be
/// written as `Live`.
pub async fn expiry<S: SessionAdmin>(store: &S) {
    let key = key();
    assert!(store
        .save(&key, &record("{}", 300), SaveIf::Absent)
        .await
        .unwrap());
    assert!(store.exists(&key).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(store.load(&key).await.unwrap(), None);
    assert!(!store.exists(&key).await.unwrap());
    assert!(!store
        .save(&key, &record("{}", 60_000), SaveIf::Live)
        .await
        .unwrap());
    assert!(!store.touch(&key, now_millis() + 60_000).await.unwrap());
}

/// `touch` moves the expiry and keeps the data.
pub async fn refresh<S: SessionAdmin>(store: &S) {
    let key = key();
    let r = record(r#"{"k":true}"#, 1_000);
    assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
    let later = now_millis() + 120_000;
    assert!(store.touch(&key, later).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let loaded = store.load(&key).await.unwrap().expect("refreshed record");
    assert_eq!(loaded.data, r.data);
    assert_eq!(loaded.created, r.created);
    // Stores with second-resolution expiry may round; allow one second.
    assert!(loaded.expires.abs_diff(later) <= 1_000, "{loaded:?}");
    assert!(!store.touch(&self::key(), later).await.unwrap());
}

/// `delete` removes; deleting nothing is fine.
pub async fn delete<S: SessionAdmin>(store: &S) {
    let key = key();
    assert!(store
        .save(&key, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    store.delete(&key).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), None);
    assert!(!store.exists(&key).await.unwrap());
    store.delete(&key).await.unwrap();
}

/// A save never brings back a deleted session, and `Absent` never overwrites
/// a live one.
pub async fn no_resurrection<S: SessionAdmin>(store: &S) {
    let key = key();
    assert!(!store
        .save(&key, &record("{}", 60_000), SaveIf::Live)
        .await
        .unwrap());
    assert_eq!(store.load(&key).await.unwrap(), None);
    assert!(store
        .save(&key, &record(r#"{"v":1}"#, 60_000), SaveIf::Absent)
        .await
        .unwrap());
    assert!(!store
        .save(&key, &record(r#"{"v":2}"#, 60_000), SaveIf::Absent)
        .await
        .unwrap());
    assert_eq!(
        store.load(&key).await.unwrap().unwrap().data,
        br#"{"v":1}"#.to_vec()
    );
    store.delete(&key).await.unwrap();
    assert!(!store
        .save(&key, &record(r#"{"v":3}"#, 60_000), SaveIf::Live)
        .await
        .unwrap());
    assert_eq!(store.load(&key).await.unwrap(), None);
    let guard = store.lock(&key, LONG).await.unwrap();
    assert!(!guard
        .save_and_release(&record("{}", 60_000), SaveIf::Live)
        .await
        .unwrap());
    assert_eq!(store.load(&key).await.unwrap(), None);
}

/// A regenerated session takes its old record's place: written only while
/// the old record lives, which goes with the write; once the old record is
/// deleted or expired, nothing is written. The user index follows.
pub async fn replacement<S: SessionAdmin>(store: &S) {
    let user = someone();
    let (old, new) = (key(), key());
    assert!(store
        .save(&old, &of(&user, r#"{"v":1}"#, 60_000), SaveIf::Absent)
        .await
        .unwrap());
    assert!(store
        .replace(&old, &new, &of(&user, r#"{"v":2}"#, 60_000))
        .await
        .unwrap());
    assert_eq!(store.load(&old).await.unwrap(), None);
    assert_eq!(
        store.load(&new).await.unwrap().unwrap().data,
        br#"{"v":2}"#.to_vec()
    );
    assert_eq!(listed(store, &user).await, vec![new]);

    // The old record was deleted meanwhile: the session ended, and its new
    // id must not carry it on.
    let (old, new) = (key(), key());
    assert!(store
        .save(&old, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    store.delete(&old).await.unwrap();
    assert!(!store
        .replace(&old, &new, &record("{}", 60_000))
        .await
        .unwrap());
    assert_eq!(store.load(&new).await.unwrap(), None);

    // Or it expired.
    let (old, new) = (key(), key());
    assert!(store
        .save(&old, &record("{}", 300), SaveIf::Absent)
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(!store
        .replace(&old, &new, &record("{}", 60_000))
        .await
        .unwrap());
    assert_eq!(store.load(&new).await.unwrap(), None);
}

/// Two holders of one key never overlap; other keys are not blocked.
pub async fn lock_exclusion<S: SessionAdmin>(store: &S) {
    let key = key();
    let first = store.lock(&key, LONG).await.unwrap();
    // Another key locks at once while this one is held.
    let other = store.lock(&self::key(), LONG).await.unwrap();
    drop(other);
    let released = Arc::new(AtomicBool::new(false));
    let second = {
        let released = released.clone();
        async move {
            let g = store.lock(&key, LONG).await.unwrap();
            assert!(released.load(Ordering::SeqCst), "lock taken while held");
            g
        }
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        released.store(true, Ordering::SeqCst);
        drop(first);
    };
    let (g, ()) = tokio::join!(second, release);
    drop(g);
    // Released again: a third taker gets it quickly.
    let g = store.lock(&key, Duration::from_secs(2)).await.unwrap();
    drop(g);
}

/// Waiting longer than the timeout is `LockTimeout`, and the waiter that
/// gave up leaves the lock usable.
pub async fn lock_timeout<S: SessionAdmin>(store: &S) {
    let key = key();
    let held = store.lock(&key, LONG).await.unwrap();
    let started = std::time::Instant::now();
    let err = store
        .lock(&key, Duration::from_millis(200))
        .await
        .expect_err("lock should time out");
    assert!(matches!(err, super::Error::LockTimeout(_)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(150));
    drop(held);
    drop(store.lock(&key, Duration::from_secs(2)).await.unwrap());
}

/// `lock_and_load` and a guard's `save_and_release` behave as their parts.
pub async fn combined_calls<S: SessionAdmin>(store: &S) {
    let key = key();
    let (g, r) = store.lock_and_load(&key, LONG).await.unwrap();
    assert_eq!(r, None);
    let rec = record(r#"{"c":1}"#, 60_000);
    assert!(g.save_and_release(&rec, SaveIf::Absent).await.unwrap());
    let (g, r) = store
        .lock_and_load(&key, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(r, Some(rec));
    drop(g);
}

/// Clean-up removes expired records only, and never frees a held lock.
pub async fn clean_up_keeps_held_locks<S: SessionAdmin>(store: &S) {
    let (live, dead) = (key(), key());
    assert!(store
        .save(&live, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    assert!(store
        .save(&dead, &record("{}", 200), SaveIf::Absent)
        .await
        .unwrap());
    let held = store.lock(&dead, LONG).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // Stores with native expiry (Redis) remove nothing themselves, so the
    // count is not checked here; what must hold is below.
    store.clean_up().await.unwrap();
    assert!(store.exists(&live).await.unwrap());
    assert_eq!(store.load(&dead).await.unwrap(), None);
    assert!(
        matches!(
            store.lock(&dead, Duration::from_millis(200)).await,
            Err(super::Error::LockTimeout(_))
        ),
        "clean-up released a held lock"
    );
    drop(held);
    drop(store.lock(&dead, Duration::from_secs(2)).await.unwrap());
}

/// `count` and `keys` see what was saved.
pub async fn count_and_keys<S: SessionAdmin>(store: &S) {
    let before = store.count().await.unwrap();
    let keys: Vec<StoreKey> = (0..5).map(|_| key()).collect();
    for key in &keys {
        assert!(store
            .save(key, &record("{}", 60_000), SaveIf::Absent)
            .await
            .unwrap());
    }
    assert_eq!(store.count().await.unwrap(), before + 5);
    let listed: Vec<StoreKey> = store.keys().map(|r| r.unwrap()).collect::<Vec<_>>().await;
    for key in &keys {
        assert!(listed.contains(key), "{key:?} not listed");
    }
}

/// Many tasks incrementing one counter under the lock lose nothing.
pub async fn no_lost_updates<S: SessionAdmin>(store: &S) {
    let key = key();
    assert!(store
        .save(&key, &record("0", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    let tasks = (0..8).map(|_| increment(store, &key, 10));
    futures_util::future::join_all(tasks).await;
    assert_eq!(
        store.load(&key).await.unwrap().unwrap().data,
        b"80".to_vec()
    );
}

/// Two instances of a shared store on the same backend (one directory, one
/// database file) lose no update between them: 8 tasks on their own
/// threads, alternating between the instances, 10 increments each under
/// the lock. Not part of the macro's suite, as it needs two instances.
pub async fn no_lost_updates_between<S: SessionAdmin + Clone>(a: &S, b: &S) {
    let key = key();
    assert!(a
        .save(&key, &record("0", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { increment(&store, &key, 10).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for store in [a, b] {
        assert_eq!(
            store.load(&key).await.unwrap().unwrap().data,
            b"80".to_vec()
        );
    }
}

/// A store that reads back at most `max` bytes of data refuses a larger
/// save with [`Error::TooLarge`], writing nothing, and releases the lock of
/// a refused `save_and_release`; a record of exactly `max` bytes is written
/// and read back. Not part of the macro's suite: not every store has a
/// limit, and each has its own.
pub async fn refuses_saves_over<S: SessionAdmin>(store: &S, max: usize) {
    let (key, absent) = (key(), key());
    let old = record(r#"{"n":1}"#, 60_000);
    assert!(store.save(&key, &old, SaveIf::Absent).await.unwrap());
    let mut big = record("", 60_000);
    big.data = vec![b'x'; max + 1];
    let too_large = |r: Result<bool, Error>| match r {
        Err(Error::TooLarge { size, max: limit }) => assert_eq!((size, limit), (max + 1, max)),
        other => panic!("{other:?}"),
    };
    too_large(store.save(&key, &big, SaveIf::Live).await);
    too_large(store.save(&absent, &big, SaveIf::Absent).await);
    let (guard, loaded) = store.lock_and_load(&key, LONG).await.unwrap();
    assert_eq!(loaded.as_ref(), Some(&old));
    too_large(guard.save_and_release(&big, SaveIf::Live).await);
    // The refused saves released the lock and changed nothing.
    drop(store.lock(&key, LONG).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap(), Some(old));
    assert_eq!(store.load(&absent).await.unwrap(), None);
    // The limit itself is a record the store writes and reads back.
    big.data.pop();
    assert!(store.save(&key, &big, SaveIf::Live).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap(), Some(big));
}

/// Adds one to the number stored under `key`, `times` times, each under the
/// session's lock.
async fn increment<S: SessionAdmin>(store: &S, key: &StoreKey, times: usize) {
    for _ in 0..times {
        let (g, r) = store.lock_and_load(key, LONG).await.unwrap();
        let mut r = r.unwrap();
        let n: u64 = std::str::from_utf8(&r.data).unwrap().parse().unwrap();
        tokio::task::yield_now().await;
        r.data = (n + 1).to_string().into_bytes();
        assert!(g.save_and_release(&r, SaveIf::Live).await.unwrap());
    }
}

/// Expands to one `#[tokio::test]` per conformance check, in a module named
/// `conformance`. `$make` is an expression giving a future of
/// `Option<store>`, evaluated afresh for each check; `None` skips.
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@tests $make;
            round_trip expiry refresh delete no_resurrection lock_exclusion
            lock_timeout combined_calls clean_up_keeps_held_locks count_and_keys
            no_lost_updates own_timeout user_index user_index_expiry
            ending_a_users_sessions replacement);
    };
    (@tests $make:expr; $($name:ident)*) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = $make.await {
                        $crate::store::conformance::$name(&store).await;
                    }
                }
            )*
        }
    };
}

#[cfg(test)]
mod memory {
    crate::store_conformance!(async { Some(crate::store::MemoryStore::new()) });
}
