//! The request life cycle of docs/spec.md §4, end to end over real
//! sockets, with the RAM store: what a session costs when untouched, its
//! cookie, logging in (regenerate) and out, per-path settings and the
//! clean-up timer.
//! Locking, timeouts, hostile input and failures have files of their own.

use sessions_test_support as common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::routing::get;
use common::app::{app, checked_cookie, config, cookie, counter, routes, serve_app};
use common::client::{serve, Client};
use common::logs;
use common::watched::Watched;
use server_sessions::store::{MemoryStore, SessionAdmin, SessionStore};
use server_sessions::{Session, SessionConfig, SessionId, SessionLayer};

#[tokio::test]
async fn untouched_requests_store_nothing_and_set_no_cookie() {
    let store = MemoryStore::new();
    let addr = serve_app(SessionConfig::default(), store.clone()).await;
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
    let mut c = SessionConfig::default();
    c.secure = true;
    c.domain = Some("example.test".into());
    c.timeout = Duration::from_secs(90);
    let addr = serve_app(c, MemoryStore::new()).await;
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
async fn regenerate_keeps_data_under_a_new_id() {
    let store = MemoryStore::new();
    let addr = serve_app(SessionConfig::default(), store.clone()).await;
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
    let addr = serve_app(SessionConfig::default(), store.clone()).await;
    let mut client = Client::new(addr);
    client.get("/").await;
    assert_eq!(client.get("/regen-first").await.body, "1");
    assert_eq!(client.get("/").await.body, "2");
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn logout_deletes_and_expires() {
    let store = MemoryStore::new();
    let addr = serve_app(SessionConfig::default(), store.clone()).await;
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

/// The handle's value calls, typed and raw: `remove::<T>` converts (and
/// removes the key even when the value is not a `T`), `get_value` and
/// `insert_value` take JSON as it is; the instants also as `SystemTime`.
#[tokio::test]
async fn values_typed_and_raw() {
    let router = axum::Router::new()
        .route(
            "/",
            get(|s: Session| async move {
                s.insert_value("raw", serde_json::json!({"a": [1, 2]}))
                    .await?;
                s.insert("n", 7u32).await?;
                let raw = s.get_value("raw").await?.unwrap();
                let n: Option<u32> = s.remove("n").await?;
                let gone = s.get_value("n").await?;
                let wrong = s.remove::<u32>("raw").await.is_err();
                let kept = s.contains_key("raw").await?;
                // The instants, as the data guard tells them.
                assert_eq!(s.created().await?, s.data().await?.created());
                let ahead = s
                    .expires()
                    .await?
                    .duration_since(std::time::SystemTime::now());
                assert!(ahead.unwrap() > std::time::Duration::from_secs(3_000));
                Ok::<_, server_sessions::Error>(format!("{raw} {n:?} {gone:?} {wrong} {kept}"))
            }),
        )
        .layer(SessionLayer::new(MemoryStore::new()).with_config(config()));
    let r = Client::new(serve(router).await).get_with("/", None).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"a":[1,2]} Some(7) None true false"#)
    );
}

/// `Session::data` loads once and then reads and changes the session with
/// no `Result` but for conversions; what changed through it is saved after
/// the handler.
#[tokio::test]
async fn the_data_guard_works_on_what_is_in_hand() {
    let store = MemoryStore::new();
    let router = axum::Router::new()
        .route(
            "/",
            get(|s: Session| async move {
                let mut data = s.data().await?;
                let n: u64 = data.get("n")?.unwrap_or(0) + 1;
                data.insert("n", n)?;
                data.insert_value("flash", serde_json::json!("hi"));
                let flash = data.remove_value("flash");
                let wrong = data.get::<String>("n").is_err();
                let keys: Vec<&str> = data.keys().collect();
                let line = format!(
                    "{n} {flash:?} {wrong} {keys:?} {} {}",
                    data.len(),
                    data.contains_key("flash")
                );
                assert!(data.expires() > data.created());
                // The handle works again once the guard is dropped.
                drop(data);
                assert_eq!(s.get::<u64>("n").await?, Some(n));
                Ok::<_, server_sessions::Error>(line)
            }),
        )
        .route(
            "/read",
            get(|s: Session| async move {
                let data = s.data().await?;
                Ok::<_, server_sessions::Error>(format!("{:?}", data.get_value("n")))
            }),
        )
        .layer(SessionLayer::new(store.clone()).with_config(config()));
    let mut client = Client::new(serve(router).await);
    assert_eq!(
        client.get("/").await.body,
        r#"1 Some(String("hi")) true ["n"] 1 false"#
    );
    assert_eq!(client.get("/").await.body.split(' ').next(), Some("2"));
    assert_eq!(client.get("/read").await.body, "Some(Number(2))");
    assert_eq!(store.count().await.unwrap(), 1);
}

/// A handler that keeps the data guard and calls the handle again would
/// wait for itself: the call fails at once (and the request answers 500),
/// it never hangs until the client gives up. What the guard changed before
/// is still saved.
#[tokio::test]
async fn a_call_while_the_data_guard_lives_fails_at_once() {
    let store = MemoryStore::new();
    let router = axum::Router::new()
        .route(
            "/",
            get(|s: Session| async move {
                let mut data = s.data().await?;
                data.insert("n", 1)?;
                let user = s.user().await;
                let again = s.data().await.map(drop);
                let line = format!("{user:?} {again:?}");
                drop(data);
                // Usable again once the guard is gone.
                assert_eq!(s.get::<u64>("n").await?, Some(1));
                Ok::<_, server_sessions::Error>(line)
            }),
        )
        .route(
            "/hold",
            get(|s: Session| async move {
                let _data = s.data().await?;
                s.user().await?;
                Ok::<_, server_sessions::Error>("unreachable")
            }),
        )
        .layer(SessionLayer::new(store.clone()).with_config(config()));
    let mut client = Client::new(serve(router).await);
    let answer = tokio::time::timeout(Duration::from_secs(10), client.get("/"))
        .await
        .expect("the handler hung on its own data guard");
    assert_eq!(answer.body, "Err(DataHeld) Err(DataHeld)");
    assert_eq!(store.count().await.unwrap(), 1);
    let answer = tokio::time::timeout(Duration::from_secs(10), client.get("/hold"))
        .await
        .expect("the handler hung on its own data guard");
    assert_eq!(answer.status, 500);
}

#[tokio::test]
async fn path_sections_switch_sessions_off_and_rename_the_cookie() {
    let config = server_sessions::Config::from_ini_str(
        "[/]\ntools.sessions.on = True\n\
         [/off]\ntools.sessions.on = False\n\
         [/other]\ntools.sessions.name = 'temp'\ntools.sessions.persistent = False\n\
         tools.sessions.path = '/other'\n",
        "test.conf",
    )
    .unwrap();
    let addr = serve(
        routes()
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
    let store = Watched::new(MemoryStore::new());
    let mut c = SessionConfig::default();
    c.storage.clean_freq = Duration::from_millis(100);
    let app = app(c, store.clone());
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

/// A `__Host-` cookie name with `Secure`, `Path=/` and no `Domain` (what
/// browsers demand of the prefix; ASVS 4.0.3 3.4.4, 5.0 3.3.1 and 3.3.3)
/// works like any other; and an id in the URL is never taken (ASVS 4.0.3
/// 3.1.1): the session travels in the cookie only.
#[tokio::test]
async fn host_prefixed_cookie_works_and_ids_in_urls_are_ignored() {
    logs::install();
    let mut config = config();
    config.name = "__Host-sid".into();
    config.secure = true;
    let store = MemoryStore::new();
    let addr = serve_app(config.clone(), store.clone()).await;
    let client = Client::new(addr);
    let r = client.get_with("/count", None).await;
    let id = checked_cookie(r.set_cookie.as_deref().unwrap(), &config);
    let sent = format!("__Host-sid={id}");
    assert_eq!(client.get_with("/count", Some(&sent)).await.body, "false 2");
    // The default name is not this one: a `session_id` cookie is not read.
    let r = client.get_with("/count", Some(&cookie(&id))).await;
    assert_eq!(r.body, "false 1");
    assert_ne!(r.cookie_value().unwrap(), id);
    for url in [
        format!("/count?session_id={id}"),
        format!("/count?__Host-sid={id}"),
        format!("/count?sid={id}&session={id}"),
    ] {
        let r = client.get_with(&url, None).await;
        assert_eq!(r.body, "false 1", "{url} opened the session");
        let new = r.cookie_value().unwrap();
        assert_ne!(new, id);
        assert!(!r.body.contains(&id));
    }
    // The session in the store is untouched by all of that.
    let stored = store
        .load(&common::records::key_of(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.data, br#"{"n":2}"#);
    logs::assert_no_full_ids();
}
