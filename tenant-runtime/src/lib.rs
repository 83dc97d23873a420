//! The Contact tenant runtime: one binary that serves a tenant's API, UI and channel webhooks.
pub mod routing;
