//! Session events over HTTP on every store: created, regenerated (old →
//! new key), deleted (by a log-out and by ending a user's other
//! sessions), expired (found by a load past the absolute timeout, and by
//! the background clean-up); each hook call finds the session's lock free;
//! a hook that panics or never returns holds up no request.

use sessions_test_support as common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::app::config;
use common::client::{serve, Client};
use common::redis_topology::{or_skip, Standalone};
use common::stores::{Fixture, Kind};
use common::temp::unique_prefix;
use server_sessions::store::{RedisStore, SessionAdmin, SessionStore};
use server_sessions::{store::StoreKey, FoundBy, Session, SessionEvent, SessionLayer, UserId};

stores!(
    each_store_operation_is_told_once,
    expiry_is_told_by_loads_and_clean_up,
    hooks_hold_up_no_request
);

/// Redis tells of the sessions it expired by TTL when its keyspace
/// notifications are on (`notify-keyspace-events` with `Ex`).
///
/// On a server of the test's own, empty but for the test's session: Redis
/// finds a key expired when it is read, which the store no longer does once
/// the session is idle, or by sampling keys with a TTL, 20 at a time ten
/// times a second. On a shared server holding 27,000 other keys with TTLs
/// the expiry came minutes late, and the test failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tells_what_its_ttl_expired() {
    let Some(server) = or_skip(Standalone::start_with(&["--notify-keyspace-events", "Ex"])) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let store: Arc<dyn SessionAdmin> = Arc::new(store.with_prefix(unique_prefix()));
    idle_session_is_told_expired(&store, "/count", None, None, FoundBy::Ttl).await;
}

/// `/count`, `/login?` (regenerate, tie to alice), `/others` (end alice's
/// other sessions), `/logout`.
fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/count",
            get(|s: Session| async move {
                let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
                s.insert("n", n).await?;
                Ok::<_, server_sessions::Error>(n.to_string())
            }),
        )
        .route(
            "/login",
            get(|s: Session| async move {
                s.regenerate().await?;
                s.set_user(UserId::new("alice").unwrap()).await?;
                Ok::<_, server_sessions::Error>("in")
            }),
        )
        .route(
            "/others",
            get(|s: Session| async move {
                Ok::<_, server_sessions::Error>(s.logout_other_sessions().await?.to_string())
            }),
        )
        .route(
            "/logout",
            get(|s: Session| async move {
                s.logout().await?;
                Ok::<_, server_sessions::Error>("out")
            }),
        )
        .layer(layer)
}

/// A hook that sends each event on, after checking that the session's lock
/// can be had when it runs: it takes the lock on the store, as a hook that
/// used the session would. (A remote store's release may still be on its
/// way when the hook starts, hence a wait rather than none.)
fn recording(
    store: Arc<dyn SessionStore>,
) -> (impl Fn(&SessionEvent), mpsc::Receiver<SessionEvent>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    // A worker of its own, so that a store's release, spawned when the
    // lock is dropped, runs at once rather than at the next event.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let hook = move |event: &SessionEvent| {
        // Released inside the runtime: a remote store's release is a task.
        let lock = runtime.block_on(async {
            let guard = store.lock(event.key(), Duration::from_secs(5)).await;
            guard.map(drop)
        });
        assert!(
            lock.is_ok(),
            "{event:?}: its lock could not be had: {lock:?}"
        );
        tx.lock().unwrap().send(event.clone()).unwrap();
    };
    (hook, rx)
}

fn next(rx: &mpsc::Receiver<SessionEvent>) -> SessionEvent {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("an event within 10 s")
}

fn key_of(client: &Client) -> StoreKey {
    common::records::key_of(&client.id().unwrap())
}

fn alice() -> Option<UserId> {
    Some(UserId::new("alice").unwrap())
}

async fn each_store_operation_is_told_once(f: &Fixture) {
    let (hook, rx) = recording(f.store.clone());
    let layer = SessionLayer::new(f.store.clone())
        .with_config(config())
        .on_event(hook);
    let addr = serve(app(layer)).await;

    let mut a = Client::new(addr);
    assert_eq!(a.get("/count").await.body, "1");
    let first = key_of(&a);
    assert_eq!(
        next(&rx),
        SessionEvent::Created {
            key: first,
            user: None
        }
    );
    // A save of an existing session tells nothing.
    assert_eq!(a.get("/count").await.body, "2");
    a.get("/login").await;
    let second = key_of(&a);
    assert_eq!(
        next(&rx),
        SessionEvent::Regenerated {
            from: first,
            to: second,
            user: alice()
        }
    );

    // Another device of alice's, then "log out my other sessions".
    let mut b = Client::new(addr);
    b.get("/count").await;
    let b_first = key_of(&b);
    assert!(matches!(next(&rx), SessionEvent::Created { key, .. } if key == b_first));
    b.get("/login").await;
    let b_key = key_of(&b);
    assert!(matches!(next(&rx), SessionEvent::Regenerated { to, .. } if to == b_key));
    assert_eq!(a.get("/others").await.body, "1");
    assert_eq!(
        next(&rx),
        SessionEvent::Deleted {
            key: b_key,
            user: alice()
        }
    );

    a.get("/logout").await;
    assert_eq!(
        next(&rx),
        SessionEvent::Deleted {
            key: second,
            user: alice()
        }
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "one event per operation"
    );
}

async fn expiry_is_told_by_loads_and_clean_up(f: &Fixture) {
    let (hook, rx) = recording(f.store.clone());
    let layer = SessionLayer::new(f.store.clone())
        .with_config(config())
        .on_event(hook);
    let addr = serve(app(layer)).await;
    // A session whose data no longer reads (not a JSON object): the load
    // finds it dead, the request starts afresh and deletes it. (Stores
    // answer an expired record as missing, so an idle session is found
    // by the clean-up, below, not by a load.)
    let id = server_sessions::SessionId::generate().unwrap();
    let key = id.store_key();
    let dead = server_sessions::store::Record {
        user: alice(),
        ..common::records::record("[1, 2]", 60_000)
    };
    assert!(f
        .store
        .save(&key, &dead, server_sessions::store::SaveIf::Absent)
        .await
        .unwrap());
    let reply = Client::new(addr)
        .get_with("/count", Some(&common::app::cookie(&id.to_string())))
        .await;
    assert_eq!(reply.body, "1");
    let found = [next(&rx), next(&rx)];
    assert!(
        found.contains(&SessionEvent::Expired {
            key,
            user: alice(),
            found_by: FoundBy::Load
        }),
        "{found:?}"
    );

    // The background clean-up (every second here) tells what it removes,
    // where the store removes anything itself (Redis and memcached expire
    // by their own TTL).
    if matches!(f.kind, Kind::Redis | Kind::Memcached) {
        return;
    }
    let every_second = Some(Duration::from_secs(1));
    idle_session_is_told_expired(&f.store, "/login", every_second, alice(), FoundBy::CleanUp).await;
}

/// A session made by `path` under a 1 s timeout (clean-up every
/// `clean_freq`, if given) is told created, then expired, found `by`.
async fn idle_session_is_told_expired(
    store: &Arc<dyn SessionAdmin>,
    path: &str,
    clean_freq: Option<Duration>,
    user: Option<UserId>,
    by: FoundBy,
) {
    let (hook, rx) = recording(store.clone());
    let mut c = config();
    c.timeout = Duration::from_secs(1);
    if let Some(every) = clean_freq {
        c.storage.clean_freq = every;
    }
    let layer = SessionLayer::new(store.clone())
        .with_config(c)
        .on_event(hook);
    let mut idle = Client::new(serve(app(layer)).await);
    idle.get(path).await;
    let key = key_of(&idle);
    assert!(matches!(next(&rx), SessionEvent::Created { .. }));
    assert_eq!(
        next(&rx),
        SessionEvent::Expired {
            key,
            user,
            found_by: by
        }
    );
}

async fn hooks_hold_up_no_request(f: &Fixture) {
    let (release, stuck) = mpsc::channel::<()>();
    let stuck = Mutex::new(stuck);
    let layer = SessionLayer::new(f.store.clone())
        .with_config(config())
        .on_event(|_: &SessionEvent| panic!("a hook that panics"))
        // Never returns until the test ends: every later event waits for
        // it, no request does.
        .on_event(move |_: &SessionEvent| {
            let _ = stuck.lock().unwrap().recv();
        });
    let addr = serve(app(layer)).await;
    for _ in 0..20 {
        let mut c = Client::new(addr);
        assert_eq!(c.get("/count").await.body, "1");
        c.get("/login").await;
        assert_eq!(c.get("/count").await.body, "2");
        assert_eq!(c.get("/logout").await.status, 200);
    }
    drop(release);
}
