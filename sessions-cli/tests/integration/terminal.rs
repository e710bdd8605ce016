//! `sessions clean` on a terminal and in a pipe: on a pseudo-terminal
//! (util-linux `script`) it draws a progress line with the count and the
//! rate, redrawn in place; piped it writes plain lines every 10,000
//! sessions; either way it ends with one line saying how many it removed.

use crate::server;

use std::process::Command;

use server::temp::TempDir;
use server::{run, text};

const EXPIRED: usize = 25_000;

/// A file store holding `EXPIRED` expired sessions, and its config.
fn expired_store(dir: &TempDir) -> std::path::PathBuf {
    let store = dir.path().join("sessions");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&store)
        .unwrap();
    let now = server_sessions::store::now_millis();
    let dead = server_sessions::store::Record {
        data: b"{}".to_vec(),
        created: now - 10_000,
        expires: now - 1,
        timeout: None,
        user: None,
    }
    .encode();
    for _ in 0..EXPIRED {
        let key = server_sessions::SessionId::generate().unwrap().store_key();
        std::fs::write(store.join(format!("session-{key}")), &dead).unwrap();
    }
    dir.write(
        "site.conf",
        &format!(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'file'\n\
             tools.sessions.storage_path = '{}'\n",
            store.display()
        ),
    )
}

#[test]
fn piped_clean_writes_plain_lines() {
    let dir = TempDir::new("terminal");
    let config = expired_store(&dir);
    let out = run(&["clean", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.starts_with(&format!("removed {EXPIRED} expired session(s) in ")),
        "{stdout}"
    );
    for n in [10_000, 20_000] {
        assert!(
            stderr.contains(&format!("removed {n} expired sessions so far")),
            "{stderr}"
        );
    }
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "{stderr:?}"
    );
}

#[test]
fn clean_on_a_terminal_draws_a_progress_line() {
    if Command::new("script").arg("--version").output().is_err() {
        server::ci::skip::<()>("util-linux `script` (a pseudo-terminal) is not installed");
        return;
    }
    let dir = TempDir::new("terminal");
    let config = expired_store(&dir);
    let command = format!(
        "{} clean --config {}",
        env!("CARGO_BIN_EXE_sessions"),
        config.display()
    );
    // `script` runs the command on a pseudo-terminal and copies what it
    // wrote there (stdout and stderr alike) to its own stdout.
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("removing expired sessions: "),
        "no progress line: {shown:?}"
    );
    assert!(shown.contains("/s)"), "no rate: {shown:?}");
    // Redrawn in place (carriage returns or cursor moves), then cleared.
    assert!(shown.contains('\r') || shown.contains('\x1b'), "{shown:?}");
    assert!(
        shown.contains(&format!("removed {EXPIRED} expired session(s) in ")),
        "{shown:?}"
    );
    assert!(
        !shown.contains("so far"),
        "plain lines on a terminal: {shown:?}"
    );
}

/// `list` and `stats` on a terminal: a table whose columns line up, and
/// the expiry histogram drawn as bars.
#[test]
fn list_and_stats_on_a_terminal_line_up() {
    if Command::new("script").arg("--version").output().is_err() {
        server::ci::skip::<()>("util-linux `script` (a pseudo-terminal) is not installed");
        return;
    }
    let dir = TempDir::new("terminal");
    let store = dir.path().join("sessions");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&store)
        .unwrap();
    let now = server_sessions::store::now_millis();
    for (i, ttl) in [60_000u64, 3_600_000, 7_200_000].iter().enumerate() {
        let live = server_sessions::store::Record {
            data: "x".repeat(10 * (i + 1)).into_bytes(),
            created: now,
            expires: now + ttl,
            timeout: None,
            user: None,
        }
        .encode();
        let key = server_sessions::SessionId::generate().unwrap().store_key();
        std::fs::write(store.join(format!("session-{key}")), live).unwrap();
    }
    let config = dir.write(
        "site.conf",
        &format!(
            "[/]\ntools.sessions.on = True\ntools.sessions.storage_type = 'file'\n\
             tools.sessions.storage_path = '{}'\n",
            store.display()
        ),
    );
    let on_terminal = |command: &str| {
        let line = format!(
            "{} {command} --config {}",
            env!("CARGO_BIN_EXE_sessions"),
            config.display()
        );
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success());
        text(&out.stdout).replace('\r', "")
    };
    let listed = on_terminal("list");
    let rows: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with("key") || l.contains(" GMT "))
        .collect();
    assert_eq!(rows.len(), 4, "{listed}");
    // Every column starts where the header's does, counted in characters
    // as a terminal shows them (the short key ends in a 3-byte `…`).
    let chars = |l: &str| l.chars().collect::<Vec<char>>();
    let header = chars(rows[0]);
    let starts: Vec<usize> = ["created", "expires"]
        .iter()
        .map(|h| {
            let at = rows[0].find(h).unwrap();
            rows[0][..at].chars().count()
        })
        .collect();
    assert_eq!(header[starts[0]], 'c');
    for row in &rows[1..] {
        let row = chars(row);
        for &at in &starts {
            assert!(row[at] != ' ' && row[at - 1] == ' ', "{listed}");
        }
    }
    let stats = on_terminal("stats");
    assert!(stats.contains("sessions       3"), "{stats}");
    // Sessions expiring in a minute, an hour and two hours: one bar each
    // in those buckets, none where there is nothing.
    let bars: Vec<&str> = stats.lines().filter(|l| l.contains('#')).collect();
    assert_eq!(bars.len(), 3, "{stats}");
    for (bar, bucket) in bars.iter().zip(["< 1 min", "< 1 h", "< 1 day"]) {
        assert!(bar.contains(bucket), "{stats}");
    }
}
