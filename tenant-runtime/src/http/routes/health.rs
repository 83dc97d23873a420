//! Probes and metrics: `/healthz` (the process serves), `/readyz` (database reachable and every
//! migration applied), `/metrics` (Prometheus text format).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::http::{AppState, Error};

/// The probe and metrics routes (public).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Liveness: answers as long as the server runs.
pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: 200 when the database answers and the schema is current, else 503.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, Error> {
    match state.store.ready().await {
        Ok(true) => Ok((StatusCode::OK, Json(json!({ "status": "ready" })))),
        Ok(false) => Err(Error::Unavailable(
            "database migrations are not all applied".to_owned(),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(Error::Unavailable("database unreachable".to_owned()))
        }
    }
}

/// Prometheus metrics.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
