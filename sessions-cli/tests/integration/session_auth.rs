//! CherryPy's `tools.session_auth` through the `sessions` binary, over
//! HTTP, with users in an htpasswd file that `htpasswd -B` wrote: the
//! demo protected on any path (login screen with the CSRF token, a wrong
//! password shown again, back to `from_page`, `do_logout`, a password
//! changed in the file ending the session), the conformance app behind
//! it, and a config that cannot work refused at start.

use crate::server;

use std::path::{Path, PathBuf};
use std::process::Command;

use server::temp::TempDir;
use server::{cherrypy_config, Server};

use sessions_test_support::browser::Browser;

/// `htpasswd -B -b [-c] FILE USER PASSWORD`; `None` (skip) where the tool
/// is missing outside CI (.ci/run installs apache2-utils).
fn htpasswd(file: &Path, user: &str, password: &str) -> Option<()> {
    let mut cmd = Command::new("htpasswd");
    cmd.arg("-B").arg("-b");
    if !file.exists() {
        cmd.arg("-c");
    }
    match cmd.arg(file).arg(user).arg(password).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(())
        }
        Err(e) => server::ci::skip(format!("htpasswd (apache2-utils) is not available: {e}")),
    }
}

fn users(dir: &TempDir) -> Option<PathBuf> {
    let file = dir.path().join("users.htpasswd");
    htpasswd(&file, "alice", "wonder")?;
    htpasswd(&file, "bob", "builder")?;
    Some(file)
}

/// The hidden field `name` of a page.
fn field(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name={name} value=\""))
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + name.len()
        + 13;
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn the_demo_behind_session_auth() {
    let dir = TempDir::new("session-auth");
    let Some(file) = users(&dir) else { return };
    let config = dir.write(
        "site.conf",
        &format!(
            "[/]\ntools.sessions.on = True\n\n[/goodbye]\ntools.session_auth.on = True\n\
             tools.session_auth.htpasswd = '{}'\n",
            file.display()
        ),
    );
    let server = Server::demo(&config);
    let browser = Browser::new(server.addr);

    // Unprotected: the demo page itself.
    assert!(browser
        .get("/")
        .await
        .body
        .contains("Visits in this session"));
    // Protected: the login screen, posting under the page, with a token.
    let screen = browser.get("/goodbye").await;
    assert_eq!(screen.status, 200);
    assert!(
        screen.body.contains(r#"action="/goodbye/do_login""#),
        "{}",
        screen.body
    );
    assert_eq!(field(&screen.body, "from_page"), "/goodbye");
    let token = field(&screen.body, "csrf_token");
    assert_eq!(token.len(), 40);

    // The demo's CSRF check covers do_login.
    let no_token = browser
        .post("/goodbye/do_login", "username=alice&password=wonder")
        .await;
    assert_eq!(no_token.status, 403);
    let wrong = browser
        .post(
            "/goodbye/do_login",
            &format!("username=alice&password=nope&from_page=/goodbye&csrf_token={token}"),
        )
        .await;
    assert_eq!(wrong.status, 200);
    assert!(
        wrong.body.contains("Incorrect username or password."),
        "{}",
        wrong.body
    );
    let before = browser.cookie("session_id").unwrap();
    let ok = browser
        .post(
            "/goodbye/do_login",
            &format!("username=alice&password=wonder&from_page=/goodbye&csrf_token={token}"),
        )
        .await;
    assert_eq!((ok.status, ok.location.as_deref()), (303, Some("/goodbye")));
    assert_ne!(
        browser.cookie("session_id").unwrap(),
        before,
        "a new id at log-in"
    );
    assert!(
        browser.get("/goodbye").await.body.contains("Logged out"),
        "the page itself now"
    );
    // The session is tied to the user: the demo page shows it.
    let page = browser.get("/").await.body;
    assert!(page.contains("<strong id=user>alice</strong>"), "{page}");
    // The token changed at log-in: the old one no longer posts.
    let stale = browser
        .post("/set", &format!("key=a&value=b&csrf_token={token}"))
        .await;
    assert_eq!(stale.status, 403);
    let fresh = field(&page, "csrf_token");
    assert_ne!(fresh, token);
    assert_eq!(
        browser
            .post("/set", &format!("key=a&value=b&csrf_token={fresh}"))
            .await
            .status,
        303
    );

    // A second device, then a password change in the file: both sessions
    // end at their next request.
    let phone = browser.stranger();
    let token = field(&phone.get("/goodbye").await.body, "csrf_token");
    let form = format!("username=alice&password=wonder&csrf_token={token}");
    assert_eq!(phone.post("/goodbye/do_login", &form).await.status, 303);
    assert!(phone.get("/goodbye").await.body.contains("Logged out"));
    htpasswd(&file, "alice", "changed").unwrap();
    let again = phone.get("/goodbye").await.body;
    assert!(again.contains("Please log in again."), "{again}");
    assert!(
        browser.get("/goodbye").await.body.contains("action="),
        "the first device too"
    );

    // bob logs in and out with do_logout.
    let token = field(&browser.get("/goodbye").await.body, "csrf_token");
    let form = format!("username=bob&password=builder&csrf_token={token}");
    assert_eq!(browser.post("/goodbye/do_login", &form).await.status, 303);
    let page = browser.get("/").await.body;
    assert!(page.contains("<strong id=user>bob</strong>"));
    let token = field(&page, "csrf_token");
    let out = browser
        .post(
            "/goodbye/do_logout",
            &format!("from_page=/&csrf_token={token}"),
        )
        .await;
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/")));
    assert_eq!(browser.cookie("session_id"), None, "the cookie is dropped");
    assert!(browser.get("/goodbye").await.body.contains("action="));
}

#[tokio::test]
async fn the_conformance_app_behind_session_auth() {
    let dir = TempDir::new("session-auth-cp");
    let Some(file) = users(&dir) else { return };
    let extra = format!(
        "tools.session_auth.on = True\ntools.session_auth.htpasswd = '{}'\n",
        file.display()
    );
    let config = dir.write("site.conf", &cherrypy_config(&extra));
    let server = Server::conformance(&config);
    let browser = Browser::new(server.addr);
    let screen = browser.get("/").await;
    assert!(
        screen.body.contains(r#"action="/do_login""#),
        "{}",
        screen.body
    );
    // do_login and do_logout need POST, as in CherryPy.
    let get = browser.get("/do_login").await;
    assert_eq!(get.status, 405);
    let ok = browser
        .post("/do_login", "username=bob&password=builder&from_page=/")
        .await;
    assert_eq!((ok.status, ok.location.as_deref()), (303, Some("/")));
    // CherryPy's counter, as its scenarios expect, now for bob; the login
    // screen's token is kept in the session, beside the counter.
    assert_eq!(browser.get("/").await.body, "1");
    assert_eq!(browser.get("/").await.body, "2");
    let data = browser.get("/data").await.body;
    assert!(
        data.contains(r#""username":"bob""#),
        "CherryPy's session key: {data}"
    );
    let out = browser.post("/do_logout", "from_page=/").await;
    assert_eq!(out.status, 303);
    assert!(browser.get("/").await.body.contains("Log in"));
}

#[test]
fn session_auth_without_users_is_refused_at_start() {
    let dir = TempDir::new("session-auth-bad");
    let serve = |config: &Path| {
        Command::new(env!("CARGO_BIN_EXE_sessions"))
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap()
    };
    let no_file = dir.write(
        "a.conf",
        "[/]\ntools.sessions.on = True\ntools.session_auth.on = True\n",
    );
    let out = serve(&no_file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tools.session_auth.htpasswd"), "{err}");

    let missing = dir.write(
        "b.conf",
        "[/]\ntools.sessions.on = True\ntools.session_auth.on = True\n\
         tools.session_auth.htpasswd = '/nonexistent/users'\n",
    );
    let err = String::from_utf8_lossy(&serve(&missing).stderr).into_owned();
    assert!(err.contains("/nonexistent/users"), "{err}");

    let unknown = dir.write(
        "c.conf",
        "[/]\ntools.sessions.on = True\ntools.session_auth.colour = 'red'\n",
    );
    let err = String::from_utf8_lossy(&serve(&unknown).stderr).into_owned();
    assert!(
        err.contains("c.conf:3") && err.contains("unknown session_auth key"),
        "{err}"
    );
}
