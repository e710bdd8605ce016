//! The properties the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the
//! property tests (`properties.rs`) check, in one place: a request through
//! the real `SessionLayer` on a fresh RAM store, and what every answer must
//! satisfy. Only the crate's public API is used.

mod keys;
pub use keys::*;

use std::convert::Infallible;
use std::time::Duration;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response};
use server_sessions::store::{MemoryStore, SaveIf, SessionStore};
use server_sessions::{
    store::{now_millis, Record},
    Config, Session, SessionConfig, SessionId, SessionLayer,
};
use tower::{Layer, ServiceExt};

/// A live session every fresh store holds.
pub const LIVE: &str = "0123456789abcdef0123456789abcdef01234567";

/// What the handler does with its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Never touches it: no store call, no cookie.
    Nothing,
    /// Reads a key.
    Read,
    /// Writes a key.
    Write,
}

impl Use {
    pub fn from_byte(b: u8) -> Self {
        match b % 3 {
            0 => Use::Nothing,
            1 => Use::Read,
            _ => Use::Write,
        }
    }
}

/// One runtime per thread for the whole run: building one per input would
/// dominate the time.
fn with_runtime<T>(f: impl FnOnce(&tokio::runtime::Runtime) -> T) -> T {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
    }
    RT.with(f)
}

/// What a request answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub set_cookies: Vec<Vec<u8>>,
    /// The handler's view: `missing`, and the keys it found.
    pub body: String,
}

/// Sends one GET with `cookie` (if it is a valid header value) through a
/// `SessionLayer` over a fresh RAM store that holds [`LIVE`] with `live_data`
/// as its data, created at `created`.
pub fn request(
    config: Config,
    cookie: Option<&[u8]>,
    use_: Use,
    live_data: &[u8],
    created: u64,
) -> Option<Answer> {
    let record = Record {
        data: live_data.to_vec(),
        created,
        expires: now_millis() + 3_600_000,
        timeout: None,
        user: None,
    };
    request_with(config, cookie, use_, &record)
}

/// [`request`] over a RAM store that holds `record` under [`LIVE`], as it
/// is: the RAM store keeps what it is given, checks nothing.
pub fn request_with(
    config: Config,
    cookie: Option<&[u8]>,
    use_: Use,
    record: &Record,
) -> Option<Answer> {
    let mut req = Request::new(());
    *req.uri_mut() = "/".parse().unwrap();
    if let Some(c) = cookie {
        req.headers_mut()
            .insert(COOKIE, HeaderValue::from_bytes(c).ok()?);
    }
    let store = MemoryStore::new();
    let live: SessionId = LIVE.parse().unwrap();
    with_runtime(|rt| {
        rt.block_on(async move {
            // An expired record is saved too, and then not found.
            store
                .save(&live.store_key(), record, SaveIf::Absent)
                .await
                .expect("the RAM store saves any record");
            let layer = SessionLayer::new(store).with_file_config(config);
            let service = layer.layer(tower::service_fn(move |req: Request<()>| async move {
                let Some(session) = req.extensions().get::<Session>().cloned() else {
                    // Sessions are off for this path.
                    return Ok::<_, Infallible>(Response::new(String::from("off")));
                };
                let body = match use_ {
                    Use::Nothing => String::new(),
                    Use::Read => match session.keys().await {
                        Ok(keys) => {
                            format!("{} {}", session.missing().await.unwrap(), keys.join(","))
                        }
                        Err(e) => format!("error {e}"),
                    },
                    Use::Write => match session.insert("k", "v").await {
                        Ok(()) => format!(
                            "{} {}",
                            session.missing().await.unwrap(),
                            session.keys().await.unwrap().join(",")
                        ),
                        Err(e) => format!("error {e}"),
                    },
                };
                Ok(Response::new(body))
            }));
            let response = tokio::time::timeout(Duration::from_secs(10), service.oneshot(req))
                .await
                .expect("a request on a RAM store finishes")
                .unwrap();
            // Let the runtime drop the layer's clean-up task, aborted with the
            // layer: a request that never yields would leave it queued forever.
            drop(layer);
            tokio::task::yield_now().await;
            Some(Answer {
                status: response.status().as_u16(),
                set_cookies: response
                    .headers()
                    .get_all(SET_COOKIE)
                    .iter()
                    .map(|v| v.as_bytes().to_vec())
                    .collect(),
                body: response.into_body(),
            })
        })
    })
}

/// The default settings for every path.
pub fn default_config() -> Config {
    Config::single(SessionConfig::default())
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Checks a `Set-Cookie` written under `config`: `name=<40 hex>` and then
/// only the configured attributes, nothing from the request, and a Max-Age
/// within the timeout. Returns the id. (The end-to-end tests check every
/// cookie they get with it too, through `app::checked_cookie` of this crate.)
pub fn check_set_cookie(cookie: &[u8], config: &SessionConfig) -> SessionId {
    let text = std::str::from_utf8(cookie).expect("Set-Cookie is ASCII");
    let (first, rest) = text.split_once(';').expect("Set-Cookie has attributes");
    let (name, value) = first.split_once('=').expect("name=value");
    assert_eq!(name, config.name, "{text}");
    let id: SessionId = value
        .parse()
        .unwrap_or_else(|_| panic!("not an id: {text}"));
    let rest = rest.strip_prefix(' ').expect("attributes follow \"; \"");
    let mut attrs = rest.split("; ");
    if config.persistent {
        let expires = attrs.next().unwrap();
        assert!(
            expires.starts_with("Expires=") && expires.ends_with(" GMT"),
            "{text}"
        );
        let max_age = attrs.next().unwrap();
        let secs = max_age.strip_prefix("Max-Age=").unwrap();
        assert!(secs.bytes().all(|b| b.is_ascii_digit()), "{text}");
        // Never a promise beyond the timeout (rounded to whole seconds).
        let secs: u128 = secs.parse().unwrap();
        assert!(
            secs <= u128::from(config.timeout.as_secs()) + 1,
            "Max-Age beyond the timeout: {text}"
        );
    }
    assert_eq!(
        attrs.next(),
        Some(&*format!("Path={}", config.path)),
        "{text}"
    );
    let mut expected: Vec<String> = Vec::new();
    if let Some(d) = &config.domain {
        expected.push(format!("Domain={d}"));
    }
    if config.secure {
        expected.push("Secure".into());
    }
    if config.httponly {
        expected.push("HttpOnly".into());
    }
    match config.samesite {
        Some(server_sessions::SameSite::Strict) => expected.push("SameSite=Strict".into()),
        Some(server_sessions::SameSite::Lax) => expected.push("SameSite=Lax".into()),
        Some(server_sessions::SameSite::None) => expected.push("SameSite=None".into()),
        None => {}
    }
    let got: Vec<String> = attrs.map(String::from).collect();
    assert_eq!(got, expected, "{text}");
    id
}

/// The cookie-header property: whatever the client sends, no 5xx, a cookie
/// only when the session was used, never an id the client chose unless it
/// is the live one, never any of the client's bytes echoed.
pub fn check_cookie_header(mode: u8, header: &[u8]) {
    let use_ = Use::from_byte(mode);
    let config = SessionConfig::default();
    let Some(answer) = request(
        default_config(),
        Some(header),
        use_,
        b"{\"a\":1}",
        now_millis(),
    ) else {
        return;
    };
    assert!(answer.status < 500, "{answer:?}");
    if use_ == Use::Nothing {
        assert!(answer.set_cookies.is_empty(), "{answer:?}");
        return;
    }
    assert_eq!(answer.set_cookies.len(), 1, "{answer:?}");
    let id = check_set_cookie(&answer.set_cookies[0], &config);
    let hex = id.to_string();
    if hex == LIVE {
        // The live session was found: the client sent its id.
        assert!(contains(header, LIVE.as_bytes()), "{answer:?}");
        assert!(answer.body.starts_with("false "), "{answer:?}");
    } else {
        // A fresh id, never one the client offered (session fixation).
        assert!(!contains(header, hex.as_bytes()), "{answer:?}");
        if !contains(header, b"session_id") {
            // No cookie of that name: a new visitor, not a missing session.
            assert!(answer.body.starts_with("false "), "{answer:?}");
        }
    }
}

/// The config property: parsing never panics; an error names the file and
/// a line inside the text; a config that loads resolves every path, and
/// its cookie carries exactly the configured attributes.
pub fn check_config(
    text: &str,
    parse: fn(&str, &str) -> Result<Config, server_sessions::config::Error>,
) {
    let config = match parse(text, "fuzz.conf") {
        Ok(config) => config,
        Err(e) => {
            let lines = text.matches('\n').count() + 1;
            match &e {
                server_sessions::config::Error::Syntax { file, line, .. }
                | server_sessions::config::Error::Key { file, line, .. } => {
                    assert_eq!(file, "fuzz.conf");
                    assert!((1..=lines).contains(line), "line {line} of {lines}: {e}");
                }
                other => panic!("unexpected error kind: {other:?}"),
            }
            assert!(e.to_string().starts_with("fuzz.conf:"), "{e}");
            return;
        }
    };
    for path in ["/", "/a", "/a/b", "//", "/x/../y", ""] {
        let _ = config.resolve(path);
    }
    assert!(config.sections().count() >= 1);
    let _ = config.storage();
    let root = config.resolve("/").clone();
    let Some(answer) = request(config, None, Use::Write, b"{}", now_millis()) else {
        return;
    };
    if !root.on {
        assert_eq!(answer.body, "off");
        assert!(answer.set_cookies.is_empty());
        return;
    }
    if answer.status == 500 {
        // The only way one write of `{"k":"v"}` fails: it is over max_size.
        assert!(root.max_size < br#"{"k":"v"}"#.len(), "{answer:?} {root:?}");
        assert!(answer.set_cookies.is_empty());
        return;
    }
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.set_cookies.len(), 1, "{answer:?}");
    check_set_cookie(&answer.set_cookies[0], &root);
}

/// The record property, for both stored forms: the framed bytes of
/// `Record::encode` (Redis, files) are decoded exactly or refused, and the
/// JSON data every store keeps (the SQL and RAM stores hold it as it is)
/// is loaded as the session's data or treated as missing — never a 5xx.
pub fn check_record(max: usize, bytes: &[u8]) {
    let data = match Record::decode(bytes, max) {
        Ok(record) => {
            assert!(record.data.len() <= max, "{record:?} over {max}");
            assert_eq!(
                record.encode(),
                bytes,
                "decode is not the inverse of encode"
            );
            record.data
        }
        Err(_) => bytes.to_vec(),
    };
    // As stored session data, loaded through the middleware.
    let live = format!("session_id={LIVE}");
    let answer = request(
        default_config(),
        Some(live.as_bytes()),
        Use::Read,
        &data,
        now_millis(),
    )
    .expect("a valid header");
    assert_eq!(answer.status, 200, "{answer:?}");
    let object = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&data);
    match object {
        Ok(map) => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            assert_eq!(answer.body, format!("false {}", keys.join(",")));
        }
        Err(_) => assert_eq!(
            answer.body, "true ",
            "unreadable data was not treated as missing"
        ),
    }
}

/// The stored-record property, for any times, timeout, user and data: a
/// record (the bytes if they decode, else a record made of them, below)
/// stored as it is goes through the request path — never a panic or a
/// 5xx. It loads as itself if it decodes (its times are in range), is not
/// expired and its data is a JSON object, and as a missing session
/// otherwise; the cookie's `Max-Age` is within the timeout the session got.
///
/// Bytes that are not a framed record (the fuzzer rarely finds a checksum)
/// are read as `created`, `expires` and `timeout` (8 bytes each,
/// little-endian; a timeout of 0 is none), a user's length (1 byte, 0:
/// none) and the user, then the data; that record is framed and decoded
/// as a store would.
pub fn check_stored_record(mode: u8, bytes: &[u8]) {
    let record = match Record::decode(bytes, usize::MAX) {
        Ok(record) => record,
        Err(_) => match record_of_fields(bytes) {
            Some(record) => record,
            None => return,
        },
    };
    check_stored(Use::from_byte(mode), &record);
}

/// [`check_stored_record`] for one record.
pub fn check_stored(use_: Use, record: &Record) {
    // Over `max_size`, a write is refused with a 500 by design.
    if record.data.len() > 4096 {
        return;
    }
    let decodes = Record::decode(&record.encode(), usize::MAX).is_ok();
    let now = now_millis();
    if record.expires.abs_diff(now) < 60_000 {
        // Whether it is live depends on when the request runs.
        return;
    }
    let object = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&record.data);
    let live = decodes && record.expires > now && object.is_ok();
    let cookie = format!("session_id={LIVE}");
    let answer = request_with(default_config(), Some(cookie.as_bytes()), use_, record)
        .expect("a valid header");
    assert_eq!(answer.status, 200, "{record:?}: {answer:?}");
    if use_ == Use::Nothing {
        assert!(answer.set_cookies.is_empty(), "{answer:?}");
        return;
    }
    let expected = if live { "false " } else { "true " };
    assert!(answer.body.starts_with(expected), "{record:?}: {answer:?}");
    assert_eq!(answer.set_cookies.len(), 1, "{record:?}: {answer:?}");
    let mut config = SessionConfig::default();
    if let (true, Some(own)) = (live, record.timeout) {
        config.timeout = Duration::from_millis(own);
    }
    let id = check_set_cookie(&answer.set_cookies[0], &config);
    assert_eq!(id.to_string() == LIVE, live, "{record:?}: {answer:?}");
}

/// The record [`check_stored_record`] reads from bytes that are not a
/// framed one; `None` if they are too short.
fn record_of_fields(bytes: &[u8]) -> Option<Record> {
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let (created, expires, timeout) = (u64_at(0)?, u64_at(8)?, u64_at(16)?);
    let user_len = usize::from(*bytes.get(24)?);
    let user = bytes.get(25..25 + user_len)?;
    Some(Record {
        data: bytes[25 + user_len..].to_vec(),
        created,
        expires,
        timeout: (timeout > 0).then_some(timeout),
        user: server_sessions::UserId::from_bytes(user).ok(),
    })
}

/// The id property: exactly 40 lowercase hex characters are an id and print
/// back as they were; nothing else is; the log forms never carry it.
pub fn check_session_id(data: &[u8]) {
    let shaped = data.len() == 40 && data.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match SessionId::from_bytes(data) {
        Ok(id) => {
            assert!(shaped, "accepted {data:?}");
            assert_eq!(id.to_string().as_bytes(), data);
            assert_eq!(id.as_hex().as_bytes(), data);
            let short = id.short().to_string();
            let debug = format!("{id:?}");
            assert!(short.chars().count() <= 9, "{short}");
            assert!(!debug.contains(&*id.as_hex()) && !debug.contains(&short[..8].repeat(5)));
        }
        Err(_) => assert!(!shaped, "refused {data:?}"),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            text.parse::<SessionId>().ok(),
            SessionId::from_bytes(data).ok()
        );
    }
}
