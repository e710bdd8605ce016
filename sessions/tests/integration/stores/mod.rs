//! Each store on its real server: the shared conformance suite and what
//! only that store can get wrong.

mod file;
mod file_concurrency;
mod keys;
mod memcached;
mod mysql;
mod postgres;
mod postgres_pgbouncer;
mod redis;
mod redis_cluster;
mod redis_sentinel;
mod sqlite;
