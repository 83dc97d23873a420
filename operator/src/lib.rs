//! The Contact operator: turns each `ContactTenant` into a running, isolated tenant and keeps it so.
//!
//! Layout mirrors the reconcile pipeline: `reconcile` (dereference → validate → build → apply →
//! status, plus the controller wiring), `build` (one pure `build_<kind>` per child), `maintenance`
//! (window math), `lifecycle` (trial, suspension, deletion grace). `leader` elects one replica through a Lease; `run` wires it,
//! the HTTP endpoints and the controller together for `main`.

pub mod args;
pub mod build;
pub mod clock;
pub mod config;
pub mod http;
pub mod instrument;
pub mod labels;
pub mod leader;
pub mod lifecycle;
pub mod maintenance;
pub mod metrics;
pub mod reconcile;
pub mod run;
