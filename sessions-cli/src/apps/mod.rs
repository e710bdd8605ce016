//! The apps `sessions serve` can run.

pub(crate) mod conformance;
pub(crate) mod demo;
