//! The observed state of a tenant, written by the operator through the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// What the operator last saw and did for a tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContactTenantStatus {
    /// The `metadata.generation` the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Standard conditions, one per type: `Ready` summarizes; `Provisioned`, `DatabaseReady`,
    /// `IngressReady`, `BackupsHealthy`, `MaintenancePending` and `TrialExpired` tell the details.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Where agents and admins reach the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// The last successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupRecord>,

    /// When the next maintenance window opens and closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_maintenance_window: Option<WindowRecord>,

    /// Changes accepted in the spec that wait for the maintenance window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_changes: Vec<PendingChange>,
}

/// A backup the runtime took.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// When the backup finished.
    pub time: Time,
    /// The backup's name (its file stem on the backup volume).
    pub name: String,
    /// The size of the encrypted backup in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
}

/// One occurrence of the maintenance window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WindowRecord {
    /// When the window opens (RFC 3339, UTC).
    pub start: Time,
    /// When the window closes (RFC 3339, UTC).
    pub end: Time,
}

/// A change that waits for the maintenance window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingChange {
    /// The spec field that changed, such as `runtime.image`.
    pub field: String,
    /// What the change does, in words (for example `image contact:1.2 -> contact:1.3`).
    pub description: String,
}
