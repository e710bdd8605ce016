//! Hostile input, end to end over real sockets: ids of every shape a
//! client can send, bytes an HTTP client refuses to send (over a raw
//! socket), duplicate cookies and cookies that try to add attributes. Each
//! gets a fresh session under an id of the server's, never an echo, and
//! the store never sees an id the server did not draw — on every store.

use sessions_test_support as common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::app::{checked_cookie, config, cookie, serve_app, start_session};
use common::client::Client;
use common::stores::Fixture;
use common::temp::TempDir;
use common::watched::Watched;
use server_sessions::store::{MemoryStore, SaveIf};
use server_sessions::{
    store::{now_millis, Millis, Record},
    SessionConfig, SessionId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

stores!(
    hostile_ids_and_cookies_get_a_fresh_session,
    raw_control_bytes_never_reach_a_store,
    cookie_injection_is_never_echoed,
    records_out_of_range_get_a_fresh_session,
);

/// Sends raw bytes as one HTTP/1.1 exchange and returns the status and the
/// `Set-Cookie` headers (the status is 0 if the server closed without one).
async fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, Vec<String>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything (431, 400).
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let cookies = head
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().to_owned())
        })
        .collect();
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_owned();
    (status, cookies, body)
}

fn raw_get(path: &str, cookie_lines: &[&[u8]]) -> Vec<u8> {
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n").into_bytes();
    for c in cookie_lines {
        req.extend_from_slice(b"Cookie: ");
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req
}

/// Ids of every hostile shape a client can send through an ordinary HTTP
/// client: each gets a fresh session under a new id — never its own, never
/// echoed — no 5xx, and the store never sees anything but ids the server
/// drew. A canary directory shows that nothing is written next to the
/// store on a path-shaped id.
async fn hostile_ids_and_cookies_get_a_fresh_session(f: &Fixture) {
    let watched = Watched::new(f.store.clone());
    let config = config();
    let addr = serve_app(config.clone(), watched.clone()).await;
    let client = Client::new(addr);
    let live = start_session(addr).await;
    let canary = TempDir::new("canary");
    let canary_path = canary.path().display().to_string();
    let percent: String = live.bytes().map(|b| format!("%{b:02X}")).collect();
    let hostile: Vec<String> = vec![
        "../../../../../../etc/passwd".into(),
        format!("../../../../../../..{canary_path}/owned"),
        format!("{canary_path}/owned"),
        "..%2F..%2F..%2Fetc%2Fpasswd".into(),
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd".into(),
        // The live id percent-encoded: not the id, and never decoded to it.
        percent,
        format!("{}%00", &live[..37]),
        format!("{live}%00"),
        format!("{live}%0d%0aSet-Cookie:%20evil=1"),
        live.to_uppercase(),
        format!("{live}0"),
        live[..39].to_owned(),
        format!(" {}", &live[1..]),
        format!("\"{live}"),
        "session:{*}".into(),
        "*".into(),
        "' OR '1'='1".into(),
        "1; DROP TABLE sessions; --".into(),
        "$(touch /tmp/owned)".into(),
        "KEYS *\r\n".replace("\r\n", ""),
        "é".repeat(20),
        "\u{0430}".repeat(40), // Cyrillic a: looks like hex, is not
        "ａ".repeat(40),       // fullwidth
        "a".repeat(10_240),
        format!("{live}{}", "0".repeat(10_200)),
    ];
    let mut issued = BTreeSet::from([live.clone()]);
    for bad in &hostile {
        let sent = format!("session_id={bad}");
        for path in ["/missing", "/count"] {
            let r = client.get_with(path, Some(&sent)).await;
            assert_eq!(r.status, 200, "{path} {bad:?}: {r:?}");
            let expected = if path == "/missing" {
                "true false"
            } else {
                "true 1"
            };
            assert_eq!(r.body, expected, "{path} {bad:?}");
            let set_cookie = r.set_cookie.as_deref().expect("a fresh session's cookie");
            let id = checked_cookie(set_cookie, &config);
            assert_ne!(id, live, "{bad:?} opened the live session");
            assert!(!sent.contains(&id), "{bad:?}: an id the client chose");
            issued.insert(id);
        }
        // A route that never touches the session: no store call, no cookie.
        let r = client.get_with("/plain", Some(&sent)).await;
        assert_eq!((r.status, r.set_cookie), (200, None), "{bad:?}");
    }
    // Duplicates: several session cookies, in one header or in several.
    // The first well-formed id wins (the most specific path comes first
    // from browsers); garbage around it changes nothing.
    let other = start_session(addr).await;
    issued.insert(other.clone());
    for (headers, winner) in [
        (
            vec![format!("session_id=garbage; session_id={live}")],
            &live,
        ),
        (
            vec![format!("session_id={live}; session_id={other}")],
            &live,
        ),
        (
            vec![format!("session_id={other}; session_id={live}")],
            &other,
        ),
        (
            vec![
                "session_id=../../x".to_owned(),
                format!("session_id={live}"),
            ],
            &live,
        ),
        (vec![format!("session_id={live}"), cookie(&other)], &live),
        (
            vec![format!("a=1; session_id=; session_id={live}; session_id=")],
            &live,
        ),
    ] {
        let lines: Vec<&[u8]> = headers.iter().map(|h| h.as_bytes()).collect();
        let (status, cookies, body) = raw_request(addr, &raw_get("/missing", &lines)).await;
        assert_eq!((status, body.as_str()), (200, "false true"), "{headers:?}");
        assert_eq!(cookies.len(), 1, "{headers:?}");
        assert_eq!(&checked_cookie(&cookies[0], &config), winner, "{headers:?}");
    }
    // Both sessions are as they were: a duplicate never merged them.
    assert_eq!(f.data(&live).await.unwrap()["n"], 1);
    assert_eq!(f.data(&other).await.unwrap()["n"], 1);
    // The store saw only the keys of ids the server drew.
    let seen = watched.all_keys();
    let issued = keys(&issued);
    assert!(seen.is_subset(&issued), "{:?}", seen.difference(&issued));
    // Nothing was loaded, locked or written under an id a client chose
    // except the two live sessions.
    let allowed = keys(&BTreeSet::from([live.clone(), other.clone()]));
    for op in ["load", "lock", "save", "touch", "delete"] {
        assert!(
            watched.keys_of(op).is_subset(&allowed),
            "{op} on a hostile client's id"
        );
    }
    assert_eq!(std::fs::read_dir(canary.path()).unwrap().count(), 0);
    if let Some(dir) = f.dir.as_ref().map(TempDir::path) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(
            names.iter().all(|n| [
                "sessions.db",
                "sessions.db-wal",
                "sessions.db-shm",
                "sessions"
            ]
            .contains(&n.as_str())),
            "{names:?}"
        );
        // The file store's directory holds only files named by ids the
        // server issued.
        if let Ok(entries) = std::fs::read_dir(dir.join("sessions")) {
            for entry in entries {
                let name = entry.unwrap().file_name().into_string().unwrap();
                let id = name
                    .strip_prefix("session-")
                    .map(|rest| rest.trim_end_matches(".lock"))
                    .unwrap_or_else(|| panic!("unexpected file {name:?}"));
                assert!(
                    *id == *live || *id == *other || issued.contains(id),
                    "a file for an id the server did not issue: {name:?}"
                );
            }
        }
    }
}

/// Bytes an HTTP client refuses to send — NUL, bare CR and LF, raw
/// non-ASCII, an oversized header — over a raw socket: answered without a
/// 5xx (hyper refuses some with 400 or 431 before any session code runs),
/// never with an id from the request, and the server keeps serving.
async fn raw_control_bytes_never_reach_a_store(f: &Fixture) {
    let watched = Watched::new(f.store.clone());
    let config = config();
    let addr = serve_app(config.clone(), watched.clone()).await;
    let live = start_session(addr).await;
    let l = live.as_bytes();
    let cases: Vec<Vec<u8>> = vec![
        [b"session_id=", &l[..20], b"\0", &l[21..]].concat(),
        [b"session_id=", l, b"\0"].concat(),
        [b"session_id=", l, b"\r; Domain=evil.example"].concat(),
        [b"session_id=", l, b"\nSet-Cookie: evil=1"].concat(),
        [b"session_id=", &l[..39], b"\r"].concat(),
        [b"session_id=", l, b"\r\nX-Injected: evil"].concat(),
        [b"session_id=", &l[..38], b"\xc3\xa9"].concat(),
        [b"session_id=\xff\xfe", &l[2..]].concat(),
        [b"session_id=", l, b"\x7f"].concat(),
        [b"session_\0id=", l].concat(),
        [b"session_id=", l, b"\t; x=\x01\x02\x1b[31m"].concat(),
        [b"session_id=".as_slice(), &vec![b'a'; 200 * 1024]].concat(),
    ];
    let mut issued = BTreeSet::from([live.clone()]);
    for case in &cases {
        for path in ["/count", "/plain"] {
            let (status, cookies, body) = raw_request(addr, &raw_get(path, &[case])).await;
            let shown = String::from_utf8_lossy(&case[..case.len().min(80)]).into_owned();
            assert!(
                status == 200 || status == 400 || status == 431,
                "{path} {shown:?}: {status} {body}"
            );
            assert!(cookies.len() <= 1, "{shown:?}: {cookies:?}");
            for c in &cookies {
                assert!(!c.contains("evil"), "{c}");
                issued.insert(checked_cookie(c, &config));
            }
            if status == 200 && path == "/count" {
                // A well-formed id followed by noise after a separator is
                // still that id (the tolerant parser); anything else is a
                // fresh session.
                let id = checked_cookie(&cookies[0], &config);
                if id == live {
                    assert!(body.starts_with("false "), "{shown:?}: {body}");
                } else {
                    assert_eq!(body, "true 1", "{shown:?}");
                }
            }
            if path == "/plain" {
                assert!(cookies.is_empty(), "{shown:?}");
            }
        }
    }
    let seen = watched.all_keys();
    let issued = keys(&issued);
    assert!(seen.is_subset(&issued), "{:?}", seen.difference(&issued));
    // Still serving, the live session intact.
    let r = Client::new(addr)
        .get_with("/count", Some(&cookie(&live)))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("false "), "{r:?}");
}

/// A cookie value that tries to add attributes (`; Domain=evil`), as a
/// quoted string, in the name, or through an encoded line break: the
/// response's Set-Cookie is always exactly the server's own.
async fn cookie_injection_is_never_echoed(f: &Fixture) {
    let mut config = config();
    config.domain = Some("app.example".into());
    config.secure = true;
    let addr = serve_app(config.clone(), f.store.clone()).await;
    let client = Client::new(addr);
    let live = start_session(addr).await;
    for sent in [
        format!("session_id={live}; Domain=evil.example; Path=/admin; Max-Age=99999999"),
        format!("session_id=\"{live}; Domain=evil.example\""),
        "session_id=\"; Domain=evil.example; Path=/".to_owned(),
        "session_id=x; Domain=evil.example; session_id=y".to_owned(),
        format!("session_id; Domain=evil.example={live}"),
        format!("Domain=evil.example; session_id={live}"),
        format!("session_id={live}%3B%20Domain%3Devil.example"),
        format!("session_id={live},Domain=evil.example"),
        "session_id=a\tDomain=evil.example".to_owned(),
    ] {
        for path in ["/count", "/logout", "/regen"] {
            let r = client.get_with(path, Some(&sent)).await;
            assert!(r.status < 500, "{sent}: {r:?}");
            let sc = r.set_cookie.clone().unwrap_or_default();
            assert!(
                !sc.contains("evil") && !sc.contains("admin"),
                "{sent} → {sc}"
            );
            if path == "/logout" {
                assert!(
                    sc.contains("Max-Age=0; Path=/; Domain=app.example;"),
                    "{sc}"
                );
            } else {
                let id = checked_cookie(&sc, &config);
                assert!(!sent.contains(&id) || id == live, "{sent} → {sc}");
            }
        }
    }
    // `path_header` takes the cookie's Path from a request header (set by
    // a proxy); a value that would add attributes falls back to `path`.
    let mut config = self::config();
    config.path_header = Some(http::HeaderName::from_static("x-script-name"));
    let addr = serve_app(config.clone(), f.store.clone()).await;
    let http = reqwest::Client::new();
    for (value, path) in [
        ("/app", "/app"),
        ("/app; Domain=evil.example", "/"),
        ("/app,Domain=evil.example", "/"),
        ("/app\tDomain=evil.example", "/"),
        ("app", "/"),
        ("/app/\u{e9}", "/"),
    ] {
        let r = http
            .get(format!("http://{addr}/count"))
            .header("x-script-name", value.as_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let sc = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(!sc.contains("evil"), "{value:?} → {sc}");
        let mut expected = config.clone();
        expected.path = path.into();
        checked_cookie(&sc, &expected);
    }
}

/// Records no save writes — a time past the year 9999, well formed and
/// checksummed, as if written into the store by hand — are damaged: the
/// request gets a fresh session, a 200 and its cookie, and the store's
/// warning says why. (A timeout of 9,500 years used to be saved, and the
/// cookie's `Expires` past the year 9999 then panicked: the connection
/// closed with no answer.)
async fn records_out_of_range_get_a_fresh_session(f: &Fixture) {
    let config = config();
    let addr = serve_app(config.clone(), f.store.clone()).await;
    let now = now_millis();
    // 10000-01-01T00:00:00Z, one millisecond past the latest there is.
    let year_10000: Millis = 253_402_300_800_000;
    let years_9500: Millis = 9_500 * 365 * 24 * 3_600_000;
    let sound = Record {
        data: br#"{"n":41}"#.to_vec(),
        created: now,
        expires: now + 3_600_000,
        timeout: None,
        user: None,
    };
    for (field, record) in [
        (
            "timeout",
            Record {
                timeout: Some(years_9500),
                ..sound.clone()
            },
        ),
        (
            "created",
            Record {
                created: year_10000,
                ..sound.clone()
            },
        ),
        (
            "expires",
            Record {
                expires: year_10000,
                ..sound.clone()
            },
        ),
    ] {
        let id = SessionId::generate().unwrap().to_string();
        let key = common::records::key_of(&id);
        let saved = f.store.save(&key, &record, SaveIf::Absent).await;
        if matches!(f.kind, common::stores::Kind::Memcached) && field == "expires" {
            // memcached cannot be given such an expiry at all: refused.
            assert!(saved.is_err(), "{saved:?}");
            continue;
        }
        assert!(saved.unwrap());
        let sent = cookie(&id);
        let (status, cookies, body) =
            raw_request(addr, &raw_get("/count", &[sent.as_bytes()])).await;
        assert_eq!((status, body.as_str()), (200, "true 1"), "{field}");
        assert_eq!(cookies.len(), 1, "{field}: {cookies:?}");
        assert_ne!(checked_cookie(&cookies[0], &config), id, "{field}");
        assert!(!f.holds(&id).await, "{field}: still a live session");
        let (short, why) = (
            key.short().to_string(),
            format!("record {field} out of range"),
        );
        let log = common::logs::text();
        let warned = log.lines().any(|l| l.contains(&short) && l.contains(&why));
        assert!(warned, "{field}: no warning for {short}");
    }
    // The server still serves.
    start_session(addr).await;
}

#[tokio::test]
async fn hostile_ids_get_a_fresh_session_never_echoed() {
    let addr = serve_app(SessionConfig::default(), MemoryStore::new()).await;
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
        assert_eq!(r.body, "true false", "{bad}");
        let sc = r.set_cookie.clone().unwrap();
        assert!(!sc.contains("evil") && !sc.contains("malicious"), "{sc}");
        assert_eq!(r.cookie_value().unwrap().len(), 40);
    }
    // An unknown but well-formed id is replaced too (session fixation).
    let forged = SessionId::generate().unwrap().to_string();
    let r = client
        .get_with("/missing", Some(&format!("session_id={forged}")))
        .await;
    assert_eq!(r.body, "true true", "{forged}");
    assert_ne!(r.cookie_value().unwrap(), forged);
    // No cookie at all: a new session that is not "missing".
    assert_eq!(client.get_with("/missing", None).await.body, "false false");
}

/// The store keys of session ids, as text.
fn keys(ids: &BTreeSet<String>) -> BTreeSet<String> {
    ids.iter()
        .map(|id| common::records::key_of(id).to_string())
        .collect()
}
