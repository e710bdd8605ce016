//! Log-in over HTTP, on every store: `Auth` with an app's own backend
//! (log-in with a new id and the user set, routes that need a user — a
//! redirect for pages, 401 for API clients —, log-out, a changed password
//! that ends the user's other sessions), and CherryPy's `session_auth`
//! tool (login screen, `do_login` back to `from_page`, the error shown
//! again, `do_logout`, per-path `on`).

use sessions_test_support as common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::Form;
use axum::routing::{get, post};
use axum::Router;
use common::app::config;
use common::browser::Browser;
use common::client::serve;
use common::stores::Fixture;
use server_sessions::auth::{Auth, AuthUser, Backend, CurrentUser, SessionAuthLayer};
use server_sessions::{csrf, Config, Session, SessionLayer, UserId};

stores!(
    log_in_require_and_log_out,
    a_changed_password_ends_the_other_sessions,
    cherrypy_session_auth,
);

#[derive(Clone, Debug)]
struct User {
    id: UserId,
    password: String,
}

impl AuthUser for User {
    fn id(&self) -> UserId {
        self.id.clone()
    }
    fn fingerprint(&self) -> &[u8] {
        self.password.as_bytes()
    }
}

/// Users in RAM, name → password, that a test can change.
#[derive(Clone, Default)]
struct Users(Arc<Mutex<HashMap<String, String>>>);

impl Users {
    fn with(name: &str, password: &str) -> Self {
        let users = Users::default();
        users.set(name, password);
        users
    }
    fn set(&self, name: &str, password: &str) {
        self.0.lock().unwrap().insert(name.into(), password.into());
    }
    fn find(&self, name: &str) -> Option<User> {
        let password = self.0.lock().unwrap().get(name).cloned()?;
        Some(User {
            id: UserId::new(name).ok()?,
            password,
        })
    }
}

impl Backend for Users {
    type User = User;
    type Credentials = (String, String);
    type Error = std::convert::Infallible;
    async fn authenticate(
        &self,
        (name, password): (String, String),
    ) -> Result<Option<User>, Self::Error> {
        Ok(self.find(&name).filter(|u| u.password == password))
    }
    async fn get_user(&self, id: &UserId) -> Result<Option<User>, Self::Error> {
        Ok(self.find(id.as_str()))
    }
}

fn app(f: &Fixture, users: Users) -> Router {
    let auth = Auth::new(users);
    let private = Router::new()
        .route(
            "/account",
            get(
                |CurrentUser(user): CurrentUser<User>, s: Session| async move {
                    let listed = s.user_sessions().await?;
                    let current = listed.iter().filter(|l| l.current).count();
                    Ok::<_, server_sessions::Error>(format!(
                        "{} {} {current}",
                        user.id,
                        listed.len()
                    ))
                },
            ),
        )
        .route(
            "/password",
            post({
                let auth = auth.clone();
                move |CurrentUser(user): CurrentUser<User>,
                      s: Session,
                      Form(f): Form<HashMap<String, String>>| async move {
                    auth.backend().set(user.id.as_str(), &f["new"]);
                    let user = auth.backend().find(user.id.as_str()).unwrap();
                    Ok::<_, server_sessions::Error>(
                        auth.password_changed(&s, &user).await?.to_string(),
                    )
                }
            }),
        )
        .layer(auth.require_login("/login"));
    let login = {
        let auth = auth.clone();
        move |s: Session, Form(f): Form<HashMap<String, String>>| async move {
            let creds = (f["name"].clone(), f["password"].clone());
            match auth.authenticate(creds).await? {
                Some(user) => {
                    auth.login(&s, &user).await?;
                    Ok::<_, server_sessions::auth::AuthError<_>>("in")
                }
                None => Ok("wrong"),
            }
        }
    };
    Router::new()
        .merge(private)
        .route("/login", post(login))
        .route(
            "/logout",
            post(|s: Session| async move {
                s.logout().await?;
                Ok::<_, server_sessions::Error>("out")
            }),
        )
        .layer(SessionLayer::new(f.store.clone()).with_config(config()))
}

async fn log_in_require_and_log_out(f: &Fixture) {
    let browser = Browser::new(serve(app(f, Users::with("alice", "pw1"))).await);
    // Anonymous: a page is sent to the log-in page, an API call gets 401.
    let page = browser
        .get_accepting("/account?tab=2", "text/html,*/*")
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(
        page.location.as_deref(),
        Some("/login?next=%2Faccount%3Ftab%3D2")
    );
    assert_eq!(
        browser
            .get_accepting("/account", "application/json")
            .await
            .status,
        401
    );

    assert_eq!(
        browser
            .post("/login", "name=alice&password=nope")
            .await
            .body,
        "wrong"
    );
    let before = browser.cookie("session_id");
    assert_eq!(
        browser.post("/login", "name=alice&password=pw1").await.body,
        "in"
    );
    let after = browser.cookie("session_id");
    assert!(after.is_some());
    assert_ne!(before, after, "log-in gives a new id");
    assert_eq!(browser.get("/account").await.body, "alice 1 1");

    assert_eq!(browser.post("/logout", "").await.body, "out");
    assert_eq!(browser.cookie("session_id"), None);
    assert_eq!(browser.get("/account").await.status, 401);
}

async fn a_changed_password_ends_the_other_sessions(f: &Fixture) {
    let users = Users::with("bob", "old");
    let addr = serve(app(f, users.clone())).await;
    let (phone, laptop, tablet) = (Browser::new(addr), Browser::new(addr), Browser::new(addr));
    for device in [&phone, &laptop, &tablet] {
        assert_eq!(
            device.post("/login", "name=bob&password=old").await.body,
            "in"
        );
    }
    let listed = laptop.get("/account").await.body;
    assert_eq!(listed, "bob 3 1", "three sessions, one of them this one");

    // Changed on the laptop: the two others end now, the laptop stays.
    assert_eq!(laptop.post("/password", "new=new").await.body, "2");
    assert_eq!(laptop.get("/account").await.body, "bob 1 1");
    assert_eq!(phone.get("/account").await.status, 401);

    // Changed behind the app's back (another instance, an admin tool): the
    // fingerprint check ends the session at its next request.
    users.set("bob", "newer");
    assert_eq!(laptop.get("/account").await.status, 401);
    assert_eq!(
        laptop.cookie("session_id"),
        None,
        "logged out: the cookie goes"
    );
    assert_eq!(
        tablet.post("/login", "name=bob&password=new").await.body,
        "wrong"
    );
    assert_eq!(
        tablet.post("/login", "name=bob&password=newer").await.body,
        "in"
    );
    assert_eq!(tablet.get("/account").await.body, "bob 1 1");
}

/// CherryPy's `tools.session_auth`, on for `/admin` only, with the app's
/// own backend and the CSRF check around it.
async fn cherrypy_session_auth(f: &Fixture) {
    let ini = r#"
[/]
tools.sessions.on = True
[/admin]
tools.session_auth.on = True
"#;
    // The layer is given the fixture's store; the file sets the rest.
    let config = Config::from_ini_str(ini, "test.ini").unwrap();
    let app = Router::new()
        .route("/", get(|| async { "public" }))
        .route(
            "/admin/page",
            get(|s: Session| async move {
                let name: Option<String> = s.get("username").await?;
                Ok::<_, server_sessions::Error>(format!(
                    "admin page for {}",
                    name.unwrap_or_default()
                ))
            }),
        )
        .layer(SessionAuthLayer::new(Auth::new(Users::with("carol", "pw"))))
        .layer(csrf::CsrfLayer::new())
        .layer(SessionLayer::new(f.store.clone()).with_file_config(config));
    let browser = Browser::new(serve(app).await);
    assert_eq!(browser.get("/").await.body, "public");

    // Anonymous on a protected path: the login screen, going back here.
    let screen = browser.get("/admin/page?x=1").await;
    assert_eq!(screen.status, 200);
    assert!(
        screen.body.contains(r#"action="/admin/page/do_login""#),
        "{}",
        screen.body
    );
    assert!(
        screen
            .body
            .contains(r#"name=from_page value="/admin/page?x=1""#),
        "{}",
        screen.body
    );
    let token = field(&screen.body, "csrf_token");

    // Without the token the CSRF check refuses the log-in.
    assert_eq!(
        browser
            .post("/admin/do_login", "username=carol&password=pw")
            .await
            .status,
        403
    );
    // do_login needs POST.
    let get = browser.get("/admin/do_login").await;
    assert_eq!(get.status, 405);
    // A wrong password: the screen again, with the error and the name.
    let wrong = browser
        .post(
            "/admin/do_login",
            &format!("username=carol&password=no&from_page=/admin/page&csrf_token={token}"),
        )
        .await;
    assert_eq!(wrong.status, 200);
    assert!(
        wrong.body.contains("Incorrect username or password."),
        "{}",
        wrong.body
    );
    assert!(wrong.body.contains(r#"value="carol""#));
    // Right: back to from_page, under a new id.
    let before = browser.cookie("session_id");
    let ok = browser
        .post(
            "/admin/page/do_login",
            &format!("username=carol&password=pw&from_page=/admin/page%3Fx%3D1&csrf_token={token}"),
        )
        .await;
    assert_eq!(
        (ok.status, ok.location.as_deref()),
        (303, Some("/admin/page?x=1"))
    );
    assert_ne!(browser.cookie("session_id"), before);
    assert_eq!(
        browser.get("/admin/page").await.body,
        "admin page for carol"
    );

    // The same session in a second browser (a copied cookie).
    let other = browser.copy();
    let screen = other.get("/admin/page").await;
    assert_eq!(screen.status, 200, "still logged in on the copy");

    // do_logout: the session ends, the screen comes back; a from_page
    // off the site is not followed.
    let token = field(&browser.get("/admin/login_screen").await.body, "csrf_token");
    let out = browser
        .post(
            "/admin/do_logout",
            &format!("from_page=https://evil.example/&csrf_token={token}"),
        )
        .await;
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/")));
    assert!(browser.get("/admin/page").await.body.contains("/do_login"));
    assert!(
        other.get("/admin/page").await.body.contains("/do_login"),
        "the copy is logged out too"
    );
}

/// The value of a hidden field of a page.
fn field(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name={name} value=\""))
        .unwrap_or_else(|| panic!("no {name} in {page}"));
    let rest = &page[at + name.len() + 13..];
    rest[..rest.find('"').unwrap()].to_owned()
}
