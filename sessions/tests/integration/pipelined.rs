//! Pipelined saves (`store/lease/writes.rs`): on a hot session the next
//! request of a process runs on the previous one's result while that save
//! is on its way; each answers only once its own save is in; a save that
//! fails fails the requests that ran on it, and nothing acknowledged is
//! lost. Every store under a hot session, then what happens while a Redis
//! server of the test's own holds its writes back (`CLIENT PAUSE WRITE`):
//! with pipelining on, with it off, and with the held save failing.

use sessions_test_support as common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use common::app::{config, cookie, serve_app, start_session};
use common::client::{serve, Client, Reply};
use common::stores::Fixture;
use server_sessions::{Session, SessionConfig, SessionLayer};

stores!(a_hot_session_loses_nothing);

/// 8 clients × 25 requests on one session, each read-pause-write: every
/// answer is 200, each counter value answered once, none skipped, and the
/// session ends at exactly the count of requests.
async fn a_hot_session_loses_nothing(f: &Fixture) {
    let addr = serve_app(config(), f.store.clone()).await;
    let id = start_session(addr).await;
    let mut client = Client::new(addr);
    client.cookie = Some(cookie(&id));
    let replies = client.hammer("/count", 8, 25).await;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let mut seen: Vec<u64> = replies.iter().map(counter_of).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (2..=201).collect::<Vec<_>>(),
        "an update was lost or repeated"
    );
    assert_eq!(
        client
            .get_with("/count", client.cookie.as_deref())
            .await
            .body,
        "false 202"
    );
}

/// The `n` of a `/count` answer (`missing n`).
fn counter_of(r: &Reply) -> u64 {
    r.body
        .split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(feature = "redis")]
mod redis_held {
    //! A Redis server of each test's own, whose writes the test holds back.

    use super::*;
    use common::records::key_of;
    use common::redis_topology::{or_skip, Standalone};
    use common::stores::redis_data_key;
    use server_sessions::store::RedisStore;

    #[derive(serde::Deserialize)]
    struct Wait {
        ms: u64,
    }

    /// Reads `n`, pauses `ms`, writes `n + 1` and answers it; counts the
    /// handlers that have read.
    async fn step(
        State(read): State<Arc<AtomicUsize>>,
        Query(w): Query<Wait>,
        s: Session,
    ) -> Result<String, server_sessions::Error> {
        let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
        read.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(w.ms)).await;
        s.insert("n", n).await?;
        Ok(n.to_string())
    }

    struct Held {
        server: Standalone,
        addr: std::net::SocketAddr,
        read: Arc<AtomicUsize>,
        /// The session, started with `n` = 1.
        id: String,
    }

    async fn start(pipelined: bool) -> Option<Held> {
        let server = or_skip(Standalone::start_with(&[]))?;
        let store = RedisStore::connect(&server.url())
            .await
            .unwrap()
            .with_lease(Duration::from_secs(2));
        let mut c: SessionConfig = config();
        c.pipelined_saves = pipelined;
        c.lock_timeout = Duration::from_secs(10);
        let read = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route("/step", get(step))
            .with_state(Arc::clone(&read))
            .layer(SessionLayer::new(store).with_config(c));
        let addr = serve(app).await;
        let first = Client::new(addr).get_with("/step?ms=0", None).await;
        assert_eq!((first.status, first.body.as_str()), (200, "1"), "{first:?}");
        let id = first.cookie_value().unwrap();
        read.store(0, Ordering::SeqCst);
        Some(Held {
            server,
            addr,
            read,
            id,
        })
    }

    impl Held {
        /// A client carrying the session's cookie.
        fn client(&self) -> Client {
            let mut client = Client::new(self.addr);
            client.cookie = Some(cookie(&self.id));
            client
        }

        fn redis(&self, args: &[&str]) -> String {
            self.server.node.cli(args).unwrap()
        }

        /// The stored record of the session, as Redis has it now.
        fn stored(&self) -> String {
            let key = redis_data_key("session:", &key_of(&self.id));
            self.redis(&["GET", &key])
        }

        /// Request A, which holds the session 300 ms between its read and
        /// its write; once it has read, Redis holds every write back
        /// (`CLIENT PAUSE WRITE`, which the test ends), and B is sent, so
        /// that it waits for A in this process.
        async fn a_then_b(
            &self,
        ) -> (
            tokio::task::JoinHandle<Reply>,
            tokio::task::JoinHandle<Reply>,
        ) {
            let client = self.client();
            let a = {
                let c = client.clone();
                tokio::spawn(async move { c.get_with("/step?ms=300", c.cookie.as_deref()).await })
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while self.read.load(Ordering::SeqCst) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "A never read its session"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.redis(&["CLIENT", "PAUSE", "5000", "WRITE"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let b = tokio::spawn(async move {
                client
                    .get_with("/step?ms=0", client.cookie.as_deref())
                    .await
            });
            // A writes (held back), and B runs if it may.
            tokio::time::sleep(Duration::from_millis(600)).await;
            (a, b)
        }
    }

    /// While A's save is held in Redis, B has already run on A's result;
    /// both answer once the writes go through, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_request_runs_while_the_save_is_on_its_way() {
        let Some(h) = start(true).await else { return };
        let (a, b) = h.a_then_b().await;
        assert_eq!(
            h.read.load(Ordering::SeqCst),
            2,
            "B did not run on A's result"
        );
        assert!(
            !a.is_finished() && !b.is_finished(),
            "answered before the save was in"
        );
        assert!(h.stored().contains(r#""n":1"#), "{}", h.stored());
        h.redis(&["CLIENT", "UNPAUSE"]);
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!((a.status, a.body.as_str()), (200, "2"), "{a:?}");
        assert_eq!((b.status, b.body.as_str()), (200, "3"), "{b:?}");
        assert!(h.stored().contains(r#""n":3"#), "{}", h.stored());
    }

    /// With `pipelined_saves` off, B starts only once A's save is in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_pipelining_the_next_request_waits_for_the_save() {
        let Some(h) = start(false).await else { return };
        let (a, b) = h.a_then_b().await;
        assert_eq!(
            h.read.load(Ordering::SeqCst),
            1,
            "B ran before A's save was in"
        );
        h.redis(&["CLIENT", "UNPAUSE"]);
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!(
            (a.body.as_str(), b.body.as_str()),
            ("2", "3"),
            "{a:?} {b:?}"
        );
    }

    /// A's held save fails (its connection is cut): B, which ran on it,
    /// fails too, and neither write is in the store; the next request
    /// finds the session as it was before A, and works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_save_fails_the_requests_that_ran_on_it() {
        let Some(h) = start(true).await else { return };
        let (a, b) = h.a_then_b().await;
        assert_eq!(
            h.read.load(Ordering::SeqCst),
            2,
            "B did not run on A's result"
        );
        // Every connection but the one asking: the store's, with A's save
        // in it, unexecuted.
        h.redis(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
        h.redis(&["CLIENT", "UNPAUSE"]);
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!(a.status, 503, "{a:?}");
        assert_eq!(b.status, 503, "B ran on a save that failed: {b:?}");
        assert!(h.stored().contains(r#""n":1"#), "{}", h.stored());
        let client = h.client();
        let c = client
            .get_with("/step?ms=0", client.cookie.as_deref())
            .await;
        assert_eq!((c.status, c.body.as_str()), (200, "2"), "{c:?}");
    }
}
