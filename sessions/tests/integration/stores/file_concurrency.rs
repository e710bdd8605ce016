//! The file store shared: two instances and other processes on one
//! directory, which meet only through the file system — locks of a killed
//! process, a writer killed mid-save, lock files removed while contended,
//! concurrent saves that must leave only whole files.

#![cfg(unix)]

use sessions_test_support as common;

use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::files::{eventually, is_timeout, names, MAX};
use common::records::{key, record};
use common::temp::TempDir;
use server_sessions::store::{now_millis, Record, StoreKey};
use server_sessions::store::{FileStore, SaveIf, SessionAdmin, SessionStore};

const ROLE: &str = "SESSIONS_FILE_TEST_ROLE";

const DIR: &str = "SESSIONS_FILE_TEST_DIR";

const IDS: &str = "SESSIONS_FILE_TEST_IDS";

/// A child whose parent died without killing it does not linger.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Not a test of its own: the child process of the cross-process tests,
/// which run this binary again with `ROLE` set. Without it, it does
/// nothing.
#[test]
fn child_process_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let keys: Vec<StoreKey> = std::env::var(IDS)
        .unwrap()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let say = |what: &str| {
        println!("{what}");
        std::io::stdout().flush().unwrap();
    };
    runtime().block_on(async {
        let store = FileStore::open(&dir).unwrap();
        match role.as_str() {
            "lock" => {
                let _held = store.lock(&keys[0], Duration::from_secs(10)).await.unwrap();
                say("locked");
                tokio::time::sleep(CHILD_LIFETIME).await;
            }
            "write" => {
                // Saves as fast as it can, records of many sizes, until killed.
                let end = Instant::now() + CHILD_LIFETIME;
                let writers = keys.iter().enumerate().map(|(i, key)| {
                    let store = store.clone();
                    let key = *key;
                    async move {
                        for n in 0usize.. {
                            if Instant::now() > end {
                                break;
                            }
                            let size = (n * 7919 + i * 104_729) % 60_000;
                            let data = format!("\"{}\"", "x".repeat(size));
                            let r = record(&data, 600_000);
                            assert!(store.save(&key, &r, SaveIf::Live).await.unwrap());
                        }
                    }
                });
                let writers = futures_util::future::join_all(writers);
                let announce = async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    say("writing");
                };
                tokio::join!(writers, announce);
            }
            other => panic!("unknown role {other}"),
        }
    });
}

/// A child process running `child_process_role`, killed with SIGKILL when
/// dropped at the latest.
struct ChildProcess {
    child: Child,
    _out: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl ChildProcess {
    /// Starts the child and waits until it prints `ready`.
    fn start(role: &str, dir: &Path, keys: &[StoreKey], ready: &str) -> Self {
        let keys: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
        // The test's name within this binary: its module path without the
        // crate's name.
        let (_, module) = module_path!().split_once("::").unwrap();
        let test = format!("{module}::child_process_role");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &test, "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env(DIR, dir)
            .env(IDS, keys.join(","))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            match out.next() {
                // libtest may print the test's name on the same line.
                Some(Ok(line)) if line.contains(ready) => break,
                Some(Ok(_)) => {}
                _ => {
                    let _ = child.kill();
                    panic!("the child process ended before saying {ready:?}");
                }
            }
        }
        ChildProcess { child, _out: out }
    }

    /// `kill -9`: the child gets no chance to clean up or unlock.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn lock_of_a_killed_process_is_released() {
    let dir = TempDir::new("file-test");
    let store = FileStore::open(dir.path()).unwrap();
    let key = key();
    let rt = runtime();
    let mut child = ChildProcess::start("lock", dir.path(), &[key], "locked");
    rt.block_on(async {
        assert!(
            is_timeout(store.lock(&key, Duration::from_millis(300)).await),
            "the lock held by the child was taken"
        );
    });
    child.kill();
    rt.block_on(async {
        drop(store.lock(&key, Duration::from_secs(5)).await.unwrap());
    });
}

#[test]
fn a_writer_killed_mid_save_leaves_only_whole_records() {
    let dir = TempDir::new("file-test");
    let store = FileStore::open(dir.path()).unwrap();
    let keys: Vec<StoreKey> = (0..4).map(|_| key()).collect();
    let rt = runtime();
    rt.block_on(async {
        for key in &keys {
            assert!(store
                .save(key, &record("0", 600_000), SaveIf::Absent)
                .await
                .unwrap());
        }
    });
    let mut child = ChildProcess::start("write", dir.path(), &keys, "writing");
    std::thread::sleep(Duration::from_millis(300));
    child.kill();
    for name in names(dir.path()) {
        if name.starts_with("session-") && !name.ends_with(".lock") {
            let bytes = fs::read(dir.path().join(&name)).unwrap();
            if let Err(e) = Record::decode(&bytes, MAX) {
                panic!("{name}: {e}");
            }
        }
    }
    rt.block_on(async {
        let mut written = 0;
        for key in &keys {
            let r = store.load(key).await.unwrap().expect("a whole record");
            written += usize::from(r.data != b"0");
        }
        assert!(written > 0, "the child wrote nothing before it was killed");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_directory_exclude_each_other() {
    let dir = TempDir::new("file-test");
    let a = FileStore::open(dir.path()).unwrap();
    let b = FileStore::open(dir.path()).unwrap();
    let key = key();
    let held = a.lock(&key, Duration::from_secs(1)).await.unwrap();
    assert!(is_timeout(b.lock(&key, Duration::from_millis(200)).await));
    drop(held);
    let held = b.lock(&key, Duration::from_secs(5)).await.unwrap();
    assert!(is_timeout(a.lock(&key, Duration::from_millis(200)).await));
    drop(held);

    // Counting under the lock through both, alternately: no update is lost.
    server_sessions::store::conformance::no_lost_updates_between(&a, &b).await;
}

/// The unlink-while-locked race: lock files are removed all the time (by
/// releases of sessions without data and by clean-up of expired ones)
/// while two instances, which meet only through flock as two processes
/// would, fight over them. Never are there two holders at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_lock_files_never_lets_two_holders_in() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    let dir = TempDir::new("file-test");
    let a = FileStore::open(dir.path()).unwrap();
    let b = FileStore::open(dir.path()).unwrap();
    // No data ever: every release removes the lock file. Expired data:
    // every clean-up removes data and lock file when it finds them free.
    let (bare, expiring) = (key(), key());
    let done = Arc::new(AtomicBool::new(false));
    let cleaner = {
        let (store, done) = (a.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                store.clean_up().await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let holders: Arc<[AtomicU32; 2]> = Arc::new(Default::default());
    let tasks = (0..8).map(|t| {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        let holders = holders.clone();
        tokio::spawn(async move {
            for n in 0..25 {
                let which = (t + n) % 2;
                let key = [bare, expiring][which];
                let g = store.lock(&key, Duration::from_secs(30)).await.unwrap();
                assert_eq!(
                    holders[which].fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders"
                );
                if which == 1 {
                    let now = now_millis();
                    let dead = Record {
                        data: b"{}".to_vec(),
                        created: now - 1_000,
                        expires: now - 1,
                        timeout: None,
                        user: None,
                    };
                    store.save(&key, &dead, SaveIf::Absent).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                holders[which].fetch_sub(1, Ordering::SeqCst);
                drop(g);
            }
        })
    });
    for t in futures_util::future::join_all(tasks).await {
        t.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    cleaner.await.unwrap();
    a.clean_up().await.unwrap();
    eventually("every file removed", || names(dir.path()).is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saves_leave_only_whole_files() {
    let dir = TempDir::new("file-test");
    let store = FileStore::open(dir.path()).unwrap();
    let keys: Vec<StoreKey> = (0..4).map(|_| key()).collect();
    for key in &keys {
        assert!(store
            .save(key, &record("0", 600_000), SaveIf::Absent)
            .await
            .unwrap());
    }
    let writers = (0..16).map(|t| {
        let (store, keys) = (store.clone(), keys.clone());
        tokio::spawn(async move {
            for n in 0..30 {
                let data = format!("\"{}\"", "y".repeat((t * 977 + n * 3079) % 50_000));
                let key = &keys[(t + n) % keys.len()];
                let r = record(&data, 600_000);
                assert!(store.save(key, &r, SaveIf::Live).await.unwrap());
            }
        })
    });
    // Readers never catch a file missing or half written.
    let readers = (0..4).map(|t| {
        let (store, keys) = (store.clone(), keys.clone());
        tokio::spawn(async move {
            for n in 0..200 {
                let key = &keys[(t + n) % keys.len()];
                assert!(store.load(key).await.unwrap().is_some());
            }
        })
    });
    for t in futures_util::future::join_all(writers.chain(readers)).await {
        t.unwrap();
    }
    let names = names(dir.path());
    assert!(!names.iter().any(|n| n.starts_with(".tmp-")), "{names:?}");
    for name in names.iter().filter(|n| !n.ends_with(".lock")) {
        Record::decode(&fs::read(dir.path().join(name)).unwrap(), MAX).unwrap();
    }
}
