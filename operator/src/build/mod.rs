//! Step 3 of the pipeline: pure builders, one `build_<kind>` per object a tenant owns, and
//! `all`, which builds them together into the `Children` bundle.
//!
//! This floor stands on `tenant` only: nothing here knows the client, the controller or the
//! reconcile that calls it. Each builder takes the `ValidatedTenant` (and, where a value must never change once made, the
//! existing value) and returns the full desired object. No client, no clock, no randomness except
//! through a caller-supplied RNG: the same input always gives the same object, which is what makes
//! the hash-based "skip unchanged apply" in `reconcile::apply` sound.
//!
//! Ownership: every child carries an owner reference to the tenant (so `Controller::owns` maps
//! events back and the garbage collector removes it) EXCEPT data-bearing objects (the SQLite PVCs,
//! the backup PVC, the key Secret and the CloudNativePG Cluster). Those carry the `contact.dev/tenant`
//! and `contact.dev/data` labels instead, so deleting a tenant never cascades into its data; the
//! deletion-grace logic in `lifecycle` decides when data goes. The key Secret counts as data because
//! without the backup encryption key the surviving backups are unreadable.

mod backup;
mod children;
mod cnpg;
mod config_map;
mod ingress;
mod network_policy;
mod pdb;
mod secret;
mod service;
mod service_account;
mod workload;

// What the binary, the benchmark and the contract test use: the bundle and the builders whose
// output the runtime reads. Everything else serves `reconcile` only.
pub use backup::build_backup_cronjob;
pub use children::{Built, Child, Children, Inputs, Slot, all};
pub use config_map::build_config_map;
pub(crate) use secret::SECRET_KEYS;
pub use secret::build_secret;
pub use workload::secret_mount_path;

pub(crate) use backup::{CONTAINER as BACKUP_CONTAINER, build_backup_pvc};
pub(crate) use children::{Name, Names};
pub(crate) use cnpg::{build_cnpg_cluster, cnpg_api_resource};
pub(crate) use ingress::{build_ingress, url as ingress_url};
pub(crate) use network_policy::build_network_policy;
pub(crate) use pdb::build_pdb;
pub(crate) use service::build_service;
pub(crate) use service_account::build_service_account;
pub(crate) use workload::{Workload, build_workload};

use crate::labels;
use crate::tenant::ValidatedTenant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// Names of the children of a tenant, derived from its name in one place.
pub(crate) mod names {
    /// ServiceAccount, Service, workload and Ingress share the tenant's name.
    pub(crate) fn runtime(tenant: &str) -> String {
        tenant.to_string()
    }
    /// ConfigMap with the runtime configuration.
    pub(crate) fn config(tenant: &str) -> String {
        format!("{tenant}-config")
    }
    /// Secret with the generated keys.
    pub(crate) fn keys(tenant: &str) -> String {
        format!("{tenant}-keys")
    }
    /// Backup PVC.
    pub(crate) fn backup_pvc(tenant: &str) -> String {
        format!("{tenant}-backups")
    }
    /// Backup CronJob.
    pub(crate) fn backup_job(tenant: &str) -> String {
        format!("{tenant}-backup")
    }
    /// CloudNativePG Cluster.
    pub(crate) fn cnpg(tenant: &str) -> String {
        format!("{tenant}-db")
    }
    /// Secret CloudNativePG creates with the application user's URI.
    pub(crate) fn cnpg_app_secret(tenant: &str) -> String {
        format!("{tenant}-db-app")
    }
    /// NetworkPolicy.
    pub(crate) fn network_policy(tenant: &str) -> String {
        format!("{tenant}-runtime")
    }
    /// Name of the volume claim template of the StatefulSet (PVCs are `data-<tenant>-<ordinal>`).
    pub(crate) const DATA_VOLUME: &str = "data";
    /// PVC of the first SQLite replica.
    pub(crate) fn sqlite_pvc(tenant: &str) -> String {
        format!("{DATA_VOLUME}-{tenant}-0")
    }
}

/// Labels selecting a tenant's runtime pods (kept minimal and stable: selectors are immutable).
pub(crate) fn selector_labels(t: &ValidatedTenant) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::APP_NAME.to_string(), "contact-runtime".to_string()),
        (labels::APP_INSTANCE.to_string(), t.name.clone()),
    ])
}

/// Labels every child carries.
pub(crate) fn common_labels(t: &ValidatedTenant, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(t);
    l.insert(labels::TENANT.to_string(), t.name.clone());
    l.insert(labels::COMPONENT.to_string(), component.to_string());
    l.insert(
        labels::MANAGED_BY.to_string(),
        labels::FIELD_MANAGER.to_string(),
    );
    l
}

/// Labels of a data-bearing child: the tenant labels plus `contact.dev/data=true`.
pub(crate) fn data_labels(t: &ValidatedTenant, component: &str) -> BTreeMap<String, String> {
    let mut l = common_labels(t, component);
    l.insert(labels::DATA.to_string(), "true".to_string());
    l
}

/// The controller owner reference to the tenant.
pub(crate) fn owner_reference(t: &ValidatedTenant) -> OwnerReference {
    OwnerReference {
        api_version: "contact.dev/v1alpha1".into(),
        kind: "ContactTenant".into(),
        name: t.name.clone(),
        uid: t.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata of an owned child.
pub(crate) fn owned_meta(t: &ValidatedTenant, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(t.namespace.clone()),
        labels: Some(common_labels(t, component)),
        owner_references: Some(vec![owner_reference(t)]),
        ..Default::default()
    }
}

/// Metadata of a data-bearing child: labels, no owner reference (see the module docs).
pub(crate) fn data_meta(t: &ValidatedTenant, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(t.namespace.clone()),
        labels: Some(data_labels(t, component)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
