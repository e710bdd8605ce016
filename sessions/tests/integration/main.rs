//! The library's integration tests, one binary: a module per topic, the
//! stores on their real servers under `stores`, outages and faults under
//! `faults`. What they share (the app, the client, the stores, the CI rule)
//! is the `sessions-test-support` crate, beside the CLI's tests.
//!
//! One topic: `cargo test -p server-sessions --test integration locking::`.

// `stores!`: one test per store for each scenario of a module.
#[macro_use]
extern crate sessions_test_support;

mod faults;
mod stores;

mod api_clients;
mod cookie_store;
mod events;
mod flash_csrf;
mod floods;
mod hostile_input;
mod lifecycle;
mod locking;
mod login;
mod logs;
mod pipelined;
mod properties;
mod remember_me;
mod sealed_records;
mod secrets;
mod signed_ids;
mod testing_helpers;
mod timeouts;
mod uninitialized;
mod users;
