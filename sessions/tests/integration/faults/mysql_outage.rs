//! MySQL going away: a private MariaDB server (made for the test with
//! `mariadb-install-db`, so that killing it disturbs no other test) killed
//! with SIGKILL and started again under HTTP traffic. Requests answer 503
//! while it is down, service resumes by itself, and no session saved
//! before the crash is lost. And a server that is not there answers
//! unavailable quickly.

#![cfg(feature = "mysql")]

use sessions_test_support as common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::app::{app, assert_unavailable, outage_under_traffic};
use common::ci::skip;
use common::client::{free_port, serve};
use common::temp::TempDir;
use server_sessions::store::MysqlStore;
use server_sessions::SessionConfig;

const SERVER: &str = "/usr/sbin/mariadbd";
const INSTALL: &str = "/usr/bin/mariadb-install-db";

/// A MariaDB server of this test's own, on a free loopback port.
struct PrivateMariadb {
    dir: TempDir,
    port: u16,
    server: Option<Child>,
}

impl PrivateMariadb {
    fn start() -> Option<PrivateMariadb> {
        if !PathBuf::from(SERVER).exists() || !PathBuf::from(INSTALL).exists() {
            return skip("MariaDB's server is not installed (no mariadbd, mariadb-install-db)");
        }
        let dir = TempDir::new("mariadb");
        let status = Command::new(INSTALL)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args(as_root())
            .arg("--auth-root-authentication-method=normal")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "mariadb-install-db failed");
        let mut db = PrivateMariadb {
            dir,
            port: free_port(),
            server: None,
        };
        db.up();
        Some(db)
    }

    /// Starts the server and waits until it accepts connections.
    fn up(&mut self) {
        let dir = self.dir.path();
        let child = Command::new(SERVER)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg(format!("--port={}", self.port))
            .args(as_root())
            // Anyone connects as root without a password: this server is
            // the test's own and listens on loopback only.
            .args(["--bind-address=127.0.0.1", "--skip-grant-tables"])
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=32M"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mariadbd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: the server ends mid-work, as in a crash (InnoDB recovers
    /// at the next start).
    fn crash(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/test", self.port)
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        self.crash();
    }
}

/// `--user=root` when the test runs as root: mariadbd refuses root
/// otherwise.
fn as_root() -> Vec<&'static str> {
    let uid = Command::new("id").arg("-u").output();
    match uid {
        Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == "0" => vec!["--user=root"],
        _ => vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_crashed_and_restarted_under_traffic() {
    let Some(mut db) = PrivateMariadb::start() else {
        return;
    };
    let store = MysqlStore::new(&db.url())
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    store.ready().await.unwrap();
    let addr = serve(app(SessionConfig::default(), store)).await;
    // Both closures need the server: the crash happens before the restart.
    let db_ref = std::sync::Mutex::new(&mut db);
    outage_under_traffic(
        addr,
        10,
        || db_ref.lock().unwrap().crash(),
        || db_ref.lock().unwrap().up(),
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_database_is_unavailable_quickly() {
    // Nothing listens on port 1: no server is needed for this test.
    let url = "mysql://root@127.0.0.1:1/test";
    let started = Instant::now();
    let lazy = MysqlStore::new(url)
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
