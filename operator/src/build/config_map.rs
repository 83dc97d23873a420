//! The runtime's configuration, rendered from the spec into a ConfigMap the runtime watches and
//! reloads live. Changing it never restarts pods, so it is never held for the maintenance window.
//! It carries the next maintenance window so the runtime can warn agents before a restart.
//!
//! Credentials never appear here: the file names paths of mounted Secret keys, so the runtime can
//! re-read rotated credentials without a restart either.

use super::{names, owned_meta, workload::secret_mount_path};
use crate::build::ingress::url;
use crate::maintenance::Occurrence;
use crate::reconcile::validate::ValidatedTenant;
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;
use std::collections::BTreeMap;

/// Key of the rendered file in the ConfigMap.
pub const CONFIG_KEY: &str = "runtime.json";

/// The runtime configuration file (JSON), as the runtime reads it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// Tenant name.
    pub tenant: String,
    /// Display name.
    pub display_name: String,
    /// Public URL.
    pub public_url: String,
    /// Channels with paths to their mounted secrets.
    pub channels: Vec<ChannelConfig>,
    /// Routing settings as given in the spec.
    pub routing: serde_json::Value,
    /// Retention settings as given in the spec.
    pub retention: serde_json::Value,
    /// Maintenance window, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceConfig>,
}

/// A channel in the runtime configuration.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelConfig {
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
    /// Conversation API base URL.
    pub api_base_url: String,
    /// OAuth2 token URL override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// File holding the OAuth2 key id.
    pub key_id_file: String,
    /// File holding the OAuth2 key secret.
    pub key_secret_file: String,
    /// File holding the webhook signing secret.
    pub webhook_secret_file: String,
}

/// The maintenance window as the runtime shows it to agents.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceConfig {
    /// Human description of the weekly window.
    pub window: String,
    /// Start of the window that is open now or opens next (RFC 3339).
    pub next_start: String,
    /// Its end (RFC 3339).
    pub next_end: String,
}

impl RuntimeConfig {
    /// Renders the configuration of `t`; `next_window` is the open-or-next window occurrence.
    pub fn render(t: &ValidatedTenant, next_window: Option<Occurrence>) -> Self {
        Self {
            tenant: t.name.clone(),
            display_name: t.display_name.clone(),
            public_url: url(t),
            channels: t
                .channels
                .iter()
                .map(|c| ChannelConfig {
                    name: c.name.clone(),
                    channel_type: c.channel_type.clone(),
                    region: c.region.clone(),
                    project_id: c.project_id.clone(),
                    app_id: c.app_id.clone(),
                    api_base_url: c.api_base_url.clone(),
                    auth_url: c.auth_url.clone(),
                    key_id_file: format!(
                        "{}/{}",
                        secret_mount_path(&c.credentials_secret),
                        c.key_id_key
                    ),
                    key_secret_file: format!(
                        "{}/{}",
                        secret_mount_path(&c.credentials_secret),
                        c.key_secret_key
                    ),
                    webhook_secret_file: format!(
                        "{}/{}",
                        secret_mount_path(&c.webhook_secret),
                        c.webhook_key
                    ),
                })
                .collect(),
            routing: t.routing.clone(),
            retention: t.retention.clone(),
            maintenance: t
                .window
                .as_ref()
                .zip(next_window)
                .map(|(w, o)| MaintenanceConfig {
                    window: w.to_string(),
                    next_start: o.start.to_rfc3339(),
                    next_end: o.end.to_rfc3339(),
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
