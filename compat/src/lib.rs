//! Our tower layer in other frameworks, unchanged: the example
//! (`examples/salvo.rs`) and the tests (`tests/salvo.rs`) show it in
//! salvo through its `tower-compat` feature. This library holds what both
//! share: the salvo app.
//!
//! poem is not here: its `TowerLayerCompatExt` hands the layer poem's own
//! `Request` and takes back poem's `IntoResponse`, where our layer is a
//! tower `Service` of `http::Request` answering `http::Response`, so the
//! layer cannot wrap a poem endpoint unchanged (docs/frameworks.md).

use salvo::http::ReqBody;
use salvo::prelude::*;
use server_sessions::{Session, SessionLayer};

/// The session the layer put into the request, as a salvo handler takes
/// it: salvo keeps the request's extensions.
fn session(req: &Request) -> Option<Session> {
    req.extensions().get::<Session>().cloned()
}

/// A hit counter: read, add one, write back. Under the layer's lock, no
/// concurrent hit of one visitor is lost.
#[handler]
async fn count(req: &mut Request, res: &mut Response) {
    let Some(session) = session(req) else {
        res.status_code(StatusCode::INTERNAL_SERVER_ERROR);
        return;
    };
    let counted = async {
        let n: u64 = session.get("counter").await?.unwrap_or(0) + 1;
        session.insert("counter", n).await?;
        Ok::<_, server_sessions::Error>(n)
    };
    match counted.await {
        Ok(n) => res.render(Text::Plain(n.to_string())),
        // The layer answers the failure itself (503 with Retry-After for
        // a busy lock or a store that is down): the handler only stops.
        Err(e) => {
            let status = StatusCode::from_u16(e.status().as_u16());
            res.status_code(status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        }
    }
}

/// Uses the session, then keeps it (and its lock) for half a second, as a
/// slow handler does.
#[handler]
async fn hold(req: &mut Request, res: &mut Response) {
    if let Some(session) = session(req) {
        if session.insert("held", true).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            res.render(Text::Plain("held"));
        }
    }
}

/// The app: the layer, converted by salvo's `compat()`, as a hoop of the
/// router; `/` counts, `/hold` holds the session a while.
pub fn router(layer: SessionLayer) -> Router {
    Router::new()
        .hoop(layer.compat::<ReqBody>())
        .get(count)
        .push(Router::with_path("hold").get(hold))
}
