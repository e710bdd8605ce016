//! The file store on disk: the shared conformance suite, and what only a
//! store of files can get wrong — planted files, clean-up of data, lock
//! and temporary files, permissions, a directory of many files. Other
//! processes and concurrent writers are in `file_concurrency.rs`.

#![cfg(unix)]

use sessions_test_support as common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::files::{chown_to_nobody, data_path, eventually, is_timeout, lock_path, names, MAX};
use common::records::{key, record};
use common::temp::TempDir;
use futures_util::StreamExt;
use server_sessions::store::{now_millis, Record, StoreKey};
use server_sessions::store::{FileStore, SaveIf, SessionAdmin, SessionStore};

server_sessions::store_conformance!(async {
    sessions_test_support::stores::Fixture::new(sessions_test_support::stores::Kind::File).await
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_files_load_as_missing() {
    let dir = TempDir::new("file-test");
    let store = FileStore::open(dir.path()).unwrap();
    let plant = |bytes: &[u8]| {
        let key = key();
        fs::write(data_path(dir.path(), &key), bytes).unwrap();
        key
    };
    let good = record(r#"{"user":"admin"}"#, 600_000).encode();
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let mut bad = vec![
        ("garbage", plant(b"hello, this is not a session at all")),
        ("empty", plant(b"")),
        ("truncated", plant(&good[..good.len() - 3])),
        ("header only", plant(&good[..10])),
        ("bit flip", plant(&flipped)),
        (
            "pickle",
            plant(b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x04user\x94\x8c\x05admin\x94s."),
        ),
        (
            "too large",
            plant(&record(&format!("\"{}\"", "z".repeat(MAX)), 600_000).encode()),
        ),
    ];

    let sparse = key();
    let file = fs::File::create(data_path(dir.path(), &sparse)).unwrap();
    file.set_len(100 << 20).unwrap();
    drop(file);
    bad.push(("100 MB sparse", sparse));

    let directory = key();
    fs::create_dir(data_path(dir.path(), &directory)).unwrap();
    bad.push(("directory", directory));

    // A FIFO would block a reader that opened it without O_NONBLOCK.
    let fifo = key();
    let made = Command::new("mkfifo")
        .arg(data_path(dir.path(), &fifo))
        .status();
    if made.is_ok_and(|s| s.success()) {
        bad.push(("fifo", fifo));
    }

    // A symlink to a perfectly good record elsewhere: following it would
    // load it, or overwrite it on save.
    let outside = TempDir::new("file-test");
    let target = outside.path().join("victim");
    fs::write(&target, &good).unwrap();
    let before = fs::metadata(&target).unwrap();
    let link = key();
    std::os::unix::fs::symlink(&target, data_path(dir.path(), &link)).unwrap();
    bad.push(("symlink", link));

    let foreign = key();
    fs::write(data_path(dir.path(), &foreign), &good).unwrap();
    if chown_to_nobody(&data_path(dir.path(), &foreign)) {
        bad.push(("owned by another user", foreign));
    }

    for (what, key) in &bad {
        let started = Instant::now();
        let loaded = tokio::time::timeout(Duration::from_secs(5), store.load(key))
            .await
            .unwrap_or_else(|_| panic!("{what}: load hangs"));
        assert_eq!(loaded.unwrap(), None, "{what}");
        assert!(started.elapsed() < Duration::from_secs(1), "{what}: slow");
        // Asked again (logged only the first time), still missing.
        assert_eq!(store.load(key).await.unwrap(), None, "{what}");
        assert!(!store.exists(key).await.unwrap(), "{what}");
        assert!(
            !store.touch(key, now_millis() + 1000).await.unwrap(),
            "{what}"
        );
        assert!(
            !store
                .save(key, &record("{}", 60_000), SaveIf::Live)
                .await
                .unwrap(),
            "{what}"
        );
    }
    assert_eq!(store.count().await.unwrap(), 0);

    // The target was neither read (it would have loaded) nor modified; a
    // new session on that id replaces the link, not what it points to.
    let fresh = record(r#"{"n":1}"#, 60_000);
    assert!(store.save(&link, &fresh, SaveIf::Absent).await.unwrap());
    assert_eq!(store.load(&link).await.unwrap(), Some(fresh));
    assert!(!fs::symlink_metadata(data_path(dir.path(), &link))
        .unwrap()
        .file_type()
        .is_symlink());
    store.delete(&link).await.unwrap();
    assert_eq!(fs::read(&target).unwrap(), good);
    let after = fs::metadata(&target).unwrap();
    assert_eq!(
        (
            before.ino(),
            before.mtime(),
            before.mtime_nsec(),
            before.mode()
        ),
        (after.ino(), after.mtime(), after.mtime_nsec(), after.mode())
    );

    // A store allowing larger records reads the large one.
    let roomy = FileStore::open(dir.path()).unwrap().with_max_size(2 * MAX);
    let large = bad.iter().find(|(what, _)| *what == "too large").unwrap().1;
    assert!(roomy.load(&large).await.unwrap().is_some());
    // And a record larger than the limit is refused, not silently written.
    assert!(store
        .save(
            &key(),
            &record(&"1".repeat(MAX + 1), 60_000),
            SaveIf::Absent
        )
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_removes_expired_data_and_lock_files() {
    let dir = TempDir::new("file-test");
    let d = dir.path();
    let store = FileStore::open(d).unwrap();
    let other = FileStore::open(d).unwrap();
    let wait = Duration::from_secs(5);
    let expired = || {
        let now = now_millis();
        Record {
            data: b"{}".to_vec(),
            created: now - 10_000,
            expires: now - 1,
            timeout: None,
            user: None,
        }
    };

    // Expired, with a lock file left by an earlier request.
    let dead = key();
    assert!(store.save(&dead, &expired(), SaveIf::Absent).await.unwrap());
    drop(store.lock(&dead, wait).await.unwrap());
    // Expired, never locked.
    let dead_unlocked = key();
    assert!(store
        .save(&dead_unlocked, &expired(), SaveIf::Absent)
        .await
        .unwrap());
    // Expired, but locked by a request right now.
    let dead_held = key();
    assert!(store
        .save(&dead_held, &expired(), SaveIf::Absent)
        .await
        .unwrap());
    let held = store.lock(&dead_held, wait).await.unwrap();
    // Live, with a lock file.
    let live = key();
    assert!(store
        .save(&live, &record("{}", 600_000), SaveIf::Absent)
        .await
        .unwrap());
    drop(store.lock(&live, wait).await.unwrap());
    // A lock file without data, held; and one nobody holds.
    let held_orphan = key();
    let held_orphan_guard = store.lock(&held_orphan, wait).await.unwrap();
    let orphan = key();
    fs::write(lock_path(d, &orphan), b"").unwrap();
    // A damaged record of ours, and somebody else's file.
    let damaged = key();
    let whole = record("{}", 600_000).encode();
    fs::write(data_path(d, &damaged), &whole[..whole.len() - 1]).unwrap();
    let foreign = key();
    fs::write(data_path(d, &foreign), b"\x80\x04\x95 pickled").unwrap();
    // Temporary files of a dead writer and of a live one.
    let stale_temp = d.join(format!(".tmp-{}-0000000000000001", key()));
    let fresh_temp = d.join(format!(".tmp-{}-0000000000000002", key()));
    fs::write(&stale_temp, b"x").unwrap();
    fs::write(&fresh_temp, b"x").unwrap();
    fs::File::options()
        .write(true)
        .open(&stale_temp)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(120))
        .unwrap();
    fs::write(d.join("README"), b"not ours").unwrap();

    eventually("lock files in place", || {
        lock_path(d, &dead).exists() && lock_path(d, &live).exists()
    })
    .await;

    // The expired sessions, the held one included, and the damaged one.
    assert_eq!(store.clean_up().await.unwrap(), 4);

    for gone in [
        data_path(d, &dead_held),
        data_path(d, &dead),
        lock_path(d, &dead),
        data_path(d, &dead_unlocked),
        lock_path(d, &dead_unlocked),
        lock_path(d, &orphan),
        data_path(d, &damaged),
        stale_temp.clone(),
    ] {
        assert!(!gone.exists(), "{} is still there", gone.display());
    }
    for kept in [
        lock_path(d, &dead_held),
        data_path(d, &live),
        lock_path(d, &live),
        lock_path(d, &held_orphan),
        data_path(d, &foreign),
        fresh_temp.clone(),
        d.join("README"),
    ] {
        assert!(kept.exists(), "{} was removed", kept.display());
    }
    // Held locks are still held, against this process and others.
    assert!(is_timeout(
        store.lock(&dead_held, Duration::from_millis(100)).await
    ));
    assert!(is_timeout(
        other.lock(&dead_held, Duration::from_millis(100)).await
    ));
    assert!(is_timeout(
        other.lock(&held_orphan, Duration::from_millis(100)).await
    ));
    assert!(store.exists(&live).await.unwrap());

    // Lock files of sessions without data go with their release.
    drop(held);
    drop(held_orphan_guard);
    eventually("lock files removed on release", || {
        !lock_path(d, &held_orphan).exists() && !lock_path(d, &dead_held).exists()
    })
    .await;
    assert_eq!(store.clean_up().await.unwrap(), 0);
    // A delete without the lock takes the lock file along.
    store.delete(&live).await.unwrap();
    let left = names(d);
    assert!(!left.iter().any(|n| n.ends_with(".lock")), "{left:?}");
    assert_eq!(left.len(), 3, "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_session_leaves_no_lock_file() {
    let dir = TempDir::new("file-test");
    let store = FileStore::open(dir.path()).unwrap();
    let key = key();
    let (g, _) = store
        .lock_and_load(&key, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(store
        .save(&key, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    store.delete(&key).await.unwrap();
    // The caller holds the lock: its file stays until the release.
    assert!(lock_path(dir.path(), &key).exists());
    drop(g);
    eventually("lock file removed", || names(dir.path()).is_empty()).await;
    // The lock still works afterwards.
    drop(store.lock(&key, Duration::from_secs(1)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private() {
    let parent = TempDir::new("file-test");
    let dir = parent.path().join("nested/sessions");
    let store = FileStore::open(&dir).unwrap().with_fsync(true);
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o700);

    let key = key();
    let g = store.lock(&key, Duration::from_secs(1)).await.unwrap();
    assert!(g
        .save_and_release(&record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    assert_eq!(mode(&data_path(&dir, &key)), 0o600);
    assert_eq!(mode(&lock_path(&dir, &key)), 0o600);
    assert!(store.touch(&key, now_millis() + 60_000).await.unwrap());
    assert_eq!(mode(&data_path(&dir, &key)), 0o600);

    // A directory others may enter is restricted.
    let open = parent.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    FileStore::open(&open).unwrap();
    assert_eq!(mode(&open), 0o700);

    // Not a directory, a symlink to one, a directory of someone else.
    let file = parent.path().join("file");
    fs::write(&file, b"").unwrap();
    assert!(FileStore::open(&file).is_err());
    let link = parent.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    assert!(FileStore::open(&link).is_err());
    if chown_to_nobody(&open) {
        assert!(FileStore::open(&open).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_ignores_other_files() {
    let dir = TempDir::new("file-test");
    let store = FileStore::open(dir.path()).unwrap();
    let keys: Vec<StoreKey> = (0..600).map(|_| key()).collect();
    for key in &keys {
        assert!(store
            .save(key, &record("{}", 600_000), SaveIf::Absent)
            .await
            .unwrap());
    }
    for junk in ["session-", "session-XYZ", "notes.txt", ".hidden"] {
        fs::write(dir.path().join(junk), b"x").unwrap();
    }
    drop(store.lock(&keys[0], Duration::from_secs(1)).await.unwrap());
    let mut listed: Vec<StoreKey> = store.keys().map(|r| r.unwrap()).collect().await;
    listed.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(store.count().await.unwrap(), 600);
}

/// Files named by a session id, as versions before store keys (and
/// CherryPy) wrote them, are never listed or loaded; clean-up removes them
/// as it always did — an expired record of this format, a free lock file
/// without data — and leaves the rest (a live one, CherryPy's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_removes_expired_files_of_the_earlier_layout() {
    let dir = TempDir::new("file-test");
    let store = FileStore::open(dir.path()).unwrap();
    let live = key();
    assert!(store
        .save(&live, &record("{}", 600_000), SaveIf::Absent)
        .await
        .unwrap());
    let earlier = |name: String, bytes: &[u8]| {
        fs::write(dir.path().join(&name), bytes).unwrap();
        name
    };
    let id = || server_sessions::SessionId::generate().unwrap();
    let (expired, kept, foreign) = (id(), id(), id());
    earlier(format!("session-{expired}"), &record("{}", -1_000).encode());
    earlier(format!("session-{expired}.lock"), b"");
    let kept = earlier(format!("session-{kept}"), &record("{}", 600_000).encode());
    let foreign = earlier(format!("session-{foreign}"), b"\x80\x04pickle");
    fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    let listed: Vec<StoreKey> = store.keys().map(|r| r.unwrap()).collect().await;
    assert_eq!(listed, vec![live]);
    assert_eq!(store.clean_up().await.unwrap(), 1);
    let mut want = vec![
        format!("session-{live}"),
        kept,
        foreign,
        "notes.txt".to_owned(),
    ];
    want.sort();
    assert_eq!(names(dir.path()), want);
}

/// A clean-up of 100,000 expired sessions runs beside requests without
/// holding them up (about 15 s here, most of it writing the files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_of_many_files_does_not_stall_requests() {
    const N: usize = 100_000;
    let dir = TempDir::new("file-test");
    let store = FileStore::open(dir.path()).unwrap();
    let now = now_millis();
    let dead = Record {
        data: b"{}".to_vec(),
        created: now - 1_000,
        expires: now - 1,
        timeout: None,
        user: None,
    }
    .encode();
    for _ in 0..N {
        fs::write(data_path(dir.path(), &key()), &dead).unwrap();
    }
    let live = key();
    assert!(store
        .save(&live, &record("{}", 600_000), SaveIf::Absent)
        .await
        .unwrap());
    let started = Instant::now();
    let cleaning = tokio::spawn({
        let store = store.clone();
        async move { store.clean_up().await.unwrap() }
    });
    let mut slowest = Duration::ZERO;
    while !cleaning.is_finished() {
        let t = Instant::now();
        let (g, r) = store
            .lock_and_load(&live, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(g.save_and_release(&r.unwrap(), SaveIf::Live).await.unwrap());
        slowest = slowest.max(t.elapsed());
    }
    assert_eq!(cleaning.await.unwrap(), N as u64);
    let took = started.elapsed();
    eprintln!("cleaned {N} in {took:?}; slowest request meanwhile {slowest:?}");
    // Not a speed check (the machine's load moves both figures): a request
    // that waited for the clean-up, or for much of it, would show here.
    assert!(slowest < took / 4, "{slowest:?} of {took:?}");
    assert_eq!(names(dir.path()).len(), 2);
}

/// A waiter of another process that gave up or died leaves its claim on
/// the lock's next turn (`session-<key>.turn`): clean-up removes it once it
/// lapsed, and keeps a live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_removes_lapsed_turn_claims_only() {
    let dir = TempDir::new("file-test");
    let store = FileStore::open(dir.path()).unwrap();
    let (lapsed, live) = (key(), key());
    let turn = |k: &server_sessions::store::StoreKey| {
        dir.path().join(format!("session-{}.turn", &*k.as_hex()))
    };
    for k in [&lapsed, &live] {
        std::fs::write(turn(k), "a waiter's token").unwrap();
    }
    let old = std::time::SystemTime::now() - Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(turn(&lapsed))
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(store.clean_up().await.unwrap(), 0);
    assert!(!turn(&lapsed).exists(), "a lapsed claim stayed");
    assert!(turn(&live).exists(), "a live claim was removed");
}
