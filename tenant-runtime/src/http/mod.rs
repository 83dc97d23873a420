//! HTTP: the router, shared state, the bearer-token guard of `/api/v1`, probes and webhooks.
//!
//! Login and sessions come later; until then the agent-facing API is protected by one bearer
//! token from the settings (when set). Webhooks authenticate by signature instead.

pub mod api;
pub mod error;
pub mod health;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
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
}

/// Largest accepted request body (callbacks are a few KiB; media arrives by URL).
const BODY_LIMIT: usize = 1024 * 1024;

/// The whole HTTP surface of the runtime.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/contacts", get(api::list_contacts))
        .route("/contacts/{id}", get(api::get_contact))
        .route("/conversations", get(api::list_conversations))
        .route("/conversations/{id}", get(api::get_conversation))
        .route(
            "/conversations/{id}/messages",
            get(api::list_messages).post(api::send_message),
        )
        .route("/users", get(api::list_users).post(api::create_user))
        .route("/skills", get(api::list_skills).post(api::create_skill))
        .route(
            "/categories",
            get(api::list_categories).post(api::create_category),
        )
        .merge(crate::privacy::http::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
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
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .layer(middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.settings.api_token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Comparing digests keeps the comparison time independent of where the strings differ.
    if Sha256::digest(given.as_bytes()) == Sha256::digest(expected.expose().as_bytes()) {
        next.run(request).await
    } else {
        ApiError::Unauthorized {
            code: "unauthorized",
            message: "missing or wrong bearer token".to_owned(),
        }
        .into_response()
    }
}

/// Errors produced by axum itself (405, 413, …) come as plain text; rewrite them into the same
/// JSON shape as every other error so clients parse one format.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
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
