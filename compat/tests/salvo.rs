//! salvo serving our tower layer over a real socket: the cookie carries the
//! session, a visitor's concurrent requests lose no update (CherryPy's 5
//! clients × 30 requests on one session), and a busy lock answers 503
//! with `Retry-After`.

use std::net::SocketAddr;
use std::time::Duration;

use salvo::conn::TcpListener;
use salvo::{Listener, Server};
use server_sessions::store::MemoryStore;
use server_sessions::{SessionConfig, SessionLayer};

async fn serve(layer: SessionLayer) -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let acceptor = TcpListener::new(addr).bind().await;
    tokio::spawn(Server::new(acceptor).serve(sessions_compat::router(layer)));
    addr
}

/// Status, `Set-Cookie` (`name=value`) and body.
async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
    let mut request = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(c) = cookie {
        request = request.header("cookie", c);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let set = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let retry = response.headers().get("retry-after").is_some();
    let body = response.text().await.unwrap();
    assert!(status != 503 || retry, "a 503 without Retry-After");
    (status, set, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_keeps_sessions_in_salvo() {
    let addr = serve(SessionLayer::new(MemoryStore::new())).await;
    let (status, cookie, body) = get(addr, "/", None).await;
    assert_eq!((status, body.as_str()), (200, "1"));
    let cookie = cookie.expect("no session cookie");
    assert!(cookie.starts_with("session_id="), "{cookie}");
    assert_eq!(get(addr, "/", Some(&cookie)).await.2, "2");
    // Another visitor has a session of its own.
    assert_eq!(get(addr, "/", None).await.2, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_update_is_lost_in_salvo() {
    let addr = serve(SessionLayer::new(MemoryStore::new())).await;
    let cookie = get(addr, "/", None).await.1.unwrap();
    let clients = (0..5).map(|_| {
        let cookie = cookie.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                let (status, _, body) = get(addr, "/", Some(&cookie)).await;
                assert_eq!(status, 200, "{body}");
            }
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await.unwrap();
    }
    assert_eq!(get(addr, "/", Some(&cookie)).await.2, "152");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lock_answers_503_in_salvo() {
    let mut config = SessionConfig::default();
    config.lock_timeout = Duration::from_millis(100);
    let addr = serve(SessionLayer::new(MemoryStore::new()).with_config(config)).await;
    let cookie = get(addr, "/", None).await.1.unwrap();
    let held = cookie.clone();
    let holder = tokio::spawn(async move { get(addr, "/hold", Some(&held)).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, set, _) = get(addr, "/", Some(&cookie)).await;
    assert_eq!(status, 503, "the lock was not held");
    assert_eq!(set, None);
    assert_eq!(holder.await.unwrap().2, "held");
    // The failed request changed nothing: the count goes on from 1.
    assert_eq!(get(addr, "/", Some(&cookie)).await.2, "2");
}
