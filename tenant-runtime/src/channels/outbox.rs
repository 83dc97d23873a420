//! The background sender that drains the outbox into `messages:send`.
//!
//! Each round claims due rows with a lease, sends them concurrently and records the outcome:
//! accepted → sent; 429 → retry after `Retry-After`; network/5xx/timeout → retry with
//! exponential backoff and jitter; other 4xx or too many attempts → FAILED. The process may die at
//! any point: unclaimed rows stay due, claimed rows come back when the lease runs out, and a
//! re-send carries the same `correlation_id` so the far side drops the duplicate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::Notify;

use super::sinch::{Client, SendOutcome};
use crate::config::{ChannelApp, OutboxSettings};
use crate::metrics::Metrics;
use crate::storage::{self, OutboxItem, RetryAt, Store, now_ms};

/// Errors of a sender round.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The outbox could not be read or updated.
    #[error("outbox storage failed")]
    Storage(#[from] storage::Error),
    /// The Conversation API client could not be built.
    #[error(transparent)]
    Client(#[from] super::sinch::Error),
}

/// Delay before attempt `attempts + 1`: `base · 2^(attempts-1)`, capped, scaled by `jitter`
/// (a factor in `[0.5, 1.0]` so that many failed rows do not retry in lockstep).
pub(crate) fn backoff_ms(attempts: i64, base_ms: i64, max_ms: i64, jitter: f64) -> i64 {
    let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let raw = base_ms.saturating_mul(1_i64 << exp).min(max_ms);
    ((raw as f64) * jitter.clamp(0.5, 1.0)) as i64
}

/// Drains the outbox.
#[derive(Debug, Clone)]
pub struct Sender {
    store: Store,
    client: Arc<Client>,
    apps: Arc<HashMap<String, ChannelApp>>,
    settings: OutboxSettings,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Sender {
    /// A sender over `store` for the configured `apps`; `wake` is notified when rows are added.
    pub fn new(
        store: Store,
        apps: Arc<HashMap<String, ChannelApp>>,
        settings: OutboxSettings,
        auth_url: &str,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let client = Arc::new(Client::new(
            auth_url,
            Duration::from_millis(settings.request_timeout_ms),
        )?);
        Ok(Self {
            store,
            client,
            apps,
            settings,
            wake,
            metrics,
        })
    }

    /// Runs forever (abort the task to stop it).
    pub async fn run(self) {
        loop {
            let handled = match self.run_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "outbox round failed");
                    0
                }
            };
            if handled == 0 {
                // Sleep until new rows arrive or the poll interval passes (retries come due).
                let _ = tokio::time::timeout(
                    Duration::from_millis(self.settings.poll_interval_ms),
                    self.wake.notified(),
                )
                .await;
            }
        }
    }

    /// One round: claims a batch and handles it. Returns how many rows were handled.
    pub async fn run_once(&self) -> Result<usize, Error> {
        let items = self
            .store
            .claim_outbox(self.settings.batch_size, self.settings.lease_secs * 1000)
            .await?;
        let n = items.len();
        let results: Vec<Result<(), Error>> = futures::stream::iter(items)
            .map(|item| self.handle(item))
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        for r in results {
            r?;
        }
        Ok(n)
    }

    async fn handle(&self, item: OutboxItem) -> Result<(), Error> {
        let Some(app) = self.apps.get(&item.channel_app) else {
            self.metrics.outbox("failed");
            self.store
                .fail_outbox(
                    &item.id,
                    &format!("channel app `{}` is not configured", item.channel_app),
                )
                .await?;
            return Ok(());
        };
        let outcome = self.client.send(app, &item.payload).await;
        let backoff = || {
            backoff_ms(
                item.attempts,
                self.settings.base_backoff_ms,
                self.settings.max_backoff_ms,
                0.5 + rand::random::<f64>() / 2.0,
            )
        };
        let exhausted = item.attempts >= self.settings.max_attempts;
        match outcome {
            SendOutcome::Accepted { message_id } => {
                self.metrics.outbox("accepted");
                self.store.mark_outbox_sent(&item.id, &message_id).await?;
            }
            SendOutcome::Rejected { reason } => {
                self.metrics.outbox("rejected");
                tracing::warn!(id = %item.id, %reason, "messages:send rejected");
                self.store.fail_outbox(&item.id, &reason).await?;
            }
            SendOutcome::Throttled { .. } | SendOutcome::Transient { .. } if exhausted => {
                self.metrics.outbox("failed");
                let reason = format!("gave up after {} attempts: {outcome:?}", item.attempts);
                self.store.fail_outbox(&item.id, &reason).await?;
            }
            SendOutcome::Throttled { retry_after } => {
                self.metrics.outbox("throttled");
                let delay = retry_after.map_or_else(backoff, |d| d.as_millis() as i64);
                self.store
                    .retry_outbox(&item.id, RetryAt(now_ms() + delay), "429 throttled")
                    .await?;
            }
            SendOutcome::Transient { reason } => {
                self.metrics.outbox("transient");
                tracing::debug!(id = %item.id, %reason, "messages:send will be retried");
                self.store
                    .retry_outbox(&item.id, RetryAt(now_ms() + backoff()), &reason)
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(1, 500, 60_000, 1.0), 500);
        assert_eq!(backoff_ms(2, 500, 60_000, 1.0), 1000);
        assert_eq!(backoff_ms(5, 500, 60_000, 1.0), 8000);
        assert_eq!(backoff_ms(20, 500, 60_000, 1.0), 60_000);
        assert_eq!(backoff_ms(64, 500, 60_000, 0.5), 30_000);
        assert_eq!(backoff_ms(0, 500, 60_000, 1.0), 500);
    }
}
