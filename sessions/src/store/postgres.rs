//! Placeholder: the postgres store is being written (see the issue tracker).

/// Not built yet.
#[derive(Debug)]
pub struct PostgresStore(());
