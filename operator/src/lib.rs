//! The Contact operator: turns each `ContactTenant` into a running, isolated tenant and keeps it so.
//!
//! Layout, floor by floor (each imports only from its own floor and those listed before it; the
//! `floors` test reads the sources and fails on an import that points up):
//! - the vocabulary: `labels`, `clock`, `config`, `metrics`, `instrument`;
//! - `maintenance`: window math (pure);
//! - `tenant`: the validated tenant, made from a `ContactTenant` by `tenant::validate` (pure);
//! - `build`: one pure `build_<kind>` per child and `build::all`, the `Children` bundle;
//! - `lifecycle`: trial, suspension and deletion grace;
//! - `reconcile`: the pipeline (dereference → validate → build → provision → status), cleanup on
//!   deletion and the controller wiring;
//! - `http` (`/metrics`, `/healthz`, `/readyz`), `leader` (one replica leads through a Lease),
//!   `run`, which wires leader election, the HTTP endpoints and the controller together, and
//!   `args`, which turns flags into `run`'s settings for `main`.
//!
//! Items are `pub(crate)` unless a binary, a benchmark or an integration test needs them
//! (`unreachable_pub` keeps it so), so code nothing uses is reported as dead.
#![warn(unreachable_pub)]

pub mod args;
pub mod build;
pub mod clock;
pub mod config;
#[cfg(test)]
mod floors;
pub mod http;
pub mod instrument;
pub mod labels;
pub mod leader;
pub mod lifecycle;
mod maintenance;
pub mod metrics;
pub mod reconcile;
pub mod run;
pub mod tenant;
