//! Prometheus metrics of the operator: reconciles, failures by category, reconcile duration, and
//! tenants by condition (so "how many tenants are not Ready" is one query, no kube-state-metrics).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Labels of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error category (see `reconcile::Error::category`).
    pub error: String,
}

/// Labels of the purged-data counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kind of the object (PersistentVolumeClaim, Secret, Cluster).
    pub kind: String,
}

/// Labels of the tenants-by-condition gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// Condition type.
    pub condition: String,
    /// True, False or Unknown.
    pub status: String,
}

/// The operator's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<ErrorLabels, Counter>,
    duration: Histogram,
    tenants: Family<ConditionLabels, Gauge>,
    purged: Family<KindLabels, Counter>,
    by_tenant: Mutex<HashMap<String, Vec<(String, String)>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("contact_operator");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let tenants = Family::<ConditionLabels, Gauge>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error category",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            duration.clone(),
        );
        registry.register(
            "tenants",
            "Tenants by condition and status",
            tenants.clone(),
        );
        let purged = Family::<KindLabels, Counter>::default();
        registry.register(
            "data_purged",
            "Data objects of deleted tenants purged after their grace period, by kind",
            purged.clone(),
        );
        Self {
            registry,
            purged,
            reconciles,
            failures,
            duration,
            tenants,
            by_tenant: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// Records one reconcile and how long it took.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Reconciles run so far.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.get()
    }

    /// Records a purged data object of `kind`.
    pub fn purged(&self, kind: &str) {
        self.purged
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Data objects of `kind` purged so far.
    pub fn purged_count(&self, kind: &str) -> u64 {
        self.purged
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .get()
    }

    /// Records a failed reconcile.
    pub fn failed(&self, category: &str) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: category.to_string(),
            })
            .inc();
    }

    /// Records a tenant's current conditions (`None` when the tenant is gone) and moves the gauge
    /// by the difference, so it always equals the count over live tenants (recounting every
    /// tenant on each call made provisioning N tenants cost N² steps).
    pub fn set_conditions(&self, tenant: &str, conditions: Option<Vec<(String, String)>>) {
        let mut map = self.by_tenant.lock().unwrap_or_else(|e| e.into_inner());
        let previous = match conditions {
            Some(c) => {
                for (condition, status) in &c {
                    self.gauge(condition, status).inc();
                }
                map.insert(tenant.to_string(), c)
            }
            None => map.remove(tenant),
        };
        for (condition, status) in previous.unwrap_or_default() {
            self.gauge(&condition, &status).dec();
        }
    }

    /// Live tenants whose `condition` has `status` (as last written by this operator).
    pub fn tenants_with(&self, condition: &str, status: &str) -> i64 {
        self.gauge(condition, status).get()
    }

    fn gauge(&self, condition: &str, status: &str) -> Gauge {
        self.tenants
            .get_or_create(&ConditionLabels {
                condition: condition.to_string(),
                status: status.to_string(),
            })
            .clone()
    }

    /// OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_gauge_counts_live_tenants() {
        let m = Metrics::default();
        m.set_conditions("a/x", Some(vec![("Ready".into(), "True".into())]));
        m.set_conditions("a/y", Some(vec![("Ready".into(), "False".into())]));
        m.set_conditions("a/y", Some(vec![("Ready".into(), "True".into())]));
        let text = m.encode();
        assert!(
            text.contains("contact_operator_tenants{condition=\"Ready\",status=\"True\"} 2"),
            "{text}"
        );
        assert!(!text.contains("status=\"False\"} 1"), "{text}");
        assert_eq!(m.tenants_with("Ready", "True"), 2);
        assert_eq!(m.tenants_with("Ready", "False"), 0);
        m.set_conditions("a/x", None);
        assert!(m.encode().contains("status=\"True\"} 1"));
        assert_eq!(m.tenants_with("Ready", "True"), 1);
        m.reconciled(Duration::from_millis(20));
        m.failed("kube");
        let text = m.encode();
        assert!(
            text.contains("contact_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains("contact_operator_reconcile_errors_total{error=\"kube\"} 1"),
            "{text}"
        );
    }
}
