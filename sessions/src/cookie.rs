//! The session cookie: reading it from `Cookie` headers, writing
//! `Set-Cookie`. Hand-written because the hot path needs one value out of
//! the header without building a jar, and the writer needs exactly the
//! attributes of docs/spec.md §4.6 in a fixed order.
//!
//! It reads the settings from [`SessionConfig`], which has already checked
//! that they are cookie-safe; the config knows nothing of this module.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderValue, COOKIE};

// The rule lives with the config checks that need it at load time; the
// middleware applies it to a path taken from a request header.
pub(crate) use crate::config::is_cookie_path;
use crate::config::{SameSite, SessionConfig};
use crate::id::SessionId;
use crate::keys::{read_id, IdText, Keys};
use crate::record::{millis, now_millis, Millis, Record};
use crate::request::ClientId;

/// Finds the session id among all `Cookie` headers.
///
/// Tolerant, as browsers and old clients are: attribute noise echoed back
/// (`expires=…; Path=/`), empty or garbled parts and quotes are skipped.
/// When the name appears more than once, the first well-formed id wins (the
/// most specific path comes first in what browsers send). With `signer`,
/// only an id one of its keys signed is an id.
pub(crate) fn client_id(headers: &HeaderMap, name: &str, signer: Option<&Keys>) -> ClientId {
    let mut found = ClientId::NotSent;
    for value in values(headers, name) {
        match read_id(value, signer) {
            Some(id) => return ClientId::Valid(id),
            None => found = ClientId::Malformed,
        }
    }
    found
}

/// The values of every cookie called `name`, in the order sent, unquoted
/// (the sealed cookie store reads its cookie with this too).
pub(crate) fn values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    headers.get_all(COOKIE).into_iter().flat_map(move |header| {
        header
            .as_bytes()
            .split(|&b| b == b';')
            .filter_map(move |part| {
                let eq = part.iter().position(|&b| b == b'=')?;
                if trim(&part[..eq]) != name.as_bytes() {
                    return None;
                }
                let mut value = trim(&part[eq + 1..]);
                if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
                    value = &value[1..value.len() - 1];
                }
                Some(value)
            })
    })
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// The `Set-Cookie` value carrying `id`, valid for `max_age` (rounded to
/// whole seconds, as RFC 6265 wants an integer), or a browser-session
/// cookie when the config is not persistent.
pub(crate) fn set_cookie(
    config: &SessionConfig,
    path: &str,
    id: &SessionId,
    max_age: Duration,
) -> HeaderValue {
    set_cookie_value(config, path, &IdText::of(id, config.signer()), max_age)
}

/// [`set_cookie`] with the value given: the id's text, or (the sealed
/// cookie store) the sealed session, which is URL-safe base64.
pub(crate) fn set_cookie_value(
    config: &SessionConfig,
    path: &str,
    value: &str,
    max_age: Duration,
) -> HeaderValue {
    to_header(|s| {
        s.push_str(&config.name);
        s.push('=');
        s.push_str(value);
        if config.persistent {
            let secs = millis(max_age).saturating_add(500) / 1000;
            let expires = now_millis().saturating_add(secs.saturating_mul(1000));
            s.push_str("; Expires=");
            http_date(expires, s);
            let _ = write!(s, "; Max-Age={secs}");
        }
        attributes(s, config, path);
    })
}

/// Appends `at` as an HTTP date (`Tue, 01 Dec 2026 20:00:00 GMT`); a
/// time past the last one an HTTP date can name (`httpdate` panics on the
/// year 10000) is that last one, [`Record::MAX_TIME`]. The expiry never
/// goes past it, but the rounding of `Max-Age` can, by under a second. The
/// text of the last second asked for is kept per thread: a busy server
/// formats each second's dates once, as hyper does its `Date` header.
fn http_date(at: Millis, out: &mut String) {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let secs = at.min(Record::MAX_TIME) / 1000;
    LAST.with_borrow_mut(|(second, text)| {
        if *second != secs || text.is_empty() {
            text.clear();
            let date = httpdate::HttpDate::from(UNIX_EPOCH + Duration::from_secs(secs));
            let _ = write!(text, "{date}");
            *second = secs;
        }
        out.push_str(text);
    });
}

/// A `Set-Cookie` value that makes the client drop the cookie now.
pub(crate) fn expire_cookie(config: &SessionConfig, path: &str) -> HeaderValue {
    to_header(|s| {
        s.push_str(&config.name);
        s.push_str("=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0");
        attributes(s, config, path);
    })
}

fn attributes(s: &mut String, config: &SessionConfig, path: &str) {
    s.push_str("; Path=");
    s.push_str(path);
    if let Some(domain) = &config.domain {
        s.push_str("; Domain=");
        s.push_str(domain);
    }
    if config.secure {
        s.push_str("; Secure");
    }
    if config.httponly {
        s.push_str("; HttpOnly");
    }
    match config.samesite {
        Some(SameSite::Strict) => s.push_str("; SameSite=Strict"),
        Some(SameSite::Lax) => s.push_str("; SameSite=Lax"),
        Some(SameSite::None) => s.push_str("; SameSite=None"),
        None => {}
    }
}

/// The header value `build` writes. It writes into a buffer kept per
/// thread, so that the value's own copy is a request's one allocation for
/// it.
fn to_header(build: impl FnOnce(&mut String)) -> HeaderValue {
    use std::cell::RefCell;
    thread_local! {
        static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
    }
    TEXT.with_borrow_mut(|s| {
        s.clear();
        build(s);
        // Name, path and domain were checked for header-safe characters
        // when the config was built (`SessionConfig::problem`, which config
        // files and the layer apply); the id is hex.
        // Should that ever fail, send nothing rather than a broken header.
        HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef01234567";

    /// The kept text is the second's, whichever second comes next.
    #[test]
    fn dates_are_formatted_once_per_second_and_right() {
        let t = 1_764_619_200_000;
        for at in [t, t + 999, t + 1_000, t] {
            let mut out = String::from("x=");
            http_date(at, &mut out);
            let date = httpdate::fmt_http_date(crate::record::system_time(at));
            assert_eq!(out, format!("x={date}"));
        }
    }

    /// A date past the year 9999 is the last second of it, never a panic;
    /// `Max-Age` stays what was asked.
    #[test]
    fn dates_past_the_year_9999_are_its_last_second() {
        for at in [Record::MAX_TIME, Record::MAX_TIME + 1, u64::MAX] {
            let mut out = String::new();
            http_date(at, &mut out);
            assert_eq!(out, "Fri, 31 Dec 9999 23:59:59 GMT");
        }
        let id: SessionId = ID.parse().unwrap();
        for max_age in [Duration::MAX, Duration::from_millis(Record::MAX_TIME)] {
            let v = set_cookie(&SessionConfig::default(), "/", &id, max_age);
            let v = v.to_str().unwrap();
            assert!(
                v.contains("; Expires=Fri, 31 Dec 9999 23:59:59 GMT; "),
                "{v}"
            );
            let secs = millis(max_age).saturating_add(500) / 1000;
            assert!(v.contains(&format!("; Max-Age={secs}; ")), "{v}");
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn finds_the_id_among_noise() {
        let id: SessionId = ID.parse().unwrap();
        for h in [
            format!("session_id={ID}"),
            format!("a=b; session_id={ID}; c=d"),
            format!("session_id={ID}; expires=Sat, 27 Oct 2017 04:18:28 GMT; Path=/;"),
            format!(";;  ; garbage ; =x; session_id = \"{ID}\" "),
            format!("session_id=maliciousid; session_id={ID}"),
        ] {
            assert_eq!(
                client_id(&headers(&[&h]), "session_id", None),
                ClientId::Valid(id),
                "{h}"
            );
        }
        assert_eq!(
            client_id(
                &headers(&["x=1", &format!("session_id={ID}")]),
                "session_id",
                None
            ),
            ClientId::Valid(id)
        );
    }

    #[test]
    fn malformed_and_absent() {
        assert_eq!(
            client_id(&headers(&[]), "session_id", None),
            ClientId::NotSent
        );
        assert_eq!(
            client_id(&headers(&["other=1"]), "session_id", None),
            ClientId::NotSent
        );
        for bad in [
            "session_id=maliciousid",
            "session_id=../../etc/passwd",
            "session_id=",
            &format!("session_id={}", ID.to_uppercase()),
            &format!("session_id={ID}0"),
            &format!("session_id={ID}; Domain=evil"),
        ] {
            let got = client_id(&headers(&[bad]), "session_id", None);
            // The last one has a good id followed by noise: that is fine.
            if bad.ends_with("Domain=evil") {
                assert!(matches!(got, ClientId::Valid(_)));
            } else {
                assert_eq!(got, ClientId::Malformed, "{bad}");
            }
        }
        // Non-UTF-8 bytes are not an error either.
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_bytes(b"session_id=\xff\xfe").unwrap(),
        );
        assert_eq!(client_id(&h, "session_id", None), ClientId::Malformed);
    }

    #[test]
    fn writes_all_attributes() {
        let c = SessionConfig {
            domain: Some("example.com".into()),
            secure: true,
            ..SessionConfig::default()
        };
        let id: SessionId = ID.parse().unwrap();
        let v = set_cookie(&c, "/", &id, Duration::from_millis(3_599_600));
        let v = v.to_str().unwrap();
        assert!(v.starts_with(&format!("session_id={ID}; Expires=")), "{v}");
        assert!(
            v.ends_with(
                "; Max-Age=3600; Path=/; Domain=example.com; Secure; HttpOnly; SameSite=Lax"
            ),
            "{v}"
        );
        assert!(v.contains(" GMT; "), "{v}");
    }

    #[test]
    fn browser_session_and_expiry() {
        let c = SessionConfig {
            persistent: false,
            samesite: None,
            httponly: false,
            ..SessionConfig::default()
        };
        let id: SessionId = ID.parse().unwrap();
        let v = set_cookie(&c, "/x", &id, Duration::from_secs(60));
        assert_eq!(v.to_str().unwrap(), format!("session_id={ID}; Path=/x"));
        let e = expire_cookie(&SessionConfig::default(), "/");
        assert_eq!(
            e.to_str().unwrap(),
            "session_id=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
        );
    }
}
