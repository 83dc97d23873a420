//! The runtime's integration tests: one binary, one module per area, so the runtime and its
//! helpers are compiled and linked once, and the tests of every area share one thread pool and
//! one PostgreSQL server ([`contact_tests::postgres::PgServer::shared`]). Tests on a database
//! run on SQLite and on PostgreSQL through [`support::both!`].

mod support;

mod accounts;
mod backup;
mod crash;
mod e2e_drive;
mod floors;
mod openapi_drift;
mod outbound;
mod privacy;
mod routing;
mod schema;
mod startup;
mod storage;
mod webhooks;
