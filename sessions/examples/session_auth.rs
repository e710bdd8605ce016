//! CherryPy's `tools.session_auth`, configured as in CherryPy: a config
//! file turns it on for `/admin`, users come from an htpasswd file of
//! bcrypt entries (`htpasswd -B`). Anonymous visitors of `/admin/…` get
//! the log-in screen; `…/do_login` returns them where they were going.
//!
//! ```text
//! htpasswd -B -c /tmp/users.htpasswd alice
//! cargo run --example session_auth -- /tmp/users.htpasswd
//! # open http://127.0.0.1:8080/admin/
//! ```

use axum::routing::get;
use axum::Router;
use server_sessions::auth::SessionAuthLayer;
use server_sessions::csrf::CsrfLayer;
use server_sessions::store::MemoryStore;
use server_sessions::{Config, Session, SessionLayer};

fn app(htpasswd: &str) -> Router {
    let config = Config::from_ini_str(
        &format!(
            "[/]\ntools.sessions.on = True\n\n\
             [/admin]\ntools.session_auth.on = True\n\
             tools.session_auth.htpasswd = {htpasswd:?}\n"
        ),
        "site.conf",
    )
    .expect("a valid config");
    Router::new()
        .route("/", get(|| async { "public page; try /admin/" }))
        .route(
            "/admin/",
            get(|session: Session| async move {
                // CherryPy's session key for the user name, and our user.
                let name: Option<String> = session.get("username").await?;
                let user = session.user().await?;
                Ok::<_, server_sessions::Error>(format!("admin for {name:?} ({user:?})"))
            }),
        )
        // The tool inside the CSRF check (do_login needs the form's token),
        // both inside the sessions.
        .layer(SessionAuthLayer::htpasswd())
        .layer(CsrfLayer::new())
        .layer(SessionLayer::new(MemoryStore::new()).with_file_config(config))
}

#[tokio::main]
async fn main() {
    let file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "users.htpasswd".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
        .await
        .unwrap();
    println!("http://{}/admin/", listener.local_addr().unwrap());
    axum::serve(listener, app(&file)).await.unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use server_sessions::testing::TestClient;

    #[tokio::test]
    async fn log_in_through_the_screen() {
        let dir = std::env::temp_dir().join(format!("session-auth-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users.htpasswd");
        // As `htpasswd -B` writes it (cost 4 keeps the test quick).
        let hash = bcrypt::hash("wonderland", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        std::fs::write(&file, format!("alice:{hash}\n")).unwrap();

        let mut browser = TestClient::new(app(file.to_str().unwrap()));
        assert_eq!(browser.get("/").await.text(), "public page; try /admin/");
        let screen = browser.get("/admin/").await.text();
        assert!(screen.contains(r#"action="/admin/do_login""#), "{screen}");
        let at = screen.find("name=csrf_token value=\"").unwrap() + 23;
        let token = &screen[at..at + 40];
        let wrong = browser
            .post_form(
                "/admin/do_login",
                &format!("username=alice&password=x&csrf_token={token}"),
            )
            .await;
        assert!(wrong.text().contains("Incorrect username or password."));
        let ok = browser
            .post_form(
                "/admin/do_login",
                &format!("username=alice&password=wonderland&from_page=/admin/&csrf_token={token}"),
            )
            .await;
        assert_eq!(ok.header("location"), Some("/admin/"));
        let page = browser.get("/admin/").await.text();
        assert_eq!(page, r#"admin for Some("alice") (Some("alice"))"#);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
