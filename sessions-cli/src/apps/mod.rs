//! The apps `sessions serve` can run.

pub(crate) mod conformance;
pub(crate) mod conformance_actix;
pub(crate) mod demo;
pub(crate) mod demo_actix;
