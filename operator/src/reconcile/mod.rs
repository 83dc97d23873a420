//! The reconcile pipeline and the controller that drives it.

pub mod validate;
