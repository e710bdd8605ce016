//! What the tests of both crates share, one place for each thing: the CI
//! rule ([`ci`]), fresh names and directories ([`temp`]), the HTTP client
//! ([`client`]), the app and its routes ([`app`]), the stores ([`stores`]),
//! a store wrapper that watches and fails ([`watched`]), the captured log
//! ([`logs`]), ids and records ([`records`]), the checks the Redis Cluster and Sentinel tests share ([`redis_checks`]), the file store's files
//! ([`files`]) and the checks shared with the fuzz targets ([`checks`]).
//! The sessions-cli tests include the dependency-free files (`ci.rs`,
//! `temp.rs`, `client.rs`) by path.

#![allow(dead_code, unreachable_pub)]

pub mod app;
pub mod browser;
#[path = "../checks/mod.rs"]
pub mod checks;
pub mod ci;
pub mod client;
pub mod files;
pub mod logs;
pub mod records;
pub mod redis_checks;
pub mod redis_topology;
pub mod stores;
pub mod temp;
pub mod watched;
