//! The file store: the shared conformance suite, and what only a store of
//! files can get wrong — other processes, planted files, permissions,
//! crashes in the middle of a write.

#![cfg(unix)]

use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use sessions::store::{Error, FileStore, LockGuard, SaveIf, SessionAdmin, SessionStore};
use sessions::{now_millis, Millis, Record, SessionId};

const MAX: usize = 64 * 1024;

/// A fresh directory under the system's temp dir, removed when dropped.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let name = format!("sessions-file-test-{}", id());
        Scratch(std::env::temp_dir().join(name))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A file store that removes its directory when dropped, so the
/// conformance checks leave nothing behind.
#[derive(Debug)]
struct Scratched {
    store: FileStore,
    _dir: Scratch,
}

impl Scratched {
    fn new() -> Self {
        let dir = Scratch::new();
        Scratched {
            store: FileStore::open(dir.path()).unwrap(),
            _dir: dir,
        }
    }
}

#[async_trait]
impl SessionStore for Scratched {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>, Error> {
        self.store.load(id).await
    }
    async fn save(&self, id: &SessionId, record: &Record, write: SaveIf) -> Result<bool, Error> {
        self.store.save(id, record, write).await
    }
    async fn touch(&self, id: &SessionId, expires: Millis) -> Result<bool, Error> {
        self.store.touch(id, expires).await
    }
    async fn delete(&self, id: &SessionId) -> Result<(), Error> {
        self.store.delete(id).await
    }
    async fn exists(&self, id: &SessionId) -> Result<bool, Error> {
        self.store.exists(id).await
    }
    async fn lock(&self, id: &SessionId, wait: Duration) -> Result<LockGuard, Error> {
        self.store.lock(id, wait).await
    }
    async fn lock_and_load(
        &self,
        id: &SessionId,
        wait: Duration,
    ) -> Result<(LockGuard, Option<Record>), Error> {
        self.store.lock_and_load(id, wait).await
    }
    async fn save_and_unlock(
        &self,
        id: &SessionId,
        record: &Record,
        write: SaveIf,
        guard: LockGuard,
    ) -> Result<bool, Error> {
        self.store.save_and_unlock(id, record, write, guard).await
    }
}

#[async_trait]
impl SessionAdmin for Scratched {
    async fn count(&self) -> Result<u64, Error> {
        self.store.count().await
    }
    fn ids(&self) -> BoxStream<'_, Result<SessionId, Error>> {
        self.store.ids()
    }
    async fn clean_up(&self) -> Result<u64, Error> {
        self.store.clean_up().await
    }
}

sessions::store_conformance!(async { Some(Scratched::new()) });

fn id() -> SessionId {
    SessionId::generate().unwrap()
}

fn record(data: &str, ttl_ms: i64) -> Record {
    let now = now_millis();
    Record {
        data: data.as_bytes().to_vec(),
        created: now,
        expires: now.saturating_add_signed(ttl_ms),
    }
}

fn data_path(dir: &Path, id: &SessionId) -> PathBuf {
    dir.join(format!("session-{id}"))
}

fn lock_path(dir: &Path, id: &SessionId) -> PathBuf {
    dir.join(format!("session-{id}.lock"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits for something the store does in the background (a released lock
/// is tidied on the blocking pool).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn is_timeout<T>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::LockTimeout(_)))
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Whether this process may give files away (it runs as root), for the
/// checks of files owned by another user.
fn chown_to_nobody(path: &Path) -> bool {
    std::os::unix::fs::lchown(path, Some(65534), Some(65534)).is_ok()
}

// ---- other processes -------------------------------------------------------

const ROLE: &str = "SESSIONS_FILE_TEST_ROLE";
const DIR: &str = "SESSIONS_FILE_TEST_DIR";
const IDS: &str = "SESSIONS_FILE_TEST_IDS";
/// A child whose parent died without killing it does not linger.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

/// Not a test of its own: the child process of the cross-process tests,
/// which run this binary again with `ROLE` set. Without it, it does
/// nothing.
#[test]
fn child_process_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let ids: Vec<SessionId> = std::env::var(IDS)
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
                let _held = store.lock(&ids[0], Duration::from_secs(10)).await.unwrap();
                say("locked");
                tokio::time::sleep(CHILD_LIFETIME).await;
            }
            "write" => {
                // Saves as fast as it can, records of many sizes, until killed.
                let end = Instant::now() + CHILD_LIFETIME;
                let writers = ids.iter().enumerate().map(|(i, id)| {
                    let store = store.clone();
                    let id = *id;
                    async move {
                        for n in 0usize.. {
                            if Instant::now() > end {
                                break;
                            }
                            let size = (n * 7919 + i * 104_729) % 60_000;
                            let data = format!("\"{}\"", "x".repeat(size));
                            let r = record(&data, 600_000);
                            assert!(store.save(&id, &r, SaveIf::Live).await.unwrap());
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
    fn start(role: &str, dir: &Path, ids: &[SessionId], ready: &str) -> Self {
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_process_role",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(DIR, dir)
            .env(IDS, ids.join(","))
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
    let dir = Scratch::new();
    let store = FileStore::open(dir.path()).unwrap();
    let id = id();
    let rt = runtime();
    let mut child = ChildProcess::start("lock", dir.path(), &[id], "locked");
    rt.block_on(async {
        assert!(
            is_timeout(store.lock(&id, Duration::from_millis(300)).await),
            "the lock held by the child was taken"
        );
    });
    child.kill();
    rt.block_on(async {
        drop(store.lock(&id, Duration::from_secs(5)).await.unwrap());
    });
}

#[test]
fn a_writer_killed_mid_save_leaves_only_whole_records() {
    let dir = Scratch::new();
    let store = FileStore::open(dir.path()).unwrap();
    let ids: Vec<SessionId> = (0..4).map(|_| id()).collect();
    let rt = runtime();
    rt.block_on(async {
        for id in &ids {
            assert!(store
                .save(id, &record("0", 600_000), SaveIf::Absent)
                .await
                .unwrap());
        }
    });
    let mut child = ChildProcess::start("write", dir.path(), &ids, "writing");
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
        for id in &ids {
            let r = store.load(id).await.unwrap().expect("a whole record");
            written += usize::from(r.data != b"0");
        }
        assert!(written > 0, "the child wrote nothing before it was killed");
    });
}

// ---- processes in the small -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_directory_exclude_each_other() {
    let dir = Scratch::new();
    let a = FileStore::open(dir.path()).unwrap();
    let b = FileStore::open(dir.path()).unwrap();
    let id = id();
    let held = a.lock(&id, Duration::from_secs(1)).await.unwrap();
    assert!(is_timeout(b.lock(&id, Duration::from_millis(200)).await));
    drop(held);
    let held = b.lock(&id, Duration::from_secs(5)).await.unwrap();
    assert!(is_timeout(a.lock(&id, Duration::from_millis(200)).await));
    drop(held);

    // Counting under the lock through both, alternately: no update is lost.
    sessions::store::conformance::no_lost_updates_between(&a, &b).await;
}

/// The unlink-while-locked race: lock files are removed all the time (by
/// releases of sessions without data and by clean-up of expired ones)
/// while two instances, which meet only through flock as two processes
/// would, fight over them. Never are there two holders at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_lock_files_never_lets_two_holders_in() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    let dir = Scratch::new();
    let a = FileStore::open(dir.path()).unwrap();
    let b = FileStore::open(dir.path()).unwrap();
    // No data ever: every release removes the lock file. Expired data:
    // every clean-up removes data and lock file when it finds them free.
    let (bare, expiring) = (id(), id());
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
                let id = [bare, expiring][which];
                let g = store.lock(&id, Duration::from_secs(30)).await.unwrap();
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
                    };
                    store.save(&id, &dead, SaveIf::Absent).await.unwrap();
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
    let dir = Scratch::new();
    let store = FileStore::open(dir.path()).unwrap();
    let ids: Vec<SessionId> = (0..4).map(|_| id()).collect();
    for id in &ids {
        assert!(store
            .save(id, &record("0", 600_000), SaveIf::Absent)
            .await
            .unwrap());
    }
    let writers = (0..16).map(|t| {
        let (store, ids) = (store.clone(), ids.clone());
        tokio::spawn(async move {
            for n in 0..30 {
                let data = format!("\"{}\"", "y".repeat((t * 977 + n * 3079) % 50_000));
                let id = &ids[(t + n) % ids.len()];
                let r = record(&data, 600_000);
                assert!(store.save(id, &r, SaveIf::Live).await.unwrap());
            }
        })
    });
    // Readers never catch a file missing or half written.
    let readers = (0..4).map(|t| {
        let (store, ids) = (store.clone(), ids.clone());
        tokio::spawn(async move {
            for n in 0..200 {
                let id = &ids[(t + n) % ids.len()];
                assert!(store.load(id).await.unwrap().is_some());
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

// ---- what is on disk ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_files_load_as_missing() {
    let dir = Scratch::new();
    let store = FileStore::open(dir.path()).unwrap();
    let plant = |bytes: &[u8]| {
        let id = id();
        fs::write(data_path(dir.path(), &id), bytes).unwrap();
        id
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

    let sparse = id();
    let file = fs::File::create(data_path(dir.path(), &sparse)).unwrap();
    file.set_len(100 << 20).unwrap();
    drop(file);
    bad.push(("100 MB sparse", sparse));

    let directory = id();
    fs::create_dir(data_path(dir.path(), &directory)).unwrap();
    bad.push(("directory", directory));

    // A FIFO would block a reader that opened it without O_NONBLOCK.
    let fifo = id();
    let made = Command::new("mkfifo")
        .arg(data_path(dir.path(), &fifo))
        .status();
    if made.is_ok_and(|s| s.success()) {
        bad.push(("fifo", fifo));
    }

    // A symlink to a perfectly good record elsewhere: following it would
    // load it, or overwrite it on save.
    let outside = Scratch::new();
    fs::create_dir(outside.path()).unwrap();
    let target = outside.path().join("victim");
    fs::write(&target, &good).unwrap();
    let before = fs::metadata(&target).unwrap();
    let link = id();
    std::os::unix::fs::symlink(&target, data_path(dir.path(), &link)).unwrap();
    bad.push(("symlink", link));

    let foreign = id();
    fs::write(data_path(dir.path(), &foreign), &good).unwrap();
    if chown_to_nobody(&data_path(dir.path(), &foreign)) {
        bad.push(("owned by another user", foreign));
    }

    for (what, id) in &bad {
        let started = Instant::now();
        let loaded = tokio::time::timeout(Duration::from_secs(5), store.load(id))
            .await
            .unwrap_or_else(|_| panic!("{what}: load hangs"));
        assert_eq!(loaded.unwrap(), None, "{what}");
        assert!(started.elapsed() < Duration::from_secs(1), "{what}: slow");
        // Asked again (logged only the first time), still missing.
        assert_eq!(store.load(id).await.unwrap(), None, "{what}");
        assert!(!store.exists(id).await.unwrap(), "{what}");
        assert!(
            !store.touch(id, now_millis() + 1000).await.unwrap(),
            "{what}"
        );
        assert!(
            !store
                .save(id, &record("{}", 60_000), SaveIf::Live)
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
        .save(&id(), &record(&"1".repeat(MAX + 1), 60_000), SaveIf::Absent)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_removes_expired_data_and_lock_files() {
    let dir = Scratch::new();
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
        }
    };

    // Expired, with a lock file left by an earlier request.
    let dead = id();
    assert!(store.save(&dead, &expired(), SaveIf::Absent).await.unwrap());
    drop(store.lock(&dead, wait).await.unwrap());
    // Expired, never locked.
    let dead_unlocked = id();
    assert!(store
        .save(&dead_unlocked, &expired(), SaveIf::Absent)
        .await
        .unwrap());
    // Expired, but locked by a request right now.
    let dead_held = id();
    assert!(store
        .save(&dead_held, &expired(), SaveIf::Absent)
        .await
        .unwrap());
    let held = store.lock(&dead_held, wait).await.unwrap();
    // Live, with a lock file.
    let live = id();
    assert!(store
        .save(&live, &record("{}", 600_000), SaveIf::Absent)
        .await
        .unwrap());
    drop(store.lock(&live, wait).await.unwrap());
    // A lock file without data, held; and one nobody holds.
    let held_orphan = id();
    let held_orphan_guard = store.lock(&held_orphan, wait).await.unwrap();
    let orphan = id();
    fs::write(lock_path(d, &orphan), b"").unwrap();
    // A damaged record of ours, and somebody else's file.
    let damaged = id();
    let whole = record("{}", 600_000).encode();
    fs::write(data_path(d, &damaged), &whole[..whole.len() - 1]).unwrap();
    let foreign = id();
    fs::write(data_path(d, &foreign), b"\x80\x04\x95 pickled").unwrap();
    // Temporary files of a dead writer and of a live one.
    let stale_temp = d.join(format!(".tmp-{}-0000000000000001", id()));
    let fresh_temp = d.join(format!(".tmp-{}-0000000000000002", id()));
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
    let dir = Scratch::new();
    let store = FileStore::open(dir.path()).unwrap();
    let id = id();
    let (g, _) = store
        .lock_and_load(&id, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(store
        .save(&id, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    store.delete(&id).await.unwrap();
    // The caller holds the lock: its file stays until the release.
    assert!(lock_path(dir.path(), &id).exists());
    drop(g);
    eventually("lock file removed", || names(dir.path()).is_empty()).await;
    // The lock still works afterwards.
    drop(store.lock(&id, Duration::from_secs(1)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private() {
    let parent = Scratch::new();
    let dir = parent.path().join("nested/sessions");
    let store = FileStore::open(&dir).unwrap().with_fsync(true);
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o700);

    let id = id();
    let g = store.lock(&id, Duration::from_secs(1)).await.unwrap();
    assert!(store
        .save_and_unlock(&id, &record("{}", 60_000), SaveIf::Absent, g)
        .await
        .unwrap());
    assert_eq!(mode(&data_path(&dir, &id)), 0o600);
    assert_eq!(mode(&lock_path(&dir, &id)), 0o600);
    assert!(store.touch(&id, now_millis() + 60_000).await.unwrap());
    assert_eq!(mode(&data_path(&dir, &id)), 0o600);

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
    let dir = Scratch::new();
    let store = FileStore::open(dir.path()).unwrap();
    let ids: Vec<SessionId> = (0..600).map(|_| id()).collect();
    for id in &ids {
        assert!(store
            .save(id, &record("{}", 600_000), SaveIf::Absent)
            .await
            .unwrap());
    }
    for junk in ["session-", "session-XYZ", "notes.txt", ".hidden"] {
        fs::write(dir.path().join(junk), b"x").unwrap();
    }
    drop(store.lock(&ids[0], Duration::from_secs(1)).await.unwrap());
    let mut listed: Vec<SessionId> = store.ids().map(|r| r.unwrap()).collect().await;
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(store.count().await.unwrap(), 600);
}

/// A clean-up of 100,000 expired sessions runs beside requests without
/// holding them up (about 15 s here, most of it writing the files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_of_many_files_does_not_stall_requests() {
    const N: usize = 100_000;
    let dir = Scratch::new();
    let store = FileStore::open(dir.path()).unwrap();
    let now = now_millis();
    let dead = Record {
        data: b"{}".to_vec(),
        created: now - 1_000,
        expires: now - 1,
    }
    .encode();
    for _ in 0..N {
        fs::write(data_path(dir.path(), &id()), &dead).unwrap();
    }
    let live = id();
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
        assert!(store
            .save_and_unlock(&live, &r.unwrap(), SaveIf::Live, g)
            .await
            .unwrap());
        slowest = slowest.max(t.elapsed());
    }
    assert_eq!(cleaning.await.unwrap(), N as u64);
    eprintln!(
        "cleaned {N} in {:?}; slowest request meanwhile {slowest:?}",
        started.elapsed()
    );
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    assert_eq!(names(dir.path()).len(), 2);
}
