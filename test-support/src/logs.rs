//! One log subscriber for the whole test binary, writing into a buffer, so
//! that every line the library logs in any test can be checked: a full
//! session id must never be among them (only the 8-hex-digit short form).
//! Each line is checked as it is written, so that the check at the end of
//! every test costs nothing however long the binary's log has grown.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// The lines written so far that carry a full session id.
static WITH_IDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = String::from_utf8_lossy(buf);
        let found: Vec<String> = written
            .lines()
            .filter(|line| longest_hex_run(line) >= 40)
            // libtest names each test's thread after the test: the line
            // is blamed on the test that logged it, not the one that
            // checks next.
            .map(|line| {
                format!(
                    "{} logged: {line}",
                    std::thread::current().name().unwrap_or("?")
                )
            })
            .collect();
        if !found.is_empty() {
            WITH_IDS.lock().unwrap().extend(found);
        }
        LINES.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the subscriber once: everything `sessions` logs, at every
/// level, and warnings and errors of everything else.
pub fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "server_sessions=trace,warn",
            ))
            .with_writer(|| Sink)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// Everything logged so far.
pub fn text() -> String {
    String::from_utf8_lossy(&LINES.lock().unwrap()).into_owned()
}

/// The longest run of lowercase hex digits in `line`.
pub fn longest_hex_run(line: &str) -> usize {
    line.split(|c: char| !matches!(c, '0'..='9' | 'a'..='f'))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// No line logged so far carries a full session id (40 hex digits).
pub fn assert_no_full_ids() {
    let found = WITH_IDS.lock().unwrap();
    assert!(
        found.is_empty(),
        "a full session id in the log: {}",
        found[0]
    );
}
