//! Step 4 of the pipeline: applies a tenant's `Children` bundle in dependency order.
//!
//! Everything but the workload depends on nothing here, and nothing here depends on their
//! answers: they go out together (one round trip of latency instead of eight; a tenant's
//! reconcile was a chain of sequential requests, and with a bounded number of reconciles in
//! flight that chain, not the API server, set the pace). The workload follows, so its pods never
//! start before the identity, keys and configuration they mount exist. The workload, its
//! disruption budget and the CloudNativePG Cluster restart the runtime when they change: they
//! go out only when `gating` says so.
//!
//! An optional owned child the tenant no longer has (the backup CronJob with backups off, the
//! workload of the other kind after a database change, the PDB at one replica) is deleted if it
//! is ours. An optional data child (backup claim, CloudNativePG Cluster) is never deleted here.

use super::apply::{self, At, Outcome};
use super::cache::{self, Cached};
use super::conditions::Cnpg;
use super::dereference::{Dereferenced, ExistingWorkload};
use super::gating::{self, Decision, RestartFacts};
use super::storage::{self, StorageProblem};
use super::{Ctx, Error};
use crate::build::{Child, Children, cnpg_api_resource, names};
use crate::tenant::{Database, ValidatedTenant};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DynamicObject};
use kube::{Client, Resource};
use serde::Serialize;

/// What applying the bundle did and saw.
pub(crate) struct Provisioned {
    /// How many children were written (created, changed or deleted).
    pub(crate) written: usize,
    /// Volumes the API server refused to grow.
    pub(crate) storage_problems: Vec<StorageProblem>,
    /// The backup CronJob as it was before the apply (for `BackupsHealthy`).
    pub(crate) backup_schedule: Option<CronJob>,
    /// The Ingress as it was before the apply (for `IngressReady`).
    pub(crate) ingress: Option<Ingress>,
    /// The CloudNativePG Cluster.
    pub(crate) cnpg: Cnpg,
}

/// Applies `children`: the ungated ones at once, the workload and what goes with it as
/// `decision` says, stamped with `facts`.
pub(crate) async fn provision(
    ctx: &Ctx,
    v: &ValidatedTenant,
    children: Children,
    deref: &Dereferenced,
    decision: &Decision,
    facts: &RestartFacts,
) -> Result<Provisioned, Error> {
    let Children {
        service_account,
        keys,
        config_map,
        service,
        network_policy,
        ingress,
        backup_pvc,
        backup_job,
        statefulset,
        deployment,
        pdb,
        cnpg,
    } = children;
    let k = Kit::new(ctx, v);
    let (backup_job_name, ingress_name) = (names::backup_job(&v.name), names::runtime(&v.name));
    // All of them are tried, whatever happens to the others: one the API server refuses (an
    // Ingress annotation, a CronJob schedule) must not keep the rest, or the workload, from
    // being applied. Only what the runtime's pods use (identity, keys, configuration) holds the
    // workload back.
    let (sa, keys, cm, svc, np, claim, cron, ing) = futures::join!(
        k.apply(service_account),
        k.apply(keys),
        k.apply(config_map),
        k.apply(service),
        k.apply(network_policy),
        backup_claim(&k, v, backup_pvc),
        k.apply_keeping_live(backup_job, &backup_job_name),
        k.apply_keeping_live(Some(ingress), &ingress_name),
    );
    let mut failed = Failed::default();
    let pods_can_start = sa.is_ok() && keys.is_ok() && cm.is_ok();
    let [sa, keys, cm, svc, np] = [sa, keys, cm, svc, np].map(|r| failed.take(r));
    let (claim, claim_problem) = failed.take(claim);
    let (cron, backup_schedule) = failed.take(cron);
    let (ing, live_ing) = failed.take(ing);
    let mut written = count([sa, keys, cm, svc, np, claim, cron, ing]);
    let mut storage_problems = Vec::from_iter(claim_problem);
    storage_problems.extend(failed.take(grow_sqlite(&k, v, deref).await));

    let cnpg = match decision {
        Decision::Apply { .. } => {
            let (applied, cnpg) = failed.take(k.apply_cnpg(cnpg).await);
            if pods_can_start {
                let (statefulset, deployment) = stamped(statefulset, deployment, facts);
                let workload = failed.take(k.apply_workload(statefulset, deployment, deref).await);
                let pdb = failed.take(k.apply_or_delete(pdb, &names::runtime(&v.name)).await);
                written += count([workload[0], workload[1], pdb]);
            }
            written += count([applied]);
            cnpg
        }
        Decision::Hold { .. } => k.read_cnpg(cnpg.is_some()).await,
    };
    failed.into_result()?;
    Ok(Provisioned {
        written,
        storage_problems,
        backup_schedule,
        ingress: live_ing,
        cnpg,
    })
}

/// The failures of one pass, gathered so every child is tried before the pass reports them.
#[derive(Default)]
struct Failed(Vec<Error>);

impl Failed {
    /// The value of `r`, or its default after noting the failure.
    fn take<T: Default>(&mut self, r: Result<T, Error>) -> T {
        r.unwrap_or_else(|e| {
            self.0.push(e);
            T::default()
        })
    }

    fn into_result(self) -> Result<(), Error> {
        let mut errors = self.0;
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors.into())),
        }
    }
}

fn count<const N: usize>(outcomes: [Outcome; N]) -> usize {
    outcomes.iter().filter(|o| **o == Outcome::Applied).count()
}

/// The workload with its restart facts in an annotation: the next pass compares against them.
fn stamped(
    mut statefulset: Option<StatefulSet>,
    mut deployment: Option<Deployment>,
    facts: &RestartFacts,
) -> (Option<StatefulSet>, Option<Deployment>) {
    let annotation = facts.to_annotation();
    let metas = [
        statefulset.as_mut().map(|s| &mut s.metadata),
        deployment.as_mut().map(|d| &mut d.metadata),
    ];
    for meta in metas.into_iter().flatten() {
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(gating::RESTART_FACTS.into(), annotation.clone());
    }
    (statefulset, deployment)
}

/// The backup claim, if backups are on. A claim's spec is immutable but for its size, which may
/// only grow: the live spec is kept, with the larger size if the tenant asks for one, and a
/// refused resize is a problem for the status, not an error.
async fn backup_claim(
    k: &Kit<'_>,
    v: &ValidatedTenant,
    desired: Option<PersistentVolumeClaim>,
) -> Result<(Outcome, Option<StorageProblem>), Error> {
    let Some(pvc) = desired else {
        return Ok((Outcome::Unchanged, None));
    };
    let claim = names::backup_pvc(&v.name);
    let live = k.live::<PersistentVolumeClaim>(&claim).await?;
    let grow_to = live
        .as_ref()
        .and_then(storage::requested)
        .zip(v.backups.as_ref().map(|b| b.size.clone()))
        .filter(|(current, desired)| storage::grows(current, desired));
    let keep = live.as_ref().map(|l| {
        let mut spec = l.spec.clone();
        if let Some((_, to)) = &grow_to {
            spec.get_or_insert_with(Default::default)
                .resources
                .get_or_insert_with(Default::default)
                .requests
                .get_or_insert_with(Default::default)
                .insert("storage".into(), Quantity(to.clone()));
        }
        spec
    });
    let api = k.api();
    let applied = apply::apply_adjusted(k.at, &api, pvc, live.as_ref(), |p| {
        if let Some(spec) = keep {
            p.spec = spec;
        }
    });
    match applied.await {
        Ok(o) => Ok((o, None)),
        Err(e) if grow_to.is_some() && storage::is_refusal(e.kube()) => {
            let (from, to) = grow_to.unwrap_or_default();
            let message = storage::refusal_message(e.kube());
            let problem = StorageProblem {
                claim,
                from,
                to,
                message,
            };
            Ok((Outcome::Unchanged, Some(problem)))
        }
        Err(e) => Err(e.into()),
    }
}

/// The SQLite claims come from the StatefulSet's (immutable) template: grow them in place. Not
/// held for the window: growing a volume does not restart the runtime.
async fn grow_sqlite(
    k: &Kit<'_>,
    v: &ValidatedTenant,
    deref: &Dereferenced,
) -> Result<Option<StorageProblem>, Error> {
    let Database::Sqlite { size, .. } = &v.database else {
        return Ok(None);
    };
    let has_statefulset = deref
        .workloads
        .iter()
        .any(|w| matches!(w, ExistingWorkload::StatefulSet(_)));
    if !has_statefulset {
        return Ok(None);
    }
    let Some(live) = k
        .live::<PersistentVolumeClaim>(&names::sqlite_pvc(&v.name))
        .await?
    else {
        return Ok(None);
    };
    Ok(storage::grow(&k.api(), &live, size).await?)
}

/// What every apply of one tenant's children shares: where to read and remember, the client,
/// the namespace and the tenant's name.
struct Kit<'a> {
    at: At<'a>,
    client: &'a Client,
    ns: &'a str,
    tenant: &'a str,
}

impl<'a> Kit<'a> {
    fn new(ctx: &'a Ctx, v: &'a ValidatedTenant) -> Self {
        let at = At {
            caches: ctx.caches.get(),
            memo: &ctx.memo,
        };
        Self {
            at,
            client: &ctx.client,
            ns: &v.namespace,
            tenant: &v.name,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), self.ns)
    }

    /// The live object `name` (cache or GET).
    async fn live<K>(&self, name: &str) -> Result<Option<K>, apply::Error>
    where
        K: Cached + Child<Live = K> + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        cache::live(self.at.caches, &self.api(), self.ns, name)
            .await
            .map_err(|source| apply::Error::Read {
                kind: K::kind(&()).to_string(),
                name: name.to_string(),
                source,
            })
    }

    /// Applies `desired`, looking its live metadata up.
    async fn apply<K>(&self, desired: K) -> Result<Outcome, Error>
    where
        K: Cached + Serialize + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Ok(apply::apply(self.at, &self.api(), desired).await?)
    }

    /// Applies `desired` if there is one, else deletes `name` if it is ours.
    async fn apply_or_delete<K>(&self, desired: Option<K>, name: &str) -> Result<Outcome, Error>
    where
        K: Cached + Serialize + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match desired {
            Some(d) => self.apply(d).await,
            None => self.delete::<K>(name).await,
        }
    }

    /// Deletes `name` of kind `K` if it is ours (a write, counted as one).
    async fn delete<K>(&self, name: &str) -> Result<Outcome, Error>
    where
        K: Cached + Serialize + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        let deleted = apply::delete_if_ours(self.at, &self.api::<K>(), self.ns, name).await?;
        Ok(if deleted {
            Outcome::Applied
        } else {
            Outcome::Unchanged
        })
    }

    /// `apply_or_delete` for a child whose live object the status needs: read first (a failed
    /// read counts as absent, and the apply decides) and returned as it was before the apply.
    async fn apply_keeping_live<K>(
        &self,
        desired: Option<K>,
        name: &str,
    ) -> Result<(Outcome, Option<K>), Error>
    where
        K: Cached + Child<Live = K> + Serialize,
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        let Some(desired) = desired else {
            return Ok((self.delete::<K>(name).await?, None));
        };
        let live = self.live::<K>(name).await.ok().flatten();
        let outcome = apply::apply_with_live(self.at, &self.api(), desired, live.as_ref()).await?;
        Ok((outcome, live))
    }

    /// The workload of the kind the database calls for, then the other kind deleted if it is
    /// ours (a database change): the new one is applied before the old one goes.
    async fn apply_workload(
        &self,
        statefulset: Option<StatefulSet>,
        deployment: Option<Deployment>,
        deref: &Dereferenced,
    ) -> Result<[Outcome; 2], Error> {
        let runtime = names::runtime(self.tenant);
        let live_sts = deref.workloads.iter().find_map(|w| match w {
            ExistingWorkload::StatefulSet(s) => Some(s),
            ExistingWorkload::Deployment(_) => None,
        });
        let live_deploy = deref.workloads.iter().find_map(|w| match w {
            ExistingWorkload::Deployment(d) => Some(d),
            ExistingWorkload::StatefulSet(_) => None,
        });
        let api = self.api();
        Ok(match (statefulset, deployment) {
            (Some(s), _) => {
                // volumeClaimTemplates are immutable once the StatefulSet exists: sending a new
                // size would fail every apply. Keep the live templates; resizing is done on the
                // claims themselves (`grow_sqlite`).
                let keep = live_sts.map(|l| l.spec.volume_claim_templates.clone());
                let applied = apply::apply_adjusted(self.at, &api, s, live_sts, |s| {
                    if let Some(templates) = keep {
                        s.spec.volume_claim_templates = templates;
                    }
                });
                [applied.await?, self.delete::<Deployment>(&runtime).await?]
            }
            (None, Some(d)) => [
                apply::apply_with_live(self.at, &self.api(), d, live_deploy).await?,
                self.delete::<StatefulSet>(&runtime).await?,
            ],
            (None, None) => [Outcome::Unchanged, Outcome::Unchanged],
        })
    }

    fn cnpg_api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), self.ns, &cnpg_api_resource())
    }

    /// The CloudNativePG Cluster's readiness, read whether or not it may change now (it feeds
    /// `DatabaseReady`). A failed read counts as not ready.
    async fn read_cnpg(&self, used: bool) -> Cnpg {
        Cnpg::Ready(
            self.live_cnpg(used)
                .await
                .map_or(0, |c| ready_instances(&c)),
        )
    }

    async fn live_cnpg(&self, used: bool) -> Option<DynamicObject> {
        if !used {
            return None;
        }
        let name = names::cnpg(self.tenant);
        self.cnpg_api().get_opt(&name).await.ok().flatten()
    }

    /// Applies the CloudNativePG Cluster, if the tenant has one. Without its CRD on this cluster
    /// the apply is refused with 404: that is a condition, not a failure.
    async fn apply_cnpg(&self, desired: Option<DynamicObject>) -> Result<(Outcome, Cnpg), Error> {
        let live = self.live_cnpg(desired.is_some()).await;
        let ready = Cnpg::Ready(live.as_ref().map_or(0, ready_instances));
        let Some(cluster) = desired else {
            return Ok((Outcome::Unchanged, ready));
        };
        match apply::apply_dynamic(self.at, &self.cnpg_api(), cluster, live.as_ref()).await {
            Ok(o) => Ok((o, ready)),
            Err(e) if matches!(e.kube(), kube::Error::Api(s) if s.code == 404) => {
                Ok((Outcome::Unchanged, Cnpg::Missing))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn ready_instances(cluster: &DynamicObject) -> i64 {
    cluster
        .data
        .get("status")
        .and_then(|s| s.get("readyInstances")?.as_i64())
        .unwrap_or(0)
}
