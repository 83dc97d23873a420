//! HTTP: the router and shared state ([`AppState`]), accounts and access ([`auth`]), the one
//! error type ([`Error`]), the routes, one module per area ([`routes`]), and the one OpenAPI
//! assembly ([`openapi`]). The floor above the services: handlers call storage and the
//! services, nothing below calls back up.
//!
//! `/api/v1` accepts a browser session (cookie + CSRF token) or the integrators' bearer token,
//! and checks roles per route group; webhooks authenticate by signature instead.

pub mod auth;
pub(crate) mod error;
pub mod openapi;
pub(crate) mod routes;

pub use error::Error;
pub(crate) use error::ErrorBody;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Notify;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::{ChannelApp, Settings};
use crate::live::LiveHub;
use crate::metrics::Metrics;
use crate::routing::RoutingService;
use crate::storage::Store;

/// State shared by all handlers.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// The database.
    pub store: Store,
    /// Settings in force.
    pub settings: Arc<Settings>,
    /// Channel apps by name.
    pub apps: Arc<HashMap<String, ChannelApp>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Wakes the outbox sender when a message is enqueued.
    pub outbox_wake: Arc<Notify>,
    /// Login rate limits and the invite mailer.
    pub auth: Arc<auth::AuthState>,
    /// Live events.
    pub live: Arc<LiveHub>,
    /// The routing service (allocator lease, presence, signals).
    pub routing: Arc<RoutingService>,
}

/// Largest accepted request body (callbacks are a few KiB; media arrives by URL).
const BODY_LIMIT: usize = 1024 * 1024;

/// The whole HTTP surface of the runtime.
pub(crate) fn router(state: AppState) -> Router {
    // Each area's routes carry their own role checks (see `routes`); everything under
    // `/api/v1` first needs a principal.
    let api = routes::conversations::routes(state.clone())
        .merge(routes::directory::routes())
        .merge(routes::workspace::routes())
        .merge(routes::configurator::routes())
        .merge(routes::privacy::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // The document itself is public: integrators read it before they have a token.
        .route("/openapi.json", get(openapi::openapi));
    Router::new()
        .merge(routes::health::routes())
        .merge(routes::webhooks::routes())
        .nest("/api/v1", api)
        .merge(routes::pages::routes())
        .merge(routes::auth::routes(state.clone()))
        .fallback(|| async { Error::NotFound("no such route".to_owned()) })
        .layer(middleware::from_fn_with_state(state.clone(), wake_on_write))
        .layer(middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Middleware: after a state-changing request (webhook, reply, pick, …) has been answered, its
/// transaction is committed, so the tailer can pick its events up at once.
pub(crate) async fn wake_on_write(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let write = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let response = next.run(request).await;
    if write {
        state.live.wake();
        state.routing.wake();
    }
    response
}

/// Errors produced by axum itself (405, 413, …) come as plain text; rewrite them into the same
/// JSON shape as every other error so clients parse one format.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    // Only axum's own plain-text refusals are rewritten; JSON errors and the UI's HTML pages
    // (a 403 page for an agent on /admin) pass through as they are.
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let code = match status.as_u16() {
        405 => "method_not_allowed",
        408 => "timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        _ => "error",
    };
    let allow = response.headers().get(axum::http::header::ALLOW).cloned();
    let body = ErrorBody::new(code, status.canonical_reason().unwrap_or("request failed"));
    let mut rewritten = (status, axum::Json(body)).into_response();
    if let Some(allow) = allow {
        rewritten
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow);
    }
    rewritten
}
