//! A user's sessions, on every store: listed from any of them and ended
//! over HTTP ("log out my other devices", "log out everywhere"); ended
//! from outside while a request holds one, which cannot save it back;
//! gone from the backend, index and all, once they expired and clean-up
//! ran; and user ids that are refused when made, or read as a missing
//! session when a record holds one.

use sessions_test_support as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use axum::extract::Query;
use axum::routing::{get, post};
use axum::Router;
use common::app::{config, cookie};
use common::client::{serve, Client, Reply};
use common::files::data_path;
use common::records::{key, key_of, record};
use common::stores::{memcached_set, memcached_value, redis_data_key, redis_raw, Fixture, Kind};
use server_sessions::store::end_user_sessions;
use server_sessions::store::{SaveIf, SessionAdmin, SessionStore};
use server_sessions::{
    store::{Record, StoreKey},
    InvalidUser, Session, SessionConfig, SessionId, SessionLayer, UserId,
};
use tokio::sync::Notify;

stores!(
    logging_out_other_sessions_and_everywhere,
    a_request_in_flight_cannot_bring_an_ended_session_back,
    a_request_run_on_an_ended_session_s_save_fails,
    nothing_of_a_user_outlives_expiry_and_clean_up,
    a_user_s_reader_without_the_lock_overwrites_nothing,
);

/// In `explicit` locking, a request that only reads a user's session
/// (without the lock) refreshes its expiry and writes nothing else: an
/// update a locked request made meanwhile stays, and the session stays
/// listed under its user (the refresh moved the index entry along).
async fn a_user_s_reader_without_the_lock_overwrites_nothing(f: &Fixture) {
    let mut c = config();
    c.locking = server_sessions::Locking::Explicit;
    let app = Router::new()
        .route(
            "/login",
            get(|s: Session| async move {
                s.acquire_lock().await?;
                s.set_user(UserId::new("reader").unwrap()).await?;
                s.insert("n", 0).await?;
                s.release_lock().await?;
                Ok::<_, server_sessions::Error>("in")
            }),
        )
        .route(
            "/read",
            get(|s: Session| async move {
                let n = s.get::<u64>("n").await?.unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, server_sessions::Error>(n.to_string())
            }),
        )
        .route(
            "/bump",
            get(|s: Session| async move {
                s.acquire_lock().await?;
                let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
                s.insert("n", n).await?;
                s.release_lock().await?;
                Ok::<_, server_sessions::Error>(n.to_string())
            }),
        )
        .layer(SessionLayer::new(f.store.clone()).with_config(c));
    let addr = serve(app).await;
    let mut client = Client::new(addr);
    assert_eq!(client.get("/login").await.body, "in");
    let sent = client.cookie.clone();
    let reader = {
        let client = client.clone();
        let sent = sent.clone();
        tokio::spawn(async move { client.get_with("/read", sent.as_deref()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client.get_with("/bump", sent.as_deref()).await.body, "1");
    assert_eq!(reader.await.unwrap().body, "0");
    assert_eq!(client.get_with("/bump", sent.as_deref()).await.body, "2");
    let listed = f
        .sessions_of(&UserId::new("reader").unwrap())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

#[derive(serde::Deserialize)]
struct Login {
    user: String,
}

/// The two moments of the request at `/hold`: it has loaded its session
/// (and, locking implicitly, holds its lock), and it may carry on.
#[derive(Default)]
struct Gate {
    loaded: Notify,
    go: Notify,
}

/// `/login?user=NAME` logs in as NAME, `/me` answers `user count listed`
/// (the session's user or `-`, how many sessions the user has, whether
/// this one is among them), `/logout-others` and `/logout-everywhere`
/// answer how many sessions they ended, `/count` counts, and `/hold`
/// loads its session, then waits for `gate` before changing it.
fn app(config: SessionConfig, f: &Fixture, gate: Arc<Gate>) -> Router {
    Router::new()
        .route(
            "/login",
            post(|s: Session, Query(p): Query<Login>| async move {
                let user = UserId::new(p.user).expect("the tests log in with valid user ids");
                s.regenerate().await?;
                s.set_user(user).await?;
                Ok::<_, server_sessions::Error>("logged in")
            }),
        )
        .route(
            "/me",
            get(|s: Session| async move {
                let user = s.user().await?;
                let listed = s.user_sessions().await?;
                let own = s.id().await?.store_key();
                Ok::<_, server_sessions::Error>(format!(
                    "{} {} {}",
                    user.as_ref().map_or("-", UserId::as_str),
                    listed.len(),
                    listed.iter().any(|l| l.key == own)
                ))
            }),
        )
        .route(
            "/logout-others",
            post(|s: Session| async move {
                Ok::<_, server_sessions::Error>(s.logout_other_sessions().await?.to_string())
            }),
        )
        .route(
            "/logout-everywhere",
            post(|s: Session| async move {
                Ok::<_, server_sessions::Error>(s.logout_everywhere().await?.to_string())
            }),
        )
        .route(
            "/count",
            post(|s: Session| async move {
                let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
                s.insert("n", n).await?;
                Ok::<_, server_sessions::Error>(n.to_string())
            }),
        )
        .route(
            "/hold",
            post(move |s: Session| {
                let gate = Arc::clone(&gate);
                async move {
                    s.load().await?;
                    gate.loaded.notify_one();
                    gate.go.notified().await;
                    s.insert("n", 99).await?;
                    Ok::<_, server_sessions::Error>("held")
                }
            }),
        )
        .layer(SessionLayer::new(f.store.clone()).with_config(config))
}

/// POST `path` with the client's cookie, keeping the one set as
/// [`Client::get`] does (dropping it on `Max-Age=0`).
async fn post_as(c: &mut Client, path: &str) -> Reply {
    let reply = c
        .request(reqwest::Method::POST, path, c.cookie.clone().as_deref())
        .await;
    if let Some(sc) = &reply.set_cookie {
        c.cookie = (!sc.contains("Max-Age=0")).then(|| sc.split(';').next().unwrap().to_string());
    }
    reply
}

async fn login(c: &mut Client, user: &str) {
    let r = post_as(c, &format!("/login?user={user}")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "logged in"), "{r:?}");
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// Over HTTP: each of a user's sessions lists all three; "log out my other
/// devices" from one ends exactly the other two (their cookies then open
/// new, empty sessions without a user), keeps this one with its data and
/// leaves another user's session alone; "log out everywhere" ends this
/// one too and tells the client to drop the cookie.
async fn logging_out_other_sessions_and_everywhere(f: &Fixture) {
    let addr = serve(app(config(), f, Arc::default())).await;
    let (mut a, mut b, mut c, mut bob) = (
        Client::new(addr),
        Client::new(addr),
        Client::new(addr),
        Client::new(addr),
    );
    for client in [&mut a, &mut b, &mut c] {
        login(client, "alice").await;
    }
    login(&mut bob, "bob").await;
    for client in [&mut a, &mut b, &mut c, &mut bob] {
        assert_eq!(post_as(client, "/count").await.body, "1");
        assert_eq!(post_as(client, "/count").await.body, "2");
    }
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(client.get("/me").await.body, "alice 3 true");
    }
    assert_eq!(bob.get("/me").await.body, "bob 1 true");

    let (b_id, c_id) = (b.id().unwrap(), c.id().unwrap());
    let r = post_as(&mut a, "/logout-others").await;
    assert_eq!((r.status, r.body.as_str()), (200, "2"), "{r:?}");
    for (client, old) in [(&mut b, &b_id), (&mut c, &c_id)] {
        assert!(!f.holds(old).await, "an ended session is still stored");
        // The ended session's cookie opens a new session: the counter
        // restarts, under a new id, and nobody is logged in.
        assert_eq!(post_as(client, "/count").await.body, "1");
        assert_ne!(client.id().as_ref(), Some(old));
        assert_eq!(client.get("/me").await.body, "- 0 false");
    }
    assert_eq!(post_as(&mut a, "/count").await.body, "3");
    assert_eq!(a.get("/me").await.body, "alice 1 true");
    assert_eq!(post_as(&mut bob, "/count").await.body, "3");
    assert_eq!(bob.get("/me").await.body, "bob 1 true");

    let (a_cookie, a_id) = (a.cookie.clone(), a.id().unwrap());
    let r = post_as(&mut a, "/logout-everywhere").await;
    assert_eq!((r.status, r.body.as_str()), (200, "1"), "{r:?}");
    assert!(
        r.set_cookie
            .as_deref()
            .is_some_and(|sc| sc.contains("Max-Age=0")),
        "the cookie is not dropped: {r:?}"
    );
    assert_eq!(a.cookie, None);
    assert!(
        !f.holds(&a_id).await,
        "the session logged out is still stored"
    );
    // A client that kept the old cookie anyway is nobody now.
    let r = a.get_with("/me", a_cookie.as_deref()).await;
    assert_eq!(r.body, "- 0 false");
    assert_ne!(r.cookie_value(), Some(a_id));
    assert_eq!(bob.get("/me").await.body, "bob 1 true");
    assert_eq!(post_as(&mut bob, "/count").await.body, "4");
}

/// A request that holds one of a user's two sessions (loaded, under its
/// implicit lock) while `end_user_sessions` ends both on the store
/// directly cannot save it back when it finishes: the store has no record
/// under its key, the user has no session listed, its client gets no
/// cookie, and a request queued behind it on the same session finds it
/// gone (no user), not handed over. Without pipelined saves; with them,
/// below.
async fn a_request_in_flight_cannot_bring_an_ended_session_back(f: &Fixture) {
    request_in_flight_on_an_ended_session(f, false).await;
}

/// As above, with pipelined saves: the request queued behind the held one
/// runs on its result while that save is on its way, so when the store
/// refuses the save (the session had ended) it fails with 503 — it served
/// a session that was no longer there. The stores that run the next
/// request only after the save (RAM, files) answer as without.
async fn a_request_run_on_an_ended_session_s_save_fails(f: &Fixture) {
    request_in_flight_on_an_ended_session(f, true).await;
}

async fn request_in_flight_on_an_ended_session(f: &Fixture, pipelined: bool) {
    let gate = Arc::new(Gate::default());
    let mut c = config();
    c.pipelined_saves = pipelined;
    let addr = serve(app(c, f, Arc::clone(&gate))).await;
    let (mut held, mut other) = (Client::new(addr), Client::new(addr));
    login(&mut held, "alice").await;
    login(&mut other, "alice").await;
    let held_id = held.id().unwrap();
    let holding = tokio::spawn({
        let held = held.clone();
        async move {
            held.request(reqwest::Method::POST, "/hold", held.cookie.as_deref())
                .await
        }
    });
    tokio::time::timeout(Duration::from_secs(10), gate.loaded.notified())
        .await
        .expect("the held request never loaded its session");

    let alice = user("alice");
    assert_eq!(end_user_sessions(f, &alice, None).await.unwrap(), 2);
    let queued = tokio::spawn({
        let held = held.clone();
        async move { held.get_with("/me", held.cookie.as_deref()).await }
    });
    // Time for it to queue on the held session's lock; if it is slower,
    // it reads the store after the save, which must not find it either.
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.go.notify_one();

    let r = holding.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "held"), "{r:?}");
    assert_eq!(r.set_cookie, None, "a cookie for a session that was ended");
    let r = queued.await.unwrap();
    if pipelined && !matches!(f.kind, Kind::Ram | Kind::File) {
        assert_eq!(r.status, 503, "served a session that had ended: {r:?}");
    } else {
        assert_eq!((r.status, r.body.as_str()), (200, "- 0 false"), "{r:?}");
    }
    assert_ne!(r.cookie_value(), Some(held_id.clone()));
    assert_eq!(f.store.load(&key_of(&held_id)).await.unwrap(), None);
    assert_eq!(f.sessions_of(&alice).await.unwrap(), []);
    assert_eq!(other.get("/me").await.body, "- 0 false");
}

/// Once a user's sessions expired and clean-up ran, nothing of the user
/// is left in the backend — RAM: the index map; file: no `users/<index
/// key>` directory; SQL: no row with the user's id; Redis: no index key,
/// which expired with the last session — while another user's live
/// session keeps its entry (so the probe sees entries where there are).
async fn nothing_of_a_user_outlives_expiry_and_clean_up(f: &Fixture) {
    let mut c = config();
    c.timeout = Duration::from_secs(1);
    let addr = serve(app(c, f, Arc::default())).await;
    for _ in 0..2 {
        login(&mut Client::new(addr), "short-lived").await;
    }
    let (short, stays) = (user("short-lived"), user("stays"));
    let live = Record {
        user: Some(stays.clone()),
        ..record("{}", 600_000)
    };
    assert!(f.save(&key(), &live, SaveIf::Absent).await.unwrap());
    assert_eq!(indexed(f, &short).await, 2);
    assert_eq!(indexed(f, &stays).await, 1);
    if f.kind == Kind::Redis {
        // The index key expires with its last session (and the 2 s the
        // store allows for clocks that disagree), not later.
        let ttl: i64 = redis_raw()
            .await
            .pttl(redis_user_key(f, &short))
            .await
            .unwrap();
        assert!((1..=3_000).contains(&ttl), "index PTTL {ttl} ms");
    }

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    f.clean_up().await.unwrap();
    // Redis and memcached drop the index by themselves, when it expires
    // (2 s after its last session, for clocks that disagree; memcached's
    // expiry counts whole seconds).
    let deadline = Instant::now() + Duration::from_secs(6);
    let memcached_index = || async {
        f.kind == Kind::Memcached
            && memcached_value(&memcached_user_key(f, &short))
                .await
                .is_some()
    };
    while (indexed(f, &short).await > 0 || memcached_index().await) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        indexed(f, &short).await,
        0,
        "the user's index outlived them"
    );
    assert_eq!(f.sessions_of(&short).await.unwrap(), []);
    assert_eq!(indexed(f, &stays).await, 1);
    assert_eq!(f.sessions_of(&stays).await.unwrap().len(), 1);
    match f.kind {
        Kind::File => assert!(!file_user_dir(f, &short).exists()),
        Kind::Redis => {
            let exists: bool = redis_raw()
                .await
                .exists(redis_user_key(f, &short))
                .await
                .unwrap();
            assert!(!exists, "the user's index key is still there");
        }
        Kind::Memcached => {
            let held = memcached_value(&memcached_user_key(f, &short)).await;
            assert_eq!(held, None, "the user's index item is still there");
        }
        _ => {}
    }
}

/// How many entries the backend itself keeps in `user`'s index, read
/// behind the store's back (the RAM store's through its raw count).
async fn indexed(f: &Fixture, user: &UserId) -> usize {
    match f.kind {
        Kind::Ram => f.ram.as_ref().unwrap().indexed_sessions_of(user),
        Kind::File => match std::fs::read_dir(file_user_dir(f, user)) {
            Ok(entries) => entries.count(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => panic!("{e}"),
        },
        Kind::Sqlite => {
            let raw = rusqlite::Connection::open(sqlite_path(f)).unwrap();
            raw.busy_timeout(Duration::from_secs(5)).unwrap();
            let n: i64 = raw
                .query_row(
                    "SELECT count(*) FROM sessions WHERE user_id = ?1",
                    [user.as_str()],
                    |row| row.get(0),
                )
                .unwrap();
            n as usize
        }
        Kind::Postgres => {
            let sql = format!(
                "SELECT count(*) FROM \"{}\" WHERE user_id = $1",
                f.table.as_ref().unwrap()
            );
            let admin = f.admin.as_ref().unwrap();
            let n: i64 = admin
                .query_one(&sql, &[&user.as_str()])
                .await
                .unwrap()
                .get(0);
            n as usize
        }
        Kind::Mysql => {
            let sql = "SELECT count(*) FROM {t} WHERE user_id = ?";
            let (rows, _) = f.mysql_run(sql, vec![user.as_str().into()]).await;
            rows[0].parse().unwrap()
        }
        Kind::Redis => {
            let n: usize = redis_raw()
                .await
                .zcard(redis_user_key(f, user))
                .await
                .unwrap();
            n
        }
        // One line per entry; expired ones go at the next change only.
        Kind::Memcached => memcached_value(&memcached_user_key(f, user))
            .await
            .map_or(0, |v| {
                let now = server_sessions::store::now_millis();
                String::from_utf8(v)
                    .unwrap()
                    .lines()
                    .filter(|l| l.split(' ').nth(1).unwrap().parse::<u64>().unwrap() > now)
                    .count()
            }),
    }
}

/// The memcached item of `user`'s index.
fn memcached_user_key(f: &Fixture, user: &UserId) -> String {
    format!("{}user:{}", f.prefix.as_ref().unwrap(), &*user.index_key())
}

/// The file store's directory of `user`'s index entries.
fn file_user_dir(f: &Fixture, user: &UserId) -> std::path::PathBuf {
    let dir = f.dir.as_ref().unwrap().path();
    dir.join("sessions").join("users").join(&*user.index_key())
}

fn sqlite_path(f: &Fixture) -> std::path::PathBuf {
    f.dir.as_ref().unwrap().path().join("sessions.db")
}

/// `{prefix}user:{<index key>}`, the Redis store's index of `user`.
fn redis_user_key(f: &Fixture, user: &UserId) -> String {
    let prefix = f.prefix.as_ref().unwrap();
    format!("{prefix}user:{{{}}}", &*user.index_key())
}

/// `UserId::new` refuses the empty string, more than 256 bytes (bytes,
/// not characters) and control characters, each with an error whose text
/// names the problem; the longest allowed id and other text are fine.
#[test]
fn user_ids_are_checked_when_made() {
    let refused = |text: String| UserId::new(text).unwrap_err();
    let e = refused(String::new());
    assert_eq!(e, InvalidUser::Empty);
    assert!(e.to_string().contains("empty"), "{e}");
    let e = refused("a".repeat(257));
    assert_eq!(e, InvalidUser::TooLong(257));
    assert!(e.to_string().contains("257 bytes"), "{e}");
    assert!(e.to_string().contains("256"), "{e}");
    // 129 two-byte characters: 258 bytes.
    assert_eq!(refused("é".repeat(129)), InvalidUser::TooLong(258));
    for bad in ["a\nb", "a\0b", "\u{1b}[31m", "tab\there"] {
        let e = refused(bad.to_owned());
        assert_eq!(e, InvalidUser::Control, "{bad:?}");
        assert!(e.to_string().contains("control characters"), "{e}");
    }
    assert_eq!("a\nb".parse::<UserId>(), Err(InvalidUser::Control));
    assert!(UserId::new("a".repeat(UserId::MAX_LEN)).is_ok());
    assert_eq!(user("élodie@example.com").as_str(), "élodie@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_reads_an_invalid_stored_user_as_missing() {
    stored_invalid_user_is_missing(Kind::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_reads_an_invalid_stored_user_as_missing() {
    stored_invalid_user_is_missing(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_reads_an_invalid_stored_user_as_missing() {
    stored_invalid_user_is_missing(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_reads_an_invalid_stored_user_as_missing() {
    stored_invalid_user_is_missing(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_store_reads_an_invalid_stored_user_as_missing() {
    stored_invalid_user_is_missing(Kind::Memcached).await;
}

/// A live record whose user is not a valid user id (written behind the
/// store's back, checksum and all) is a missing session: a load finds
/// nothing, and through the layer (a lock-and-load) its cookie opens a
/// new session without a user. The same record with a valid user,
/// planted the same way, loads (so it is the user that is refused). The
/// RAM store is left out: it only ever holds what a `UserId` let in.
async fn stored_invalid_user_is_missing(kind: Kind) {
    let Some(f) = Fixture::new(kind).await else {
        return;
    };
    let control = key();
    plant(&f, &control, b"a-b").await;
    let loaded = f.load(&control).await.unwrap();
    assert_eq!(loaded.and_then(|r| r.user), Some(user("a-b")));

    let addr = serve(app(config(), &f, Arc::default())).await;
    let bad: &[&[u8]] = match kind {
        // Framed records: the length field says how many bytes the user
        // has, so these are the refusals that fit in a 1..=256-byte user.
        Kind::File | Kind::Redis | Kind::Memcached => &[b"a\nb", b"a\0b", b"\xff\xfe"],
        _ => &[b"", b"a\nb", &[b'x'; 257]],
    };
    for user_bytes in bad {
        let id = SessionId::generate().unwrap();
        let key = id.store_key();
        plant(&f, &key, user_bytes).await;
        assert_eq!(f.load(&key).await.unwrap(), None, "{user_bytes:?}");
        let r = Client::new(addr)
            .get_with("/me", Some(&cookie(&id.to_string())))
            .await;
        assert_eq!((r.status, r.body.as_str()), (200, "- 0 false"), "{r:?}");
        assert_ne!(r.cookie_value(), Some(id.to_string()));
    }
    common::logs::assert_no_full_ids();
    f.clean().await;
}

/// Writes a live session under `key` whose user is `user` byte for byte,
/// straight into the backend.
async fn plant(f: &Fixture, key: &StoreKey, user: &[u8]) {
    let far = (server_sessions::store::now_millis() + 600_000) as i64;
    match f.kind {
        Kind::Ram => unreachable!("the RAM store has no outside to plant in"),
        Kind::File => {
            let dir = f.dir.as_ref().unwrap().path().join("sessions");
            std::fs::write(data_path(&dir, key), framed_with_user(user)).unwrap();
        }
        Kind::Redis => {
            let data_key = redis_data_key(f.prefix.as_ref().unwrap(), key);
            let _: () = redis_raw()
                .await
                .pset_ex(data_key, framed_with_user(user), 600_000)
                .await
                .unwrap();
        }
        Kind::Memcached => {
            let data_key = format!("{}{key}", f.prefix.as_ref().unwrap());
            memcached_set(&data_key, &framed_with_user(user), 600).await;
        }
        Kind::Sqlite => {
            let raw = rusqlite::Connection::open(sqlite_path(f)).unwrap();
            raw.busy_timeout(Duration::from_secs(5)).unwrap();
            raw.execute(
                "INSERT INTO sessions (id, data, created_at, expires_at, user_id) \
                 VALUES (?1, x'7b7d', 0, ?2, ?3)",
                (key.to_string(), far, std::str::from_utf8(user).unwrap()),
            )
            .unwrap();
        }
        Kind::Postgres => {
            let sql = format!(
                "INSERT INTO \"{}\" (id, data, created_at, expires_at, user_id) \
                 VALUES ($1, '\\x7b7d', 0, $2, $3)",
                f.table.as_ref().unwrap()
            );
            let user = std::str::from_utf8(user).unwrap();
            let admin = f.admin.as_ref().unwrap();
            admin
                .execute(&sql, &[&key.to_string(), &far, &user])
                .await
                .unwrap();
        }
        Kind::Mysql => {
            let sql = "INSERT INTO {t} (id, data, created_at, expires_at, user_id) \
                       VALUES (?, x'7b7d', 0, ?, ?)";
            let params = vec![key.to_string().into(), far.into(), user.to_vec().into()];
            f.mysql_run(sql, params).await;
        }
    }
}

/// Where the CRC-32 sits in a framed record (after magic, version, two
/// instants and the data length); it covers every other byte.
const CRC_AT: usize = 25;

/// A framed record ([`Record::encode`], the file and Redis stores'
/// format) of a live session whose user is `user` (1 to 256 bytes) byte
/// for byte, with a checksum that matches: what a checksum cannot catch.
fn framed_with_user(user: &[u8]) -> Vec<u8> {
    let data = "{}";
    let placeholder = Record {
        user: Some(UserId::new("u".repeat(user.len())).unwrap()),
        ..record(data, 600_000)
    };
    let mut bytes = placeholder.encode();
    // The user comes last before the data.
    let at = bytes.len() - data.len() - user.len();
    bytes[at..at + user.len()].copy_from_slice(user);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..CRC_AT]);
    crc.update(&bytes[CRC_AT + 4..]);
    let crc = crc.finalize().to_le_bytes();
    bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc);
    bytes
}
