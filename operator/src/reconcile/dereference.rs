//! Step 1 of the pipeline: read what the spec refers to and what already exists, so the later
//! steps are pure. A referenced Secret that is missing, or lacks a key, is not an error of the
//! operator but of the tenant's setup: it becomes a `SecretProblem` that the status step turns into
//! a condition with a precise reason and an Event, and the reconcile requeues (no crash loop).

use super::cache::{self, Cached, Caches};
use crate::build::Child;
use crate::build::names;
use crate::labels;
use contact_crds::v1alpha1::{ContactTenant, DatabaseKind};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Failure to read from the API server (not a missing object: that is data, not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A GET failed for another reason than 404.
    #[error("failed to read {kind} {name}")]
    Read {
        /// Kind read.
        kind: &'static str,
        /// Name read.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// What is wrong with a referenced Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretProblem {
    /// The Secret does not exist.
    NotFound {
        /// Secret name.
        secret: String,
        /// Who refers to it (e.g. `channel whatsapp-main credentials`).
        used_by: String,
    },
    /// The Secret exists but lacks the key.
    KeyMissing {
        /// Secret name.
        secret: String,
        /// Missing key.
        key: String,
        /// Who refers to it.
        used_by: String,
    },
    /// The tenant's own key Secret, or a key in it, is gone after the tenant was provisioned: a
    /// new key would make every earlier backup unreadable (or lock the admin out), so none is
    /// generated.
    KeysMissing {
        /// Secret name (`<tenant>-keys`).
        secret: String,
        /// The missing keys (all of them when the Secret is gone).
        keys: Vec<String>,
    },
}

impl SecretProblem {
    /// Condition reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            SecretProblem::NotFound { .. } => "SecretNotFound",
            SecretProblem::KeyMissing { .. } => "SecretKeyMissing",
            SecretProblem::KeysMissing { .. } => "KeysMissing",
        }
    }

    /// Human message.
    pub(crate) fn message(&self) -> String {
        match self {
            SecretProblem::NotFound { secret, used_by } => {
                format!("secret {secret:?} (for {used_by}) not found")
            }
            SecretProblem::KeyMissing {
                secret,
                key,
                used_by,
            } => {
                format!("secret {secret:?} (for {used_by}) has no key {key:?}")
            }
            SecretProblem::KeysMissing { secret, keys } => format!(
                "secret {secret:?} lacks {} although the tenant was provisioned with it: no new \
                 key is generated (earlier backups would become unreadable); restore the Secret \
                 from your copy",
                keys.join(", ")
            ),
        }
    }
}

/// The workload that exists now, whichever kind.
#[derive(Debug, Clone)]
pub(crate) enum ExistingWorkload {
    /// A StatefulSet.
    StatefulSet(StatefulSet),
    /// A Deployment.
    Deployment(Deployment),
}

/// Everything read from the API server for one reconcile.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dereferenced {
    /// Problems with referenced Secrets, in spec order.
    pub secret_problems: Vec<SecretProblem>,
    /// Current data of the generated key Secret (empty if it does not exist yet).
    pub keys: BTreeMap<String, ByteString>,
    /// Whether the key Secret exists.
    pub keys_exist: bool,
    /// Whether the key Secret is marked for purge: the tenant's data was detached by a deletion
    /// and must be re-attached (all data objects are detached together, so one mark suffices).
    pub keys_detached: bool,
    /// The StatefulSet and/or Deployment that exist now.
    pub workloads: Vec<ExistingWorkload>,
}

/// A Secret key the tenant refers to, and who refers to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SecretRef {
    /// Secret name.
    pub name: String,
    /// Key in it.
    pub key: String,
    /// Who refers to it.
    pub used_by: String,
}

/// Every Secret key the spec refers to (channel credentials, webhook secrets, PostgreSQL URL).
pub(crate) fn referenced_secrets(t: &ContactTenant) -> Vec<SecretRef> {
    let mut out = Vec::new();
    for c in &t.spec.channels {
        let api = &c.conversation_api;
        let cred = &api.credentials_secret_ref;
        for key in [cred.key_id_key.clone(), cred.key_secret_key.clone()] {
            out.push(SecretRef {
                name: cred.name.clone(),
                key,
                used_by: format!("channel {} credentials", c.name),
            });
        }
        out.push(SecretRef {
            name: api.webhook_secret_ref.name.clone(),
            key: api.webhook_secret_ref.key.clone(),
            used_by: format!("channel {} webhook", c.name),
        });
    }
    if let DatabaseKind::Postgres(p) = t.spec.database.kind() {
        out.push(SecretRef {
            name: p.secret_ref.name.clone(),
            key: p.secret_ref.key.clone(),
            used_by: "database".into(),
        });
    }
    out
}

/// Names of the Secrets a tenant refers to (for mapping Secret events back to tenants).
pub(crate) fn referenced_secret_names(t: &ContactTenant) -> BTreeSet<String> {
    referenced_secrets(t).into_iter().map(|r| r.name).collect()
}

/// The tenants in `ns` that refer to Secret `name` (for mapping Secret events to reconciles).
pub(crate) fn tenants_for_secret(
    tenants: &[std::sync::Arc<ContactTenant>],
    ns: &str,
    name: &str,
) -> Vec<kube::runtime::reflector::ObjectRef<ContactTenant>> {
    tenants
        .iter()
        .filter(|t| t.namespace().as_deref() == Some(ns))
        .filter(|t| referenced_secret_names(t).contains(name))
        .map(|t| kube::runtime::reflector::ObjectRef::from_obj(&**t))
        .collect()
}

/// The key names (never the values) of referenced Secrets, by `ns/name`, with the
/// resourceVersion they were read at. With the controller's metadata watch of Secrets, a Secret
/// whose resourceVersion has not moved is not read again: a reconcile reads no Secret at all
/// unless one changed.
#[derive(Debug, Clone, Default)]
pub(crate) struct SecretKeys(Arc<Mutex<HashMap<String, KeysAt>>>);

/// A Secret's resourceVersion and key names at that version.
type KeysAt = (String, BTreeSet<String>);

impl SecretKeys {
    fn get(&self, key: &str, resource_version: Option<&str>) -> Option<BTreeSet<String>> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (rv, keys) = m.get(key)?;
        (Some(rv.as_str()) == resource_version).then(|| keys.clone())
    }

    fn put(&self, key: String, resource_version: Option<String>, keys: BTreeSet<String>) {
        if let Some(rv) = resource_version {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, (rv, keys));
        }
    }
}

/// The key names of Secret `ns/name` (`None`: it does not exist).
async fn secret_keys(
    api: &Api<Secret>,
    caches: Option<&Caches>,
    memo: &SecretKeys,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeSet<String>>, Error> {
    let key = format!("{ns}/{name}");
    if let Some(c) = caches.filter(|c| c.is_ready()) {
        // The metadata watch sees every Secret but our own key Secrets, which the key store
        // holds: absent in both is absent (its event, when it is created, triggers the
        // reconcile that finds it).
        let (user, ours) = (
            c.secret_meta.get(&ObjectRef::new(name).within(ns)),
            c.children.keys.get(&ObjectRef::new(name).within(ns)),
        );
        let resource_version = match (user, ours) {
            (Some(m), _) => m.metadata.resource_version.clone(),
            (None, Some(s)) => s.metadata.resource_version.clone(),
            (None, None) => return Ok(None),
        };
        if let Some(keys) = memo.get(&key, resource_version.as_deref()) {
            return Ok(Some(keys));
        }
    }
    let Some(s) = get_opt(api, "Secret", name).await? else {
        return Ok(None);
    };
    let keys: BTreeSet<String> = s
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(s.string_data.iter().flat_map(|d| d.keys()))
        .cloned()
        .collect();
    memo.put(key, s.metadata.resource_version, keys.clone());
    Ok(Some(keys))
}

async fn get_opt<K>(api: &Api<K>, kind: &'static str, name: &str) -> Result<Option<K>, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|source| Error::Read {
        kind,
        name: name.to_string(),
        source,
    })
}

async fn cached<K: Cached + Child<Live = K>>(
    caches: Option<&Caches>,
    api: &Api<K>,
    ns: &str,
    kind: &'static str,
    name: &str,
) -> Result<Option<K>, Error> {
    cache::live(caches, api, ns, name)
        .await
        .map_err(|source| Error::Read {
            kind,
            name: name.to_string(),
            source,
        })
}

/// Reads referenced Secrets, the key Secret and the existing workload.
pub(crate) async fn dereference(
    client: &Client,
    caches: Option<&Caches>,
    secret_memo: &SecretKeys,
    t: &ContactTenant,
) -> Result<Dereferenced, Error> {
    let ns = t.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut out = Dereferenced::default();

    // Each Secret is read once, however many channels use it.
    let mut cache: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    for r in referenced_secrets(t) {
        if !cache.contains_key(&r.name) {
            let s = secret_keys(&secrets, caches, secret_memo, &ns, &r.name).await?;
            cache.insert(r.name.clone(), s);
        }
        let problem = match cache.get(&r.name) {
            Some(Some(keys)) => {
                let has = keys.contains(&r.key);
                (!has).then(|| SecretProblem::KeyMissing {
                    secret: r.name.clone(),
                    key: r.key.clone(),
                    used_by: r.used_by.clone(),
                })
            }
            _ => Some(SecretProblem::NotFound {
                secret: r.name.clone(),
                used_by: r.used_by.clone(),
            }),
        };
        // One message per Secret is enough for a missing Secret; keys are reported one by one.
        if let Some(p) = problem
            && !out.secret_problems.iter().any(|q| matches!((q, &p), (SecretProblem::NotFound { secret: a, .. }, SecretProblem::NotFound { secret: b, .. }) if a == b))
        {
            out.secret_problems.push(p);
        }
    }

    let name = t.name_any();
    if let Some(keys) = key_secret(caches, &secrets, &ns, &names::keys(&name)).await? {
        out.keys_detached = keys.annotations().contains_key(labels::PURGE_AFTER);
        out.keys = keys.data.unwrap_or_default();
        out.keys_exist = true;
    }
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    if let Some(s) = cached(caches, &sts, &ns, "StatefulSet", &names::runtime(&name)).await?
        && is_ours(&s.metadata)
    {
        out.workloads.push(ExistingWorkload::StatefulSet(s));
    }
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    if let Some(d) = cached(caches, &deploys, &ns, "Deployment", &names::runtime(&name)).await?
        && is_ours(&d.metadata)
    {
        out.workloads.push(ExistingWorkload::Deployment(d));
    }
    let existing = out.keys_exist.then_some(&out.keys);
    let made = keys_were_made(t, !out.workloads.is_empty());
    if let Some(p) = keys_missing(made, &names::keys(&name), existing) {
        out.secret_problems.push(p);
    }
    Ok(out)
}

/// The tenant's key Secret, looked up by name whatever its labels. The key store holds only
/// Secrets labelled as ours; one whose label was removed or changed is in the metadata store of
/// the other Secrets instead, and is read by GET. Never inferring "absent" from a label is what
/// keeps a label edit from regenerating the keys.
async fn key_secret(
    caches: Option<&Caches>,
    api: &Api<Secret>,
    ns: &str,
    name: &str,
) -> Result<Option<Secret>, Error> {
    if let Some(s) = cached(caches, api, ns, "Secret", name).await? {
        return Ok(Some(s));
    }
    match caches.filter(|c| c.is_ready()) {
        Some(c)
            if c.secret_meta
                .get(&ObjectRef::new(name).within(ns))
                .is_none() =>
        {
            Ok(None)
        }
        // Relabelled (in the other store), or no stores yet (then `cached` already did a GET
        // and found nothing: this one confirms it).
        _ => get_opt(api, "Secret", name).await,
    }
}

/// Whether the tenant's keys were made before: its workload exists (applied only after the keys
/// were), it has a backup, its status says it was provisioned, or it already reports them
/// missing.
fn keys_were_made(t: &ContactTenant, workload_exists: bool) -> bool {
    let Some(status) = t.status.as_ref() else {
        return workload_exists;
    };
    workload_exists
        || status.last_backup.is_some()
        || status
            .conditions
            .iter()
            .any(|c| (c.type_ == "Provisioned" && c.status == "True") || c.reason == "KeysMissing")
}

/// Whether the tenant's keys are missing where they must exist: once they were made, the key
/// Secret holds the keys its data and backups were made with, and generating new ones would
/// silently make those unusable: that is a condition for a human, not a new key. A new tenant
/// gets its keys generated.
pub(crate) fn keys_missing(
    made: bool,
    secret: &str,
    existing: Option<&BTreeMap<String, ByteString>>,
) -> Option<SecretProblem> {
    if !made {
        return None;
    }
    let keys: Vec<String> = crate::build::SECRET_KEYS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| {
            existing
                .and_then(|e| e.get(*k))
                .is_none_or(|v| v.0.is_empty())
        })
        .map(String::from)
        .collect();
    (!keys.is_empty()).then(|| SecretProblem::KeysMissing {
        secret: secret.to_string(),
        keys,
    })
}

/// Whether an object was made by this operator (never touch a same-named object we did not make).
pub(crate) fn is_ours(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(labels::MANAGED_BY))
        .is_some_and(|v| v == labels::FIELD_MANAGER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn tenant(ns: &str, name: &str, secret: &str, db_secret: Option<&str>) -> Arc<ContactTenant> {
        let mut spec = json!({
            "displayName": "x",
            "ingress": { "host": "x.example.com" },
            "channels": [{
                "name": "sms", "type": "SMS",
                "conversationApi": {
                    "region": "us", "projectId": "p", "appId": "a",
                    "credentialsSecretRef": { "name": secret },
                    "webhookSecretRef": { "name": format!("{secret}-hook") }
                }
            }]
        });
        if let Some(db) = db_secret {
            spec["database"] = json!({ "postgres": { "secretRef": { "name": db } } });
        }
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "contact.dev/v1alpha1", "kind": "ContactTenant",
                "metadata": { "name": name, "namespace": ns }, "spec": spec
            }))
            .expect("tenant"),
        )
    }

    #[test]
    fn refs_cover_credentials_webhook_and_database() {
        let t = tenant("a", "t1", "sinch", Some("db"));
        let refs = referenced_secrets(&t);
        let keys: Vec<_> = refs
            .iter()
            .map(|r| (r.name.as_str(), r.key.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("sinch", "key-id"),
                ("sinch", "key-secret"),
                ("sinch-hook", "webhook-secret"),
                ("db", "uri")
            ]
        );
    }

    #[test]
    fn a_secret_maps_to_the_tenants_of_its_namespace_that_use_it() {
        let all = vec![
            tenant("a", "t1", "sinch", None),
            tenant("a", "t2", "other", Some("sinch")),
            tenant("a", "t3", "other", None),
            tenant("b", "t4", "sinch", None),
        ];
        let names: Vec<_> = tenants_for_secret(&all, "a", "sinch")
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, vec!["t1".to_string(), "t2".to_string()]);
        assert_eq!(tenants_for_secret(&all, "a", "sinch-hook").len(), 1);
        assert!(tenants_for_secret(&all, "c", "sinch").is_empty());
    }
}
