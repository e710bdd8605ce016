//! What goes wrong around a request: stores that go down, fail over or
//! fill up, and what the visitor gets meanwhile.

mod failures;
mod file_faults;
mod mysql_outage;
mod postgres_outage;
mod redis_failover;
mod redis_outage;
