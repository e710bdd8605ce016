//! The request life cycle of SPEC §4, end to end over real sockets, with
//! the RAM store: locking modes, lock release on every path, saving,
//! cookies, expiry, regeneration and failures.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::routing::get;
use axum::Router;
use common::{serve, Client};
use futures_util::stream::BoxStream;
use sessions::store::{self, LockGuard, MemoryStore, SaveIf, SessionAdmin, SessionStore};
use sessions::{Locking, Millis, Record, Session, SessionConfig, SessionId, SessionLayer};

fn config() -> SessionConfig {
    SessionConfig::default()
}

async fn counter(session: Session) -> Result<String, sessions::Error> {
    if session.config().locking == Locking::Explicit {
        session.acquire_lock().await?;
    }
    let n = session.get::<u64>("counter").await?.unwrap_or(0) + 1;
    tokio::time::sleep(Duration::from_millis(2)).await;
    session.insert("counter", n).await?;
    if session.config().locking == Locking::Explicit {
        session.release_lock().await?;
        // Whatever happens after the release must not overwrite what other
        // requests write meanwhile (CherryPy issue 1027).
        tokio::time::sleep(Duration::from_millis(2)).await;
        let _ = session.get::<u64>("counter").await?;
    }
    Ok(n.to_string())
}

async fn hold(session: Session) -> Result<String, sessions::Error> {
    session.load().await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    Ok("held".into())
}

async fn boom(session: Session) -> String {
    session.insert("counter", 1000).await.unwrap();
    panic!("handler panics while holding the session lock");
}

fn app(store: impl SessionAdmin, config: SessionConfig) -> Router {
    Router::new()
        .route("/", get(counter))
        .route("/hold", get(hold))
        .route("/boom", get(boom))
        .route("/plain", get(|| async { "no session here" }))
        .route(
            "/regen",
            get(|s: Session| async move {
                s.regenerate().await?;
                Ok::<_, sessions::Error>("logged in")
            }),
        )
        .route(
            "/logout",
            get(|s: Session| async move {
                s.delete().await?;
                s.expire().await?;
                Ok::<_, sessions::Error>("done")
            }),
        )
        .route(
            "/big",
            get(|s: Session| async move {
                s.insert("blob", "x".repeat(100_000)).await?;
                Ok::<_, sessions::Error>("stored?")
            }),
        )
        .route(
            "/missing",
            get(|s: Session| async move {
                Ok::<_, sessions::Error>(format!("{} {:?}", s.missing().await?, s.original_id()))
            }),
        )
        .layer(SessionLayer::new(store).with_config(config))
}

async fn concurrency(locking: Locking) {
    let mut c = config();
    c.locking = locking;
    let addr = serve(app(MemoryStore::new(), c)).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/").await.body, "1");
    let replies = client.hammer("/", 5, 30).await;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let highest = replies.iter().map(|r| r.body.parse::<u64>().unwrap()).max();
    assert_eq!(highest, Some(151), "updates were lost");
    assert_eq!(client.get("/").await.body, "152");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_lost_updates_with_implicit_locking() {
    concurrency(Locking::Implicit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_lost_updates_with_early_locking() {
    concurrency(Locking::Early).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_lost_updates_with_explicit_locking() {
    concurrency(Locking::Explicit).await;
}

#[tokio::test]
async fn untouched_requests_store_nothing_and_set_no_cookie() {
    let store = MemoryStore::new();
    let addr = serve(app(store.clone(), config())).await;
    let client = Client::new(addr);
    for _ in 0..20 {
        let r = client.get_with("/plain", None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.set_cookie, None);
    }
    // Even with a well-formed id that is not a session.
    let id = SessionId::generate().unwrap();
    let r = client
        .get_with("/plain", Some(&format!("session_id={id}")))
        .await;
    assert_eq!(r.set_cookie, None);
    assert_eq!(store.count().await.unwrap(), 0);
}

#[tokio::test]
async fn cookie_carries_every_attribute() {
    let mut c = config();
    c.secure = true;
    c.domain = Some("example.test".into());
    c.timeout = Duration::from_secs(90);
    let addr = serve(app(MemoryStore::new(), c)).await;
    let mut client = Client::new(addr);
    let r = client.get("/").await;
    let attrs = r.cookie_attrs();
    assert_eq!(attrs["max-age"], "90");
    assert!(attrs["expires"].ends_with(" GMT"), "{attrs:?}");
    assert_eq!(attrs["path"], "/");
    assert_eq!(attrs["domain"], "example.test");
    assert_eq!(attrs["samesite"], "Lax");
    assert!(attrs.contains_key("secure") && attrs.contains_key("httponly"));
    let id = r.cookie_value().unwrap();
    assert_eq!(id.len(), 40);
    // A client echoing attributes back, as old browsers do, keeps its session.
    let echoed = format!("session_id={id}; expires=Sat, 27 Oct 2017 04:18:28 GMT; Path=/;");
    assert_eq!(client.get_with("/", Some(&echoed)).await.body, "2");
}

#[tokio::test]
async fn hostile_ids_get_a_fresh_session_never_echoed() {
    let addr = serve(app(MemoryStore::new(), config())).await;
    let client = Client::new(addr);
    for bad in [
        "session_id=maliciousid; expires=Sat, 27 Oct 2017 04:18:28 GMT; Path=/;",
        "session_id=../../../etc/passwd",
        "session_id=0123456789ABCDEF0123456789ABCDEF01234567",
        "session_id=\"; Domain=evil.example",
        &format!("session_id={}", "a".repeat(10_000)),
    ] {
        let r = client.get_with("/missing", Some(bad)).await;
        assert_eq!(r.status, 200, "{bad}");
        assert_eq!(r.body, "true None", "{bad}");
        let sc = r.set_cookie.clone().unwrap();
        assert!(!sc.contains("evil") && !sc.contains("malicious"), "{sc}");
        assert_eq!(r.cookie_value().unwrap().len(), 40);
    }
    // An unknown but well-formed id is replaced too (session fixation).
    let forged = SessionId::generate().unwrap().to_string();
    let r = client
        .get_with("/missing", Some(&format!("session_id={forged}")))
        .await;
    assert!(r.body.starts_with("true Some"), "{}", r.body);
    assert_ne!(r.cookie_value().unwrap(), forged);
    // No cookie at all: a new session that is not "missing".
    assert_eq!(client.get_with("/missing", None).await.body, "false None");
}

#[tokio::test]
async fn idle_timeout_ends_the_session() {
    let mut c = config();
    c.timeout = Duration::from_secs(1);
    let addr = serve(app(MemoryStore::new(), c)).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/").await.body, "1");
    assert_eq!(client.get("/").await.body, "2");
    let old = client.id();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(client.get("/").await.body, "1");
    assert_ne!(client.id(), old);
}

#[tokio::test]
async fn absolute_timeout_ends_a_busy_session() {
    let mut c = config();
    c.absolute_timeout = Some(Duration::from_millis(1_500));
    let addr = serve(app(MemoryStore::new(), c)).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/").await.body, "1");
    let first = client.id();
    let mut last = 1;
    // Busy all along, so the idle timeout never bites; the absolute one must.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = client.get("/").await.body.parse().unwrap();
        if last == 1 {
            break;
        }
    }
    assert_eq!(last, 1, "session outlived its absolute timeout");
    assert_ne!(client.id(), first);
    // The cookie never outlives the absolute timeout either.
    let r = client.get("/").await;
    assert!(r.cookie_attrs()["max-age"].parse::<u64>().unwrap() <= 2);
}

#[tokio::test]
async fn regenerate_keeps_data_under_a_new_id() {
    let store = MemoryStore::new();
    let addr = serve(app(store.clone(), config())).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    client.get("/").await;
    let old = client.cookie.clone().unwrap();
    let r = client.get("/regen").await;
    assert_eq!(r.body, "logged in");
    assert_ne!(client.cookie.as_ref(), Some(&old));
    let attrs = r.cookie_attrs();
    assert!(
        attrs.contains_key("httponly") && attrs.contains_key("max-age"),
        "{attrs:?}"
    );
    assert_eq!(client.get("/").await.body, "3", "data lost on regenerate");
    // The old id is gone.
    assert_eq!(client.get_with("/", Some(&old)).await.body, "1");
    assert_eq!(store.count().await.unwrap(), 2);
}

#[tokio::test]
async fn regenerate_before_loading_carries_the_data() {
    let store = MemoryStore::new();
    let addr = serve(
        Router::new()
            .route("/", get(counter))
            .route(
                "/regen-first",
                get(|s: Session| async move {
                    s.regenerate().await?;
                    Ok::<_, sessions::Error>(
                        s.get::<u64>("counter").await?.unwrap_or(0).to_string(),
                    )
                }),
            )
            .layer(SessionLayer::new(store.clone())),
    )
    .await;
    let mut client = Client::new(addr);
    client.get("/").await;
    assert_eq!(client.get("/regen-first").await.body, "1");
    assert_eq!(client.get("/").await.body, "2");
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn logout_deletes_and_expires() {
    let store = MemoryStore::new();
    let addr = serve(app(store.clone(), config())).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    let old = client.cookie.clone().unwrap();
    let r = client.get("/logout").await;
    assert_eq!(r.body, "done");
    let attrs = r.cookie_attrs();
    assert_eq!(attrs["max-age"], "0");
    assert!(attrs["expires"].contains("1970"));
    assert_eq!(client.cookie, None);
    assert_eq!(store.count().await.unwrap(), 0);
    // Replaying the old cookie opens nothing.
    let r = client.get_with("/missing", Some(&old)).await;
    assert!(r.body.starts_with("true"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_wait_is_bounded_by_lock_timeout() {
    let mut c = config();
    c.lock_timeout = Duration::from_millis(300);
    let addr = serve(app(MemoryStore::new(), c)).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    let holder = client.fresh();
    let held =
        tokio::spawn(async move { holder.get_with("/hold", holder.cookie.as_deref()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = client.get_with("/", client.cookie.as_deref()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert_eq!(held.await.unwrap().body, "held");
    // Once free, the session works and lost nothing.
    assert_eq!(client.get("/").await.body, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_releases_the_lock_and_saves_nothing() {
    let mut c = config();
    c.lock_timeout = Duration::from_secs(2);
    let addr = serve(app(MemoryStore::new(), c)).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    let boom = client.fresh();
    // The connection dies with the handler's task; that is an error here.
    let _ = boom
        .try_request(reqwest::Method::GET, "/boom", client.cookie.as_deref())
        .await;
    let r = client.get("/").await;
    assert_eq!(r.status, 200, "lock not released after a panic");
    assert_eq!(r.body, "2", "a panicking handler's changes were saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_releases_the_lock() {
    let mut c = config();
    c.lock_timeout = Duration::from_millis(800);
    let addr = serve(app(MemoryStore::new(), c)).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    let cookie = client.cookie.clone().unwrap();
    // A client that gives up 200 ms into a 1.5 s handler: hyper drops the
    // request's future when the connection closes.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = impatient
        .get(format!("http://{addr}/hold"))
        .header("cookie", &cookie)
        .send()
        .await;
    assert!(err.is_err());
    drop(impatient);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Well inside the handler's 1.5 s, and with a wait shorter than it.
    let r = client.get("/").await;
    assert_eq!(r.status, 200, "lock still held by a dropped request");
    assert_eq!(r.body, "2");
}

#[tokio::test]
async fn an_oversized_session_is_refused_and_the_old_data_kept() {
    let mut c = config();
    c.max_size = 1024;
    let store = MemoryStore::new();
    let addr = serve(app(store.clone(), c)).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    let r = client.get("/big").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body, "session error\n");
    assert_eq!(client.get("/").await.body, "2");
}

/// A store that can be switched off, standing for a backend that went
/// down: every call fails while it is.
#[derive(Debug, Clone)]
struct Flaky {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
    clean_ups: Arc<std::sync::atomic::AtomicU32>,
}

impl Flaky {
    fn new(down: bool) -> Self {
        Flaky {
            inner: MemoryStore::new(),
            down: Arc::new(AtomicBool::new(down)),
            clean_ups: Arc::default(),
        }
    }
}

impl Flaky {
    fn check(&self) -> Result<(), store::Error> {
        if self.down.load(Ordering::SeqCst) {
            Err(store::Error::unavailable(
                "test store",
                std::io::Error::other("switched off"),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for Flaky {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>, store::Error> {
        self.check()?;
        self.inner.load(id).await
    }
    async fn save(&self, id: &SessionId, r: &Record, w: SaveIf) -> Result<bool, store::Error> {
        self.check()?;
        self.inner.save(id, r, w).await
    }
    async fn touch(&self, id: &SessionId, e: Millis) -> Result<bool, store::Error> {
        self.check()?;
        self.inner.touch(id, e).await
    }
    async fn delete(&self, id: &SessionId) -> Result<(), store::Error> {
        self.check()?;
        self.inner.delete(id).await
    }
    async fn lock(&self, id: &SessionId, wait: Duration) -> Result<LockGuard, store::Error> {
        self.check()?;
        self.inner.lock(id, wait).await
    }
    fn as_admin(&self) -> Option<&dyn SessionAdmin> {
        Some(self)
    }
}

#[async_trait]
impl SessionAdmin for Flaky {
    async fn count(&self) -> Result<u64, store::Error> {
        self.check()?;
        self.inner.count().await
    }
    fn ids(&self) -> BoxStream<'_, Result<SessionId, store::Error>> {
        self.inner.ids()
    }
    async fn clean_up(&self) -> Result<u64, store::Error> {
        self.clean_ups.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.clean_up().await
    }
}

#[tokio::test]
async fn a_store_that_is_down_answers_503_and_recovers() {
    let flaky = Flaky::new(false);
    let addr = serve(app(flaky.clone(), config())).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/").await.body, "1");
    flaky.down.store(true, Ordering::SeqCst);
    let r = client.get_with("/", client.cookie.as_deref()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "session store unavailable\n");
    assert_eq!(r.set_cookie, None);
    // Routes that do not use the session are unaffected.
    assert_eq!(client.get_with("/plain", None).await.status, 200);
    flaky.down.store(false, Ordering::SeqCst);
    assert_eq!(client.get("/").await.body, "2", "data lost in the outage");
}

#[tokio::test]
async fn a_handler_that_swallows_a_store_error_still_answers_503() {
    let flaky = Flaky::new(true);
    let addr = serve(
        Router::new()
            .route(
                "/",
                get(|s: Session| async move {
                    let _ = s.insert("k", 1).await;
                    "looks fine"
                }),
            )
            .layer(SessionLayer::new(flaky)),
    )
    .await;
    // A new session whose first save fails, and an existing id whose load
    // fails: neither may look like success.
    assert_eq!(Client::new(addr).get_with("/", None).await.status, 503);
    let r = Client::new(addr)
        .get_with(
            "/",
            Some(&format!("session_id={}", SessionId::generate().unwrap())),
        )
        .await;
    assert_eq!(r.status, 503, "a failed write was silently dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_never_resurrects_a_session_deleted_meanwhile() {
    let store = MemoryStore::new();
    let addr = serve(
        Router::new()
            .route(
                "/slow-write",
                get(|s: Session| async move {
                    s.insert("k", "v").await?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Ok::<_, sessions::Error>("written")
                }),
            )
            .route("/", get(counter))
            .layer(SessionLayer::new(store.clone())),
    )
    .await;
    let mut client = Client::new(addr);
    client.get("/").await;
    let id: SessionId = client.id().unwrap().parse().unwrap();
    let writer = client.fresh();
    let slow = tokio::spawn(async move {
        writer
            .get_with("/slow-write", writer.cookie.as_deref())
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An admin logs the user out while the request runs.
    store.delete(&id).await.unwrap();
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.set_cookie, None, "a cookie for a deleted session");
    assert_eq!(
        store.load(&id).await.unwrap(),
        None,
        "deleted session resurrected"
    );
}

#[tokio::test]
async fn path_sections_switch_sessions_off_and_rename_the_cookie() {
    let config = sessions::Config::from_ini_str(
        "[/]\ntools.sessions.on = True\n\
         [/off]\ntools.sessions.on = False\n\
         [/other]\ntools.sessions.name = 'temp'\ntools.sessions.persistent = False\n\
         tools.sessions.path = '/other'\n",
        "test.conf",
    )
    .unwrap();
    let addr = serve(
        Router::new()
            .route("/", get(counter))
            .route(
                "/off",
                get(|s: Option<Session>| async move { format!("{}", s.is_some()) }),
            )
            .route("/off/uses", get(counter))
            .route("/other", get(counter))
            .layer(SessionLayer::new(MemoryStore::new()).with_file_config(config)),
    )
    .await;
    let client = Client::new(addr);
    let r = client.get_with("/off", None).await;
    assert_eq!(
        (r.status, r.body.as_str(), r.set_cookie),
        (200, "false", None)
    );
    // A handler that needs a session where they are off is a setup error.
    assert_eq!(client.get_with("/off/uses", None).await.status, 500);
    let r = client.get_with("/other", None).await;
    let sc = r.set_cookie.unwrap();
    assert!(sc.starts_with("temp="), "{sc}");
    assert!(!sc.contains("Expires") && !sc.contains("Max-Age"), "{sc}");
    assert!(sc.contains("Path=/other"), "{sc}");
}

#[tokio::test]
async fn clean_up_runs_every_clean_freq_and_stops_with_the_layer() {
    use tower::ServiceExt;
    let store = Flaky::new(false);
    let mut c = config();
    c.storage.clean_freq = Duration::from_millis(100);
    let app = Router::new()
        .route("/", get(counter))
        .layer(SessionLayer::new(store.clone()).with_config(c));
    // Nothing runs before the first request: the layer may be built
    // outside a runtime.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(store.clean_ups.load(Ordering::SeqCst), 0);
    let request = http::Request::new(axum::body::Body::empty());
    assert_eq!(app.clone().oneshot(request).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let ran = store.clean_ups.load(Ordering::SeqCst);
    assert!(ran >= 2, "clean-up ran {ran} times in 450 ms at 100 ms");
    drop(app);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at_drop = store.clean_ups.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.clean_ups.load(Ordering::SeqCst),
        at_drop,
        "clean-up outlived the layer"
    );
}
