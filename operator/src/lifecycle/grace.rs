//! Deletion grace: data outlives its tenant for `dataGraceDays`.
//!
//! On delete (the finalizer's cleanup), every data-bearing object of the tenant that the operator
//! makes (the key Secret, the backup claim, the SQLite claims, the CloudNativePG Cluster: found by
//! the `contact.dev/tenant` + `contact.dev/data` labels, kept only if the name is one the operator
//! gives) loses any owner reference to the tenant, is annotated with the deletion and purge times
//! (for people), and is recorded in the `ledger` with its uid. The sweeper reads only the ledger:
//! it purges what a deletion recorded, in the namespaces this operator watches, once that
//! deletion's grace has passed and no tenant of that name exists. Re-creating the tenant in time
//! re-attaches its data (the annotations go, the record is forgotten; the workload picks up its
//! claim by name, the key Secret keeps its values).

use super::ledger::{self, Deletion, LedgerStore, Recorded};
use crate::build::{cnpg_api_resource, names};
use crate::labels;
use chrono::{DateTime, Utc};
use contact_crds::v1alpha1::ContactTenant;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
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
    /// Reading or writing the record of deletions failed.
    #[error("failed to record the deletion")]
    Ledger(#[from] ledger::Error),
    /// Some objects could not be detached (the others were): retried, and the finalizer stays
    /// until every one is, since an owner reference left on one would let the garbage collector
    /// delete it with the tenant.
    #[error("failed to detach {0}")]
    Detach(String),
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

fn selector(tenant: &str) -> ListParams {
    ListParams::default().labels(&format!(
        "{}={tenant},{}=true",
        labels::TENANT,
        labels::DATA
    ))
}

/// The API of each data-bearing kind in a namespace. The CloudNativePG kind is included; where
/// its CRD is absent the list fails with 404 and is skipped.
struct DataApis {
    pvcs: Api<PersistentVolumeClaim>,
    secrets: Api<Secret>,
    clusters: Api<DynamicObject>,
}

impl DataApis {
    fn new(client: &Client, ns: &str) -> Self {
        Self {
            pvcs: Api::namespaced(client.clone(), ns),
            secrets: Api::namespaced(client.clone(), ns),
            clusters: Api::namespaced_with(client.clone(), ns, &cnpg_api_resource()),
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

/// Whether `name` of `kind` is a data object the operator makes for `tenant` (the key Secret,
/// the backup claim, the SQLite claims `data-<tenant>-<ordinal>`, the CloudNativePG Cluster).
/// Labels can be put on anything by anyone who can edit it; the names the operator gives are the
/// only data it detaches, records and ever purges.
pub(crate) fn made_by_operator(kind: &str, tenant: &str, name: &str) -> bool {
    match kind {
        "Secret" => name == names::keys(tenant),
        "PersistentVolumeClaim" => {
            name == names::backup_pvc(tenant)
                || name
                    .strip_prefix(&format!("{}-{tenant}-", names::DATA_VOLUME))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }
        "Cluster" => name == names::cnpg(tenant),
        _ => false,
    }
}

fn detach_patch<K: Resource>(
    obj: &K,
    tenant_uid: &str,
    deleted_at: DateTime<Utc>,
    purge: DateTime<Utc>,
) -> Option<serde_json::Value> {
    let owners = obj.owner_references();
    let kept: Vec<_> = owners
        .iter()
        .filter(|o| o.uid != tenant_uid)
        .cloned()
        .collect();
    let (at, after) = (deleted_at.to_rfc3339(), purge.to_rfc3339());
    let a = obj.annotations();
    let stamped =
        a.get(labels::DELETED_AT) == Some(&at) && a.get(labels::PURGE_AFTER) == Some(&after);
    if stamped && kept.len() == owners.len() {
        return None; // idempotent: this deletion is stamped already
    }
    let mut meta = json!({});
    if !stamped {
        meta["annotations"] = json!({ labels::DELETED_AT: at, labels::PURGE_AFTER: after });
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

/// Detaches every data object the operator made for `tenant`: drops owner references to it,
/// stamps the deletion and purge times, and records them in the ledger. A repeated cleanup of
/// the same deletion keeps its times; a deletion of a newer incarnation of the name moves them
/// (the newest deletion decides). One object failing does not stop the others: all are tried,
/// then the failures are returned together (the caller retries).
pub(crate) async fn detach(
    client: &Client,
    store: &LedgerStore,
    tenant: &ContactTenant,
    grace_days: u32,
    now: DateTime<Utc>,
) -> Result<(Vec<DataObject>, DateTime<Utc>), Error> {
    let ns = tenant.namespace().unwrap_or_default();
    let name = tenant.name_any();
    let uid = tenant.uid().unwrap_or_default();
    let grace = chrono::Duration::days(i64::from(grace_days));
    let (deleted_at, purge) = store.read().await?.times(&ns, &name, &uid, now, grace);
    let apis = DataApis::new(client, &ns);
    let lp = selector(&name);
    let mut out = Vec::new();
    let mut recorded = Vec::new();
    let mut failed = Vec::new();
    macro_rules! each {
        ($api:expr, $kind:expr) => {
            match list(&$api, $kind, &lp).await {
                Err(e) => failed.push(e),
                Ok(objs) => {
                    for obj in objs {
                        if !made_by_operator($kind, &name, &obj.name_any()) {
                            continue;
                        }
                        recorded.push(Recorded {
                            kind: $kind.into(),
                            name: obj.name_any(),
                            uid: obj.uid().unwrap_or_default(),
                        });
                        if let Some(p) = detach_patch(&obj, &uid, deleted_at, purge)
                            && let Err(e) = merge(&$api, $kind, &obj, p).await
                        {
                            failed.push(e);
                            continue;
                        }
                        out.push(DataObject {
                            kind: $kind.into(),
                            namespace: ns.clone(),
                            name: obj.name_any(),
                        });
                    }
                }
            }
        };
    }
    each!(apis.pvcs, "PersistentVolumeClaim");
    each!(apis.secrets, "Secret");
    each!(apis.clusters, "Cluster");
    // Recorded even when some failed: what is recorded is purged only after the grace period,
    // and the retry records the rest.
    let deletion = Deletion {
        namespace: ns.clone(),
        tenant: name.clone(),
        tenant_uid: uid,
        deleted_at,
        purge_after: purge,
        objects: recorded,
    };
    store.update(|l| l.record(deletion.clone())).await?;
    if !failed.is_empty() {
        let what: Vec<_> = failed.iter().map(chain).collect();
        return Err(Error::Detach(what.join("; ")));
    }
    Ok((out, purge))
}

fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Re-attaches detached data of a (re-created) tenant: removes the grace annotations, then
/// forgets the recorded deletion. Returns the objects re-attached.
pub(crate) async fn reattach(
    client: &Client,
    store: &LedgerStore,
    namespace: &str,
    tenant: &str,
) -> Result<Vec<DataObject>, Error> {
    let apis = DataApis::new(client, namespace);
    let lp = selector(tenant);
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
    store.update(|l| l.forget(namespace, tenant)).await?;
    Ok(out)
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Objects purged.
    pub purged: Vec<DataObject>,
    /// Objects that could not be purged (kept in the ledger for the next sweep), with why.
    pub failed: Vec<(DataObject, String)>,
}

/// Purges the data of recorded deletions whose grace has passed, in the namespaces `watched`
/// (empty: all), unless a tenant of the same name exists again (its reconcile re-attaches the
/// data). Each object is deleted only if it still has the uid recorded for it.
pub async fn sweep(
    client: &Client,
    store: &LedgerStore,
    watched: &[String],
    now: DateTime<Utc>,
) -> Result<Swept, Error> {
    let in_scope = |ns: &str| watched.is_empty() || watched.iter().any(|w| w == ns);
    let mut swept = Swept::default();
    for d in store.read().await?.due(now, in_scope) {
        let tenants: Api<ContactTenant> = Api::namespaced(client.clone(), &d.namespace);
        if tenants
            .get_opt(&d.tenant)
            .await
            .map_err(|e| Error::Tenant(d.tenant.clone(), e))?
            .is_some()
        {
            continue;
        }
        let mut gone = Vec::new();
        for o in &d.objects {
            let obj = DataObject {
                kind: o.kind.clone(),
                namespace: d.namespace.clone(),
                name: o.name.clone(),
            };
            match purge(client, &d.namespace, o).await {
                Ok(Purged::Deleted) => {
                    swept.purged.push(obj);
                    gone.push(o.clone());
                }
                Ok(Purged::Absent) => gone.push(o.clone()),
                Err(e) => swept.failed.push((obj, chain(&e))),
            }
        }
        store
            .update(|l| l.purged(&d.namespace, &d.tenant, &gone))
            .await?;
    }
    Ok(swept)
}

enum Purged {
    Deleted,
    /// Gone already, or another object has its name now (the uid precondition failed).
    Absent,
}

async fn purge(client: &Client, ns: &str, o: &Recorded) -> Result<Purged, Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(o.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    let deleted = match o.kind.as_str() {
        "PersistentVolumeClaim" => Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .delete(&o.name, &dp)
            .await
            .map(|_| ()),
        "Secret" => Api::<Secret>::namespaced(client.clone(), ns)
            .delete(&o.name, &dp)
            .await
            .map(|_| ()),
        "Cluster" => {
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &cnpg_api_resource())
                .delete(&o.name, &dp)
                .await
                .map(|_| ())
        }
        _ => return Ok(Purged::Absent),
    };
    match deleted {
        Ok(()) => Ok(Purged::Deleted),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Purged::Absent),
        Err(source) => Err(Error::Purge {
            kind: o.kind.clone(),
            name: o.name.clone(),
            source,
        }),
    }
}
