//! Redis stopped and restarted under HTTP traffic, end to end: a private
//! redis-server (append-only file, fsync always) is killed with SIGKILL
//! while clients keep sending requests. Requests answer 503 while it is
//! down, nothing panics, service resumes by itself once it is back, and no
//! session saved before the outage is lost.

#![cfg(feature = "redis")]

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use common::{counter, outage_under_traffic, serve};
use sessions::store::RedisStore;
use sessions::{SessionId, SessionLayer};

/// A redis-server of this test's own, persisting every write.
struct PrivateRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl PrivateRedis {
    fn start() -> Option<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "sessions-test-redis-{}",
            &SessionId::generate().unwrap().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = PrivateRedis {
            child: None,
            port,
            dir,
        };
        if !redis.spawn() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and redis-server cannot be started"
            );
            eprintln!("skipping: redis-server is not installed");
            return None;
        }
        Some(redis)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// SIGKILL: a crash, not a shutdown.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_traffic() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let addr = serve(
        Router::new()
            .route("/", get(counter))
            .layer(SessionLayer::new(store)),
    )
    .await;
    let redis = std::cell::RefCell::new(&mut redis);
    outage_under_traffic(
        addr,
        20,
        || redis.borrow_mut().kill(),
        || assert!(redis.borrow_mut().spawn(), "restart redis-server"),
        Duration::from_secs(15),
    )
    .await;
}
