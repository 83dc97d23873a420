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
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::time::Instant;

/// Liveness and leadership of one operator process, shared with the HTTP handlers.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the API server answered.
    pub ready: AtomicBool,
    /// Whether, and until when, this replica leads (runs the controller).
    leadership: Mutex<Leadership>,
}

/// Whether a replica leads.
#[derive(Debug, Default, Clone, Copy)]
enum Leadership {
    /// Another replica leads, or none yet.
    #[default]
    Follower,
    /// Leads until this instant unless the lease is renewed (leader election).
    Until(Instant),
    /// Leads without an election (a single replica).
    Always,
}

impl Health {
    /// Whether this replica leads now. Read from the lease deadline itself, so it turns false
    /// on time even if the task that would stop the controller runs late.
    pub fn is_leader(&self) -> bool {
        match *self.leadership() {
            Leadership::Follower => false,
            Leadership::Until(until) => Instant::now() < until,
            Leadership::Always => true,
        }
    }

    /// Leads until `until` (a lease renewal moves it).
    pub fn lead_until(&self, until: Instant) {
        *self.leadership() = Leadership::Until(until);
    }

    /// Leads with no election.
    pub fn lead_always(&self) {
        *self.leadership() = Leadership::Always;
    }

    /// Follows.
    pub fn follow(&self) {
        *self.leadership() = Leadership::Follower;
    }

    fn leadership(&self) -> std::sync::MutexGuard<'_, Leadership> {
        // A panic while holding this lock leaves a plain value behind: still valid.
        self.leadership
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        assert_eq!(get(app.clone(), "/readyz").await.0, StatusCode::OK);
        assert!(
            get(app.clone(), "/metrics")
                .await
                .1
                .contains("contact_operator_leader 0")
        );
        health.lead_until(Instant::now() + std::time::Duration::from_secs(60));
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

    #[test]
    fn leadership_ends_at_its_deadline_without_anyone_clearing_it() {
        let health = Health::default();
        assert!(!health.is_leader());
        health.lead_until(Instant::now() + std::time::Duration::from_secs(60));
        assert!(health.is_leader());
        health.lead_until(Instant::now());
        assert!(!health.is_leader(), "a passed deadline is not leadership");
        health.lead_always();
        assert!(health.is_leader());
        health.follow();
        assert!(!health.is_leader());
    }
}
