//! The operator's own HTTP endpoints: `/metrics` (OpenMetrics), `/healthz` (the process is
//! alive) and `/readyz` (it can reach the API server). Served by every replica, leader or not, so
//! probes and scrapes do not depend on who holds the lease.

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Liveness and leadership of one operator process, shared with the HTTP handlers.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the API server answered.
    pub ready: AtomicBool,
    /// Whether this replica holds the lease (runs the controller).
    pub leader: AtomicBool,
}

impl Health {
    /// Whether this replica is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The router of the operator's endpoints.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    let mut body = s.metrics.encode();
    let leader = u8::from(s.health.is_leader());
    body = body.replace(
        "# EOF",
        &format!("# HELP contact_operator_leader Whether this replica holds the leader lease.\n# TYPE contact_operator_leader gauge\ncontact_operator_leader {leader}\n# EOF"),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let resp = app
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn endpoints() {
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(Health::default());
        let app = router(metrics.clone(), health.clone());
        assert_eq!(get(app.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(app.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.ready.store(true, Ordering::SeqCst);
        health.leader.store(true, Ordering::SeqCst);
        assert_eq!(get(app.clone(), "/readyz").await.0, StatusCode::OK);
        metrics.reconciled(std::time::Duration::from_millis(3));
        let (status, body) = get(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("contact_operator_reconciles_total 1"),
            "{body}"
        );
        assert!(body.contains("contact_operator_leader 1"), "{body}");
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
    }
}
