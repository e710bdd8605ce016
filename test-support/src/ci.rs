//! The one rule for a server or tool a test needs and does not find: on a
//! developer's machine the test is skipped (it may have no Redis, no root),
//! under `CI=true` it fails — CI provides everything, and a skip there
//! would hide a service that did not start.

/// Whether this is a CI run: `CI` is `"true"`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `None`, for the test to return early, after saying `why` on stderr;
/// under `CI=true` a failure saying it.
pub fn skip<T>(why: impl std::fmt::Display) -> Option<T> {
    assert!(!in_ci(), "CI=true and {why}");
    eprintln!("skipping: {why}");
    None
}
