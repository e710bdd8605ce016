//! PostgreSQL stopped (crashed) and restarted under HTTP traffic, end to
//! end, on a private cluster made for the test with initdb: requests answer
//! 503 quickly while it is down, nothing panics, service resumes by itself
//! and no session saved before the outage is lost.

#![cfg(feature = "postgres")]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::{counter, outage_under_traffic, serve};
use sessions::store::PostgresStore;
use sessions::{SessionId, SessionLayer};

/// A PostgreSQL cluster of this test's own, run as the `postgres` user.
struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
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
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and PostgreSQL's server binaries are not installed"
            );
            eprintln!("skipping: no /usr/lib/postgresql/*/bin/initdb");
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "sessions-test-pg-{}",
            &SessionId::generate().unwrap().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // The cluster runs as the `postgres` user, which takes root to set up.
        let owned = Command::new("chown")
            .args(["postgres"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !owned {
            let _ = std::fs::remove_dir_all(&dir);
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and a private PostgreSQL cluster cannot be set up (needs root)"
            );
            eprintln!("skipping: a private PostgreSQL cluster needs root");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePostgres { bin, dir, port };
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
            .current_dir(&self.dir)
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
            self.dir.display()
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
            .current_dir(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
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
    let addr = serve(
        Router::new()
            .route("/", get(counter))
            .layer(SessionLayer::new(store)),
    )
    .await;
    outage_under_traffic(addr, 10, || pg.crash(), || pg.up(), Duration::from_secs(20)).await;
}
