//! The Contact tenant runtime: one binary that serves a tenant's API, UI and channel webhooks.
//!
//! Layout, one folder per concern: [`storage`] (sqlx repositories and migrations), [`channels`]
//! (the Conversation API adapter: webhook verification, callback parsing, channel rules, the
//! outbox sender and the simulator), [`http`] (routes, errors, health and metrics), [`routing`] (the pure,
//! deterministic routing engine). [`domain`]
//! holds the pure vocabulary they share; [`config`] the settings; [`app`] wires it together.

pub mod app;
pub mod backup;
pub mod channels;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod privacy;
pub mod routing;
pub mod storage;

/// Installs ring as the process's TLS provider for rustls (what reqwest and kube use). Idempotent:
/// an already installed provider stays. Every place that builds an HTTP client calls it, so a
/// library user need not know.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
