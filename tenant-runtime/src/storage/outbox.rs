//! The outbox: outbound messages waiting to be handed to the Conversation API.
//!
//! A sender claims due rows by setting a lease (`lease_until`); if it dies, the lease runs out and
//! another claim picks the row up again. A row is marked sent only after the API answered 200,
//! so a crash between the two re-sends the same request with the same `correlation_id`, which the
//! far side dedupes: at-least-once delivery made exactly-once by the idempotency key.

use super::{Result, Store, WriteTx, now_ms, on_driver};
use crate::domain::DeliveryStatus;

/// A claimed outbox row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxItem {
    /// Outbox id = message id = `correlation_id`.
    pub id: String,
    /// Channel app to send through.
    pub channel_app: String,
    /// The `messages:send` body.
    pub payload: String,
    /// How many times it has been claimed, this claim included.
    pub attempts: i64,
}

/// When to try a failed send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAt(pub i64);

/// Where one outbox row stands.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxState {
    /// `pending`, `sent` or `failed`.
    pub state: String,
    /// Send attempts so far.
    pub attempts: i64,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
}

impl Store {
    /// Claims up to `limit` due rows for `lease_ms` milliseconds.
    pub async fn claim_outbox(&self, limit: i64, lease_ms: i64) -> Result<Vec<OutboxItem>> {
        let now = now_ms();
        // The lease conditions are repeated outside the sub-select so that, on PostgreSQL, a row
        // another sender claimed meanwhile is re-checked after the row lock and skipped.
        let items: Vec<OutboxItem> = on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let items = sqlx::query_as(
                "UPDATE outbox SET lease_until = $1, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND available_at <= $2 AND (lease_until IS NULL OR lease_until <= $2) ORDER BY available_at, id LIMIT $3) \
                 AND state = 'pending' AND (lease_until IS NULL OR lease_until <= $2) \
                 RETURNING id, channel_app, payload, attempts",
            )
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            items
        });
        Ok(items)
    }

    /// Marks a row sent after the API accepted it, and records the API's message id.
    pub async fn mark_outbox_sent(&self, id: &str, external_id: &str) -> Result<()> {
        let now = now_ms();
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "UPDATE outbox SET state = 'sent', sent_at = $1, lease_until = NULL, last_error = NULL WHERE id = $2 AND state = 'pending'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE messages SET external_id = $1 WHERE id = $2 AND external_id IS NULL",
            )
            .bind(external_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            // A delivery report may already have moved the status further: keep it monotonic.
            sqlx::query(
                "UPDATE messages SET status = $1, status_rank = $2, updated_at = $3 WHERE id = $4 AND status_rank < $2",
            )
            .bind(DeliveryStatus::Queued.as_str())
            .bind(DeliveryStatus::Queued.rank())
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Releases a row for another try at `at` (epoch ms), remembering the error.
    pub async fn retry_outbox(&self, id: &str, at: RetryAt, error: &str) -> Result<()> {
        on_driver!(self, |pool| {
            sqlx::query(
            "UPDATE outbox SET available_at = $1, lease_until = NULL, last_error = $2 WHERE id = $3 AND state = 'pending'"
        )
        .bind(at.0)
        .bind(error)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    /// Gives up on a row: the message is marked `FAILED` with the error as reason.
    pub async fn fail_outbox(&self, id: &str, error: &str) -> Result<()> {
        let now = now_ms();
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "UPDATE outbox SET state = 'failed', lease_until = NULL, last_error = $1 WHERE id = $2 AND state = 'pending'",
            )
            .bind(error)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE messages SET status = $1, status_rank = $2, status_reason = $3, updated_at = $4 WHERE id = $5 AND status_rank < $2",
            )
            .bind(DeliveryStatus::Failed.as_str())
            .bind(DeliveryStatus::Failed.rank())
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            // Tell live views (the Workspace shows the failure without a reload).
            sqlx::query(
                "INSERT INTO conversation_events (conversation_id, kind, data, created_at) SELECT conversation_id, 'message_status', $1, $2 FROM messages WHERE id = $3",
            )
            .bind(serde_json::json!({ "message_id": id, "status": DeliveryStatus::Failed }).to_string())
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Number of outbox rows in `state` (`pending`, `sent` or `failed`).
    pub async fn outbox_count(&self, state: &str) -> Result<i64> {
        Ok(on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE state = $1"
        )
        .bind(state)
        .fetch_one(pool)
        .await?))
    }

    /// The delivery state of one outbox row.
    pub async fn outbox_row(&self, id: &str) -> Result<OutboxState> {
        let row: Option<OutboxState> = on_driver!(self, |pool| sqlx::query_as(
            "SELECT state, attempts, last_error FROM outbox WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(pool)
        .await?);
        row.ok_or_else(|| super::Error::NotFound {
            what: "outbox row",
            id: id.to_owned(),
        })
    }
}
