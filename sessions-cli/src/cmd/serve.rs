//! `sessions serve`: run an app with sessions from a config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use server_sessions::auth::SessionAuthLayer;
use server_sessions::csrf::CsrfLayer;
use server_sessions::{Config, SessionLayer};

use crate::apps;

/// Which app to serve.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum App {
    /// A page that shows what sessions do.
    Demo,
    /// CherryPy's session test app (`cherrypy/test/test_session.py`).
    Conformance,
}

/// Which web framework serves it: the same sessions either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Framework {
    /// axum, through the tower layer.
    Axum,
    /// actix-web, through `server-sessions-actix`.
    Actix,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A config file: CherryPy INI, or TOML if it ends in `.toml`.
    /// Without one: sessions on, RAM store, 127.0.0.1:8080.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The address to listen on (overrides the config's server.socket_*).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// The app to serve.
    #[arg(long, value_enum, default_value = "demo")]
    app: App,
    /// The web framework to serve it with.
    #[arg(long, value_enum, default_value = "axum")]
    framework: Framework,
    /// Serve the sessions' metrics (store call latency, lock timeouts,
    /// store errors, sessions created and expired) in Prometheus' text
    /// format on this address, at any path (`/metrics`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(addr) = args.metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
    }
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let addr = match args.bind {
        Some(addr) => addr,
        None => {
            let host = config.server.host.as_deref().unwrap_or("127.0.0.1");
            let port = config.server.port.unwrap_or(8080);
            format!("{host}:{port}")
                .parse()
                .with_context(|| format!("server.socket_host {host:?} is not an IP address"))?
        }
    };
    check_session_auth(&config)?;
    if args.framework == Framework::Actix && config.sections().any(|(_, s)| s.auth.on) {
        // The log-in tool and the CSRF check are tower layers.
        anyhow::bail!(
            "tools.session_auth is served through axum only: leave out --framework actix"
        );
    }
    let storage = config.storage().clone();
    let store = server_sessions::store::open(&config)
        .await
        .with_context(|| format!("cannot open the {} store", storage.kind.as_str()))?;
    let layer = SessionLayer::from_arc(store.clone()).with_file_config(config);
    let layer = match args.app {
        App::Demo => layer.on_event(log_event),
        App::Conformance => layer,
    };
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    // Scripts and tests read this line to find the port.
    println!(
        "serving {:?} on http://{local}/ with the {} store",
        args.app,
        storage.kind.as_str()
    );
    match args.framework {
        Framework::Axum => {
            // CherryPy's log-in tool acts where a path says
            // `tools.session_auth.on`, inside the sessions; the demo's CSRF
            // check sits around it, so that `do_login` needs the token too.
            let app = match args.app {
                App::Demo => apps::demo::router()
                    .layer(SessionAuthLayer::htpasswd())
                    .layer(CsrfLayer::new()),
                App::Conformance => {
                    apps::conformance::router(store).layer(SessionAuthLayer::htpasswd())
                }
            };
            let app = app
                .layer(layer)
                .layer(axum::middleware::from_fn(log_request));
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown())
                .await?;
        }
        Framework::Actix => super::serve_actix::run(listener, args.app, layer, store).await?,
    }
    Ok(())
}

/// A path with `tools.session_auth.on` needs users to check: here, an
/// htpasswd file (`tools.session_auth.htpasswd`) that can be read now, so
/// that a mistake stops the start rather than every log-in.
fn check_session_auth(config: &Config) -> anyhow::Result<()> {
    for (path, section) in config.sections() {
        let auth = &section.auth;
        if !auth.on {
            continue;
        }
        let path = if path.is_empty() { "global" } else { path };
        let Some(file) = &auth.htpasswd else {
            anyhow::bail!(
                "[{path}]: tools.session_auth.on needs tools.session_auth.htpasswd (a file of `htpasswd -B` entries)"
            );
        };
        if !section.on {
            anyhow::bail!("[{path}]: tools.session_auth.on needs tools.sessions.on");
        }
        std::fs::metadata(file).with_context(|| {
            format!(
                "[{path}]: cannot read tools.session_auth.htpasswd {}",
                file.display()
            )
        })?;
    }
    Ok(())
}

/// One line per request at info: method, path, status and time. Session
/// ids never appear here; the library logs them only as short hashes.
async fn log_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
        "request"
    );
    response
}

/// Resolves on Ctrl-C or SIGTERM; in-flight requests then finish and save.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// The demo's hook: one log line per session event (on the events thread,
/// never in a request).
pub(super) fn log_event(event: &server_sessions::SessionEvent) {
    let user = event.user().map(server_sessions::UserId::as_str);
    match event {
        server_sessions::SessionEvent::Regenerated { from, to, .. } => {
            tracing::info!(from = %from.short(), to = %to.short(), user, "session regenerated")
        }
        server_sessions::SessionEvent::Expired { key, found_by, .. } => {
            tracing::info!(session = %key.short(), user, ?found_by, "session expired")
        }
        other => tracing::info!(session = %other.key().short(), user, "session {}", other.kind()),
    }
}
