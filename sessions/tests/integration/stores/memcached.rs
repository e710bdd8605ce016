//! The memcached store on a real memcached (CI runs one on 127.0.0.1:11211;
//! the restart test starts its own): the conformance suite but for what
//! memcached cannot do (list its keys, which is said plainly), two stores
//! excluding each other, nothing in memcached that opens a session, the
//! 30-day rule, the 2038 limit (refused, never lost), and a server killed
//! and restarted under traffic.

#![cfg(feature = "memcached")]

use sessions_test_support as common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{free_port, Client};
use common::records::{key, record};
use common::stores::{memcached, memcached_keys, memcached_value};
use common::temp::unique_prefix;
use futures_util::StreamExt;
use server_sessions::store::Record;
use server_sessions::store::{
    Error, MemcachedStore, OpenError, SaveIf, SessionAdmin, SessionStore,
};

// Every check but `count_and_keys`: memcached cannot list its keys (see
// `listing_is_refused_plainly`).
server_sessions::store_conformance!(@tests async {
    sessions_test_support::stores::Fixture::new(sessions_test_support::stores::Kind::Memcached).await
};
    round_trip expiry refresh delete no_resurrection lock_exclusion
    lock_timeout combined_calls clean_up_keeps_held_locks no_lost_updates own_timeout
    user_index user_index_expiry ending_a_users_sessions replacement);

#[tokio::test]
async fn listing_is_refused_plainly() {
    let Some(store) = memcached(&unique_prefix()).await else {
        return;
    };
    let err = store.count().await.unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    assert!(
        err.to_string().contains("memcached cannot list its keys"),
        "{err}"
    );
    let listed: Vec<_> = store.keys().collect().await;
    assert!(matches!(listed.as_slice(), [Err(Error::Unsupported(_))]));
    assert_eq!(store.clean_up().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_exclude_each_other() {
    let prefix = unique_prefix();
    let (Some(a), Some(b)) = (memcached(&prefix).await, memcached(&prefix).await) else {
        return;
    };
    let key = key();
    assert!(a
        .save(&key, &record("{}", 60_000), SaveIf::Absent)
        .await
        .unwrap());
    let held = a.lock(&key, Duration::from_secs(5)).await.unwrap();
    let started = Instant::now();
    let err = b.lock(&key, Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, Error::LockTimeout(_)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(held);
    // Released by the holder (a task): the other store gets it.
    let got = b.lock(&key, Duration::from_secs(5)).await;
    assert!(got.is_ok(), "{got:?}");
}

/// What memcached holds names sessions by store key only: the id is in no
/// key and no value, a user name in no key (the record keeps its user).
#[tokio::test]
async fn memcached_holds_no_id() {
    let prefix = unique_prefix();
    let Some(store) = memcached(&prefix).await else {
        return;
    };
    let id = server_sessions::SessionId::generate().unwrap();
    let record = Record {
        user: Some("alice@example.com".parse().unwrap()),
        ..record(r#"{"n":1}"#, 60_000)
    };
    let key = id.store_key();
    assert!(store.save(&key, &record, SaveIf::Absent).await.unwrap());
    let keys = memcached_keys(&prefix).await;
    assert_eq!(keys.len(), 2, "the record and the user index: {keys:?}");
    assert!(keys.iter().any(|k| k.ends_with(&*key.as_hex())));
    for k in &keys {
        assert!(!k.contains(&id.to_string()) && !k.contains("alice"), "{k}");
        let value = memcached_value(k).await.unwrap();
        let text = String::from_utf8_lossy(&value);
        assert!(!text.contains(&id.to_string()), "{k}: {text}");
    }
}

/// A session longer than 30 days is sent as a Unix time, as memcached
/// reads such expiries: it is kept, not expired at once.
#[tokio::test]
async fn sessions_longer_than_thirty_days_are_kept() {
    let Some(store) = memcached(&unique_prefix()).await else {
        return;
    };
    let key = key();
    let r = record("{}", 400 * 24 * 3_600_000);
    assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(store.load(&key).await.unwrap(), Some(r));
}

/// memcached's last expiry: a Unix time is a signed 32-bit number there
/// (2038-01-19 03:14:07 UTC, the store sending a second more than asked).
const LAST: u64 = (i32::MAX as u64 - 1) * 1000;

/// An expiry memcached cannot hold — a 400-day "remember me" saved from
/// December 2036 on, which memcached would answer as stored and drop at
/// once — is refused with an error saying so, by a save, a save under the
/// lock and a refresh alike, and nothing is written; an expiry at the last
/// second memcached can name is kept, its user index with it.
#[tokio::test]
async fn an_expiry_past_2038_is_refused_never_lost() {
    let prefix = unique_prefix();
    let Some(store) = memcached(&prefix).await else {
        return;
    };
    let user: server_sessions::UserId = "alice".parse().unwrap();
    let at = |expires| Record {
        expires,
        user: Some(user.clone()),
        ..record("{}", 0)
    };
    let too_late = |r: Result<bool, Error>| {
        assert!(
            matches!(r, Err(Error::ExpiresTooLate { latest: LAST, .. })),
            "{r:?}"
        )
    };
    let key = key();
    for expires in [LAST + 1, LAST + 400 * 86_400_000] {
        too_late(store.save(&key, &at(expires), SaveIf::Absent).await);
    }
    let guard = store.lock(&key, Duration::from_secs(5)).await.unwrap();
    too_late(guard.save_and_release(&at(LAST + 1), SaveIf::Absent).await);
    assert_eq!(store.load(&key).await.unwrap(), None);
    let kept: Vec<String> = memcached_keys(&prefix)
        .await
        .into_iter()
        .filter(|k| !k.ends_with(":lock"))
        .collect();
    assert_eq!(kept, Vec::<String>::new(), "nothing written");

    let r = at(LAST);
    assert!(store.save(&key, &r, SaveIf::Absent).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap(), Some(r.clone()));
    too_late(store.touch(&key, LAST + 1).await);
    assert_eq!(store.load(&key).await.unwrap(), Some(r));
    let listed = store.sessions_of(&user).await.unwrap();
    assert_eq!(listed.len(), 1);
}

/// A `timeout` whose sessions memcached cannot keep: a config with one
/// fails to open, naming the key (the one that decides when the other is
/// shorter), before any request; given in code, where no config check
/// sees it, every save answers 500 instead of a 200 whose session is gone
/// by the next request. The default hour keeps its session across
/// requests.
#[tokio::test]
async fn a_timeout_memcached_cannot_keep_is_refused() {
    let Some(store) = memcached(&unique_prefix()).await else {
        return;
    };
    let open = |lines: &str| {
        let text = format!(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'memcached'\n\
             tools.sessions.servers = ['{}']\n{lines}",
            common::stores::memcached_addr()
        );
        async move {
            let config = server_sessions::Config::from_ini_str(&text, "m.conf").unwrap();
            server_sessions::store::open(&config).await.map(drop)
        }
    };
    // 10,000,000 minutes: 19 years.
    for (lines, key) in [
        ("tools.sessions.timeout = 10000000\n", "timeout"),
        (
            "tools.sessions.timeout = 20000000\ntools.sessions.absolute_timeout = 10000000\n",
            "absolute_timeout",
        ),
    ] {
        let err = open(lines).await.unwrap_err();
        assert!(
            matches!(&err, OpenError::Store(Error::Config { setting, .. }) if *setting == key),
            "{lines}: {err:?}"
        );
        let text = common::stores::chain(&err);
        assert!(
            text.contains("[/]") && text.contains("2038-01-19"),
            "{text}"
        );
    }
    for fine in [
        "tools.sessions.timeout = 576000\n",
        "tools.sessions.timeout = 10000000\ntools.sessions.absolute_timeout = 60\n",
    ] {
        let opened = open(fine).await;
        assert!(opened.is_ok(), "{fine}: {opened:?}");
    }

    let mut config = common::app::config();
    config.timeout = Duration::from_secs(600_000_000);
    let mut c = Client::new(common::app::serve_app(config, store.clone()).await);
    let r = c.get("/count").await;
    assert_eq!(r.status, 500, "{r:?}");
    let mut c = Client::new(common::app::serve_app(common::app::config(), store).await);
    for n in 1..=3 {
        let r = c.get("/count").await;
        assert_eq!((r.status, r.body), (200, format!("false {n}")));
    }
}

/// A memcached of this test's own.
struct OwnMemcached {
    child: Option<Child>,
}

impl OwnMemcached {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("memcached")
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-m",
                "16",
            ])
            .args(if is_root() {
                &["-u", "nobody"][..]
            } else {
                &[]
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => return common::ci::skip(format!("memcached cannot be started: {e}")),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "memcached did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(OwnMemcached { child: Some(child) })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnMemcached {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is_root() -> bool {
    std::env::var("USER").as_deref() == Ok("root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// memcached killed and restarted under traffic: requests in the outage
/// answer 503, never 500; after it every visitor gets a working session
/// again by itself — a fresh one, since memcached lost them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_memcached_answers_as_no_session() {
    let port = free_port();
    let Some(mut server) = OwnMemcached::start(port) else {
        return;
    };
    let store = MemcachedStore::connect(&[format!("127.0.0.1:{port}")])
        .await
        .unwrap();
    let addr = common::app::serve_app(common::app::config(), store).await;
    let mut visitors: Vec<common::client::Client> =
        (0..4).map(|_| common::client::Client::new(addr)).collect();
    for v in &mut visitors {
        for n in 1..=3 {
            assert_eq!(v.get("/count").await.body, format!("false {n}"));
        }
    }
    server.kill();
    for v in &mut visitors {
        let r = v.get("/count").await;
        assert_eq!(r.status, 503, "{r:?}");
    }
    let mut server = OwnMemcached::start(port).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for v in &mut visitors {
        // Recovery by itself: the first answers may still be 503 while
        // pooled connections to the dead server are dropped.
        let r = loop {
            let r = v.get("/count").await;
            if r.status == 200 || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The id it sent is unknown to the new server: a fresh session.
        assert_eq!((r.status, r.body.as_str()), (200, "true 1"), "{r:?}");
        assert_eq!(v.get("/count").await.body, "false 2");
    }
    server.kill();
}

/// Several servers: sessions spread over all of them, and another store
/// listing the same servers in another order finds every one (each
/// instance picks the same server for a session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_servers_and_every_instance_finds_them() {
    let ports = [free_port(), free_port()];
    let (Some(_a), Some(_b)) = (OwnMemcached::start(ports[0]), OwnMemcached::start(ports[1]))
    else {
        return;
    };
    let servers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let one = MemcachedStore::connect(&servers).await.unwrap();
    let reversed: Vec<&String> = servers.iter().rev().collect();
    let other = MemcachedStore::connect(&reversed).await.unwrap();
    let keys: Vec<_> = (0..200).map(|_| key()).collect();
    for k in &keys {
        assert!(one
            .save(k, &record(r#"{"n":1}"#, 60_000), SaveIf::Absent)
            .await
            .unwrap());
    }
    for k in &keys {
        assert!(other.load(k).await.unwrap().is_some(), "{k:?} not found");
    }
    // Each server holds a fair share.
    for port in ports {
        let alone = MemcachedStore::connect(&[format!("127.0.0.1:{port}")])
            .await
            .unwrap();
        let mut held = 0;
        for k in &keys {
            held += usize::from(alone.load(k).await.unwrap().is_some());
        }
        assert!(
            (60..=140).contains(&held),
            "port {port} holds {held} of 200"
        );
    }
}
