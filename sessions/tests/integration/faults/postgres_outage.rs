//! PostgreSQL going away: connections that die (one holding a lock, every
//! one in the pool), a server that is not there, and a private cluster
//! (made for the test with initdb) crashed and restarted under HTTP
//! traffic. Calls answer unavailable quickly, a vanished holder's lock is
//! freed by its lease, a live holder's survives its connections, nothing panics, service resumes by itself, and no session saved
//! before the crash is lost.

#![cfg(feature = "postgres")]

use sessions_test_support as common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::app::{app, assert_unavailable, outage_under_traffic};
use common::ci::skip;
use common::client::{free_port, serve};
use common::records::{key, record};
use common::stores::{drop_table, postgres, postgres_admin, postgres_url};
use common::temp::{unique_table, TempDir};
use server_sessions::store::{Error, PostgresStore, SaveIf, SessionStore};
use server_sessions::SessionConfig;

/// The URL with an `application_name`, to find a store's connections.
fn url_named(name: &str) -> String {
    let url = postgres_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

/// A lock is a lease row, not a server session: a holder whose process
/// vanished (here its runtime is dropped, so neither its renewal nor its
/// release ever runs) frees the lock one lease later, and a live holder
/// keeps its lock when the server ends its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_holder_frees_its_lock_after_its_lease() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let table = unique_table();
    let b = postgres(&table).await;
    let key = key();
    assert!(b
        .save(&key, &record("1", 60_000), SaveIf::Absent)
        .await
        .unwrap());

    let lease = Duration::from_millis(600);
    let vanished = PostgresStore::new(&postgres_url())
        .unwrap()
        .with_table(&table)
        .unwrap()
        .with_lease(lease);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let guard = vanished.lock(&key, Duration::from_secs(5)).await.unwrap();
            std::mem::forget(guard);
        });
        // Dropping the runtime ends the renewal task, as a crash would.
    })
    .join()
    .unwrap();
    assert!(matches!(
        b.lock(&key, Duration::from_millis(200)).await,
        Err(Error::LockTimeout(_))
    ));
    let started = Instant::now();
    let taken = b.lock(&key, Duration::from_secs(5)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(taken);

    // A live holder whose connections the server ends keeps its lock: it
    // holds no connection, and its renewal reconnects.
    let app = format!("{table}_a");
    let a = PostgresStore::new(&url_named(&app))
        .unwrap()
        .with_table(&table)
        .unwrap()
        .with_lease(lease);
    let held = a.lock(&key, Duration::from_secs(5)).await.unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    // Longer than the lease: only renewal keeps it.
    assert!(matches!(
        b.lock(&key, lease * 2).await,
        Err(Error::LockTimeout(_))
    ));
    drop(held);
    let started = Instant::now();
    drop(b.lock(&key, Duration::from_secs(5)).await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        b.load(&key).await.unwrap().map(|r| r.data),
        Some(b"1".to_vec())
    );
    drop_table(&admin, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_when_its_connections_are_killed() {
    let Some(admin) = postgres_admin().await else {
        return;
    };
    let table = unique_table();
    let app = format!("{table}_r");
    let store = PostgresStore::new(&url_named(&app))
        .unwrap()
        .with_table(&table)
        .unwrap();
    store.ready().await.unwrap();
    let key = key();
    assert!(store
        .save(&key, &record("x", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    // Warm several pooled connections, then kill every one of them.
    let loads = (0..4).map(|_| store.load(&key));
    for r in futures_util::future::join_all(loads).await {
        r.unwrap();
    }
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    // A request that meets a dying connection fails cleanly (503); the
    // store then reconnects by itself.
    let mut ok = false;
    for _ in 0..20 {
        match store.load(&key).await {
            Ok(r) => {
                assert_eq!(r.map(|r| r.data), Some(b"x".to_vec()));
                ok = true;
                break;
            }
            Err(Error::Unavailable { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(ok, "store did not recover");
    drop_table(&admin, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_database_is_unavailable_quickly() {
    // Nothing listens on port 1: no server is needed for this test.
    let url = "postgres://postgres@127.0.0.1:1/test";
    let started = Instant::now();
    let err = PostgresStore::new(url)
        .unwrap()
        .with_timeout(Duration::from_secs(1))
        .ready()
        .await
        .expect_err("no server");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");

    let lazy = PostgresStore::new(url)
        .unwrap()
        .with_timeout(Duration::from_secs(1))
        .with_auto_migrate(false);
    assert_unavailable(&lazy).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// A PostgreSQL cluster of this test's own, run as the `postgres` user.
struct PrivatePostgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> Option<PrivatePostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| versions.filter_map(|v| Some(v.ok()?.path())).max())
            .map(|v| v.join("bin"))
            .filter(|b| b.join("initdb").exists());
        let Some(bin) = bin else {
            return skip("PostgreSQL's server binaries are not installed (no /usr/lib/postgresql/*/bin/initdb)");
        };
        let dir = TempDir::new("pg");
        // The cluster runs as the `postgres` user, which takes root to set up.
        let owned = Command::new("chown")
            .args(["postgres"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !owned {
            return skip("a private PostgreSQL cluster cannot be set up (needs root)");
        }
        let pg = PrivatePostgres {
            bin,
            dir,
            port: free_port(),
        };
        pg.as_postgres(
            "initdb",
            &["-D", "data", "-U", "postgres", "--auth=trust", "-N"],
        );
        pg.up();
        Some(pg)
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) {
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{tool} {args:?}");
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        self.as_postgres(
            "pg_ctl",
            &["-D", "data", "-o", &options, "-l", "log", "-w", "start"],
        );
    }

    /// An immediate stop: the server processes end without a checkpoint,
    /// as in a crash.
    fn crash(&self) {
        self.as_postgres("pg_ctl", &["-D", "data", "-m", "immediate", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", "data", "-m", "immediate", "stop"])
            .current_dir(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_and_restarted_under_traffic() {
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let store = PostgresStore::new(&pg.url())
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    store.ready().await.unwrap();
    let addr = serve(app(SessionConfig::default(), store)).await;
    outage_under_traffic(addr, 10, || pg.crash(), || pg.up(), Duration::from_secs(20)).await;
}
