//! The runtime's integration tests: one binary, one module per area. Tests on a database run
//! on SQLite and on the shared PostgreSQL server (see `support::both!`).

#[path = "../common/mod.rs"]
mod support;

mod floors;
mod schema;
