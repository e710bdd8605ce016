//! No password is printed. Everything that can show a storage URL — the
//! configs read from a file, the layer, each store built from a URL with a
//! password, and the errors of bad URLs and unreachable servers — is
//! formatted with `{}`, `{:?}`, `{:#?}` and (errors) with its whole source
//! chain, and the password must appear in none of it.
//!
//! The shared servers are Redis at 127.0.0.1:6379 (no users: a password is
//! refused, so that store's error is what gets formatted) and PostgreSQL at
//! 127.0.0.1:5432, database `test` with trust authentication (a password is
//! ignored, so the store is built). A store is also built on a private
//! `redis-server` with a user and password of its own. A server that is
//! missing is skipped, except under `CI=true`, where that fails.

#![cfg(all(feature = "redis", feature = "postgres"))]

use std::error::Error as StdError;
use std::fmt::Debug;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use server_sessions::store::{self, MemoryStore, PostgresStore, RedisStore};
use server_sessions::{Config, SessionLayer, StorageUrl};

const PASSWORD: &str = "hunter2";
const REDIS_URL: &str = "redis://user:hunter2@127.0.0.1:6379/0";
const POSTGRES_URL: &str = "postgres://postgres:hunter2@127.0.0.1:5432/test";

/// Every way a URL with the password can be written in `storage_url`.
const URLS: [&str; 5] = [
    REDIS_URL,
    "redis://:hunter2@127.0.0.1:6379",
    "redis://user:hunter2@127.0.0.1:7000,redis://user:hunter2@127.0.0.1:7001",
    POSTGRES_URL,
    "host=127.0.0.1 user=postgres password=hunter2 dbname=test",
];

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Fails if `text` (what `what` printed) shows the password.
fn assert_hidden(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} shows the password: {text}"
    );
}

fn assert_debug_hidden(what: &str, value: &impl Debug) {
    assert_hidden(what, &format!("{value:?}"));
    assert_hidden(what, &format!("{value:#?}"));
}

/// `{}`, `{:?}` and the source chain, as a binary prints it (`{:#}` of
/// anyhow) and as a log line with `error = %e` and its causes does.
fn assert_error_hidden(what: &str, error: &(dyn StdError + 'static)) {
    assert_hidden(what, &format!("{error}"));
    assert_debug_hidden(what, &error);
    let mut source = error.source();
    while let Some(e) = source {
        assert_hidden(what, &format!("{e}"));
        assert_hidden(what, &format!("{e:?}"));
        source = e.source();
    }
}

fn ini(url: &str, kind: &str) -> String {
    format!(
        "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = '{kind}'\n\
         tools.sessions.storage_url = '{url}'\n"
    )
}

fn kind_of(url: &str) -> &'static str {
    if url.starts_with("redis") {
        "redis"
    } else {
        "postgres"
    }
}

#[test]
fn configs_and_the_layer_hide_the_password() {
    for url in URLS {
        let kind = kind_of(url);
        let toml = format!(
            "[\"/\"]\nsessions.on = true\nsessions.storage_type = \"{kind}\"\n\
             sessions.storage_url = \"{url}\"\n"
        );
        for config in [
            Config::from_ini_str(&ini(url, kind), "site.conf").unwrap(),
            Config::from_toml_str(&toml, "site.toml").unwrap(),
        ] {
            assert_eq!(
                config.storage().url.as_ref().map(StorageUrl::expose),
                Some(url),
                "read as given"
            );
            assert_debug_hidden("Config", &config);
            assert_debug_hidden("SessionConfig", &**config.resolve("/"));
            let storage = config.storage();
            assert_debug_hidden("StorageConfig", storage);
            // The URL is shown, masked, rather than left out.
            let shown = format!("{storage:?}");
            assert!(
                shown.contains("***") && shown.contains("127.0.0.1"),
                "{shown}"
            );
            let layer = SessionLayer::new(MemoryStore::new()).with_file_config(config);
            assert_debug_hidden("SessionLayer", &layer);
        }
    }
}

#[test]
fn config_errors_hide_the_password() {
    let on = "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'redis'\n";
    for text in [
        // Unquoted, so not a Python literal.
        format!("{on}tools.sessions.storage_url = {REDIS_URL}\n"),
        // No `=`: the line splits at the scheme's `:`.
        format!("{on}tools.sessions.storage_url \"{REDIS_URL}\"\n"),
        // Given twice.
        format!("{on}tools.sessions.storage_url = '{REDIS_URL}'\ntools.sessions.storage_url = '{REDIS_URL}'\n"),
        // Two sections with different stores.
        format!("{}[/a]\ntools.sessions.storage_url = '{POSTGRES_URL}'\n", ini(REDIS_URL, "redis")),
    ] {
        let err = Config::from_ini_str(&text, "site.conf").expect_err(&text);
        assert_error_hidden("config::Error (INI)", &err);
    }
    for text in [
        format!("[\"/\"]\nsessions.on = true\nsessions.storage_url = {REDIS_URL}\n"),
        format!("[\"/\"]\nsessions.on = true\nsessions.storage_url = [\"{REDIS_URL}\"]\n"),
    ] {
        let err = Config::from_toml_str(&text, "site.toml").expect_err(&text);
        assert_error_hidden("config::Error (TOML)", &err);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_unreachable_servers_hide_the_password() {
    for url in [
        "redis://user:hunter2@127.0.0.1:notaport/0",
        "redis://user:hunter2@[::1/0",
        "redis://user:hunter2@127.0.0.1:1/0",
        "rediss+bogus://user:hunter2@127.0.0.1/0",
    ] {
        let err = RedisStore::connect(url).await.expect_err(url);
        assert_error_hidden(url, &err);
        let err = store::open(&Config::from_ini_str(&ini(url, "redis"), "c").unwrap())
            .await
            .expect_err(url);
        assert_error_hidden(url, &err);
    }
    for url in [
        "postgres://postgres:hunter2@127.0.0.1:notaport/test",
        "postgres://postgres:hunter2@[::1/test",
        "postgres://postgres:hunter2@127.0.0.1/test?sslmode=bogus",
        "host=127.0.0.1 password=hunter2 port=notaport",
        "host=127.0.0.1 password='hunter2",
    ] {
        assert_error_hidden(url, &PostgresStore::new(url).expect_err(url));
        let config = Config::from_ini_str(&ini(url, "postgres"), "c").unwrap();
        assert_error_hidden(url, &store::open(&config).await.expect_err(url));
        assert_error_hidden(url, &store::migrate(&config).await.expect_err(url));
    }
    // Nothing listens on port 1.
    let url = "postgres://postgres:hunter2@127.0.0.1:1/test?connect_timeout=2";
    let err = PostgresStore::connect(url).await.expect_err(url);
    assert_error_hidden(url, &err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_built_from_a_url_with_a_password_hide_it() {
    // The shared Redis has no users, so it refuses the password: its error
    // is what a deployment with a wrong password would print.
    match RedisStore::connect(REDIS_URL).await {
        Ok(store) => assert_debug_hidden("RedisStore", &store),
        Err(e) => assert_error_hidden("RedisStore::connect", &e),
    }
    let config = Config::from_ini_str(&ini(REDIS_URL, "redis"), "c").unwrap();
    match store::open(&config).await {
        Ok(store) => assert_debug_hidden("opened Redis store", &store),
        Err(e) => assert_error_hidden("store::open (redis)", &e),
    }

    // PostgreSQL with trust authentication ignores the password.
    let store = PostgresStore::new(POSTGRES_URL).unwrap();
    assert_debug_hidden("PostgresStore", &store);
    match store.ready().await {
        Ok(()) => assert_debug_hidden("PostgresStore, connected", &store),
        Err(e) if in_ci() => panic!("PostgreSQL at 127.0.0.1:5432 (CI=true): {e}"),
        Err(e) => {
            eprintln!("skipping the built PostgreSQL store: {e}");
            assert_error_hidden("PostgresStore::ready", &e);
            return;
        }
    }
    for url in [POSTGRES_URL, URLS[4]] {
        let config = Config::from_ini_str(&ini(url, "postgres"), "c").unwrap();
        let opened = store::open(&config).await.unwrap();
        assert_debug_hidden("opened PostgreSQL store", &opened);
        let layer = SessionLayer::from_arc(opened).with_file_config(config);
        assert_debug_hidden("SessionLayer over PostgreSQL", &layer);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_with_a_password_hides_it() {
    let Some(server) = PasswordRedis::start() else {
        return;
    };
    let url = format!("redis://user:{PASSWORD}@127.0.0.1:{}/0", server.port);
    let store = RedisStore::connect(&url).await.unwrap();
    assert_debug_hidden("RedisStore", &store);
    let config = Config::from_ini_str(&ini(&url, "redis"), "c").unwrap();
    let opened = store::open(&config).await.unwrap();
    let layer = SessionLayer::from_arc(opened).with_file_config(config);
    assert_debug_hidden("SessionLayer over Redis", &layer);
    // A wrong password: the server's refusal.
    let wrong = url.replace(PASSWORD, "hunter3");
    let err = RedisStore::connect(&wrong)
        .await
        .expect_err("wrong password");
    assert_error_hidden("RedisStore::connect, wrong password", &err);
    assert!(!format!("{err:?}").contains("hunter3"), "{err:?}");
}

/// A `redis-server` of the test's own whose only way in is user `user`
/// with the password, killed when dropped.
struct PasswordRedis {
    child: Child,
    port: u16,
}

impl PasswordRedis {
    fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .args(["--user", "default", "off"])
            .args(["--user", "user", "on", &format!(">{PASSWORD}")])
            .args(["~*", "&*", "+@all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if in_ci() => panic!("cannot start redis-server (CI=true): {e}"),
            Err(e) => {
                eprintln!("skipping: cannot start redis-server: {e}");
                return None;
            }
        };
        let server = PasswordRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }
}

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Server keys (`keys_file`, `keys_env`) print nowhere: not in the configs
/// that read them, the layer, `Keys` itself, nor any error about a key
/// file — not even a line that is almost a key. A key written in the
/// config text itself is refused.
#[test]
fn keys_are_never_printed() {
    use base64::Engine as _;
    use server_sessions::Keys;
    let signing = Keys::generate_line().unwrap();
    let old = "ab".repeat(32);
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&signing)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("sessions-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    std::fs::write(&file, format!("# newest first\n{signing}\n{old}\n")).unwrap();
    let path = file.display().to_string();
    let forms = [
        signing.clone(),
        old.clone(),
        format!("{raw:?}"),
        format!("{:?}", &raw[..8]),
    ];
    let assert_no_key = |what: &str, text: &str| {
        for form in &forms {
            assert!(!text.contains(form.as_str()), "{what} shows a key: {text}");
        }
    };
    let ini = format!(
        "[/]\ntools.sessions.on = True\ntools.sessions.keys_file = '{path}'\n\
         tools.sessions.sign_ids = True\ntools.sessions.seal_records = True\n"
    );
    let toml = format!(
        "[\"/\"]\nsessions.on = true\nsessions.keys_file = \"{path}\"\n\
         sessions.sign_ids = true\nsessions.seal_records = true\n"
    );
    for config in [
        Config::from_ini_str(&ini, "site.conf").unwrap(),
        Config::from_toml_str(&toml, "site.toml").unwrap(),
    ] {
        let root = config.resolve("/");
        assert_eq!(root.keys.as_ref().map(Keys::len), Some(2));
        assert!(root.sign_ids && root.seal_records);
        for text in [
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{root:?}"),
            format!("{:?}", root.keys),
        ] {
            assert_no_key("the config", &text);
        }
        let layer = SessionLayer::new(MemoryStore::new()).with_file_config(config);
        assert_no_key("the layer", &format!("{layer:?}"));
    }

    // A line that is almost a key: the error names the line, not its text.
    let almost = &signing[..signing.len() - 2];
    std::fs::write(&file, format!("{old}\n{almost}\n")).unwrap();
    let err = Config::from_ini_str(&ini, "site.conf").unwrap_err();
    let text = format!("{err} {err:?} {}", chain(&err));
    assert!(text.contains("line 2"), "{text}");
    assert!(!text.contains(almost) && !text.contains(&old), "{text}");

    // A key in the config text is no setting.
    for key in ["keys", "key", "secret_key"] {
        let text = format!("[/]\ntools.sessions.on = True\ntools.sessions.{key} = '{signing}'\n");
        let err = Config::from_ini_str(&text, "site.conf").expect_err(key);
        assert_no_key(
            "the config error",
            &format!("{err} {err:?} {}", chain(&err)),
        );
    }
    // An environment variable that is not set: named, nothing more.
    let text = "[/]\ntools.sessions.on = True\ntools.sessions.keys_env = 'SESSIONS_NO_SUCH_KEYS'\n";
    let err = Config::from_ini_str(text, "site.conf").unwrap_err();
    assert!(
        chain(&err).contains("SESSIONS_NO_SUCH_KEYS"),
        "{}",
        chain(&err)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
