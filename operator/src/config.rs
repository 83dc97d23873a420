//! Operator-wide configuration that is not part of any tenant: defaults and the mapping from a
//! tenant's `hostingLocation` to the nodes that may run it.

use std::collections::BTreeMap;

/// Settings shared by every reconcile. Built from flags/env in `args`, or directly in tests.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Runtime image used when a tenant does not pin one.
    pub default_image: String,
    /// Namespace of the ingress controller, the only outside namespace allowed to reach a runtime.
    pub ingress_namespace: String,
    /// `hostingLocation` → node labels required of nodes running that tenant. Empty map: no
    /// affinity at all (development clusters); non-empty: unknown locations are rejected.
    pub locations: BTreeMap<String, BTreeMap<String, String>>,
    /// Image of the CloudNativePG operand, when tenants use `cloudNativePG`.
    pub cnpg_image: Option<String>,
    /// Only tenants in these namespaces are reconciled (empty: all namespaces).
    pub watch_namespaces: Vec<String>,
    /// How often a healthy tenant is reconciled even without events (drift repair, trial expiry).
    pub resync: std::time::Duration,
    /// Tenants reconciled at once.
    pub concurrency: u16,
    /// Conversation API hosts (`host` or `host:port`) a tenant may point `apiBaseUrl`/`authUrl`
    /// at besides Sinch's own (https) hosts: the simulator in tests. Empty: Sinch's only.
    pub conversation_api_hosts: Vec<String>,
    /// Runtime images tenants may pin (`spec.runtime.image`): repositories (`registry/name`,
    /// any tag or digest), or prefixes ending in `/`. Empty: only the repository of
    /// `default_image`.
    pub runtime_images: Vec<String>,
    /// Ingress annotation keys tenants may set: exact keys, or `prefix/*` for every key under a
    /// prefix, or `*` for any. Empty: none.
    pub ingress_annotations: Vec<String>,
    /// The operator's own namespace: where it keeps the record of deletions whose data it may
    /// purge (`lifecycle::ledger`), beside its Lease.
    pub own_namespace: String,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            // The runtime of the same release, never a moving `latest`.
            default_image: concat!(
                "ghcr.io/contact-dev/contact-runtime:",
                env!("CARGO_PKG_VERSION")
            )
            .into(),
            ingress_namespace: "ingress-nginx".into(),
            locations: BTreeMap::new(),
            cnpg_image: None,
            resync: std::time::Duration::from_secs(300),
            concurrency: 16,
            watch_namespaces: Vec::new(),
            own_namespace: "default".into(),
            conversation_api_hosts: Vec::new(),
            runtime_images: Vec::new(),
            ingress_annotations: vec!["cert-manager.io/*".into()],
        }
    }
}
