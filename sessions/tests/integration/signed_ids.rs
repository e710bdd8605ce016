//! Signed ids (`sign_ids`), over real HTTP: the cookie and the id header
//! carry the id and its HMAC; a forged, unsigned, truncated or altered
//! value is no id and costs no store lookup; an expired session's cookie,
//! replayed, opens nothing; keys rotate — a cookie signed by a key still
//! listed keeps its session, and is signed again by the first key; one
//! signed by a key taken off the list is no id.

use sessions_test_support as common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::app::{config, routes};
use common::client::{serve, Client};
use http::HeaderName;
use server_sessions::store::{self, LockGuard, MemoryStore, SaveIf, SessionStore};
use server_sessions::{
    store::{Millis, Record, StoreKey},
    Keys, SessionConfig, SessionId, SessionLayer,
};

/// The RAM store, counting the calls that look a session up.
#[derive(Debug, Clone, Default)]
struct Counting {
    inner: MemoryStore,
    lookups: Arc<AtomicUsize>,
}

impl Counting {
    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
    fn looked(&self) {
        self.lookups.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl SessionStore for Counting {
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, store::Error> {
        self.looked();
        self.inner.load(key).await
    }
    async fn save(&self, key: &StoreKey, r: &Record, w: SaveIf) -> Result<bool, store::Error> {
        self.inner.save(key, r, w).await
    }
    async fn touch(&self, key: &StoreKey, e: Millis) -> Result<bool, store::Error> {
        self.inner.touch(key, e).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<(), store::Error> {
        self.inner.delete(key).await
    }
    async fn exists(&self, key: &StoreKey) -> Result<bool, store::Error> {
        self.looked();
        self.inner.exists(key).await
    }
    async fn acquire(
        &self,
        key: &StoreKey,
        wait: Duration,
        load: bool,
    ) -> Result<(LockGuard, Option<Record>), store::Error> {
        self.looked();
        self.inner.acquire(key, wait, load).await
    }
}

fn keys(list: &[u8]) -> Keys {
    let raw: Vec<[u8; 32]> = list.iter().map(|&b| [b; 32]).collect();
    Keys::new(&raw).unwrap()
}

fn signing(keys: Keys) -> SessionConfig {
    let mut c = config();
    c.keys = Some(keys);
    c.sign_ids = true;
    c
}

async fn serve_with(config: SessionConfig, store: Counting) -> std::net::SocketAddr {
    serve(routes().layer(SessionLayer::new(store).with_config(config))).await
}

/// `/count` with exactly this cookie value: (missing, n) as the app
/// answered, and the cookie value set.
async fn count(client: &Client, value: Option<&str>) -> (String, Option<String>) {
    let cookie = value.map(|v| format!("session_id={v}"));
    let r = client.get_with("/count", cookie.as_deref()).await;
    assert_eq!(r.status, 200, "{r:?}");
    (r.body.clone(), r.cookie_value())
}

#[tokio::test]
async fn signed_cookies_carry_the_session() {
    let store = Counting::default();
    let addr = serve_with(signing(keys(&[1])), store.clone()).await;
    let client = Client::new(addr);
    let (body, value) = count(&client, None).await;
    assert_eq!(body, "false 1");
    let value = value.expect("a cookie");
    let (id, mac) = value.split_once('.').expect("id.signature");
    assert!(id.parse::<SessionId>().is_ok(), "{value}");
    assert_eq!(mac.len(), 43, "{value}");
    assert_eq!(count(&client, Some(&value)).await.0, "false 2");
}

/// Nothing but a value a listed key signed reaches the store.
#[tokio::test]
async fn forged_unsigned_and_truncated_cookies_cost_no_lookup() {
    let store = Counting::default();
    let addr = serve_with(signing(keys(&[1])), store.clone()).await;
    let client = Client::new(addr);
    let (_, value) = count(&client, None).await;
    let value = value.unwrap();
    let (id, mac) = value.split_once('.').unwrap();
    let stranger = keys(&[9]).sign(&id.parse().unwrap()).to_string();
    let other_id = SessionId::generate().unwrap();
    let mut flipped = value.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let forged = [
        // The live session's id without its signature.
        id.to_string(),
        // Cut short, by one character and by half.
        value[..value.len() - 1].to_string(),
        value[..60].to_string(),
        // Another key's signature, and the signature on another id.
        stranger,
        format!("{other_id}.{mac}"),
        String::from_utf8(flipped).unwrap(),
        format!("{value}A"),
        "not-an-id".to_string(),
    ];
    for bad in &forged {
        let before = store.lookups();
        let (body, set) = count(&client, Some(bad)).await;
        // A fresh session; the client is told its id was no good.
        assert_eq!(body, "true 1", "{bad}");
        assert_eq!(store.lookups(), before, "{bad} reached the store");
        assert_ne!(set.as_deref(), Some(value.as_str()));
    }
    // The real one still counts on.
    assert_eq!(count(&client, Some(&value)).await.0, "false 2");
}

/// An expired session's cookie is still correctly signed: replayed, it
/// finds nothing and starts a fresh session under a fresh id.
#[tokio::test]
async fn a_cookie_replayed_after_expiry_opens_nothing() {
    let mut c = signing(keys(&[1]));
    c.timeout = Duration::from_millis(800);
    let store = Counting::default();
    let addr = serve_with(c, store.clone()).await;
    let client = Client::new(addr);
    let (_, value) = count(&client, None).await;
    let value = value.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (body, set) = count(&client, Some(&value)).await;
    assert_eq!(body, "true 1");
    let set = set.expect("a new cookie");
    assert_ne!(set[..40], value[..40], "the expired id is never reused");
}

/// Rotation: a new key first, the old one after it, then the old one
/// dropped.
#[tokio::test]
async fn keys_rotate_without_logging_anyone_out() {
    let store = Counting::default();
    let old = serve_with(signing(keys(&[1])), store.clone()).await;
    let (_, value) = count(&Client::new(old), None).await;
    let value = value.unwrap();

    let rotated = serve_with(signing(keys(&[2, 1])), store.clone()).await;
    let client = Client::new(rotated);
    let (body, resigned) = count(&client, Some(&value)).await;
    assert_eq!(body, "false 2", "the old key still verifies");
    let resigned = resigned.unwrap();
    assert_eq!(resigned[..40], value[..40], "same session");
    assert_ne!(resigned, value, "signed again by the new first key");
    assert_eq!(
        resigned,
        keys(&[2]).sign(&value[..40].parse().unwrap()).to_string()
    );

    let new = serve_with(signing(keys(&[2])), store.clone()).await;
    let client = Client::new(new);
    let before = store.lookups();
    assert_eq!(
        count(&client, Some(&value)).await.0,
        "true 1",
        "old key dropped"
    );
    assert_eq!(store.lookups(), before);
    assert_eq!(count(&client, Some(&resigned)).await.0, "false 3");
}

/// Without `sign_ids`, keys or not, cookies are the plain 40 hex digits.
#[tokio::test]
async fn without_sign_ids_cookies_are_unchanged() {
    let mut c = config();
    c.keys = Some(keys(&[1]));
    let addr = serve_with(c, Counting::default()).await;
    let (_, value) = count(&Client::new(addr), None).await;
    let value = value.unwrap();
    assert_eq!(value.len(), 40);
    assert!(value.parse::<SessionId>().is_ok());
}

/// The id header goes through the same check as the cookie.
#[tokio::test]
async fn the_id_header_is_signed_too() {
    const HEADER: &str = "x-session-id";
    let mut c = signing(keys(&[1]));
    c.cookie = false;
    c.header = Some(HeaderName::from_static(HEADER));
    let store = Counting::default();
    let addr = serve_with(c, store.clone()).await;
    let http = reqwest::Client::new();
    let get = |id: Option<String>| {
        let mut req = http.get(format!("http://{addr}/count"));
        if let Some(id) = id {
            req = req.header(HEADER, id);
        }
        async move {
            let resp = req.send().await.unwrap();
            let sent = resp
                .headers()
                .get(HEADER)
                .map(|v| v.to_str().unwrap().to_string());
            (resp.text().await.unwrap(), sent)
        }
    };
    let (body, value) = get(None).await;
    assert_eq!(body, "false 1");
    let value = value.unwrap();
    assert_eq!(value.len(), 84, "{value}");
    assert_eq!(get(Some(value.clone())).await.0, "false 2");
    let before = store.lookups();
    assert_eq!(get(Some(value[..40].to_string())).await.0, "true 1");
    assert_eq!(store.lookups(), before);
}
