//! API clients: the id in a header (`header = "X-Session-Id"`), end to end
//! over a real socket with a client that keeps no cookies — on every
//! store. Header only (`cookie = False`): the id comes back in the header
//! and no `Set-Cookie` is sent; a hostile or unknown id gets a fresh one,
//! never echoed; regenerate moves the session and kills the old id; a
//! logout answers an empty header and the old id opens nothing. With both
//! configured, the response carries both.

use sessions_test_support as common;

use std::net::SocketAddr;

use common::app::{config, serve_app};
use common::stores::Fixture;
use http::HeaderName;
use server_sessions::SessionConfig;

stores!(the_id_travels_in_a_header, header_and_cookie_together);

const HEADER: &str = "x-session-id";

/// One GET with the id header (or none), keeping nothing: the status, the
/// body, the id header's value and whether a cookie was set.
async fn get(
    addr: SocketAddr,
    path: &str,
    id: Option<&str>,
) -> (u16, String, Option<String>, bool) {
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(id) = id {
        req = req.header(HEADER, id);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let carried = resp
        .headers()
        .get(HEADER)
        .map(|v| v.to_str().unwrap().to_owned());
    let cookie = resp.headers().contains_key("set-cookie");
    (status, resp.text().await.unwrap(), carried, cookie)
}

/// `/count` with the id in the cookie only: the id header answered, and
/// the body.
async fn with_cookie(addr: SocketAddr, id: &str) -> (Option<String>, String) {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/count"))
        .header("cookie", format!("session_id={id}"))
        .send()
        .await
        .unwrap();
    let carried = resp
        .headers()
        .get(HEADER)
        .map(|v| v.to_str().unwrap().to_owned());
    (carried, resp.text().await.unwrap())
}

fn header_only() -> SessionConfig {
    let mut c = config();
    c.header = Some(HeaderName::from_static(HEADER));
    c.cookie = false;
    c
}

async fn the_id_travels_in_a_header(f: &Fixture) {
    let addr = serve_app(header_only(), f.store.clone()).await;
    // A new visitor: the id comes back in the header, no cookie.
    let (status, body, id, cookie) = get(addr, "/count", None).await;
    assert_eq!((status, body.as_str(), cookie), (200, "false 1", false));
    let id = id.expect("the id in the response header");
    assert_eq!(id.len(), 40);
    // Sent back, it is the same session.
    let (_, body, again, _) = get(addr, "/count", Some(&id)).await;
    assert_eq!(body, "false 2");
    assert_eq!(again.as_deref(), Some(id.as_str()));
    // A cookie is not read when cookies are off.
    assert_eq!(with_cookie(addr, &id).await.1, "false 1");

    // Hostile or unknown ids: a fresh session, never the id sent. (Spaces
    // around a header value are not part of it: HTTP strips them.)
    let unknown = server_sessions::SessionId::generate().unwrap().to_string();
    for bad in [
        unknown.clone(),
        id.to_uppercase(),
        format!("{id}0"),
        "../../etc".into(),
    ] {
        let (status, body, fresh, _) = get(addr, "/count", Some(&bad)).await;
        assert_eq!((status, body.as_str()), (200, "true 1"), "{bad:?}");
        let fresh = fresh.unwrap();
        assert_ne!(fresh, bad);
        assert_ne!(fresh, id);
    }

    // Regenerate: a new id in the header, the data kept, the old id dead.
    let (status, _, moved, _) = get(addr, "/regen", Some(&id)).await;
    assert_eq!(status, 200);
    let moved = moved.unwrap();
    assert_ne!(moved, id);
    assert_eq!(get(addr, "/count", Some(&moved)).await.1, "false 3");
    assert_eq!(get(addr, "/count", Some(&id)).await.1, "true 1");

    // Log out: an empty header, and the id opens nothing any more.
    let (status, _, ended, cookie) = get(addr, "/logout", Some(&moved)).await;
    assert_eq!((status, ended.as_deref(), cookie), (200, Some(""), false));
    assert!(!f.holds(&moved).await);
    assert_eq!(get(addr, "/count", Some(&moved)).await.1, "true 1");
    // A route that never uses the session answers no header at all.
    assert_eq!(get(addr, "/plain", Some(&unknown)).await.2, None);
}

async fn header_and_cookie_together(f: &Fixture) {
    let mut c = config();
    c.header = Some(HeaderName::from_static(HEADER));
    let addr = serve_app(c, f.store.clone()).await;
    let (status, _, id, cookie) = get(addr, "/count", None).await;
    assert_eq!((status, cookie), (200, true));
    let id = id.unwrap();
    // Either carries it: the header, or the cookie alone.
    assert_eq!(get(addr, "/count", Some(&id)).await.1, "false 2");
    // A bad header is no id, whatever the cookie says.
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/count"))
        .header("cookie", format!("session_id={id}"))
        .header(HEADER, "not-an-id")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["cache-control"], "private");
    assert_eq!(resp.text().await.unwrap(), "true 1");
    let (carried, body) = with_cookie(addr, &id).await;
    assert_eq!(
        (carried.as_deref(), body.as_str()),
        (Some(id.as_str()), "false 3")
    );
}
