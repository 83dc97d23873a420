//! Deletion grace: data outlives its tenant for `dataGraceDays`.
//!
//! On delete (the finalizer's cleanup), every data-bearing object of the tenant (found by the
//! `contact.dev/tenant` + `contact.dev/data` labels: SQLite PVCs, the backup PVC, the key Secret,
//! the CloudNativePG Cluster) loses any owner reference to the tenant and is annotated with the
//! deletion time and the purge time. A sweeper deletes them once the purge time has passed and
//! no tenant of that name exists. Re-creating the tenant in time re-attaches them (the annotations
//! go; the workload picks up its PVC by name, the key Secret keeps its values).

use crate::build::cnpg_api_resource;
use crate::labels;
use chrono::{DateTime, Utc};
use contact_crds::v1alpha1::ContactTenant;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;

/// Failure while detaching, re-attaching or purging data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing data-bearing objects failed.
    #[error("failed to list {kind}")]
    List {
        /// Kind.
        kind: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Patching (detach/re-attach) failed.
    #[error("failed to patch {kind} {name}")]
    Patch {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Deleting (purge) failed.
    #[error("failed to purge {kind} {name}")]
    Purge {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Checking whether the tenant exists failed.
    #[error("failed to read tenant {0}")]
    Tenant(String, #[source] kube::Error),
}

/// One data-bearing object acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataObject {
    /// Kind (PersistentVolumeClaim, Secret, Cluster).
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

fn selector(tenant: Option<&str>) -> ListParams {
    let s = match tenant {
        Some(t) => format!("{}={t},{}=true", labels::TENANT, labels::DATA),
        None => format!("{}=true", labels::DATA),
    };
    ListParams::default().labels(&s)
}

/// The API of each data-bearing kind in `ns` (all namespaces if `None`). The CloudNativePG kind is
/// included; where its CRD is absent the list fails with 404 and is skipped.
struct DataApis {
    pvcs: Api<PersistentVolumeClaim>,
    secrets: Api<Secret>,
    clusters: Api<DynamicObject>,
}

impl DataApis {
    fn new(client: &Client, ns: Option<&str>) -> Self {
        let ar = cnpg_api_resource();
        match ns {
            Some(ns) => Self {
                pvcs: Api::namespaced(client.clone(), ns),
                secrets: Api::namespaced(client.clone(), ns),
                clusters: Api::namespaced_with(client.clone(), ns, &ar),
            },
            None => Self {
                pvcs: Api::all(client.clone()),
                secrets: Api::all(client.clone()),
                clusters: Api::all_with(client.clone(), &ar),
            },
        }
    }
}

async fn list<K>(api: &Api<K>, kind: &str, lp: &ListParams) -> Result<Vec<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.list(lp).await {
        Ok(l) => Ok(l.items),
        // The CloudNativePG CRD is optional.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(source) => Err(Error::List {
            kind: kind.to_string(),
            source,
        }),
    }
}

async fn merge<K>(api: &Api<K>, kind: &str, obj: &K, patch: serde_json::Value) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.name_any();
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::Patch {
            kind: kind.to_string(),
            name,
            source,
        })
}

fn detach_patch<K: Resource>(
    obj: &K,
    tenant_uid: &str,
    now: DateTime<Utc>,
    purge: DateTime<Utc>,
) -> Option<serde_json::Value> {
    let owners = obj.owner_references();
    let kept: Vec<_> = owners
        .iter()
        .filter(|o| o.uid != tenant_uid)
        .cloned()
        .collect();
    let already = obj.annotations().contains_key(labels::PURGE_AFTER);
    if already && kept.len() == owners.len() {
        return None; // idempotent: keep the first deletion time
    }
    let mut meta = json!({});
    if !already {
        meta["annotations"] = json!({
            labels::DELETED_AT: now.to_rfc3339(),
            labels::PURGE_AFTER: purge.to_rfc3339(),
        });
    }
    if kept.len() != owners.len() {
        meta["ownerReferences"] = if kept.is_empty() {
            serde_json::Value::Null
        } else {
            json!(kept)
        };
    }
    Some(json!({ "metadata": meta }))
}

/// Detaches every data-bearing object of `tenant`: drops owner references to it and stamps the
/// deletion and purge times. Idempotent (a repeated cleanup keeps the first times).
pub(crate) async fn detach(
    client: &Client,
    tenant: &ContactTenant,
    grace_days: u32,
    now: DateTime<Utc>,
) -> Result<Vec<DataObject>, Error> {
    let ns = tenant.namespace().unwrap_or_default();
    let name = tenant.name_any();
    let uid = tenant.uid().unwrap_or_default();
    let purge = now + chrono::Duration::days(i64::from(grace_days));
    let apis = DataApis::new(client, Some(&ns));
    let lp = selector(Some(&name));
    let mut out = Vec::new();
    macro_rules! each {
        ($api:expr, $kind:expr) => {
            for obj in list(&$api, $kind, &lp).await? {
                if let Some(p) = detach_patch(&obj, &uid, now, purge) {
                    merge(&$api, $kind, &obj, p).await?;
                }
                out.push(DataObject {
                    kind: $kind.into(),
                    namespace: ns.clone(),
                    name: obj.name_any(),
                });
            }
        };
    }
    each!(apis.pvcs, "PersistentVolumeClaim");
    each!(apis.secrets, "Secret");
    each!(apis.clusters, "Cluster");
    Ok(out)
}

/// Re-attaches detached data of a (re-created) tenant: removes the grace annotations. Returns the
/// objects re-attached (empty, with no writes, in the common case).
pub(crate) async fn reattach(
    client: &Client,
    namespace: &str,
    tenant: &str,
) -> Result<Vec<DataObject>, Error> {
    let apis = DataApis::new(client, Some(namespace));
    let lp = selector(Some(tenant));
    let patch = json!({ "metadata": { "annotations": { labels::DELETED_AT: null, labels::PURGE_AFTER: null } } });
    let mut out = Vec::new();
    macro_rules! each {
        ($api:expr, $kind:expr) => {
            for obj in list(&$api, $kind, &lp).await? {
                if obj.annotations().contains_key(labels::PURGE_AFTER) {
                    merge(&$api, $kind, &obj, patch.clone()).await?;
                    out.push(DataObject {
                        kind: $kind.into(),
                        namespace: namespace.to_string(),
                        name: obj.name_any(),
                    });
                }
            }
        };
    }
    each!(apis.pvcs, "PersistentVolumeClaim");
    each!(apis.secrets, "Secret");
    each!(apis.clusters, "Cluster");
    Ok(out)
}

fn due<K: Resource>(obj: &K, now: DateTime<Utc>) -> bool {
    obj.annotations()
        .get(labels::PURGE_AFTER)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|t| t.with_timezone(&Utc) <= now)
}

/// Purges detached data whose grace has passed, in all namespaces, unless a tenant of the same
/// name exists again (then the next reconcile re-attaches it). Returns what was purged.
pub async fn sweep(client: &Client, now: DateTime<Utc>) -> Result<Vec<DataObject>, Error> {
    let apis = DataApis::new(client, None);
    let lp = selector(None);
    let mut out = Vec::new();
    macro_rules! each {
        ($api:expr, $kind:expr, $ns_api:expr) => {
            for obj in list(&$api, $kind, &lp).await? {
                if !due(&obj, now) {
                    continue;
                }
                let ns = obj.namespace().unwrap_or_default();
                let tenant = obj
                    .labels()
                    .get(labels::TENANT)
                    .cloned()
                    .unwrap_or_default();
                let tenants: Api<ContactTenant> = Api::namespaced(client.clone(), &ns);
                if tenants
                    .get_opt(&tenant)
                    .await
                    .map_err(|e| Error::Tenant(tenant.clone(), e))?
                    .is_some()
                {
                    continue;
                }
                let api = $ns_api(&ns);
                match api
                    .delete(&obj.name_any(), &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(source) => {
                        return Err(Error::Purge {
                            kind: $kind.into(),
                            name: obj.name_any(),
                            source,
                        });
                    }
                }
                out.push(DataObject {
                    kind: $kind.into(),
                    namespace: ns,
                    name: obj.name_any(),
                });
            }
        };
    }
    let ar = cnpg_api_resource();
    each!(apis.pvcs, "PersistentVolumeClaim", |ns: &str| Api::<
        PersistentVolumeClaim,
    >::namespaced(
        client.clone(),
        ns
    ));
    each!(
        apis.secrets,
        "Secret",
        |ns: &str| Api::<Secret>::namespaced(client.clone(), ns)
    );
    each!(apis.clusters, "Cluster", |ns: &str| {
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
    });
    Ok(out)
}
