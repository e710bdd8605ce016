//! Runs the real `sessions` binary as a child process on a free port.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `sessions serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `sessions serve --app conformance --config FILE`.
    pub fn conformance(config: &Path) -> Server {
        Self::start(&[
            "serve",
            "--app",
            "conformance",
            "--config",
            config.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ])
    }

    /// Starts the binary with `args` and waits for its "serving" line.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sessions"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the sessions binary");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Server { child, addr }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "sessions-{tag}-{}",
            sessions::SessionId::generate()
                .unwrap()
                .short()
                .to_string()
                .trim_end_matches('…')
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CherryPy's test configuration (`_cp_config` of its test app), as an INI
/// file; each line of `extra` adds a key to `[/]` or replaces it there.
pub fn cherrypy_config(extra: &str) -> String {
    let mut root = vec![
        "tools.sessions.on = True".to_string(),
        "tools.sessions.timeout = 0.016666".to_string(),
        "tools.sessions.clean_freq = 0.016666".to_string(),
    ];
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        let key = line.split('=').next().unwrap().trim();
        root.retain(|l| l.split('=').next().unwrap().trim() != key);
        root.push(line.to_string());
    }
    format!(
        "[/]\n{}\n\n\
         [/session_cookie]\n\
         tools.sessions.path = '/session_cookie'\n\
         tools.sessions.name = 'temp'\n\
         tools.sessions.persistent = False\n",
        root.join("\n")
    )
}
