//! The routes, one module per area. Each module's `routes()` carries its role checks, so who
//! may call a route is read where the route is declared; [`super::router`] mounts them.
//!
//! * [`health`]: probes and metrics (public).
//! * [`webhooks`]: Conversation API callbacks (signed, no session).
//! * [`conversations`]: the integrators' REST API for contacts, conversations and messages.
//! * [`directory`]: users, skills and categories (admins, the API token).
//! * [`workspace`]: what the agent Workspace calls; [`live`] its event stream.
//! * [`configurator`]: the admin settings.
//! * [`privacy`]: the DPO's search, export, anonymization, audit log and retention.
//! * [`auth`]: login, logout and invites.
//! * [`pages`]: the web UI's pages and assets.

pub(crate) mod auth;
pub(crate) mod configurator;
pub(crate) mod conversations;
pub(crate) mod directory;
pub(crate) mod health;
pub(crate) mod live;
pub(crate) mod pages;
pub(crate) mod privacy;
pub(crate) mod webhooks;
pub(crate) mod workspace;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use serde::Deserialize;
use utoipa::IntoParams;

use super::Error;

/// Parses a JSON body, or 400.
pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::bad_request("invalid_json", e.to_string()))
}

/// The parsed query string, or 400 naming what is wrong with it.
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Error> {
    q.map(|Query(t)| t)
        .map_err(|e| Error::bad_request("invalid_query", e.body_text()))
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    /// At most this many items (1–500, default 100).
    pub limit: Option<i64>,
}

/// A page size: 100 by default, 1 to 500 when given.
pub(crate) fn limit(l: Option<i64>) -> Result<i64, Error> {
    match l {
        None => Ok(100),
        Some(n) if (1..=500).contains(&n) => Ok(n),
        Some(n) => Err(Error::bad_request(
            "invalid_query",
            format!("limit must be between 1 and 500, got {n}"),
        )),
    }
}
