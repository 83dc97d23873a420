//! The Contact tenant runtime: one binary that serves a tenant's API, UI and channel webhooks.
//!
//! # Floors
//!
//! Modules stand on floors and import only from their own floor or below, never from above;
//! on one floor, imports between modules never run in a circle. The table is read by the
//! `floors` test (`tests/api/floors.rs`), which fails naming the file and line of any upward or
//! circular `crate::` import, so it is the rule and not a picture of it.
//!
//! | floor | modules | what stands there |
//! |---|---|---|
//! | 0 | `domain` | vocabulary and API types, the audit entry format, anonymized content: pure |
//! | 1 | `config`, `metrics` | settings and the metric registry, read by nearly everything |
//! | 2 | `storage` | sqlx repositories (rows, SQL, migrations) on SQLite or PostgreSQL |
//! | 3 | `live`, `channels`, `routing`, `privacy`, `backup` | the services: the live event hub, the Conversation API adapter and outbox, the routing service, retention and audit chaining, backup and restore |
//! | 4 | `http` | routes (one module per area), accounts, the one error type, the OpenAPI document |
//! | 5 | `app` | wires storage, services and HTTP into a running server |
//! | 6 | `cli` | the command line (`serve`, `demo`, `backup`, …) |
//!
//! Pure files, whatever their floor, import nothing of the runtime but `domain`: they do no
//! I/O and work on the vocabulary and API types only (the same test checks them):
//! `privacy/transfer.rs`, `channels/rules.rs`, `channels/callbacks.rs`, `channels/signature.rs`,
//! `storage/audit/entries.rs`, `http/auth/password.rs`, `http/auth/limit.rs`.
//!
//! `config` and `metrics` stand low because every floor above reads them and they read only
//! the vocabulary. The routing engine is not a module here but its own crate
//! (`contact-routing`), below all of these: pure by what it can link.
//!
//! Layout, one folder per concern: [`domain`] (vocabulary, and the API types in `domain::api`:
//! the only OpenAPI schemas; storage rows are plain `FromRow` structs), [`storage`]
//! (repositories, the audit writer, and `storage::dialect`, the one place SQLite and PostgreSQL
//! differ; migrations in `migrations/{sqlite,postgres}`, kept in step by the `schema` test),
//! [`channels`] (webhook verification, callback parsing, channel rules, the outbox sender and
//! the simulator), [`routing`] (the allocator service around the engine), [`privacy`]
//! (retention, audit chaining, contact import/export parsing), [`backup`], [`live`] (the event
//! hub), [`http`] (one `routes/` module per area, accounts, the one error type, OpenAPI),
//! [`app`] (wiring) and [`cli`]. The integration tests are one binary, `tests/api/main.rs`.

// Items are `pub(crate)` unless a test, benchmark, the binary or the operator's contract test
// uses them, so that dead code warns.
#![warn(unreachable_pub)]

pub mod app;
pub mod backup;
pub mod channels;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod live;
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
