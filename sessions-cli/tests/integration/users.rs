//! A user's sessions through the demo site and the admin commands, as an
//! operator meets them: three browsers log in as one user, one logs the
//! others out; `sessions list --user` and `sessions logout --user` see and
//! end what the site wrote (a file store, shared by the server and the
//! commands); and what the demo keeps in a session: no id, and no value
//! that breaks its page. Each runs on both frameworks the demo is served
//! with (axum, actix-web).

use crate::server;

/// Each scenario through each framework `sessions serve` runs the demo
/// with.
macro_rules! on_each_framework {
    ($($name:ident),*) => {
        mod axum {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Framework::Axum).await;
            })*
        }
        mod actix {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Framework::Actix).await;
            })*
        }
    };
}

on_each_framework!(
    a_user_logs_out_other_sessions_in_the_demo_and_the_cli,
    the_demo_stores_no_id_and_shows_any_value,
    bad_user_names_are_refused_clearly
);

use server::temp::TempDir;
use server::{run, text, Framework, Server};

/// One browser: a cookie, kept as a browser keeps it, and no redirects
/// followed, so that each response's cookie is seen.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(server: &Server) -> Self {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("http://{}", server.addr),
            cookie: None,
        }
    }

    /// GET or POST (a form body) `path`; the status and body. A POST
    /// carries the CSRF token of the page, read first, as a browser's form
    /// would.
    async fn send(&mut self, path: &str, form: Option<&str>) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let mut req = match form {
            Some(body) => {
                let token = self.token().await;
                self.http
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("{body}&csrf_token={token}"))
            }
            None => self.http.get(url),
        };
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        if let Some(sc) = resp.headers().get("set-cookie") {
            let sc = sc.to_str().unwrap();
            self.cookie =
                (!sc.contains("Max-Age=0")).then(|| sc.split(';').next().unwrap().to_owned());
        }
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// The CSRF token the demo's forms carry now.
    async fn token(&mut self) -> String {
        let page = Box::pin(self.send("/", None)).await.1;
        let at = page
            .find("name=csrf_token value=\"")
            .expect("a token in the page")
            + 23;
        page[at..at + 40].to_owned()
    }

    async fn page(&mut self) -> String {
        let (status, body) = self.send("/", None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn login(&mut self, user: &str) -> u16 {
        self.send("/login", Some(&format!("user={user}"))).await.0
    }
}

/// The rows of the page's "your sessions" table.
fn session_rows(page: &str) -> usize {
    page.split("<table id=your-sessions>")
        .nth(1)
        .map_or(0, |t| {
            t.split("</table>")
                .next()
                .unwrap()
                .matches("<tr><td>")
                .count()
        })
}

async fn a_user_logs_out_other_sessions_in_the_demo_and_the_cli(fw: Framework) {
    let dir = TempDir::new("users");
    let store = format!(
        "tools.sessions.storage_type = 'file'\ntools.sessions.storage_path = '{}/sessions'\n",
        dir.path().display()
    );
    logs_out_other_sessions(&dir, &store, fw).await;
}

/// The same on MySQL (MariaDB in CI), on a table of its own.
#[tokio::test]
async fn a_user_logs_out_other_sessions_on_mysql() {
    if std::net::TcpStream::connect("127.0.0.1:3306").is_err() {
        server::ci::skip::<()>("mysql at 127.0.0.1:3306 is unreachable");
        return;
    }
    let dir = TempDir::new("users-mysql");
    let store = format!(
        "tools.sessions.storage_type = 'mysql'\n\
         tools.sessions.storage_url = 'mysql://root@127.0.0.1:3306/test'\n\
         tools.sessions.table = '{}'\n",
        server::temp::unique_table()
    );
    logs_out_other_sessions(&dir, &store, Framework::Axum).await;
}

/// The demo's "log out other sessions" and "everywhere", and `sessions
/// logout --user`, on the store `store` (its config lines).
async fn logs_out_other_sessions(dir: &TempDir, store: &str, fw: Framework) {
    let config = dir.write(
        "site.conf",
        &format!("[/]\ntools.sessions.on = True\n{store}"),
    );
    let conf = config.to_str().unwrap();
    let server = Server::demo_on(&config, fw);
    let mut browsers: Vec<Browser> = (0..3).map(|_| Browser::new(&server)).collect();
    let mut bob = Browser::new(&server);
    for b in &mut browsers {
        b.page().await;
        assert_eq!(b.login("alice").await, 303);
    }
    bob.page().await;
    assert_eq!(bob.login("bob").await, 303);

    let page = browsers[0].page().await;
    assert!(page.contains("<strong id=user>alice</strong>"), "{page}");
    assert_eq!(session_rows(&page), 3, "{page}");
    assert_eq!(page.matches("(this one)").count(), 1);

    // The admin command sees the same three, and only alice's.
    let out = run(&["list", "--user", "alice", "--json", "--config", conf]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(listed.lines().all(|l| l.contains("\"user\":\"alice\"")));

    // "Log out other sessions" from the first browser.
    let (status, _) = browsers[0].send("/logout-others", Some("")).await;
    assert_eq!(status, 303);
    let page = browsers[0].page().await;
    assert!(page.contains("Ended 2 other sessions."), "{page}");
    assert_eq!(session_rows(&page), 1);
    for b in &mut browsers[1..] {
        let page = b.page().await;
        assert!(page.contains("Not logged in."), "{page}");
        assert!(page.contains("id=visits>1<"), "a fresh session: {page}");
    }
    let page = bob.page().await;
    assert!(page.contains("<strong id=user>bob</strong>"), "{page}");

    // `sessions logout --user` ends the one left, and says so; a second
    // run finds none, which is no error.
    let out = run(&["logout", "--user", "alice", "--config", conf]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ended 1 session(s) of alice");
    let out = run(&["logout", "--user", "alice", "--config", conf]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "ended 0 session(s) of alice");
    assert!(browsers[0].page().await.contains("Not logged in."));

    // "Log out everywhere" ends this browser's session too.
    assert_eq!(bob.login("bob").await, 303);
    let (status, _) = bob.send("/logout-everywhere", Some("")).await;
    assert_eq!(status, 303);
    assert!(bob.cookie.is_none(), "the cookie is dropped");
    let out = run(&["list", "--user", "bob", "--json", "--config", conf]);
    assert_eq!(text(&out.stdout), "");
}

/// Every file under `dir`, its path and its bytes, read behind the
/// store's back.
fn files_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// What the demo stores opens no session: after a log-in, with its message
/// for the next page still in the record, no file of the store (records,
/// user index) holds the old id or the new one, in its name or its bytes.
/// And a value the page cannot count (`visits = abc`, through the form)
/// is replaced there, never a 500 on every later page.
async fn the_demo_stores_no_id_and_shows_any_value(fw: Framework) {
    let dir = TempDir::new("demo");
    let config = dir.write(
        "site.conf",
        &format!(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'file'\n\
             tools.sessions.storage_path = '{}/sessions'\n",
            dir.path().display()
        ),
    );
    let server = Server::demo_on(&config, fw);
    let mut b = Browser::new(&server);
    let id = |b: &Browser| {
        b.cookie
            .as_deref()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned()
    };
    b.page().await;
    let old = id(&b);
    assert_eq!(b.login("alice").await, 303);
    let new = id(&b);
    assert_ne!(old, new);
    let files = files_under(&dir.path().join("sessions"));
    let record = format!("session-{}", server::key_of(&new));
    let (_, bytes) = files
        .iter()
        .find(|(path, _)| path.ends_with(&record))
        .expect("the record");
    assert!(String::from_utf8_lossy(bytes).contains("Logged in"));
    for (path, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        for id in [&old, &new] {
            assert!(!path.contains(id.as_str()), "{path}");
            assert!(!text.contains(id.as_str()), "{path} holds an id: {text}");
        }
    }
    assert!(b.page().await.contains("a new id"));

    let (status, _) = b.send("/set", Some("key=visits&value=abc")).await;
    assert_eq!(status, 303);
    assert!(b.page().await.contains("id=visits>1<"));
    assert!(b.page().await.contains("id=visits>2<"));
}

async fn bad_user_names_are_refused_clearly(fw: Framework) {
    let dir = TempDir::new("users");
    let config = dir.write("site.conf", "[/]\ntools.sessions.on = True\n");
    let server = Server::demo_on(&config, fw);
    let mut b = Browser::new(&server);
    let long = "a".repeat(257);
    for (user, says) in [
        ("", "may not be empty"),
        (long.as_str(), "exceeds the limit of 256"),
        ("a%0Ab", "control characters"),
    ] {
        let (status, body) = b.send("/login", Some(&format!("user={user}"))).await;
        assert_eq!(status, 400, "{user:?}: {body}");
        assert!(body.contains(says), "{user:?}: {body}");
    }
    let out = run(&[
        "logout",
        "--user",
        "a\u{1b}b",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("control characters"),
        "{}",
        text(&out.stderr)
    );
}
