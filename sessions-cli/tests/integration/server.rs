//! Runs the real `sessions` binary as a child process on a free port, and
//! re-exports what these tests share with the library's (`sessions-test-support`): the CI rule, fresh
//! names and directories, and the HTTP client.

#![allow(dead_code, unreachable_pub)]

pub use sessions_test_support::{ci, client, redis_topology, temp};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use temp::TempDir;

/// The web framework `sessions serve` runs its app with
/// (`--framework`): every end-to-end scenario runs on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    /// axum, through the tower layer.
    Axum,
    /// actix-web, through `server-sessions-actix`.
    Actix,
}

impl Framework {
    /// The value of `--framework`.
    pub fn arg(self) -> &'static str {
        match self {
            Framework::Axum => "axum",
            Framework::Actix => "actix",
        }
    }
}

/// A running `sessions serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `sessions serve --app conformance --config FILE` on a free
    /// port.
    pub fn conformance(config: &Path) -> Server {
        Self::conformance_at(config, 0)
    }

    /// The same on `port` of loopback (0: a free one).
    pub fn conformance_at(config: &Path, port: u16) -> Server {
        Self::conformance_on(config, port, Framework::Axum)
    }

    /// The same through `framework`.
    pub fn conformance_on(config: &Path, port: u16, framework: Framework) -> Server {
        Self::start(&[
            "serve",
            "--framework",
            framework.arg(),
            "--app",
            "conformance",
            "--config",
            config.to_str().unwrap(),
            "--bind",
            &format!("127.0.0.1:{port}"),
        ])
    }

    /// Starts `sessions serve --config FILE` (the demo) on a free port.
    pub fn demo(config: &Path) -> Server {
        Self::demo_on(config, Framework::Axum)
    }

    /// The same through `framework`.
    pub fn demo_on(config: &Path, framework: Framework) -> Server {
        Self::start(&[
            "serve",
            "--framework",
            framework.arg(),
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

/// The file store's config lines; `{dir}` stands for the directory
/// [`conformance_app`] makes.
pub const FILE_STORE: &str = "tools.sessions.storage_type = 'file'\n\
                              tools.sessions.storage_path = '{dir}/sessions'";

/// Starts the conformance app with CherryPy's configuration and `extra`;
/// `{dir}` in `extra` stands for a fresh directory that lives as long as
/// the returned guard.
pub fn conformance_app(extra: &str) -> (Server, TempDir) {
    conformance_app_on(extra, Framework::Axum)
}

/// The same through `framework`.
pub fn conformance_app_on(extra: &str, framework: Framework) -> (Server, TempDir) {
    let dir = TempDir::new("conformance");
    let extra = extra.replace("{dir}", dir.path().to_str().unwrap());
    let config = dir.write("site.conf", &cherrypy_config(&extra));
    (Server::conformance_on(&config, 0, framework), dir)
}

/// Runs `sessions ARGS` to its end (an admin command), logging warnings
/// only.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sessions"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// A command's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The store key (64 hex characters) of the session whose id is `id`: what
/// `sessions list --full` prints and the stores hold.
pub fn key_of(id: &str) -> String {
    id.parse::<server_sessions::SessionId>()
        .unwrap()
        .store_key()
        .to_string()
}
