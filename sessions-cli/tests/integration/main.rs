//! The `sessions` binary's tests, one binary: each runs the real program
//! as a child process ([`server`]) and talks to it over HTTP, a terminal
//! or its exit status, a module per topic. What they share with the
//! library's tests is the `sessions-test-support` crate.
//!
//! One topic: `cargo test -p server-sessions-cli --test integration conformance::`.

mod server;

mod admin;
mod admin_redis_cluster;
mod browser;
mod chaos;
mod conformance;
mod keeping;
mod keys;
mod metrics;
mod serve;
mod session_auth;
mod terminal;
mod users;
