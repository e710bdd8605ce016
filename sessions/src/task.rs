//! Background tasks owned by a value: the layer's clean-up, PostgreSQL's
//! `LISTEN` connection.

use tokio::task::AbortHandle;

/// A spawned task that ends when its owner is dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
