//! HTTP: the router, shared state, probes, webhooks, the REST API, accounts ([`auth`]), live
//! events ([`live`]) and the web UI ([`ui`]).
//!
//! `/api/v1` accepts a browser session (cookie + CSRF token) or the integrators' bearer token,
//! and checks roles per route group; webhooks authenticate by signature instead.

pub mod api;
pub mod auth;
pub mod error;
pub mod health;
pub mod live;
pub mod ui;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Notify;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::{ChannelApp, Settings};
use crate::metrics::Metrics;
use crate::storage::Store;
use error::ApiError;

/// State shared by all handlers.
#[derive(Debug, Clone)]
pub struct AppState {
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
    pub live: Arc<live::LiveHub>,
    /// The routing service (allocator lease, presence, signals).
    pub routing: Arc<crate::routing::RoutingService>,
}

/// Largest accepted request body (callbacks are a few KiB; media arrives by URL).
const BODY_LIMIT: usize = 1024 * 1024;

/// The whole HTTP surface of the runtime.
pub fn router(state: AppState) -> Router {
    use crate::domain::Role::{Admin, Agent, Dpo};
    // Role per route group: contacts and conversation lists are for admins and DPOs; a single
    // conversation also for its agent (ownership checked in `conversation_guard`); the
    // directory for admins. The API token counts as admin.
    let readers = Router::new()
        .route("/contacts", get(api::list_contacts))
        .route("/contacts/{id}", get(api::get_contact))
        .route("/conversations", get(api::list_conversations))
        .route_layer(middleware::from_fn(auth::allow(&[Admin, Dpo])));
    let conversation = Router::new()
        .route("/conversations/{id}", get(api::get_conversation))
        .route(
            "/conversations/{id}/messages",
            get(api::list_messages).post(api::send_message),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::conversation_guard,
        ))
        .route_layer(middleware::from_fn(auth::allow(&[Admin, Agent, Dpo])));
    let directory = Router::new()
        .route("/users", get(api::list_users).post(api::create_user))
        .route("/skills", get(api::list_skills).post(api::create_skill))
        .route(
            "/categories",
            get(api::list_categories).post(api::create_category),
        )
        .route_layer(middleware::from_fn(auth::allow(&[Admin])));
    let api = readers
        .merge(conversation)
        .merge(directory)
        .merge(ui::api_routes())
        // The privacy routes check the role of the authenticated principal themselves (dpo;
        // admin too for import, export and retention) and record it as the actor.
        .merge(crate::privacy::http::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // The document itself is public: integrators read it before they have a token.
        .route("/openapi.json", get(api::openapi));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/webhooks/sinch/{channel_app}",
            post(webhooks::sinch_webhook),
        )
        .nest("/api/v1", api)
        .merge(ui::pages())
        .merge(ui::auth_routes(state.clone()))
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            live::wake_on_write,
        ))
        .layer(middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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
    let body = error::ErrorBody {
        error: error::ErrorDetail {
            code: code.to_owned(),
            message: status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_owned(),
        },
    };
    let mut rewritten = (status, axum::Json(body)).into_response();
    if let Some(allow) = allow {
        rewritten
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow);
    }
    rewritten
}
