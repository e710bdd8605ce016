//! What the tests of the workspace share, one place for each thing: the CI
//! rule ([`ci`]), fresh names and directories ([`temp`]), the HTTP client
//! ([`client`]), the app and its routes ([`app`]), the stores ([`stores`]),
//! a store wrapper that watches and fails ([`watched`]), the captured log
//! ([`logs`]), ids and records ([`records`]), the Redis deployments
//! ([`redis_topology`]) and the checks their tests share
//! ([`redis_checks`]), the file store's files ([`files`]) and the checks
//! shared with the fuzz targets ([`checks`]).
//!
//! A crate of its own (`publish = false`) so that the library's tests, the
//! CLI's, the actix-web adapter's, the benchmark and the fuzz targets use
//! one copy. Without the default feature `servers` only the parts that
//! need no server or client build (what the fuzz targets and the
//! benchmark use).

// Helpers for tests: a test that fails says what went wrong, so most of
// them are not documented one by one as a published API would be.
#![allow(missing_docs, missing_debug_implementations)]

pub mod checks;
pub mod ci;
pub mod records;
pub mod redis_topology;
pub mod temp;

#[cfg(feature = "servers")]
pub mod app;
#[cfg(feature = "servers")]
pub mod browser;
#[cfg(feature = "servers")]
pub mod client;
#[cfg(feature = "servers")]
pub mod files;
#[cfg(feature = "servers")]
pub mod logs;
#[cfg(feature = "servers")]
pub mod redis_checks;
#[cfg(feature = "servers")]
pub mod stores;
#[cfg(feature = "servers")]
pub mod watched;
