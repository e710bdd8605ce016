//! The demo site in a real browser: headless Chromium driven through
//! WebDriver (chromedriver), against the real `sessions` binary.
//!
//! `UPDATE_SCREENSHOT=1 cargo test -p server-sessions-cli --test integration browser::` also
//! writes the README's picture, `docs/demo.png`.

use crate::server;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use server::ci::skip;
use server::client::{free_port, wait_for_port};
use server::temp::TempDir;
use server::Server;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Option<Driver> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            return skip(
                "chromium / chromium-driver are not installed (Debian's chromium and chromium-driver)",
            );
        }
        // A free port can be taken by another test's server before
        // chromedriver binds it; chromedriver then exits at once, and the
        // port answers for the other server. So the port counts as
        // chromedriver's only while chromedriver still runs after it
        // answered, and another port is tried when it exited.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver");
            wait_for_port(port, Duration::from_secs(20), "chromedriver");
            std::thread::sleep(Duration::from_millis(200));
            match child.try_wait() {
                Ok(None) => return Some(Driver { child, port }),
                Ok(Some(_)) => continue,
                Err(e) => panic!("chromedriver: {e}"),
            }
        }
        panic!("chromedriver exited at start five times (each port taken?)");
    }

    async fn browser(&self, profile: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-quic", "--window-size=900,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clicks a button that submits a form, and waits until the browser has
/// left the page (a click returns before the navigation it starts is done).
async fn submit(c: &Client, id: &str) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The old page's root goes stale once the new page replaces it.
    while old.tag_name().await.is_ok() {
        assert!(Instant::now() < deadline, "clicking #{id} did not navigate");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("body"))
        .await
        .unwrap();
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn session_cookie(c: &Client) -> Option<fantoccini::cookies::Cookie<'static>> {
    c.get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name() == "session_id")
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

#[tokio::test]
async fn the_demo_in_a_real_browser() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let dir = TempDir::new("browser");
    let server = Server::start(&["serve", "--bind", "127.0.0.1:0"]);
    let c = driver.browser(&dir.path().join("profile")).await;
    let result = async {
        // The counter goes up across page loads.
        c.goto(&url(server.addr, "/")).await.unwrap();
        assert_eq!(text(&c, "#visits").await, "1");
        c.refresh().await.unwrap();
        assert_eq!(text(&c, "#visits").await, "2");
        let cookie = session_cookie(&c).await.expect("a session cookie");
        assert!(cookie.http_only().unwrap_or(false));
        assert!(
            cookie.expires().is_some(),
            "a persistent cookie has an expiry"
        );

        // A key set in the form survives a reload.
        c.find(Locator::Css("form[action=\"/set\"] input[name=key]"))
            .await
            .unwrap()
            .send_keys("color")
            .await
            .unwrap();
        c.find(Locator::Css("form[action=\"/set\"] input[name=value]"))
            .await
            .unwrap()
            .send_keys("teal")
            .await
            .unwrap();
        submit(&c, "set").await;
        c.refresh().await.unwrap();
        let data = text(&c, "#data").await;
        assert!(data.contains("color") && data.contains("teal"), "{data}");

        // Log in: a new id, the same data, and the session is the user's.
        let before = text(&c, "#session-id").await;
        c.find(Locator::Css("form[action=\"/login\"] input[name=user]"))
            .await
            .unwrap()
            .send_keys("alice")
            .await
            .unwrap();
        submit(&c, "login").await;
        assert_eq!(text(&c, "#user").await, "alice");
        let yours = text(&c, "#your-sessions").await;
        assert!(yours.contains("(this one)"), "{yours}");
        let after = text(&c, "#session-id").await;
        assert_ne!(before, after);
        assert_eq!(after.len(), 40);
        let flash = text(&c, ".flash").await;
        assert!(flash.contains("a new id"), "{flash}");
        assert!(
            !flash.contains(&before) && !flash.contains(&after),
            "{flash}"
        );
        assert!(
            text(&c, "#data").await.contains("teal"),
            "data lost at log in"
        );
        assert_eq!(session_cookie(&c).await.unwrap().value(), after);

        if std::env::var("UPDATE_SCREENSHOT").as_deref() == Ok("1") {
            let png = c.screenshot().await.unwrap();
            let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/demo.png");
            std::fs::create_dir_all(out.parent().unwrap()).unwrap();
            std::fs::write(&out, png).unwrap();
            eprintln!("wrote {}", out.display());
        }

        // Log out: the browser is left without the cookie.
        submit(&c, "logout").await;
        assert!(c.current_url().await.unwrap().path().ends_with("/goodbye"));
        assert!(
            session_cookie(&c).await.is_none(),
            "cookie left after log out"
        );
        // And the next visit starts over.
        c.goto(&url(server.addr, "/")).await.unwrap();
        assert_eq!(text(&c, "#visits").await, "1");
    }
    .await;
    c.close().await.unwrap();
    result
}

#[tokio::test]
async fn a_browser_session_cookie_has_no_expiry() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let dir = TempDir::new("browser-nonpersistent");
    let config = dir.write(
        "site.conf",
        "[/]\ntools.sessions.on = True\ntools.sessions.persistent = False\n",
    );
    let server = Server::demo(&config);
    let c = driver.browser(&dir.path().join("profile")).await;
    c.goto(&url(server.addr, "/")).await.unwrap();
    let cookie = session_cookie(&c).await;
    let visits = text(&c, "#visits").await;
    c.close().await.unwrap();
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.expires().is_none(), "{cookie:?}");
    assert!(cookie.max_age().is_none(), "{cookie:?}");
    assert_eq!(visits, "1");
}

/// The strongest cookie a browser offers: `__Host-session`, with `secure`,
/// `path = "/"` and no domain. Chromium keeps it (it drops a `__Host-`
/// cookie that breaks those rules, which is why the config refuses such a
/// name at load), and the session goes on across page loads.
#[tokio::test]
async fn a_host_prefixed_cookie_is_kept_by_the_browser() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let dir = TempDir::new("browser-host-prefix");
    // Loopback is a secure context, so a `Secure` cookie is kept over
    // plain HTTP there.
    let config = dir.write(
        "site.conf",
        "[/]\ntools.sessions.on = True\ntools.sessions.name = \"__Host-session\"\n\
         tools.sessions.secure = True\n",
    );
    let server = Server::demo(&config);
    let c = driver.browser(&dir.path().join("profile")).await;
    c.goto(&url(server.addr, "/")).await.unwrap();
    let first = text(&c, "#visits").await;
    c.refresh().await.unwrap();
    let second = text(&c, "#visits").await;
    let cookies = c.get_all_cookies().await.unwrap();
    c.close().await.unwrap();
    let cookie = cookies
        .iter()
        .find(|k| k.name() == "__Host-session")
        .unwrap_or_else(|| panic!("no __Host-session cookie kept: {cookies:?}"));
    assert_eq!(cookie.secure(), Some(true), "{cookie:?}");
    assert_eq!(cookie.path(), Some("/"), "{cookie:?}");
    assert_eq!((first.as_str(), second.as_str()), ("1", "2"));
}

/// A `__Host-` name with settings that break its rules is refused when
/// the server starts, naming the setting: never a server whose every
/// cookie the browser drops.
#[test]
fn a_host_prefixed_cookie_that_breaks_the_rules_is_refused_at_start() {
    let dir = TempDir::new("host-prefix-refused");
    let config = dir.write(
        "site.conf",
        "[/]\ntools.sessions.on = True\ntools.sessions.name = \"__Host-session\"\n\
         tools.sessions.secure = True\ntools.sessions.domain = \"example.com\"\n",
    );
    let out = server::run(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = server::text(&out.stderr);
    assert!(
        err.contains("tools.sessions.domain") && err.contains("__Host-session"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
