//! The admin commands over a Redis Cluster (3 masters, 3 replicas, started
//! by the test on loopback), filled through the real server: the listing
//! and the count see the sessions of every master. And a `storage_url`
//! that does not parse is a one-line setting error that keeps its password
//! to itself.
//!
//! Without `redis-server` the test is skipped, except under `CI=true`,
//! where that is a failure.

use crate::server;

use server::client::Client;
use server::redis_topology::shared_cluster;
use server::temp::TempDir;
use server::{key_of, run as sessions, text, Server};

#[tokio::test]
async fn list_and_stats_cover_every_master() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let dir = TempDir::new("admin-cluster");
    let prefix = format!(
        "test-admin-{}:",
        &server_sessions::SessionId::generate().unwrap().to_string()[..12]
    );
    let config = dir.write(
        "site.conf",
        &format!(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'redis'\n\
             tools.sessions.storage_url = '{}'\ntools.sessions.redis_prefix = '{prefix}'\n",
            cluster.url()
        ),
    );
    let conf = config.to_str().unwrap();
    let server = Server::conformance(&config);
    let mut ids = Vec::new();
    for _ in 0..24 {
        let mut c = Client::new(server.addr);
        c.get("/data").await;
        ids.push(c.id().unwrap());
    }
    drop(server);

    // 24 random ids land on every master (a miss is a chance of 3 × (2/3)^24).
    let on_masters: Vec<usize> = cluster
        .masters()
        .iter()
        .map(|port| {
            let node = cluster.nodes.iter().find(|n| n.port == *port).unwrap();
            let keys = node
                .cli(&["--scan", "--pattern", &format!("{prefix}*")])
                .unwrap();
            keys.lines().count()
        })
        .collect();
    assert!(on_masters.iter().all(|n| *n > 0), "{on_masters:?}");

    let out = sessions(&["stats", "--config", conf]);
    assert!(
        text(&out.stdout).contains("sessions       24"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = sessions(&["list", "--config", conf, "--json", "--full"]);
    let mut listed: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap();
            row["key"].as_str().unwrap().to_owned()
        })
        .collect();
    listed.sort_unstable();
    let mut keys: Vec<String> = ids.iter().map(|id| key_of(id)).collect();
    keys.sort_unstable();
    assert_eq!(listed, keys);

    let out = sessions(&["delete", &ids[0], "--config", conf]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sessions(&["stats", "--config", conf]);
    assert!(text(&out.stdout).contains("sessions       23"));
}

#[test]
fn a_bad_storage_url_is_a_setting_error_without_its_password() {
    let dir = TempDir::new("admin-bad-url");
    for url in [
        "redis+sentinel://:hunter2@127.0.0.1:26379",
        "redis+cluster://:hunter2@127.0.0.1:7000,,127.0.0.1:7001",
        "redis://:hunter2@127.0.0.1:notaport/",
    ] {
        let config = dir.write(
            "r.conf",
            &format!(
                "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'redis'\n\
                 tools.sessions.storage_url = '{url}'\n"
            ),
        );
        let out = sessions(&["stats", "--config", config.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{url}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("invalid storage_url"), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{url}: {err}");
    }
}
