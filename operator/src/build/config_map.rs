//! The runtime's configuration, rendered from the spec into a ConfigMap the runtime watches and
//! reloads live. Changing it never restarts pods, so it is never held for the maintenance window.
//! It carries the next maintenance window so the runtime can warn agents before a restart.
//!
//! Credentials never appear here: the file names paths of mounted Secret keys, so the runtime can
//! re-read rotated credentials without a restart either.

use super::{names, owned_meta, workload::secret_mount_path};
use crate::build::ingress::url;
use crate::maintenance::Occurrence;
use crate::tenant::ValidatedTenant;
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;
use std::collections::BTreeMap;

/// Key of the rendered file in the ConfigMap.
pub(crate) const CONFIG_KEY: &str = "runtime.json";

/// The runtime's settings file, in the runtime's own format (`contact_runtime::config::Settings`,
/// snake_case, unknown fields refused). JSON is YAML, which the runtime reads. The contract is
/// held by a test in `tests/` that parses this output with the runtime's own loader.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct RuntimeConfig {
    /// Who the tenant is.
    pub tenant: TenantConfig,
    /// Accounts: the public URL for invite links.
    pub auth: AuthConfig,
    /// Conversation API endpoints shared by the channel apps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sinch: Option<SinchConfig>,
    /// Channel apps with the paths of their mounted secrets.
    pub channels: Vec<ChannelConfig>,
    /// Routing defaults from `spec.routing`.
    pub routing: RoutingConfig,
    /// Retention from `spec.retention`.
    pub retention: RetentionConfig,
    /// The maintenance window that is open now or opens next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceConfig>,
}

/// The tenant's identity.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct TenantConfig {
    /// The ContactTenant's name.
    pub name: String,
    /// `spec.displayName`.
    pub display_name: String,
}

/// Account settings the operator knows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct AuthConfig {
    /// Public base URL (invite links).
    pub public_url: String,
}

/// Shared Conversation API endpoints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct SinchConfig {
    /// OAuth2 token URL override (for the simulator).
    pub auth_url: String,
}

/// A channel app in the runtime configuration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ChannelConfig {
    /// Channel name.
    pub name: String,
    /// Channel type.
    #[serde(rename = "type")]
    pub channel_type: String,
    /// Conversation API region.
    pub region: String,
    /// Project id.
    pub project_id: String,
    /// App id.
    pub app_id: String,
    /// Conversation API base URL override (unset: the region's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// File holding the OAuth2 key id.
    pub key_id_file: String,
    /// File holding the OAuth2 key secret.
    pub key_secret_file: String,
    /// File holding the webhook signing secret.
    pub webhook_secret_file: String,
}

/// Routing defaults.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct RoutingConfig {
    /// New agents start with automatic allocation on.
    pub auto_allocate_by_default: bool,
    /// Concurrent conversations per agent.
    pub max_conversations_per_agent: u32,
    /// Grace after an agent disconnects before their conversations return to the queue.
    pub return_to_queue_after_disconnect_secs: u64,
}

/// Retention in days.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct RetentionConfig {
    /// Closed conversations are anonymized after this many days.
    pub anonymize_conversations_after_days: i64,
    /// Closed conversations are deleted after this many days.
    pub delete_conversations_after_days: i64,
    /// Audit entries are purged after this many days.
    pub audit_log_days: i64,
}

/// The maintenance window occurrence the Workspace warns agents about.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct MaintenanceConfig {
    /// Start of the window that is open now or opens next (RFC 3339).
    pub start: String,
    /// Its end (RFC 3339).
    pub end: String,
}

impl RuntimeConfig {
    /// Renders the configuration of `t`; `next_window` is the open-or-next window occurrence.
    pub(crate) fn render(t: &ValidatedTenant, next_window: Option<Occurrence>) -> Self {
        let file = |secret: &str, key: &str| format!("{}/{key}", secret_mount_path(secret));
        // The runtime has one token URL for all apps; the CRD allows one per channel for tests
        // against the simulator, where they are all the same.
        let auth_url = t.channels.iter().find_map(|c| c.auth_url.clone());
        Self {
            tenant: TenantConfig {
                name: t.name.clone(),
                display_name: t.display_name.clone(),
            },
            auth: AuthConfig { public_url: url(t) },
            sinch: auth_url.map(|auth_url| SinchConfig { auth_url }),
            channels: t
                .channels
                .iter()
                .map(|c| ChannelConfig {
                    name: c.name.clone(),
                    channel_type: c.channel_type.clone(),
                    region: c.region.clone(),
                    project_id: c.project_id.clone(),
                    app_id: c.app_id.clone(),
                    base_url: Some(c.api_base_url.clone()),
                    key_id_file: file(&c.credentials_secret, &c.key_id_key),
                    key_secret_file: file(&c.credentials_secret, &c.key_secret_key),
                    webhook_secret_file: file(&c.webhook_secret, &c.webhook_key),
                })
                .collect(),
            routing: RoutingConfig {
                auto_allocate_by_default: t.routing.auto_allocate_by_default,
                max_conversations_per_agent: t.routing.max_conversations_per_agent,
                return_to_queue_after_disconnect_secs: t.return_to_queue_secs,
            },
            retention: RetentionConfig {
                anonymize_conversations_after_days: t
                    .retention
                    .anonymize_conversations_after_days
                    .into(),
                delete_conversations_after_days: t.retention.delete_conversations_after_days.into(),
                audit_log_days: t.retention.audit_log_days.into(),
            },
            maintenance: next_window.map(|o| MaintenanceConfig {
                start: o.start.to_rfc3339(),
                end: o.end.to_rfc3339(),
            }),
        }
    }
}

/// Builds the ConfigMap holding `runtime.json`.
pub fn build_config_map(t: &ValidatedTenant, next_window: Option<Occurrence>) -> ConfigMap {
    let rendered = RuntimeConfig::render(t, next_window);
    // Serializing plain strings and JSON values cannot fail; an empty file would be caught by the
    // runtime's own config validation.
    let body = serde_json::to_string_pretty(&rendered).unwrap_or_default();
    ConfigMap {
        metadata: owned_meta(t, names::config(&t.name), "config"),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), body)])),
        ..Default::default()
    }
}
