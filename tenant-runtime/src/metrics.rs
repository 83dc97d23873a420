//! Prometheus metrics of the runtime, served at `/metrics` in the OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the webhook counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// Callback kind (top-level key) or `invalid`.
    pub kind: String,
    /// `stored`, `duplicate`, `updated`, `ignored`, `rejected`, …
    pub outcome: String,
}

/// Labels of the outbox counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboxLabels {
    /// `accepted`, `throttled`, `transient`, `rejected`, `failed`.
    pub outcome: String,
}

/// The runtime's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Webhook callbacks handled.
    pub webhooks: Family<WebhookLabels, Counter>,
    /// Time from request to acknowledgement of a webhook.
    pub webhook_seconds: Histogram,
    /// Outbox send attempts.
    pub outbox: Family<OutboxLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("contact");
        let webhooks = Family::<WebhookLabels, Counter>::default();
        let webhook_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let outbox = Family::<OutboxLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Conversation API callbacks handled, by kind and outcome",
            webhooks.clone(),
        );
        registry.register(
            "webhook_duration_seconds",
            "Time until a callback was acknowledged",
            webhook_seconds.clone(),
        );
        registry.register(
            "outbox_attempts",
            "messages:send attempts by outcome",
            outbox.clone(),
        );
        Self {
            registry,
            webhooks,
            webhook_seconds,
            outbox,
        }
    }
}

impl Metrics {
    /// Counts one webhook.
    pub fn webhook(&self, kind: &str, outcome: &str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one outbox attempt.
    pub fn outbox(&self, outcome: &str) {
        self.outbox
            .get_or_create(&OutboxLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
