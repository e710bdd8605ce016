//! `sessions serve --metrics ADDR`: the sessions' metrics scraped from the
//! Prometheus endpoint after real requests.

use crate::server;

use std::time::{Duration, Instant};

use server::client::{free_port, Client};
use server::temp::TempDir;
use server::Server;

#[tokio::test]
async fn the_metrics_endpoint_counts_what_requests_did() {
    let dir = TempDir::new("metrics");
    let config = dir.write(
        "site.conf",
        "[/]\ntools.sessions.on = True\ntools.sessions.lock_timeout = 0.2\n",
    );
    let port = free_port();
    let server = Server::start(&[
        "serve",
        "--app",
        "conformance",
        "--config",
        config.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--metrics",
        &format!("127.0.0.1:{port}"),
    ]);
    let mut c = Client::new(server.addr);
    for n in 1..=3 {
        assert_eq!(c.get("/").await.body, n.to_string());
    }
    let mut other = Client::new(server.addr);
    other.get("/").await;
    let scraped = scrape(port, "sessions_created_total").await;
    let value = |name: &str| -> f64 {
        scraped
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {scraped}"))
    };
    assert_eq!(value("sessions_created_total"), 2.0, "{scraped}");
    // Two locked loads (the first request of each visitor makes a new
    // session, which needs no lock): their latency is measured.
    assert!(
        value("sessions_store_call_seconds_count{op=\"lock_and_load\"}") >= 2.0,
        "{scraped}"
    );
    assert!(
        scraped.contains("# TYPE sessions_store_call_seconds summary"),
        "{scraped}"
    );
}

/// The endpoint's text once it lists `name` (the exporter starts with the
/// server; its first scrape may come before the first request's metrics).
async fn scrape(port: u16, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(name) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
