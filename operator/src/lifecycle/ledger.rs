//! The record of deletions: which data objects the operator detached for which deleted tenant,
//! and when each may be purged. The sweeper reads only this record, never labels or annotations
//! on the objects themselves (anyone who can edit an object can edit those): it purges an object
//! only if a deletion recorded it, by the uid it had then, after that deletion's grace period,
//! and only while no tenant of that name exists.
//!
//! `Ledger` is pure (the property test below drives it through any sequence of creations,
//! deletions, re-creations, foreign objects and sweeps); `LedgerStore` keeps it in a ConfigMap in
//! the operator's own namespace, written only by the operator (its leader), with conditional
//! updates.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::warn;

/// Name of the ConfigMap holding the ledger (in the operator's namespace).
pub const LEDGER_NAME: &str = "contact-operator-deletions";

/// Failure to read or write the ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the ConfigMap failed.
    #[error("failed to read the deletion ledger {0}")]
    Read(String, #[source] kube::Error),
    /// Writing the ConfigMap failed (not a conflict: those are retried).
    #[error("failed to write the deletion ledger {0}")]
    Write(String, #[source] kube::Error),
    /// Every retry met a concurrent write.
    #[error("the deletion ledger {0} kept changing under concurrent writes")]
    Contended(String),
}

/// One data object a deletion detached, by the uid it had then (a same-named object made later
/// is another object and is never purged in its place).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Recorded {
    /// Kind (PersistentVolumeClaim, Secret, Cluster).
    pub kind: String,
    /// Name.
    pub name: String,
    /// The object's uid when it was detached.
    pub uid: String,
}

/// One tenant deletion as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    /// The tenant's namespace.
    pub namespace: String,
    /// The tenant's name.
    pub tenant: String,
    /// The uid of the deleted tenant.
    pub tenant_uid: String,
    /// When it was deleted.
    pub deleted_at: DateTime<Utc>,
    /// When its data may go.
    pub purge_after: DateTime<Utc>,
    /// The data objects it left.
    pub objects: Vec<Recorded>,
}

/// Every recorded deletion whose data still exists, by `<namespace>.<tenant>` (both DNS labels,
/// so the key is a valid ConfigMap key and unambiguous).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    deletions: BTreeMap<String, Deletion>,
}

fn key(namespace: &str, tenant: &str) -> String {
    format!("{namespace}.{tenant}")
}

impl Ledger {
    /// The deletion and purge times for deleting tenant `uid` at `now`: the recorded ones when
    /// this same deletion was recorded already (a repeated cleanup moves nothing), else new ones.
    /// A deletion of another incarnation of the name is older: the newest deletion decides.
    pub fn times(
        &self,
        namespace: &str,
        tenant: &str,
        uid: &str,
        now: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> (DateTime<Utc>, DateTime<Utc>) {
        match self.deletions.get(&key(namespace, tenant)) {
            Some(d) if d.tenant_uid == uid => (d.deleted_at, d.purge_after),
            _ => (now, now + grace),
        }
    }

    /// Records a deletion. One left by an earlier incarnation of the same name (re-created and
    /// deleted again before its data was re-attached) is replaced by this newer one, which keeps
    /// its objects too: they are the same data, now due with the newest deletion.
    pub fn record(&mut self, mut deletion: Deletion) {
        let k = key(&deletion.namespace, &deletion.tenant);
        if let Some(old) = self.deletions.remove(&k) {
            deletion.objects.extend(old.objects);
        }
        deletion.objects.sort();
        deletion.objects.dedup();
        self.deletions.insert(k, deletion);
    }

    /// Forgets the deletion of `namespace/tenant` (its data was re-attached to a new tenant).
    pub fn forget(&mut self, namespace: &str, tenant: &str) -> Option<Deletion> {
        self.deletions.remove(&key(namespace, tenant))
    }

    /// Whether a deletion of `namespace/tenant` is recorded (its data waits to be re-attached or
    /// purged).
    pub fn holds(&self, namespace: &str, tenant: &str) -> bool {
        self.deletions.contains_key(&key(namespace, tenant))
    }

    /// The deletions whose grace has passed at `now`, in the namespaces `watched` accepts.
    pub fn due(&self, now: DateTime<Utc>, watched: impl Fn(&str) -> bool) -> Vec<Deletion> {
        self.deletions
            .values()
            .filter(|d| d.purge_after <= now && watched(&d.namespace))
            .cloned()
            .collect()
    }

    /// Drops `gone` (purged, or no longer there) from the deletion of `namespace/tenant`, and the
    /// deletion itself once nothing of it is left.
    pub fn purged(&mut self, namespace: &str, tenant: &str, gone: &[Recorded]) {
        let k = key(namespace, tenant);
        if let Some(d) = self.deletions.get_mut(&k) {
            d.objects.retain(|o| !gone.contains(o));
            if d.objects.is_empty() {
                self.deletions.remove(&k);
            }
        }
    }

    fn from_config_map(cm: &ConfigMap) -> Self {
        let mut deletions = BTreeMap::new();
        for (k, v) in cm.data.iter().flatten() {
            match serde_json::from_str::<Deletion>(v) {
                Ok(d) => {
                    deletions.insert(k.clone(), d);
                }
                // Kept out of the ledger: a record that cannot be read purges nothing.
                Err(e) => warn!(key = %k, error = %e, "unreadable deletion record ignored"),
            }
        }
        Self { deletions }
    }

    fn to_data(&self) -> BTreeMap<String, String> {
        self.deletions
            .iter()
            .filter_map(|(k, d)| Some((k.clone(), serde_json::to_string(d).ok()?)))
            .collect()
    }
}

/// The ledger as a ConfigMap, with an in-memory mirror: only the leader writes it, so after the
/// first read a lookup (`holds`, on every reconcile) costs no request.
#[derive(Clone)]
pub struct LedgerStore {
    api: Api<ConfigMap>,
    namespace: String,
    mirror: Arc<tokio::sync::Mutex<Option<Mirrored>>>,
}

/// The ledger and the resourceVersion it was read or written at (`None`: no ConfigMap yet).
type Mirrored = (Option<String>, Ledger);

impl std::fmt::Debug for LedgerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl LedgerStore {
    /// The ledger in `namespace` (the operator's own).
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            mirror: Arc::default(),
        }
    }

    fn name(&self) -> String {
        format!("{}/{LEDGER_NAME}", self.namespace)
    }

    async fn load(&self) -> Result<Mirrored, Error> {
        let cm = self
            .api
            .get_opt(LEDGER_NAME)
            .await
            .map_err(|e| Error::Read(self.name(), e))?;
        Ok(match cm {
            Some(cm) => (
                cm.metadata.resource_version.clone(),
                Ledger::from_config_map(&cm),
            ),
            None => (None, Ledger::default()),
        })
    }

    /// The ledger (read once, then from memory).
    pub async fn read(&self) -> Result<Ledger, Error> {
        let mut m = self.mirror.lock().await;
        if m.is_none() {
            *m = Some(self.load().await?);
        }
        Ok(m.as_ref().map(|(_, l)| l.clone()).unwrap_or_default())
    }

    /// Whether a deletion of `namespace/tenant` is recorded.
    pub async fn holds(&self, namespace: &str, tenant: &str) -> Result<bool, Error> {
        Ok(self.read().await?.holds(namespace, tenant))
    }

    /// Changes the ledger with `f` and writes it (conditionally on what was read; a concurrent
    /// write, e.g. by a replica that led a moment ago, makes it read again and retry).
    pub async fn update<T>(&self, mut f: impl FnMut(&mut Ledger) -> T) -> Result<T, Error> {
        let mut m = self.mirror.lock().await;
        for _ in 0..5 {
            let (rv, mut ledger) = match m.take() {
                Some(read) => read,
                None => self.load().await?,
            };
            let before = ledger.clone();
            let out = f(&mut ledger);
            if ledger == before {
                *m = Some((rv, ledger));
                return Ok(out);
            }
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(LEDGER_NAME.into()),
                    resource_version: rv.clone(),
                    ..Default::default()
                },
                data: Some(ledger.to_data()),
                ..Default::default()
            };
            let pp = PostParams::default();
            let written = match rv {
                Some(_) => self.api.replace(LEDGER_NAME, &pp, &cm).await,
                None => self.api.create(&pp, &cm).await,
            };
            match written {
                Ok(cm) => {
                    *m = Some((cm.metadata.resource_version, ledger));
                    return Ok(out);
                }
                // Someone else wrote (or created) it meanwhile: read again, apply `f` again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(Error::Write(self.name(), e)),
            }
        }
        Err(Error::Contended(self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn t0() -> DateTime<Utc> {
        "2026-11-25T09:00:00Z".parse().expect("instant")
    }

    #[test]
    fn a_repeated_cleanup_keeps_the_times_a_newer_deletion_moves_them() {
        let grace = chrono::Duration::days(30);
        let mut l = Ledger::default();
        let (at, purge) = l.times("ns", "acme", "uid-1", t0(), grace);
        l.record(Deletion {
            namespace: "ns".into(),
            tenant: "acme".into(),
            tenant_uid: "uid-1".into(),
            deleted_at: at,
            purge_after: purge,
            objects: vec![],
        });
        let later = t0() + chrono::Duration::days(2);
        assert_eq!(l.times("ns", "acme", "uid-1", later, grace), (at, purge));
        assert_eq!(
            l.times("ns", "acme", "uid-2", later, grace),
            (later, later + grace)
        );
    }

    /// What happens in the model world.
    #[derive(Debug, Clone)]
    enum Op {
        /// Create the tenant (if absent); its reconcile re-attaches recorded data.
        Create,
        /// Create the tenant without a reconcile reaching re-attachment (a referenced Secret
        /// missing, say).
        CreateUnreconciled,
        /// Delete the tenant (if present): the cleanup detaches and records its data.
        Delete,
        /// Someone labels an object of their own as the tenant's data.
        LabelForeign,
        /// Time passes (hours).
        Advance(i64),
        /// The sweeper runs.
        Sweep,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Create),
            Just(Op::CreateUnreconciled),
            Just(Op::Delete),
            Just(Op::LabelForeign),
            (1i64..24 * 40).prop_map(Op::Advance),
            Just(Op::Sweep),
        ]
    }

    proptest! {
        /// Any sequence of creations, deletions, re-creations, label edits and sweeps never
        /// purges before `deletedAt + grace` of the latest deletion, and never purges an object
        /// the operator did not make.
        #[test]
        fn never_purges_early_nor_what_it_did_not_make(ops in proptest::collection::vec(op(), 1..60)) {
            let grace = chrono::Duration::days(30);
            let mut now = t0();
            let mut ledger = Ledger::default();
            let mut uids = 0u32;
            let mut fresh = || { uids += 1; format!("uid-{uids}") };
            // The tenant (its uid) if it exists, the operator's data objects, others' objects.
            let mut tenant: Option<String> = None;
            let mut ours: BTreeSet<Recorded> = BTreeSet::new();
            let mut foreign: BTreeSet<Recorded> = BTreeSet::new();
            let mut latest_deletion: Option<DateTime<Utc>> = None;
            for op in ops {
                match op {
                    Op::Create | Op::CreateUnreconciled if tenant.is_none() => {
                        tenant = Some(fresh());
                        if ours.is_empty() {
                            for (kind, name) in [("Secret", "acme-keys"), ("PersistentVolumeClaim", "data-acme-0")] {
                                ours.insert(Recorded { kind: kind.into(), name: name.into(), uid: fresh() });
                            }
                        }
                        if matches!(op, Op::Create) && ledger.holds("ns", "acme") {
                            ledger.forget("ns", "acme");
                        }
                    }
                    Op::Delete => {
                        if let Some(uid) = tenant.take() {
                            let (deleted_at, purge_after) = ledger.times("ns", "acme", &uid, now, grace);
                            // Detach lists by label: ours and the foreign ones; it records only
                            // the names it makes.
                            let listed = ours.iter().chain(foreign.iter());
                            let objects = listed
                                .filter(|o| super::super::grace::made_by_operator(&o.kind, "acme", &o.name))
                                .cloned()
                                .collect();
                            ledger.record(Deletion {
                                namespace: "ns".into(), tenant: "acme".into(), tenant_uid: uid,
                                deleted_at, purge_after, objects,
                            });
                            latest_deletion = Some(deleted_at);
                        }
                    }
                    Op::LabelForeign => {
                        foreign.insert(Recorded { kind: "Secret".into(), name: format!("precious-{}", foreign.len()), uid: fresh() });
                    }
                    Op::Advance(h) => now += chrono::Duration::hours(h),
                    Op::Sweep => {
                        for d in ledger.due(now, |ns| ns == "ns") {
                            if tenant.is_some() {
                                continue;
                            }
                            let latest = latest_deletion.expect("a deletion was recorded");
                            prop_assert!(now >= latest + grace, "purged at {now}, latest deletion {latest}");
                            for o in &d.objects {
                                prop_assert!(ours.contains(o) && !foreign.contains(o), "purged {o:?}");
                                ours.remove(o);
                            }
                            ledger.purged(&d.namespace, &d.tenant, &d.objects);
                        }
                    }
                    Op::Create | Op::CreateUnreconciled => {}
                }
            }
        }
    }
}
