//! A small shop with accounts: log-in against the app's own users
//! (`auth::Auth`), pages that need a user (`require_login`), a cart kept
//! in the session, flash messages after each form, CSRF tokens in every
//! form, and "your devices": the user's sessions listed (this one marked)
//! with "log out my other devices" (`user_sessions`,
//! `logout_other_sessions`). Its tests drive it with `testing::TestClient`.
//!
//! ```text
//! cargo run --example shop
//! # open http://127.0.0.1:8080/ and log in as ann / pass
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::Form;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use server_sessions::auth::{Auth, AuthUser, Backend, CurrentUser};
use server_sessions::flash::Flash;
use server_sessions::store::MemoryStore;
use server_sessions::{csrf, Session, SessionLayer, UserId};

/// A user of the shop. A real shop keeps a password hash (bcrypt, argon2)
/// and compares with it; the hash is then also the fingerprint, so that a
/// changed password ends the user's other sessions.
#[derive(Clone, Debug)]
struct Customer {
    id: UserId,
    password_hash: String,
}

impl AuthUser for Customer {
    fn id(&self) -> UserId {
        self.id.clone()
    }
    fn fingerprint(&self) -> &[u8] {
        self.password_hash.as_bytes()
    }
}

/// The shop's customers: a database in a real app.
struct Customers(HashMap<&'static str, &'static str>);

impl Backend for Customers {
    type User = Customer;
    type Credentials = (String, String);
    type Error = std::convert::Infallible;

    async fn authenticate(
        &self,
        (name, password): (String, String),
    ) -> std::result::Result<Option<Customer>, Self::Error> {
        // Plain-text comparison for the example only.
        let ok = self.0.get(name.as_str()) == Some(&password.as_str());
        Ok(ok.then(|| customer(&name, &password)).flatten())
    }

    async fn get_user(&self, id: &UserId) -> std::result::Result<Option<Customer>, Self::Error> {
        Ok(self
            .0
            .get(id.as_str())
            .and_then(|p| customer(id.as_str(), p)))
    }
}

fn customer(name: &str, password: &str) -> Option<Customer> {
    Some(Customer {
        id: UserId::new(name).ok()?,
        password_hash: format!("plain:{password}"),
    })
}

type Result<T> = std::result::Result<T, server_sessions::Error>;

/// The page's messages and the hidden CSRF field every form carries.
async fn chrome(session: &Session) -> Result<(String, String)> {
    let mut messages = String::new();
    for m in Flash::from(session.clone()).take().await? {
        let _ = write!(messages, "<p class={}>{}</p>", m.level, m.text);
    }
    let token = csrf::token(session).await?;
    Ok((
        messages,
        format!("<input type=hidden name={} value={token}>", csrf::FIELD),
    ))
}

async fn home(session: Session) -> Result<Html<String>> {
    let (messages, field) = chrome(&session).await?;
    let cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    let who = match session.user().await? {
        Some(user) => format!("<p>Hello {user}. <a href=/devices>Your devices</a></p>"),
        None => format!(
            "<form method=post action=/login>{field}<input name=name><input name=password type=password>\
             <button>Log in</button></form>"
        ),
    };
    Ok(Html(format!(
        "{messages}{who}<p>Cart: {}</p><form method=post action=/cart>{field}\
         <input name=item><button>Add</button></form>",
        cart.join(", ")
    )))
}

async fn add(
    flash: Flash,
    session: Session,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Redirect> {
    let item = form.get("item").map(|s| s.trim()).unwrap_or_default();
    let mut cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    cart.push(item.to_owned());
    session.insert("cart", &cart).await?;
    flash.success(format!("{item} is in your cart.")).await?;
    Ok(Redirect::to("/"))
}

async fn login(
    auth: Auth<Customers>,
    session: Session,
    Form(form): Form<HashMap<String, String>>,
) -> std::result::Result<Response, server_sessions::auth::AuthError<std::convert::Infallible>> {
    let name = form.get("name").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let flash = Flash::from(session.clone());
    match auth.authenticate((name, password)).await? {
        // A new id, the user set, a new CSRF token; the cart stays.
        Some(customer) => {
            auth.login(&session, &customer).await?;
            flash.success("Welcome back.").await?;
        }
        None => flash.error("Wrong name or password.").await?,
    }
    Ok(Redirect::to("/").into_response())
}

/// Every session of the logged-in customer, this one marked.
async fn devices(CurrentUser(me): CurrentUser<Customer>, session: Session) -> Result<Html<String>> {
    let (messages, field) = chrome(&session).await?;
    let mut rows = String::new();
    for s in session.user_sessions().await? {
        let this = if s.current { " (this device)" } else { "" };
        let _ = write!(rows, "<li>{}{this}</li>", s.key.short());
    }
    Ok(Html(format!(
        "{messages}<h1>{}'s devices</h1><ul>{rows}</ul>\
         <form method=post action=/devices/logout-others>{field}<button>Log out my other devices</button></form>",
        me.id
    )))
}

async fn logout_others(flash: Flash, session: Session) -> Result<Redirect> {
    let ended = session.logout_other_sessions().await?;
    flash
        .info(format!("{ended} other device(s) logged out."))
        .await?;
    Ok(Redirect::to("/devices"))
}

fn app() -> Router {
    let auth = Auth::new(Customers(HashMap::from([("ann", "pass")])));
    let account = Router::new()
        .route("/devices", get(devices))
        .route("/devices/logout-others", post(logout_others))
        .layer(auth.require_login("/"));
    Router::new()
        .merge(account)
        .route("/", get(home))
        .route("/cart", post(add))
        .route(
            "/login",
            post(move |s: Session, f: Form<HashMap<String, String>>| login(auth.clone(), s, f)),
        )
        .layer(csrf::CsrfLayer::new())
        .layer(SessionLayer::new(MemoryStore::new()))
}

#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
        .await
        .unwrap();
    println!("http://{}/", listener.local_addr().unwrap());
    axum::serve(listener, app()).await.unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use server_sessions::testing::{TestClient, TestResponse};

    fn token(page: &TestResponse) -> String {
        let text = page.text();
        let at = text.find("name=csrf_token value=").unwrap() + 22;
        text[at..at + 40].to_owned()
    }

    #[tokio::test]
    async fn shop_with_devices() {
        let mut laptop = TestClient::new(app());
        let t = token(&laptop.get("/").await);
        assert_eq!(
            laptop.post_form("/cart", "item=tea").await.status,
            403,
            "no token"
        );
        assert_eq!(
            laptop
                .post_form("/cart", &format!("item=tea&csrf_token={t}"))
                .await
                .status,
            303
        );
        let page = laptop.get("/").await.text();
        assert!(
            page.contains("tea is in your cart.") && page.contains("Cart: tea"),
            "{page}"
        );
        assert!(
            !laptop.get("/").await.text().contains("in your cart."),
            "shown once"
        );

        laptop
            .post_form("/login", &format!("name=ann&password=pass&csrf_token={t}"))
            .await;
        let home = laptop.get("/").await;
        assert!(home.text().contains("Hello ann") && home.text().contains("Cart: tea"));
        let mut phone = laptop.fresh();
        let pt = token(&phone.get("/").await);
        phone
            .post_form("/login", &format!("name=ann&password=pass&csrf_token={pt}"))
            .await;

        let devices = laptop.get("/devices").await.text();
        assert_eq!(devices.matches("<li>").count(), 2, "{devices}");
        assert_eq!(devices.matches("(this device)").count(), 1);
        let t = token(&laptop.get("/").await);
        laptop
            .post_form("/devices/logout-others", &format!("csrf_token={t}"))
            .await;
        assert!(laptop
            .get("/devices")
            .await
            .text()
            .contains("1 other device(s) logged out."));
        // The phone is logged out: sent to the log-in page.
        let refused = phone.request(
            http::Request::get("/devices")
                .header("accept", "text/html")
                .body(axum::body::Body::empty())
                .unwrap(),
        );
        assert_eq!(refused.await.status, 303);
    }
}
