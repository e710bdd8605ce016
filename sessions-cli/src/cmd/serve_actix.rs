//! `sessions serve --framework actix`: the same apps and sessions through
//! actix-web and `server-sessions-actix`.

use std::sync::Arc;

use actix_web::dev::Service as _;
use actix_web::App;
use server_sessions::store::SessionAdmin;
use server_sessions::SessionLayer;
use server_sessions_actix::SessionMiddleware;

use super::serve::App as Which;
use crate::apps;

/// Serves `which` on `listener` until Ctrl-C or SIGTERM (actix-web's own
/// signal handling: in-flight requests then finish and save).
pub(super) async fn run(
    listener: std::net::TcpListener,
    which: Which,
    layer: SessionLayer,
    store: Arc<dyn SessionAdmin>,
) -> anyhow::Result<()> {
    let sessions = SessionMiddleware::new(layer);
    actix_web::HttpServer::new(move || {
        let app = App::new().wrap(sessions.clone()).wrap_fn(|req, srv| {
            // One line per request, as the axum app logs it.
            let started = std::time::Instant::now();
            let (method, path) = (req.method().clone(), req.path().to_owned());
            let response = srv.call(req);
            async move {
                let response = response.await?;
                tracing::info!(
                    %method,
                    path,
                    status = response.status().as_u16(),
                    ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
                    "request"
                );
                Ok(response)
            }
        });
        match which {
            Which::Demo => app.configure(apps::demo_actix::routes),
            Which::Conformance => app.configure(apps::conformance_actix::routes(store.clone())),
        }
    })
    .listen(listener)?
    .run()
    .await?;
    Ok(())
}
