//! The actix-web adapter over a real socket: a real `HttpServer` with the
//! middleware, and an HTTP client. CherryPy's scenarios on every store run
//! through actix-web in `sessions-cli/tests/integration/conformance.rs`; these check
//! what only an adapter can get wrong: the cookie and the id header
//! written, the extractor where sessions are off, and the answers to a
//! busy lock and a store that is down.

// The library's store wrapper that can be switched off, as a backend that
// went down.
use sessions_test_support::watched;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use server_sessions::store::MemoryStore;
use server_sessions::{Config, SessionConfig, SessionEvent, SessionLayer, UserId};
use server_sessions_actix::{Error, Session, SessionMiddleware};
use watched::Watched;

async fn count(session: Session) -> Result<String, Error> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", n).await?;
    Ok(n.to_string())
}

/// Holds the session (and, in `implicit` mode, its lock) for a while.
async fn slow(session: Session) -> Result<String, Error> {
    session.insert("slow", true).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    Ok("slow".into())
}

#[derive(serde::Deserialize)]
struct Login {
    user: String,
}

async fn login(session: Session, q: web::Query<Login>) -> Result<String, Error> {
    session.regenerate().await?;
    let user = UserId::new(q.user.as_str()).expect("a valid user name");
    session.set_user(user).await?;
    Ok("in".into())
}

/// How many sessions this session's user has.
async fn mine(session: Session) -> Result<String, Error> {
    Ok(session.user_sessions().await?.len().to_string())
}

/// Ignores the store's error: the middleware must answer it anyway.
async fn swallow(session: Session) -> String {
    let _ = session.insert("lost", 1).await;
    "swallowed".into()
}

async fn optional(session: Option<Session>) -> &'static str {
    if session.is_some() {
        "session"
    } else {
        "none"
    }
}

async fn required(_session: Session) -> &'static str {
    "unreachable where sessions are off"
}

/// Serves the routes above with `sessions` on a free port of loopback.
fn serve(sessions: SessionMiddleware) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(sessions.clone())
            .route("/count", web::get().to(count))
            .route("/slow", web::get().to(slow))
            .route("/login", web::get().to(login))
            .route("/mine", web::get().to(mine))
            .route("/swallow", web::get().to(swallow))
            .route("/off/optional", web::get().to(optional))
            .route("/off/required", web::get().to(required))
    })
    .workers(2)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    addr
}

struct Reply {
    status: u16,
    body: String,
    headers: reqwest::header::HeaderMap,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// `name=value` of the `Set-Cookie`, as a client sends it back.
    fn cookie(&self) -> Option<String> {
        Some(self.header("set-cookie")?.split(';').next()?.to_owned())
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = reqwest::Client::new().get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    Reply {
        status,
        body: response.text().await.unwrap(),
        headers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_carries_the_session_across_requests() {
    let addr = serve(SessionMiddleware::new(
        SessionLayer::new(MemoryStore::new()),
    ));
    let first = get(addr, "/count", &[]).await;
    assert_eq!((first.status, first.body.as_str()), (200, "1"));
    let set = first.header("set-cookie").unwrap();
    assert!(set.starts_with("session_id="), "{set}");
    assert!(set.ends_with("; Path=/; HttpOnly; SameSite=Lax"), "{set}");
    let cookie = first.cookie().unwrap();
    assert_eq!(get(addr, "/count", &[("cookie", &cookie)]).await.body, "2");
    assert_eq!(get(addr, "/count", &[("cookie", &cookie)]).await.body, "3");
    // A stranger's id is not taken up (no session fixation).
    let planted = "session_id=0123456789abcdef0123456789abcdef01234567";
    let r = get(addr, "/count", &[("cookie", planted)]).await;
    assert_eq!(r.body, "1");
    assert_ne!(r.cookie().unwrap(), planted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_clients_carry_the_id_in_a_header() {
    let mut config = SessionConfig::default();
    config.cookie = false;
    config.header = Some(http::HeaderName::from_static("x-session-id"));
    let layer = SessionLayer::new(MemoryStore::new()).with_config(config);
    let addr = serve(SessionMiddleware::new(layer));
    let first = get(addr, "/count", &[]).await;
    assert_eq!(first.body, "1");
    assert_eq!(first.header("set-cookie"), None);
    assert_eq!(first.header("cache-control"), Some("private"));
    let id = first.header("x-session-id").unwrap().to_owned();
    assert_eq!(id.len(), 40);
    let again = get(addr, "/count", &[("x-session-id", &id)]).await;
    assert_eq!(again.body, "2");
    assert_eq!(again.header("x-session-id"), Some(id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lock_answers_503_with_retry_after() {
    let mut config = SessionConfig::default();
    config.lock_timeout = Duration::from_millis(200);
    let layer = SessionLayer::new(MemoryStore::new()).with_config(config);
    let addr = serve(SessionMiddleware::new(layer));
    let cookie = get(addr, "/count", &[]).await.cookie().unwrap();
    let held = cookie.clone();
    let holder = tokio::spawn(async move { get(addr, "/slow", &[("cookie", &held)]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy = get(addr, "/count", &[("cookie", &cookie)]).await;
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(busy.body, "session busy, try again\n");
    assert_eq!(busy.header("set-cookie"), None);
    // Another session is not held up meanwhile.
    assert_eq!(get(addr, "/count", &[]).await.body, "1");
    assert_eq!(holder.await.unwrap().status, 200);
    // Once the holder is done, the session is the next request's, with
    // the failed request's update never made.
    assert_eq!(get(addr, "/count", &[("cookie", &cookie)]).await.body, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_answers_503_even_when_the_handler_swallows_it() {
    let store = Watched::new(MemoryStore::new());
    let addr = serve(SessionMiddleware::new(SessionLayer::new(store.clone())));
    let cookie = get(addr, "/count", &[]).await.cookie().unwrap();
    store.set_down(true);
    for path in ["/count", "/swallow"] {
        let r = get(addr, path, &[("cookie", &cookie)]).await;
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.header("retry-after"), Some("1"), "{path}");
        assert_eq!(r.body, "session store unavailable\n", "{path}");
    }
    store.set_down(false);
    assert_eq!(get(addr, "/count", &[("cookie", &cookie)]).await.body, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_sessions_are_off_the_extractor_says_so() {
    let config = Config::from_ini_str(
        "[/]\ntools.sessions.on = True\n[/off]\ntools.sessions.on = False\n",
        "site.conf",
    )
    .unwrap();
    let layer = SessionLayer::new(MemoryStore::new()).with_file_config(config);
    let addr = serve(SessionMiddleware::new(layer));
    let r = get(addr, "/off/optional", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "none"));
    assert_eq!(r.header("set-cookie"), None);
    let r = get(addr, "/off/required", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (500, "session error\n"));
    assert_eq!(get(addr, "/count", &[]).await.body, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_the_user_index_work_through_actix() {
    let seen: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let hook = Arc::clone(&seen);
    let layer = SessionLayer::new(MemoryStore::new())
        .on_event(move |e: &SessionEvent| hook.lock().unwrap().push(e.kind()));
    let addr = serve(SessionMiddleware::new(layer));
    // Two sessions of one user, from two clients: each lists both.
    let one = get(addr, "/login?user=ann", &[]).await.cookie().unwrap();
    let two = get(addr, "/login?user=ann", &[]).await.cookie().unwrap();
    assert_ne!(one, two);
    let r = get(addr, "/mine", &[("cookie", &one)]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "2"));
    assert_eq!(get(addr, "/mine", &[("cookie", &two)]).await.body, "2");
    // Hooks run on a thread of their own: wait for them.
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*seen.lock().unwrap(), ["created", "created"]);
}
