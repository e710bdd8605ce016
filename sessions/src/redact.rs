//! Secrets kept out of what is printed: the password in a storage URL.
//!
//! Every `Debug` impl, error message and log line that shows a storage URL
//! passes it through [`url`] first, so that a password never reaches a log,
//! a panic message or a terminal. Depends on nothing else in the crate.

use std::borrow::Cow;

/// What a password is shown as.
const MASK: &str = "***";

/// `text` with every password in it replaced by `***`:
///
/// - the password of a URL's userinfo, `redis://user:***@host/0`, in each
///   of several comma-separated URLs (Redis cluster nodes) and in a
///   PostgreSQL multi-host URL; the user name stays, it is not a secret;
/// - a `password=` query parameter (`postgres://host/db?password=***`) or
///   setting of a PostgreSQL `key=value` connection string
///   (`host=db password=*** dbname=app`).
///
/// Text without a password comes back as it is, borrowed.
pub(crate) fn url(text: &str) -> Cow<'_, str> {
    let mut hide = userinfo_passwords(text);
    hide.extend(password_settings(text));
    if hide.is_empty() {
        return Cow::Borrowed(text);
    }
    hide.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in hide {
        // Ranges may overlap; one that starts inside the last only widens
        // what that mask hides.
        if start >= at {
            out.push_str(&text[at..start]);
            out.push_str(MASK);
        }
        at = at.max(end);
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Byte ranges of the passwords in `//user:password@host` authorities.
/// `//` rather than `://`, so that a scheme lost to a typo does not expose
/// the rest.
fn userinfo_passwords(text: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("//") {
        let start = from + i + 2;
        // The authority ends where the path, query or fragment starts; a
        // password must percent-encode those characters, but may hold a raw
        // `@`, hence the last `@` before the end.
        let end = text[start..]
            .find(['/', '?', '#'])
            .map_or(text.len(), |e| start + e);
        if let Some(at) = text[start..end].rfind('@') {
            let userinfo = &text[start..start + at];
            if let Some(colon) = userinfo.find(':') {
                if colon + 1 < userinfo.len() {
                    found.push((start + colon + 1, start + at));
                }
            }
        }
        from = start;
    }
    found
}

/// Byte ranges of the values of `…password=` settings: in a URL's query
/// (ending at `&` or `#`) or in a `key=value` connection string (ending at
/// white space, or quoted with `'`).
fn password_settings(text: &str) -> Vec<(usize, usize)> {
    const KEY: &str = "password";
    let lower = text.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = lower[from..].find(KEY) {
        let key = from + i;
        from = key + KEY.len();
        // Any key ending in `password` (libpq also has `sslpassword`); what
        // stands before the key tells a URL query from a connection string.
        let word = text[..key].trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
        let in_query = matches!(word.chars().next_back(), Some('?' | '&'));
        let rest = &text[from..];
        let after_key = rest.trim_start();
        let Some(value) = after_key.strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let start = text.len() - value.len();
        let len = if in_query {
            value.find(['&', '#']).unwrap_or(value.len())
        } else if let Some(quoted) = value.strip_prefix('\'') {
            quoted_len(quoted).map_or(value.len(), |n| n + 2)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        if len > 0 {
            found.push((start, start + len));
        }
    }
    found
}

/// The length of a `'…'` value's inside, up to its closing quote
/// (`\'` and `\\` are escapes, as in libpq).
fn quoted_len(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn hides_the_password_of_each_url() {
        for (given, shown) in [
            ("redis://user:hunter2@host/0", "redis://user:***@host/0"),
            (
                "redis://:hunter2@127.0.0.1:6379",
                "redis://:***@127.0.0.1:6379",
            ),
            (
                "rediss://u:p%40ss@h?protocol=resp3",
                "rediss://u:***@h?protocol=resp3",
            ),
            ("redis://u:raw@at@h/0", "redis://u:***@h/0"),
            (
                "redis://u:a@n1:7000,redis://u:b@n2:7001",
                "redis://u:***@n1:7000,redis://u:***@n2:7001",
            ),
            (
                "redis://u:a@n1:7000/,redis://n2:7001/,redis://u:c@n3/",
                "redis://u:***@n1:7000/,redis://n2:7001/,redis://u:***@n3/",
            ),
            (
                "postgres://app:s3cret@db1:5432,db2:5432/test?target_session_attrs=read-write",
                "postgres://app:***@db1:5432,db2:5432/test?target_session_attrs=read-write",
            ),
            // A scheme lost to a typo, as an INI line split at its `:`.
            ("//u:p@h\"", "//u:***@h\""),
        ] {
            assert_eq!(url(given), shown, "{given}");
        }
    }

    #[test]
    fn hides_password_settings() {
        for (given, shown) in [
            (
                "postgres://db/test?user=app&password=s3cret&sslmode=disable",
                "postgres://db/test?user=app&password=***&sslmode=disable",
            ),
            (
                "postgres://app:a@db/test?PASSWORD=b#x",
                "postgres://app:***@db/test?PASSWORD=***#x",
            ),
            (
                "host=db user=app password=s3cret dbname=test",
                "host=db user=app password=*** dbname=test",
            ),
            (
                "host=db password = 'it\\'s secret' dbname=test",
                "host=db password = *** dbname=test",
            ),
            ("password='unclosed", "password=***"),
            (
                "host=db sslpassword=k3y password=p",
                "host=db sslpassword=*** password=***",
            ),
        ] {
            assert_eq!(url(given), shown, "{given}");
        }
    }

    #[test]
    fn leaves_text_without_a_password_alone() {
        for s in [
            "redis://127.0.0.1:6379/0",
            "redis://user@host/0",
            "redis://u:@host",
            "postgres://postgres@127.0.0.1:5432/test",
            "unix:///run/redis.sock",
            "host=db user=app dbname=test",
            "password-reset: off",
            "",
        ] {
            assert!(
                matches!(url(s), std::borrow::Cow::Borrowed(b) if b == s),
                "{s}"
            );
        }
    }
}
