//! Property tests over the public API: session ids, stored
//! records, config files and the Cookie header, each with arbitrary and
//! with structured input. The checks are those of the fuzz targets
//! (`checks/mod.rs` is shared with `fuzz/`), and every input the fuzzers
//! keep — the seeds and the crashes they found — is replayed here too.
//!
//! Case counts are kept modest so that this runs in seconds; the fuzzers
//! (`fuzz/README.md`) are the long runs.

use sessions_test_support::checks;

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use server_sessions::{
    store::{now_millis, DecodeError, Record},
    Config, SessionId,
};

/// A valid id's text.
fn hex_id() -> impl Strategy<Value = String> {
    any::<[u8; 20]>().prop_map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
}

// ---------------------------------------------------------------------------
// Signed ids, key files, sealed data
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn only_a_listed_keys_signature_is_an_id(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        checks::check_signed_id(&bytes);
    }

    #[test]
    fn a_changed_signed_id_is_no_id(at in 0usize..84, c in any::<u8>(), second in any::<bool>()) {
        let id = SessionId::generate().unwrap();
        let keys = checks::two_keys();
        let signed = if second {
            server_sessions::Keys::new(&[[2; 32]]).unwrap().sign(&id)
        } else {
            keys.sign(&id)
        };
        prop_assert_eq!(keys.verify(signed.as_bytes()), Some(id));
        let mut changed = signed.as_bytes().to_vec();
        changed[at] = c;
        checks::check_signed_id(&changed);
    }

    #[test]
    fn key_files_never_show_a_line(text in "(#?[A-Za-z0-9+/=_ -]{0,70}\n){0,4}") {
        checks::check_key_file(&text);
    }

    #[test]
    fn outside_bytes_never_open_as_a_seal(bytes in prop::collection::vec(any::<u8>(), 20..120), mark in any::<bool>()) {
        let mut data = bytes;
        if mark {
            data.splice(20..20, *b"\xffSR1");
        }
        checks::check_sealed_data(&data);
    }

    #[test]
    fn sealed_cookies_open_only_as_sealed(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        checks::check_sealed_cookie(&bytes);
    }

    #[test]
    fn signed_cookies_through_the_layer(mode in 0u8..3, which in 0u8..4) {
        let live: SessionId = checks::LIVE.parse().unwrap();
        let value = match which {
            0 => checks::two_keys().sign(&live).to_string(),
            1 => server_sessions::Keys::new(&[[2; 32]]).unwrap().sign(&live).to_string(),
            2 => checks::LIVE.to_string(),
            _ => server_sessions::Keys::new(&[[3; 32]]).unwrap().sign(&live).to_string(),
        };
        let mut header = vec![mode];
        header.extend_from_slice(format!("session_id={value}").as_bytes());
        checks::check_signed_cookie(header[0], &header[1..]);
    }
}

// ---------------------------------------------------------------------------
// Session ids
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn an_id_round_trips(text in hex_id()) {
        let id: SessionId = text.parse().unwrap();
        prop_assert_eq!(id.to_string(), text.clone());
        prop_assert_eq!(SessionId::from_bytes(text.as_bytes()), Ok(id));
        checks::check_session_id(text.as_bytes());
    }

    #[test]
    fn anything_but_40_lowercase_hex_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..90)) {
        checks::check_session_id(&bytes);
    }

    #[test]
    fn one_changed_character_is_refused_unless_still_hex(
        text in hex_id(),
        at in 0usize..40,
        c in any::<char>(),
    ) {
        let mut changed: Vec<char> = text.chars().collect();
        changed[at] = c;
        let changed: String = changed.into_iter().collect();
        let still_hex = matches!(c, '0'..='9' | 'a'..='f');
        prop_assert_eq!(changed.parse::<SessionId>().is_ok(), still_hex, "{:?}", changed);
        checks::check_session_id(changed.as_bytes());
    }

    #[test]
    fn generated_ids_parse_back(_n in 0..64u8) {
        let id = SessionId::generate().unwrap();
        checks::check_session_id(id.to_string().as_bytes());
    }
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// A record as saves write it: times up to `Record::MAX_TIME`.
fn record() -> impl Strategy<Value = Record> {
    (
        prop::collection::vec(any::<u8>(), 0..600),
        0..=Record::MAX_TIME,
        0..=Record::MAX_TIME,
        // Every format: version 1 (neither), 2 (a timeout; 0 means none,
        // so a timeout is at least 1) and 3 (a user).
        prop::option::of(1..=Record::MAX_TIME),
        prop::option::of("[^\\p{Cc}]{1,64}"),
    )
        .prop_map(|(data, created, expires, timeout, user)| Record {
            data,
            created,
            expires,
            timeout,
            user: user.map(|u| u.parse().unwrap()),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_record_round_trips(r in record(), slack in 0usize..100) {
        let bytes = r.encode();
        prop_assert_eq!(Record::decode(&bytes, r.data.len() + slack), Ok(r.clone()));
    }

    #[test]
    fn a_record_over_the_limit_is_refused(r in record(), under in 1usize..50) {
        prop_assume!(r.data.len() >= under);
        let max = r.data.len() - under;
        let refused = matches!(
            Record::decode(&r.encode(), max),
            Err(DecodeError::TooLarge { .. } | DecodeError::Truncated)
        );
        prop_assert!(refused);
    }

    #[test]
    fn every_truncation_is_refused(r in record(), cut in any::<prop::sample::Index>()) {
        let bytes = r.encode();
        let n = cut.index(bytes.len());
        prop_assert!(Record::decode(&bytes[..n], usize::MAX).is_err());
    }

    #[test]
    fn every_mutation_is_refused_or_decodes_to_itself(
        r in record(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
        extra in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = r.encode();
        for (at, x) in &edits {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        bytes.extend_from_slice(&extra);
        // Only bytes that are a record in their own right decode, and then
        // exactly.
        if let Ok(decoded) = Record::decode(&bytes, 1 << 20) {
            prop_assert_eq!(decoded.encode(), bytes);
        }
    }

    /// A time past `Record::MAX_TIME` (written by something else, with a
    /// right checksum) is refused, never read.
    #[test]
    fn a_time_out_of_range_is_refused(r in record(), field in 0..3usize, ms in Record::MAX_TIME + 1..=u64::MAX) {
        let mut r = r;
        match field {
            0 => r.created = ms,
            1 => r.expires = ms,
            _ => r.timeout = Some(ms),
        }
        let refused = matches!(
            Record::decode(&r.encode(), r.data.len()),
            Err(DecodeError::OutOfRange { ms: got, .. }) if got == ms
        );
        prop_assert!(refused);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), max in 0usize..300) {
        if let Ok(r) = Record::decode(&bytes, max) {
            prop_assert_eq!(r.encode(), bytes);
        }
    }
}

/// JSON-ish session data, mostly objects, sometimes not.
fn session_data() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| format!("{x:?}")),
        "[a-z\\\\\"é\\x00]{0,8}".prop_map(|s| format!("{s:?}")),
        "[{}\\[\\]\",:0-9a-z ]{0,12}",
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z]{0,4}", inner), 0..4).prop_map(|kv| {
                let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    });
    prop_oneof![
        4 => prop::collection::vec(("[a-z_]{0,6}", value.clone()), 0..5).prop_map(|kv| {
            let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
            format!("{{{}}}", fields.join(",")).into_bytes()
        }),
        1 => value.prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Stored data of any shape, framed (Redis, files) or as it is (RAM, SQL),
    /// loads as the session's data or as a missing session — never a 5xx.
    #[test]
    fn stored_data_loads_or_is_missing(data in session_data(), frame in any::<bool>(), max in 0usize..400) {
        let bytes = if frame {
            Record { data, created: 1, expires: Record::MAX_TIME, timeout: None, user: None }.encode()
        } else {
            data
        };
        checks::check_record(max, &bytes);
    }
}

/// A time of any range, mostly near the edges: the past, now, the next
/// centuries, the last instant there is and past it.
fn any_time() -> impl Strategy<Value = u64> {
    let now = now_millis();
    prop_oneof![
        0..now,
        now + 120_000..now + 400 * 86_400_000,
        now..=Record::MAX_TIME,
        Record::MAX_TIME - 1_000..=Record::MAX_TIME + 1_000,
        Record::MAX_TIME..=u64::MAX,
        Just(u64::MAX),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any record a store can give back, its times in range or not, goes
    /// through the request path (stored as it is, in RAM): a 200 and a
    /// cookie, never a panic; out of range it is a missing session.
    #[test]
    fn stored_records_of_any_time_answer(
        mode in any::<u8>(),
        data in session_data(),
        created in any_time(),
        expires in any_time(),
        timeout in prop::option::of(prop_oneof![1..=Record::MAX_TIME, any_time()]),
        user in prop::option::of("[a-z]{1,8}"),
    ) {
        let user = user.map(|u| u.parse().unwrap());
        let record = Record { data, created, expires, timeout: timeout.filter(|&t| t > 0), user };
        checks::check_stored(checks::Use::from_byte(mode), &record);
    }
}

// ---------------------------------------------------------------------------
// Config files
// ---------------------------------------------------------------------------

const KEYS: &[&str] = &[
    "on",
    "storage_type",
    "storage_class",
    "storage_path",
    "storage_url",
    "file_fsync",
    "redis_prefix",
    "table",
    "auto_migrate",
    "clean_freq",
    "timeout",
    "absolute_timeout",
    "locking",
    "lock_timeout",
    "name",
    "path",
    "path_header",
    "domain",
    "secure",
    "httponly",
    "samesite",
    "persistent",
    "max_size",
    "debug",
    "bogus",
];

const VALUES: &[&str] = &[
    "True",
    "False",
    "None",
    "0",
    "1",
    "-1",
    "60",
    "99999999999999999999",
    "0.016666",
    "1/60",
    "1.0 / 60",
    "0/0",
    "1e308",
    "-0.0",
    "nan",
    "inf",
    "'ram'",
    "\"file\"",
    "'redis'",
    "'sqlite'",
    "'/tmp/x'",
    "'redis://h'",
    "'explicit'",
    "'early'",
    "'Strict'",
    "'None'",
    "'a;b'",
    "'/p'",
    "'x'",
    "''",
    "'\\n'",
    "'\\q'",
    "\"unterminated",
    "[1, 2]",
    "cherrypy.lib.sessions.FileSession",
    "RamSession",
    "os.system('x')",
    "'é'",
];

const SECTIONS: &[&str] = &[
    "/", "/a", "/a/b", "/a/", "//", "global", "other", "\"/q\"", "/é",
];

fn ini_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        2 => prop::sample::select(SECTIONS).prop_map(|s| format!("[{s}]")),
        6 => (
            prop::sample::select(&["tools.sessions.", "sessions.", "server.", "", "log."][..]),
            prop::sample::select(KEYS),
            prop::sample::select(&[" = ", "=", ": ", " =  "][..]),
            prop::sample::select(VALUES),
        )
            .prop_map(|(p, k, eq, v)| format!("{p}{k}{eq}{v}")),
        1 => "[ \\t#;=\\[\\]a-z/\\\\'\"é\\x00]{0,16}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

fn toml_value(v: &str) -> String {
    match v {
        "True" => "true".into(),
        "False" => "false".into(),
        v if v.starts_with('\'') && v.ends_with('\'') && v.len() >= 2 => {
            format!("{:?}", &v[1..v.len() - 1])
        }
        v => v.to_owned(),
    }
}

fn toml_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        2 => prop::sample::select(SECTIONS).prop_map(|s| if s == "global" {
            "[global]".to_owned()
        } else {
            format!("[{:?}]", s.trim_matches('"'))
        }),
        6 => (
            prop::sample::select(&["sessions.", "tools.sessions.", "server.", ""][..]),
            prop::sample::select(KEYS),
            prop::sample::select(VALUES),
        )
            .prop_map(|(p, k, v)| format!("{p}{k} = {}", toml_value(v))),
        1 => prop::sample::select(KEYS).prop_map(|k| format!("sessions = {{ {k} = true }}")),
        1 => "[ \\t#=\\[\\]{}a-z/\"'.é\\x00]{0,16}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ini_parsing_never_panics_and_errors_have_a_line(text in ini_text()) {
        checks::check_config(&text, Config::from_ini_str);
    }

    #[test]
    fn ini_on_arbitrary_text(text in "\\PC{0,120}") {
        checks::check_config(&text, Config::from_ini_str);
    }

    #[test]
    fn toml_parsing_never_panics_and_errors_have_a_line(text in toml_text()) {
        checks::check_config(&text, Config::from_toml_str);
    }

    #[test]
    fn toml_on_arbitrary_text(text in "\\PC{0,120}") {
        checks::check_config(&text, Config::from_toml_str);
    }
}

// ---------------------------------------------------------------------------
// The Cookie header, through the middleware
// ---------------------------------------------------------------------------

fn cookie_header() -> impl Strategy<Value = Vec<u8>> {
    let part = prop_oneof![
        Just(format!("session_id={}", checks::LIVE)),
        hex_id().prop_map(|id| format!("session_id={id}")),
        Just("session_id=".to_owned()),
        Just(format!("session_id=\"{}\"", checks::LIVE)),
        Just(format!(" session_id = {} ", checks::LIVE)),
        Just(format!("session_id={}", checks::LIVE.to_uppercase())),
        Just("session_id=../../etc/passwd".to_owned()),
        Just("Domain=evil.example".to_owned()),
        Just("expires=Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
        Just("Path=/".to_owned()),
        Just("=".to_owned()),
        Just(String::new()),
        "[ -~]{0,12}",
        "[a-z_]{1,8}=[!-~]{0,12}",
    ];
    prop_oneof![
        3 => prop::collection::vec(part, 0..6).prop_map(|p| p.join(";").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..120),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the Cookie header holds: no panic, no 5xx, a cookie only
    /// when the session was used, and never an id or bytes the client chose
    /// unless it is the live session's id.
    #[test]
    fn any_cookie_header_is_safe(mode in any::<u8>(), header in cookie_header()) {
        checks::check_cookie_header(mode, &header);
    }
}

// ---------------------------------------------------------------------------
// What the fuzzers kept
// ---------------------------------------------------------------------------

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file under `fuzz/<kind>/<target>/`.
fn kept(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Runs one fuzz target's check on a kept input, as the target does.
fn replay(target: &str, data: &[u8]) {
    match target {
        "session_id" => checks::check_session_id(data),
        "cookie_header" => {
            if let Some((&mode, header)) = data.split_first() {
                checks::check_cookie_header(mode, header);
            }
        }
        "config_ini" => {
            if let Ok(text) = std::str::from_utf8(data) {
                checks::check_config(text, Config::from_ini_str);
            }
        }
        "config_toml" => {
            if let Ok(text) = std::str::from_utf8(data) {
                checks::check_config(text, Config::from_toml_str);
            }
        }
        "record_decode" => {
            if data.len() >= 2 {
                let max = usize::from(u16::from_le_bytes([data[0], data[1]]));
                checks::check_record(max, &data[2..]);
            }
        }
        "record_request" => {
            if let Some((&mode, record)) = data.split_first() {
                checks::check_stored_record(mode, record);
            }
        }
        "signed_id" => checks::check_signed_id(data),
        "signed_cookie" => {
            if let Some((&mode, header)) = data.split_first() {
                checks::check_signed_cookie(mode, header);
            }
        }
        "key_file" => {
            if let Ok(text) = std::str::from_utf8(data) {
                checks::check_key_file(text);
            }
        }
        "sealed_data" => checks::check_sealed_data(data),
        "sealed_cookie" => checks::check_sealed_cookie(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

const TARGETS: &[&str] = &[
    "cookie_header",
    "session_id",
    "config_ini",
    "config_toml",
    "record_decode",
    "record_request",
    "signed_id",
    "signed_cookie",
    "key_file",
    "sealed_data",
    "sealed_cookie",
];

/// The inputs that crashed a fuzz target once, kept under
/// `fuzz/regressions/<target>/`: each must now pass its check.
#[test]
fn fuzz_regressions_stay_fixed() {
    let mut n = 0;
    for target in TARGETS {
        for (path, data) in kept("regressions", target) {
            eprintln!("{}", path.display());
            replay(target, &data);
            n += 1;
        }
    }
    eprintln!("{n} regression inputs replayed");
}

/// The fuzzers' seed inputs pass their checks (a broken seed would waste a
/// fuzzing run).
#[test]
fn fuzz_seeds_pass() {
    if !fuzz_dir().is_dir() {
        // The crate on its own, outside the repository.
        eprintln!("skipping: no fuzz/ directory next to the crate");
        return;
    }
    for target in TARGETS {
        let seeds = kept("seeds", target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for (path, data) in seeds {
            eprintln!("{}", path.display());
            replay(target, &data);
        }
    }
}
