//! Placeholder: the file store is being written (see the issue tracker).

/// Not built yet.
#[derive(Debug)]
pub struct FileStore(());
