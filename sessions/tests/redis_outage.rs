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
use common::{serve, Client};
use sessions::store::RedisStore;
use sessions::{Session, SessionId, SessionLayer};

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

async fn counter(session: Session) -> Result<String, sessions::Error> {
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    session.insert("n", n).await?;
    Ok(n.to_string())
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

    // Sessions saved before the outage, with the count each client saw.
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = Client::new(addr);
        c.get("/").await;
        assert_eq!(c.get("/").await.body, "2");
        clients.push(c);
    }

    redis.kill();
    let started = Instant::now();
    let mut statuses = Vec::new();
    for c in &clients {
        let r = c.get_with("/", c.cookie.as_deref()).await;
        statuses.push(r.status);
        assert_eq!(r.set_cookie, None, "a cookie while the store is down");
    }
    let r = Client::new(addr).get_with("/", None).await;
    statuses.push(r.status);
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    // Each request gave up within the store's bounded timeouts.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    assert!(redis.spawn(), "restart redis-server");
    // The connection manager reconnects on its own; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = clients[0].get_with("/", clients[0].cookie.as_deref()).await;
        if r.status == 200 {
            assert_eq!(r.body, "3", "a session saved before the outage was lost");
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in &mut clients[1..] {
        assert_eq!(
            c.get("/").await.body,
            "3",
            "a session saved before the outage was lost"
        );
    }
    assert_eq!(Client::new(addr).get_with("/", None).await.status, 200);
}
