//! The CloudNativePG `Cluster` for tenants on `cloudNativePG`. Built as a `DynamicObject` so the
//! operator does not depend on CNPG's types (and keeps working where CNPG is not installed, with
//! a clear condition instead). It holds the tenant's data, so it is not owned: see `build`.

use super::{data_meta, names};
use crate::tenant::{Database, ValidatedTenant};
use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::json;

/// The API resource of `postgresql.cnpg.io/v1` `Cluster`.
pub(crate) fn cnpg_api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    )
}

/// Builds the Cluster, or `None` unless the tenant uses CloudNativePG.
pub(crate) fn build_cnpg_cluster(
    t: &ValidatedTenant,
    image: Option<&str>,
) -> Option<DynamicObject> {
    let Database::CloudNativePg { instances, size } = &t.database else {
        return None;
    };
    let mut spec = json!({
        "instances": instances,
        // One primary + replicas; updates are left to CNPG's own supervision, but we only change
        // this object inside the tenant's maintenance window (see reconcile::gating).
        "primaryUpdateStrategy": "unsupervised",
        "storage": { "size": size },
        "bootstrap": { "initdb": { "database": "contact", "owner": "contact" } },
    });
    if let Some(image) = image {
        spec["imageName"] = json!(image);
    }
    if !t.node_labels.is_empty() {
        spec["affinity"] = json!({ "nodeSelector": t.node_labels });
    }
    let mut obj =
        DynamicObject::new(&names::cnpg(&t.name), &cnpg_api_resource()).within(&t.namespace);
    obj.metadata = data_meta(t, names::cnpg(&t.name), "database");
    obj.data = json!({ "spec": spec });
    Some(obj)
}
