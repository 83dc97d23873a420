//! `POST /webhooks/sinch/{channel_app}`: Conversation API callbacks.
//!
//! Order matters: find the channel app (404) → verify the signature on the raw bytes (401) →
//! parse (400) → one database transaction that records the nonce and the effect → 200. Nothing
//! is acknowledged before its transaction committed, and every refusal happens before any write.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::channels::callbacks::{self, Callback};
use crate::channels::signature;
use crate::http::error::ErrorBody;
use crate::http::{AppState, Error};
use crate::storage::{DeliveryReport, InboundMessage, InboundOutcome, Nonce, ReportOutcome};

/// The webhook route (public: callbacks authenticate by signature).
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/webhooks/sinch/{channel_app}", post(sinch_webhook))
}

/// What the webhook did with a callback.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookAck {
    /// `stored`, `duplicate`, `updated`, `unchanged`, `unknown_message` or `ignored`.
    pub outcome: &'static str,
    /// The callback kind (its top-level key).
    pub kind: String,
}

/// Handles one callback for the channel app named in the path.
#[utoipa::path(
    post,
    path = "/webhooks/sinch/{channel_app}",
    tag = "webhooks",
    security(()),
    params(("channel_app" = String, Path, description = "Name of the configured channel app")),
    request_body(content = Object, description = "A Conversation API callback, signed with the app's webhook secret"),
    responses(
        (status = 200, description = "Durably recorded (or acknowledged and ignored)", body = WebhookAck),
        (status = 400, description = "Malformed callback; nothing recorded", body = ErrorBody),
        (status = 401, description = "Missing, wrong, stale or replayed signature", body = ErrorBody),
        (status = 404, description = "No such channel app", body = ErrorBody),
    )
)]
pub(crate) async fn sinch_webhook(
    State(state): State<AppState>,
    Path(channel_app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookAck>, Error> {
    let started = Instant::now();
    let result = handle(&state, &channel_app, &headers, &body).await;
    state
        .metrics
        .webhook_seconds
        .observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(ack) => state.metrics.webhook(&ack.kind, ack.outcome),
        Err(e) => {
            tracing::info!(channel_app, error = %e, "webhook refused");
            state.metrics.webhook("invalid", "rejected");
        }
    }
    result.map(Json)
}

async fn handle(
    state: &AppState,
    channel_app: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<WebhookAck, Error> {
    let app = state
        .apps
        .get(channel_app)
        .ok_or_else(|| Error::NotFound(format!("channel app `{channel_app}` not found")))?;
    let max_skew = state.settings.webhook.max_skew_secs;
    let verified = signature::verify(
        app.webhook_secret.expose(),
        headers,
        body,
        chrono::Utc::now().timestamp(),
        max_skew,
    )
    .map_err(|e| Error::Unauthorized {
        code: match e {
            signature::Error::Stale { .. } => "stale_signature",
            signature::Error::Mismatch => "bad_signature",
            _ => "missing_signature",
        },
        message: e.to_string(),
    })?;
    let callback = callbacks::parse(body).map_err(|e| Error::BadRequest {
        code: "invalid_callback",
        message: e.to_string(),
    })?;
    let nonce = Nonce {
        channel_app: app.name.clone(),
        nonce: verified.nonce.clone(),
        // Past this, the timestamp check alone refuses a replay.
        expires_at: (verified.timestamp + max_skew + 1) * 1000,
    };
    let replayed = || Error::Unauthorized {
        code: "replayed_nonce",
        message: format!("signature nonce `{}` was already used", verified.nonce),
    };
    let kind = callback.kind().to_owned();
    let outcome = match callback {
        Callback::Message(m) => {
            let category_id = match &app.category {
                Some(name) => state.store.category_id_by_name(name).await?,
                None => None,
            };
            let msg = InboundMessage {
                channel_app: app.name.clone(),
                channel: m.channel,
                identity: m.identity,
                external_id: m.message_id,
                content: m.content,
                category_id,
                reopen_closed_since: match state.routing.defaults().reopen_within_secs {
                    0 => None,
                    secs => Some(crate::storage::now_ms() - secs.saturating_mul(1000) as i64),
                },
            };
            match state.store.record_inbound(&nonce, &msg).await? {
                InboundOutcome::Stored { .. } => "stored",
                InboundOutcome::Duplicate { .. } => "duplicate",
                InboundOutcome::Replayed => return Err(replayed()),
            }
        }
        Callback::DeliveryReport(r) => match r.status {
            Some(status) => {
                let report = DeliveryReport {
                    channel_app: app.name.clone(),
                    external_id: r.message_id,
                    correlation_id: r.correlation_id,
                    status,
                    reason: r.reason,
                };
                match state.store.record_delivery_report(&nonce, &report).await? {
                    ReportOutcome::Updated { .. } => "updated",
                    ReportOutcome::Unchanged => "unchanged",
                    ReportOutcome::UnknownMessage => "unknown_message",
                    ReportOutcome::Replayed => return Err(replayed()),
                }
            }
            None => ignored(state, &nonce).await.map_err(|()| replayed())?,
        },
        Callback::Ignored { .. } => ignored(state, &nonce).await.map_err(|()| replayed())?,
    };
    Ok(WebhookAck { outcome, kind })
}

/// Callbacks we do not act on are acknowledged without writing anything; a replayed nonce is
/// still refused (read-only check).
async fn ignored(state: &AppState, nonce: &Nonce) -> Result<&'static str, ()> {
    match state
        .store
        .nonce_seen(&nonce.channel_app, &nonce.nonce)
        .await
    {
        Ok(true) => Err(()),
        Ok(false) => Ok("ignored"),
        // Nothing is written for these kinds, so acknowledging without the check loses nothing.
        Err(e) => {
            tracing::warn!(error = %e, "nonce check failed for an ignored callback");
            Ok("ignored")
        }
    }
}
