//! The reconcile pipeline and the controller that drives it.
//!
//! One reconcile of a `ContactTenant` runs, in order:
//! 1. `dereference`: read referenced Secrets, the generated key Secret and the live workload;
//! 2. `validate`: parse the spec into a `ValidatedTenant` (pure);
//! 3. `build`: one pure `build_<kind>` per child, then `gating` decides (pure) whether the
//!    restart-requiring part may go now or waits for the maintenance window;
//! 4. `apply`: server-side apply, one field manager, `force`, skipping unchanged objects;
//! 5. `status`: conditions + url + window + pending changes, patched only when changed, with one
//!    Event per condition transition.
//!
//! Deletion runs through a finalizer: the runtime goes at once, the data is detached and kept for
//! the grace period (`lifecycle::grace`).

pub mod apply;
pub mod backups;
pub mod cache;
pub mod dereference;
pub mod gating;
pub mod status;
pub mod storage;
pub mod validate;

use crate::build::{self, Workload, names};
use crate::clock::Clock;
use crate::config::OperatorConfig;
use crate::labels;
use crate::lifecycle::{self, Phase, grace};
use crate::maintenance::WindowState;
use crate::metrics::Metrics;
use apply::Outcome;
use contact_crds::v1alpha1::ContactTenant;
use dereference::{Dereferenced, ExistingWorkload};
use futures::{StreamExt, TryStreamExt};
use gating::{Decision, RestartFacts};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{
    WatchStreamExt, reflector,
    watcher::{self, watcher},
};
use kube::{Client, Resource, ResourceExt};
use status::{Cond, Desired};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, instrument, warn};

/// Everything a reconcile needs besides the tenant.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Operator-wide settings.
    pub config: OperatorConfig,
    /// Source of "now" (injectable for tests).
    pub clock: Arc<dyn Clock>,
    /// Event recorder (events.k8s.io).
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Caches of managed objects, set by `run_controller` (empty: every read is a GET).
    pub caches: std::sync::OnceLock<cache::Caches>,
    /// What our last apply of each child left behind (skip unchanged, revert hand edits).
    pub memo: apply::Memo,
    /// Key names of referenced Secrets by resourceVersion (no re-read of unchanged Secrets).
    pub secret_keys: dereference::SecretKeys,
}

impl Ctx {
    /// A context with the given parts; events are reported as `contact-operator` / `instance`.
    pub fn new(
        client: Client,
        config: OperatorConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: labels::FIELD_MANAGER.into(),
                instance,
            },
        );
        Self {
            client,
            config,
            clock,
            recorder,
            metrics,
            caches: std::sync::OnceLock::new(),
            memo: apply::Memo::default(),
            secret_keys: dereference::SecretKeys::default(),
        }
    }
}

/// A reconcile failure (transient: the API server said no). Spec problems are not errors: they
/// end up in conditions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading referenced or existing objects failed.
    #[error("failed to read referenced objects")]
    Dereference(#[from] dereference::Error),
    /// Applying or deleting a child failed.
    #[error("failed to apply children")]
    Apply(#[from] apply::Error),
    /// Writing the status failed.
    #[error("failed to update status")]
    Status(#[from] status::Error),
    /// Growing a volume failed (not refused: failed).
    #[error("failed to grow a volume")]
    Storage(#[from] storage::Error),
    /// Listing backup Jobs or Pods failed.
    #[error("failed to read backups")]
    Backups(#[from] backups::Error),
    /// Detaching, re-attaching or purging data failed.
    #[error("failed to handle tenant data")]
    Grace(#[from] grace::Error),
    /// Adding or removing the finalizer failed.
    #[error("failed to manage the finalizer")]
    Finalizer(#[source] kube::Error),
}

impl Error {
    /// Short category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Dereference(_) => "dereference",
            Error::Apply(_) => "apply",
            Error::Status(_) => "status",
            Error::Storage(_) => "storage",
            Error::Backups(_) => "backups",
            Error::Grace(_) => "grace",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// How long to wait before retrying a tenant whose referenced Secret is missing (the Secret
/// watch usually triggers sooner).
pub const SECRET_RETRY: Duration = Duration::from_secs(30);

/// Reconciles one tenant (the controller's callback; tests call it directly).
#[instrument(skip_all, fields(tenant = %tenant.name_any(), ns = tenant.namespace().unwrap_or_default()))]
pub async fn reconcile(tenant: Arc<ContactTenant>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = tenant.namespace().unwrap_or_default();
    // Tenants outside the namespaces this operator is limited to belong to another operator.
    if !ctx.config.watch_namespaces.is_empty() && !ctx.config.watch_namespaces.contains(&ns) {
        return Ok(Action::await_change());
    }
    let api: Api<ContactTenant> = Api::namespaced(ctx.client.clone(), &ns);
    // Boxed: the pipeline's future is large, and a reconcile must not be able to overflow a
    // worker thread's stack (debug builds made that happen in tests).
    let result = if tenant.meta().deletion_timestamp.is_some() {
        match finalizer_index(&tenant) {
            Some(i) => match Box::pin(cleanup_tenant(&tenant, &ctx)).await {
                Ok(action) => remove_finalizer(&api, &tenant, i).await.map(|()| action),
                Err(e) => Err(e),
            },
            None => Ok(Action::await_change()),
        }
    } else {
        // The finalizer goes on in the same pass as the children (not in a pass of its own that
        // waits for the watch to bring the tenant back): one reconcile provisions a new tenant.
        match finalizer_index(&tenant) {
            Some(_) => Box::pin(apply_tenant(&tenant, &ctx)).await,
            None => match add_finalizer(&api, &tenant).await {
                Ok(()) => Box::pin(apply_tenant(&tenant, &ctx)).await,
                Err(e) => Err(e),
            },
        }
    };
    ctx.metrics.reconciled(started.elapsed());
    result
}

fn finalizer_index(t: &ContactTenant) -> Option<usize> {
    t.finalizers().iter().position(|f| f == labels::FINALIZER)
}

/// Adds our finalizer. The JSON patch tests the list it extends, so a concurrent change of the
/// finalizers fails the patch (and the reconcile retries) instead of losing an entry.
async fn add_finalizer(api: &Api<ContactTenant>, t: &ContactTenant) -> Result<(), Error> {
    let patch = if t.finalizers().is_empty() {
        serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [labels::FINALIZER] },
        ])
    } else {
        serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": t.finalizers() },
            { "op": "add", "path": "/metadata/finalizers/-", "value": labels::FINALIZER },
        ])
    };
    finalizer_patch(api, t, patch).await
}

/// Removes our finalizer (at index `i`), once the data is detached.
async fn remove_finalizer(
    api: &Api<ContactTenant>,
    t: &ContactTenant,
    i: usize,
) -> Result<(), Error> {
    let path = format!("/metadata/finalizers/{i}");
    let patch = serde_json::json!([
        { "op": "test", "path": path, "value": labels::FINALIZER },
        { "op": "remove", "path": path },
    ]);
    match finalizer_patch(api, t, patch).await {
        // Already gone: the tenant was deleted meanwhile.
        Err(Error::Finalizer(kube::Error::Api(s))) if s.code == 404 => Ok(()),
        other => other,
    }
}

async fn finalizer_patch(
    api: &Api<ContactTenant>,
    t: &ContactTenant,
    patch: serde_json::Value,
) -> Result<(), Error> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|e| Error::Finalizer(kube::Error::SerdeError(e)))?;
    api.patch::<ContactTenant>(
        &t.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Json(patch),
    )
    .await
    .map(|_| ())
    .map_err(Error::Finalizer)
}

/// What to do after a failed reconcile: count it and retry soon (only transient failures get
/// here; invalid specs are conditions and wait for a change).
pub fn error_policy(tenant: Arc<ContactTenant>, error: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.failed(error.category());
    warn!(tenant = %tenant.name_any(), error = %error_chain(error), "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// The error with its causes, for logs and condition messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn conditions_for_problem(reason: &str, message: &str) -> Vec<Cond> {
    vec![
        Cond::new("Ready", Some(false), reason, message),
        Cond::new("Provisioned", Some(false), reason, message),
        Cond::new("DatabaseReady", None, "NotProvisioned", ""),
        Cond::new("IngressReady", None, "NotProvisioned", ""),
        Cond::new("BackupsHealthy", None, "NotProvisioned", ""),
        Cond::new("MaintenancePending", Some(false), "NothingPending", ""),
        Cond::new("TrialExpired", None, "NotProvisioned", ""),
    ]
}

async fn publish_status(tenant: &ContactTenant, ctx: &Ctx, desired: &Desired) -> Result<(), Error> {
    let api: Api<ContactTenant> =
        Api::namespaced(ctx.client.clone(), &tenant.namespace().unwrap_or_default());
    let plan = status::plan(tenant, desired, ctx.clock.now());
    let name = tenant.name_any();
    let write = async {
        match &plan.patch {
            Some(p) => status::write(&api, &name, p).await,
            None => Ok(()),
        }
    };
    let oref = tenant.object_ref(&());
    let events = async {
        for c in &plan.transitions {
            let ev = Event {
                type_: if c.is_warning() {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: c.reason.clone(),
                note: Some(
                    format!(
                        "{}={}: {}",
                        c.type_,
                        c.status
                            .map_or("Unknown", |b| if b { "True" } else { "False" }),
                        c.message
                    )
                    .chars()
                    .take(1000)
                    .collect(),
                ),
                action: "Reconcile".into(),
                secondary: None,
            };
            // Events are best effort: failing to record one must not fail the reconcile.
            if let Err(e) = ctx.recorder.publish(&ev, &oref).await {
                warn!(error = %e, "failed to publish event");
            }
        }
    };
    // The Events go out alongside the status write rather than after it: they are best effort,
    // and a reconcile should not wait a round trip for them (client-go's recorder is
    // asynchronous for the same reason).
    let (written, ()) = futures::join!(write, events);
    written?;
    let key = format!(
        "{}/{}",
        tenant.namespace().unwrap_or_default(),
        tenant.name_any()
    );
    ctx.metrics.set_conditions(
        &key,
        Some(
            desired
                .conditions
                .iter()
                .map(|c| {
                    let s = c
                        .status
                        .map_or("Unknown", |b| if b { "True" } else { "False" });
                    (c.type_.to_string(), s.to_string())
                })
                .collect(),
        ),
    );
    Ok(())
}

async fn note(ctx: &Ctx, tenant: &ContactTenant, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &tenant.object_ref(&())).await {
        warn!(error = %e, "failed to publish event");
    }
}

fn facts_of_existing(w: &ExistingWorkload) -> Option<RestartFacts> {
    match w {
        ExistingWorkload::StatefulSet(s) => RestartFacts::from_annotation(&s.metadata),
        ExistingWorkload::Deployment(d) => RestartFacts::from_annotation(&d.metadata),
    }
}

fn ready_replicas(w: Option<&ExistingWorkload>) -> i32 {
    match w {
        Some(ExistingWorkload::StatefulSet(s)) => s
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        Some(ExistingWorkload::Deployment(d)) => d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        None => 0,
    }
}

fn database_identity(v: &validate::ValidatedTenant) -> String {
    match &v.database {
        validate::Database::CloudNativePg { instances, size } => {
            format!("cloudnativepg({instances}×{size})")
        }
        d => d.kind().to_string(),
    }
}

/// The Apply branch of the finalizer: the whole pipeline for a live tenant.
async fn apply_tenant(tenant: &ContactTenant, ctx: &Ctx) -> Result<Action, Error> {
    let now = ctx.clock.now();
    let generation = tenant.metadata.generation;
    let name = tenant.name_any();
    let ns = tenant.namespace().unwrap_or_default();

    // 1. dereference
    let caches = ctx.caches.get();
    let deref: Dereferenced =
        dereference::dereference(&ctx.client, caches, &ctx.secret_keys, tenant).await?;
    let at = apply::Children {
        caches,
        memo: &ctx.memo,
    };
    if let Some(first) = deref.secret_problems.first() {
        let message = deref
            .secret_problems
            .iter()
            .map(|p| p.message())
            .collect::<Vec<_>>()
            .join("; ");
        let desired = Desired {
            observed_generation: generation,
            conditions: conditions_for_problem(first.reason(), &message),
            url: None,
            next_maintenance_window: None,
            pending_changes: Vec::new(),
            // A spec problem does not make the last backup any less taken.
            last_backup: tenant.status.as_ref().and_then(|s| s.last_backup.clone()),
        };
        publish_status(tenant, ctx, &desired).await?;
        return Ok(Action::requeue(SECRET_RETRY));
    }

    // 2. validate
    let v = match validate::validate(tenant, &ctx.config) {
        Ok(v) => v,
        Err(e) => {
            let desired = Desired {
                observed_generation: generation,
                conditions: conditions_for_problem(e.reason(), &error_chain(&e)),
                url: None,
                next_maintenance_window: None,
                pending_changes: Vec::new(),
                last_backup: tenant.status.as_ref().and_then(|s| s.last_backup.clone()),
            };
            publish_status(tenant, ctx, &desired).await?;
            // Only a spec change can fix it.
            return Ok(Action::await_change());
        }
    };

    // 3. build (pure), lifecycle and gating decisions (pure)
    let phase = lifecycle::phase(&v, now);
    let replicas = lifecycle::effective_replicas(&v, phase);
    let window: Option<WindowState> = v.window.map(|w| w.state_at(now));
    let occurrence = window.map(|s| s.occurrence());

    let service_account = build::build_service_account(&v);
    let keys = build::build_secret(&v, &deref.keys, &mut rand::rng());
    let config_map = build::build_config_map(&v, occurrence);
    let service = build::build_service(&v);
    let network_policy = build::build_network_policy(&v, &ctx.config.ingress_namespace);
    let ingress = build::build_ingress(&v);
    let backup_pvc = build::build_backup_pvc(&v);
    let backup_job = build::build_backup_cronjob(&v, phase.scaled_down());
    let cnpg = build::build_cnpg_cluster(&v, ctx.config.cnpg_image.as_deref());
    let mut workload = build::build_workload(&v, replicas);

    let desired_facts = RestartFacts::of(&workload, database_identity(&v));
    // The live workload of the kind we want, else of the other kind (a database change).
    let live_workload = deref
        .workloads
        .iter()
        .find(|w| {
            matches!(
                (w, &workload),
                (ExistingWorkload::StatefulSet(_), Workload::StatefulSet(_))
                    | (ExistingWorkload::Deployment(_), Workload::Deployment(_))
            )
        })
        .or_else(|| deref.workloads.first());
    let live_facts = live_workload.and_then(facts_of_existing);
    let decision = gating::decide(
        &desired_facts,
        live_facts.as_ref(),
        window.as_ref(),
        v.apply_now,
    );

    // 4. apply, in dependency order: identity and config before the workload that mounts them.
    if deref.keys_detached {
        let back = grace::reattach(&ctx.client, &ns, &name).await?;
        let what = back
            .iter()
            .map(|d| format!("{}/{}", d.kind, d.name))
            .collect::<Vec<_>>();
        note(
            ctx,
            tenant,
            EventType::Normal,
            "DataReattached",
            what.join(", "),
        )
        .await;
    }
    let client = &ctx.client;
    let mut storage_problems: Vec<storage::StorageProblem> = Vec::new();
    let mut applied = 0usize;
    let mut count = |o: Outcome| applied += usize::from(o == Outcome::Applied);
    let deleted = |d: bool| {
        if d {
            Outcome::Applied
        } else {
            Outcome::Unchanged
        }
    };
    // Everything but the workload depends on nothing here, and nothing here depends on their
    // answers: they go out together (one round trip of latency instead of eight; a tenant's
    // reconcile was a chain of sequential requests, and with a bounded number of reconciles in
    // flight that chain, not the API server, set the pace). The workload follows, so its pods
    // never start before the identity, keys and configuration they mount exist.
    let (sa_api, keys_api, cm_api, svc_api, np_api) = (
        Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        Api::<Secret>::namespaced(client.clone(), &ns),
        Api::<ConfigMap>::namespaced(client.clone(), &ns),
        Api::<Service>::namespaced(client.clone(), &ns),
        Api::<NetworkPolicy>::namespaced(client.clone(), &ns),
    );
    let backup_claim = async {
        let Some(pvc) = backup_pvc else {
            return Ok::<_, Error>((Outcome::Unchanged, None));
        };
        let pvc_api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
        let live = cache::live(caches, &pvc_api, &ns, &names::backup_pvc(&name))
            .await
            .map_err(|source| apply::Error::Read {
                kind: "PersistentVolumeClaim".into(),
                name: names::backup_pvc(&name),
                source,
            })?;
        // A claim's spec is immutable but for its size, which may only grow: keep the live
        // spec, with the larger size if the tenant asks for one.
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
        match apply::apply_adjusted(at, &pvc_api, pvc, live.as_ref(), |p| {
            if let Some(spec) = keep {
                p.spec = spec;
            }
        })
        .await
        {
            Ok(o) => Ok((o, None)),
            Err(e) if grow_to.is_some() && storage::is_refusal(e.kube()) => {
                let (from, to) = grow_to.unwrap_or_default();
                let problem = storage::StorageProblem {
                    claim: names::backup_pvc(&name),
                    from,
                    to,
                    message: storage::refusal_message(e.kube()),
                };
                Ok((Outcome::Unchanged, Some(problem)))
            }
            Err(e) => Err(e.into()),
        }
    };
    let cron_api = Api::<CronJob>::namespaced(client.clone(), &ns);
    let schedule = async {
        match backup_job {
            Some(job) => {
                let live = cache::live(caches, &cron_api, &ns, &names::backup_job(&name))
                    .await
                    .ok()
                    .flatten();
                let o = apply::apply_with_live(at, &cron_api, job, live.as_ref()).await?;
                Ok::<_, Error>((o, live))
            }
            None => {
                let gone =
                    apply::delete_if_ours(at, &cron_api, &ns, &names::backup_job(&name)).await?;
                Ok((deleted(gone), None))
            }
        }
    };
    let ing_api = Api::<Ingress>::namespaced(client.clone(), &ns);
    let route = async {
        let live = cache::live(caches, &ing_api, &ns, &names::runtime(&name))
            .await
            .ok()
            .flatten();
        let o = apply::apply_with_live(at, &ing_api, ingress, live.as_ref()).await?;
        Ok::<_, Error>((o, live))
    };
    let (sa, keys, cm, svc, np, (claim, claim_problem), (cron, cron_live), (ing, ing_live)) = futures::try_join!(
        async { Ok::<_, Error>(apply::apply(at, &sa_api, service_account).await?) },
        async { Ok(apply::apply(at, &keys_api, keys).await?) },
        async { Ok(apply::apply(at, &cm_api, config_map).await?) },
        async { Ok(apply::apply(at, &svc_api, service).await?) },
        async { Ok(apply::apply(at, &np_api, network_policy).await?) },
        backup_claim,
        schedule,
        route,
    )?;
    for o in [sa, keys, cm, svc, np, claim, cron, ing] {
        count(o);
    }
    storage_problems.extend(claim_problem);
    // The SQLite claims come from the StatefulSet's (immutable) template: grow them in place.
    // Not held for the window: growing a volume does not restart the runtime.
    if let validate::Database::Sqlite { size, .. } = &v.database
        && deref
            .workloads
            .iter()
            .any(|w| matches!(w, ExistingWorkload::StatefulSet(_)))
    {
        let pvc_api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
        let claim = names::sqlite_pvc(&name);
        let live = cache::live(caches, &pvc_api, &ns, &claim)
            .await
            .map_err(|source| apply::Error::Read {
                kind: "PersistentVolumeClaim".into(),
                name: claim.clone(),
                source,
            })?;
        if let Some(live) = live
            && let Some(problem) = storage::grow(&pvc_api, &live, size).await?
        {
            storage_problems.push(problem);
        }
    }

    let mut cnpg_missing = false;
    let mut cnpg_live: Option<DynamicObject> = None;
    let pdb_api = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns);
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let deploy_api = Api::<Deployment>::namespaced(client.clone(), &ns);
    let cnpg_api =
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &build::cnpg_api_resource());
    if cnpg.is_some() {
        // Read whether or not the Cluster may change now: its readiness feeds DatabaseReady.
        cnpg_live = cnpg_api.get_opt(&names::cnpg(&name)).await.ok().flatten();
    }
    let pending = match &decision {
        Decision::Apply { changes } => {
            if let Some(cluster) = cnpg {
                match apply::apply_dynamic(at, &cnpg_api, cluster, cnpg_live.as_ref()).await {
                    Ok(o) => count(o),
                    // No CloudNativePG CRD on this cluster: say so in a condition, not a crash.
                    Err(e) if matches!(e.kube(), kube::Error::Api(s) if s.code == 404) => {
                        cnpg_missing = true
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let facts = desired_facts.to_annotation();
            match &mut workload {
                Workload::StatefulSet(s) => {
                    s.annotations_mut()
                        .insert(gating::RESTART_FACTS.into(), facts);
                    let live = deref.workloads.iter().find_map(|w| match w {
                        ExistingWorkload::StatefulSet(s) => Some(s),
                        ExistingWorkload::Deployment(_) => None,
                    });
                    // volumeClaimTemplates are immutable once the StatefulSet exists: sending a
                    // new size would fail every apply. Keep the live templates; resizing is
                    // done on the PVC itself (storage classes with allowVolumeExpansion).
                    let keep = live.map(|l| l.spec.volume_claim_templates.clone());
                    count(
                        apply::apply_adjusted(at, &sts_api, s.clone(), live, |s| {
                            if let Some(templates) = keep {
                                s.spec.volume_claim_templates = templates;
                            }
                        })
                        .await?,
                    );
                    count(deleted(
                        apply::delete_if_ours(at, &deploy_api, &ns, &names::runtime(&name)).await?,
                    ));
                }
                Workload::Deployment(d) => {
                    d.annotations_mut()
                        .insert(gating::RESTART_FACTS.into(), facts);
                    let live = deref.workloads.iter().find_map(|w| match w {
                        ExistingWorkload::Deployment(d) => Some(d),
                        ExistingWorkload::StatefulSet(_) => None,
                    });
                    count(apply::apply_with_live(at, &deploy_api, d.clone(), live).await?);
                    count(deleted(
                        apply::delete_if_ours(at, &sts_api, &ns, &names::runtime(&name)).await?,
                    ));
                }
            }
            match build::build_pdb(&v, replicas) {
                Some(pdb) => count(apply::apply(at, &pdb_api, pdb).await?),
                None => {
                    count(deleted(
                        apply::delete_if_ours(at, &pdb_api, &ns, &names::runtime(&name)).await?,
                    ));
                }
            }
            if !changes.is_empty() && live_facts.is_some() {
                note(
                    ctx,
                    tenant,
                    EventType::Normal,
                    "RestartChangesApplied",
                    gating::describe(changes),
                )
                .await;
            }
            Vec::new()
        }
        Decision::Hold { pending } => pending.clone(),
    };

    if applied > 0 {
        info!(applied, "applied changed children");
    }

    // 5. status
    let ready = ready_replicas(live_workload);
    let mut conditions = Vec::new();
    conditions.push(match phase {
        Phase::Suspended => Cond::new(
            "Ready",
            Some(false),
            "Suspended",
            "suspended: runtime scaled to zero, data kept",
        ),
        Phase::TrialExpired => Cond::new(
            "Ready",
            Some(false),
            "TrialExpired",
            "trial ended: runtime scaled to zero, data kept",
        ),
        Phase::Active if replicas > 0 && ready >= replicas => Cond::new(
            "Ready",
            Some(true),
            "RuntimeReady",
            format!("{ready}/{replicas} replicas ready"),
        ),
        Phase::Active => Cond::new(
            "Ready",
            Some(false),
            "RuntimeNotReady",
            format!("{ready}/{replicas} replicas ready"),
        ),
    });
    conditions.push(if storage_problems.is_empty() {
        Cond::new("Provisioned", Some(true), "Applied", "all children applied")
    } else {
        Cond::new(
            "Provisioned",
            Some(false),
            "StorageNotExpandable",
            storage_problems
                .iter()
                .map(storage::StorageProblem::describe)
                .collect::<Vec<_>>()
                .join("; "),
        )
    });
    let mut cnpg_coming_up = false;
    conditions.push(match &v.database {
        validate::Database::Sqlite { .. } if ready > 0 => Cond::new(
            "DatabaseReady",
            Some(true),
            "SqliteReady",
            "embedded SQLite on its volume",
        ),
        validate::Database::Sqlite { .. } if phase.scaled_down() => Cond::new(
            "DatabaseReady",
            Some(false),
            phase.reason(),
            "runtime scaled to zero; the SQLite volume is kept",
        ),
        validate::Database::Sqlite { .. } => Cond::new(
            "DatabaseReady",
            Some(false),
            "WaitingForRuntime",
            "embedded SQLite opens when the runtime starts",
        ),
        validate::Database::Postgres { secret_name, .. } => Cond::new(
            "DatabaseReady",
            Some(true),
            "SecretResolved",
            format!("database URL from secret {secret_name}"),
        ),
        validate::Database::CloudNativePg { instances, .. } => {
            if cnpg_missing {
                Cond::new(
                    "DatabaseReady",
                    Some(false),
                    "CloudNativePGNotInstalled",
                    "the postgresql.cnpg.io Cluster CRD is not installed",
                )
            } else {
                let ready = cnpg_live
                    .as_ref()
                    .and_then(|c| c.data.get("status")?.get("readyInstances")?.as_i64())
                    .unwrap_or(0);
                if ready >= *instances {
                    Cond::new(
                        "DatabaseReady",
                        Some(true),
                        "ClusterReady",
                        format!("{ready}/{instances} instances ready"),
                    )
                } else {
                    cnpg_coming_up = true;
                    Cond::new(
                        "DatabaseReady",
                        Some(false),
                        "ClusterNotReady",
                        format!("{ready}/{instances} instances ready"),
                    )
                }
            }
        }
    });
    let has_address = ing_live
        .as_ref()
        .and_then(|i| i.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref())
        .is_some_and(|l| !l.is_empty());
    conditions.push(if has_address {
        Cond::new(
            "IngressReady",
            Some(true),
            "AddressAssigned",
            format!("serving {}", v.host),
        )
    } else {
        Cond::new(
            "IngressReady",
            Some(false),
            "AwaitingAddress",
            "the ingress controller has not assigned an address yet",
        )
    });
    let previous_backup = tenant.status.as_ref().and_then(|s| s.last_backup.as_ref());
    let (backups_cond, last_backup) = if v.backups.is_some() {
        let seen = backups::read(client, caches, &ns, &name).await?;
        backups::assess(true, &seen, cron_live.as_ref(), previous_backup, now)
    } else {
        let seen = backups::Observed::default();
        backups::assess(false, &seen, None, previous_backup, now)
    };
    conditions.push(backups_cond);
    conditions.push(match (&decision, &window) {
        (Decision::Hold { pending }, Some(w)) => Cond::new(
            "MaintenancePending",
            Some(true),
            "WaitingForWindow",
            format!(
                "{} wait for the maintenance window opening at {}",
                gating::describe(pending),
                w.occurrence().start.to_rfc3339()
            ),
        ),
        _ => Cond::new("MaintenancePending", Some(false), "NothingPending", ""),
    });
    conditions.push(match (phase, v.trial_ends_at) {
        (Phase::TrialExpired, Some(end)) => Cond::new(
            "TrialExpired",
            Some(true),
            "TrialEnded",
            format!("trial ended at {}", end.to_rfc3339()),
        ),
        (_, Some(end)) => Cond::new(
            "TrialExpired",
            Some(false),
            "TrialActive",
            format!("trial ends at {}", end.to_rfc3339()),
        ),
        (_, None) => Cond::new("TrialExpired", Some(false), "NoTrial", ""),
    });
    let desired = Desired {
        observed_generation: generation,
        conditions,
        url: Some(build::ingress_url(&v)),
        next_maintenance_window: occurrence,
        pending_changes: pending,
        last_backup,
    };
    publish_status(tenant, ctx, &desired).await?;

    // Wake up at the next moment something changes by itself: the window opening or closing
    // (apply held changes; refresh the window in the ConfigMap), or the trial ending.
    let mut wake =
        chrono::Duration::from_std(ctx.config.resync).unwrap_or(chrono::Duration::minutes(5));
    if let Some(w) = window {
        let boundary = match w {
            WindowState::Open { current } => current.end,
            WindowState::Closed { next } => next.start,
        };
        wake = wake.min(boundary - now);
    }
    if let Some(t) = lifecycle::until_trial_end(&v, now) {
        wake = wake.min(t);
    }
    // CloudNativePG's Cluster is not watched (its CRD may come and go with the cluster's add-ons):
    // while the database is not ready, look again soon, so DatabaseReady follows it.
    if let Some(after) = cnpg_recheck(cnpg_missing, cnpg_coming_up) {
        wake = wake.min(after);
    }
    let wake = wake
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(1));
    Ok(Action::requeue(wake))
}

/// When to read a CloudNativePG Cluster again: soon while it is coming up, now and then while
/// its CRD is missing (an add-on being installed), not at all when it is ready or not used.
fn cnpg_recheck(cnpg_missing: bool, cnpg_coming_up: bool) -> Option<chrono::Duration> {
    if cnpg_missing {
        Some(chrono::Duration::seconds(60))
    } else if cnpg_coming_up {
        Some(chrono::Duration::seconds(10))
    } else {
        None
    }
}

/// The Cleanup branch of the finalizer: remove the runtime at once, detach the data.
async fn cleanup_tenant(tenant: &ContactTenant, ctx: &Ctx) -> Result<Action, Error> {
    let now = ctx.clock.now();
    let ns = tenant.namespace().unwrap_or_default();
    let name = tenant.name_any();
    let c = &ctx.client;
    let at = apply::Children {
        caches: None,
        memo: &ctx.memo,
    };
    // The garbage collector would remove owned children too, but only after the tenant object is
    // gone; removing the runtime here stops it at once, before data is detached.
    apply::delete_if_ours(
        at,
        &Api::<StatefulSet>::namespaced(c.clone(), &ns),
        &ns,
        &names::runtime(&name),
    )
    .await?;
    apply::delete_if_ours(
        at,
        &Api::<Deployment>::namespaced(c.clone(), &ns),
        &ns,
        &names::runtime(&name),
    )
    .await?;
    apply::delete_if_ours(
        at,
        &Api::<CronJob>::namespaced(c.clone(), &ns),
        &ns,
        &names::backup_job(&name),
    )
    .await?;
    apply::delete_if_ours(
        at,
        &Api::<Ingress>::namespaced(c.clone(), &ns),
        &ns,
        &names::runtime(&name),
    )
    .await?;
    apply::delete_if_ours(
        at,
        &Api::<Service>::namespaced(c.clone(), &ns),
        &ns,
        &names::runtime(&name),
    )
    .await?;
    apply::delete_if_ours(
        at,
        &Api::<PodDisruptionBudget>::namespaced(c.clone(), &ns),
        &ns,
        &names::runtime(&name),
    )
    .await?;
    apply::delete_if_ours(
        at,
        &Api::<NetworkPolicy>::namespaced(c.clone(), &ns),
        &ns,
        &names::network_policy(&name),
    )
    .await?;
    apply::delete_if_ours(
        at,
        &Api::<ConfigMap>::namespaced(c.clone(), &ns),
        &ns,
        &names::config(&name),
    )
    .await?;
    apply::delete_if_ours(
        at,
        &Api::<ServiceAccount>::namespaced(c.clone(), &ns),
        &ns,
        &names::runtime(&name),
    )
    .await?;
    let grace_days = tenant.spec.deletion.data_grace_days;
    let detached = grace::detach(c, tenant, grace_days, now).await?;
    let purge = now + chrono::Duration::days(i64::from(grace_days));
    note(
        ctx,
        tenant,
        EventType::Normal,
        "DataDetached",
        format!(
            "runtime removed; {} data object(s) kept until {} ({})",
            detached.len(),
            purge.to_rfc3339(),
            detached
                .iter()
                .map(|d| format!("{}/{}", d.kind, d.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .await;
    // The runtime's children left the memo as they were deleted above; the data objects stay
    // in the cluster (detached) but not in the memo: a process that provisions and deletes
    // tenants for months must not keep a record of every one it ever had.
    ctx.memo
        .forget(&format!("Secret/{ns}/{}", names::keys(&name)));
    ctx.memo.forget(&format!(
        "PersistentVolumeClaim/{ns}/{}",
        names::backup_pvc(&name)
    ));
    ctx.memo
        .forget(&format!("Cluster/{ns}/{}", names::cnpg(&name)));
    ctx.metrics.set_conditions(&format!("{ns}/{name}"), None);
    Ok(Action::await_change())
}

/// What of a tenant triggers a reconcile: its spec (generation), its annotations (`apply-now`)
/// and its deletion. Not its status, which only the reconcile writes.
fn tenant_trigger(t: &ContactTenant) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.metadata.generation.hash(&mut h);
    t.metadata.annotations.hash(&mut h);
    t.metadata
        .deletion_timestamp
        .as_ref()
        .map(|d| d.0.as_second())
        .hash(&mut h);
    Some(h.finish())
}

/// A watch-event filter that drops the echo of our own apply: it tells the reconcile nothing new
/// and would only bring the tenant back for a pass with nothing to do (the store still takes it
/// in). A write by someone else landing while our apply of the same hash is in flight would be
/// taken for the echo; the next event or the resync covers it.
fn not_echo<K>(memo: &apply::Memo) -> impl FnMut(&K) -> futures::future::Ready<bool> + use<K>
where
    K: Resource,
    K::DynamicType: Default,
{
    let memo = memo.clone();
    move |o: &K| {
        let echo = memo.is_echo(
            &apply::key_of(o),
            o.meta().resource_version.as_deref(),
            o.annotations().get(labels::SPEC_HASH).map(String::as_str),
        );
        futures::future::ready(!echo)
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run_controller(
    ctx: Arc<Ctx>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::FIELD_MANAGER
    ));
    let (tenant_store, tenant_writer) = reflector::store::<ContactTenant>();
    let tenant_stream = watcher(
        Api::<ContactTenant>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|t| t.managed_fields_mut().clear())
    .reflect(tenant_writer)
    .applied_objects()
    // Only what the reconcile acts on triggers it: our own status patch (and finalizer) would
    // otherwise bring every tenant back for a pass with nothing to do. The store above still
    // sees every change.
    .predicate_filter(tenant_trigger, PredicateConfig::default());
    let controller = Controller::for_stream(tenant_stream, tenant_store);
    let store = controller.store();

    // One reflector per managed kind: its stream triggers reconciles (as `owns` would) and its
    // store serves the reconciler's reads (see `cache`).
    macro_rules! reflect {
        ($k:ty) => {{
            let (reader, writer) = reflector::store::<$k>();
            let stream = watcher(Api::<$k>::all(client.clone()), owned.clone())
                .default_backoff()
                // managedFields are most of an object's size and never read here (nor are pod
                // templates: see `cache::Slim`).
                .modify(cache::Slim::slim)
                .reflect(writer)
                .touched_objects()
                .try_filter(not_echo(&ctx.memo));
            (reader, stream)
        }};
    }
    // Metadata only where the reads need nothing else (see `cache`): Api<PartialObjectMeta<K>>
    // sends metadata-only requests, so no body is encoded, sent, decoded or kept.
    let (statefulsets, sts_s) = reflect!(StatefulSet);
    let (deployments, deploy_s) = reflect!(Deployment);
    let (services, svc_s) = reflect!(PartialObjectMeta<Service>);
    let (ingresses, ing_s) = reflect!(Ingress);
    let (network_policies, np_s) = reflect!(PartialObjectMeta<NetworkPolicy>);
    let (pdbs, pdb_s) = reflect!(PartialObjectMeta<PodDisruptionBudget>);
    let (cronjobs, cron_s) = reflect!(CronJob);
    let (config_maps, cm_s) = reflect!(PartialObjectMeta<ConfigMap>);
    let (service_accounts, sa_s) = reflect!(PartialObjectMeta<ServiceAccount>);
    let (pvcs, pvc_s) = reflect!(PersistentVolumeClaim);
    let (secrets, keys_s) = reflect!(Secret);
    // Backup Jobs and Pods: only the backup component (the runtime's own pods never matter here).
    let backup_only = watcher::Config::default().labels(&format!(
        "{}={},{}=backup",
        labels::MANAGED_BY,
        labels::FIELD_MANAGER,
        labels::COMPONENT
    ));
    macro_rules! reflect_backup {
        ($k:ty) => {{
            let (reader, writer) = reflector::store::<$k>();
            let stream = watcher(Api::<$k>::all(client.clone()), backup_only.clone())
                .default_backoff()
                .modify(cache::Slim::slim)
                .reflect(writer)
                .touched_objects();
            (reader, stream)
        }};
    }
    let (jobs, jobs_s) = reflect_backup!(Job);
    let (pods, pods_s) = reflect_backup!(Pod);
    // Channel and database Secrets are the user's: watch their metadata only (the name maps an
    // event to tenants, the resourceVersion says whether a Secret changed since we read its keys),
    // so Secret data never has to sit in this process's memory.
    let (secret_meta, secret_meta_writer) = reflector::store::<PartialObjectMeta<Secret>>();
    // Our own key Secrets are left out: the key store above has them, and each would otherwise
    // cost a second watch event per write.
    let not_ours = watcher::Config::default().labels(&format!(
        "{}!={}",
        labels::MANAGED_BY,
        labels::FIELD_MANAGER
    ));
    let secret_meta_s = watcher(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        not_ours,
    )
    .default_backoff()
    .modify(|o| o.managed_fields_mut().clear())
    .reflect(secret_meta_writer)
    .touched_objects();
    let caches = cache::Caches {
        statefulsets,
        deployments,
        services,
        ingresses,
        network_policies,
        pdbs,
        cronjobs,
        config_maps,
        service_accounts,
        pvcs,
        secrets,
        jobs,
        pods,
        secret_meta,
        ready: Arc::default(),
    };
    if ctx.caches.set(caches.clone()).is_ok() {
        tokio::spawn(async move { caches.wait_ready().await });
    }
    // Data-bearing objects carry no owner reference: map them back by their tenant label.
    fn by_tenant_label<K: Resource>(obj: K) -> Option<ObjectRef<ContactTenant>> {
        let tenant = obj.labels().get(labels::TENANT)?;
        Some(ObjectRef::new(tenant).within(&obj.namespace()?))
    }

    controller
        .owns_stream(sts_s)
        .owns_stream(deploy_s)
        .owns_stream(svc_s)
        .owns_stream(ing_s)
        .owns_stream(np_s)
        .owns_stream(pdb_s)
        .owns_stream(cron_s)
        .owns_stream(cm_s)
        .owns_stream(sa_s)
        .watches_stream(pvc_s, by_tenant_label)
        .watches_stream(keys_s, by_tenant_label)
        // Backup Jobs are owned by the CronJob, their Pods by the Job: map them by label too.
        .watches_stream(jobs_s, by_tenant_label)
        .watches_stream(pods_s, by_tenant_label)
        // Channel and database Secrets are the user's, not owned: map each Secret event to the
        // tenants that refer to it (the generated key Secret is mapped by label above).
        .watches_stream(secret_meta_s, move |secret| {
            let ns = secret.namespace().unwrap_or_default();
            dereference::tenants_for_secret(&store.state(), &ns, &secret.name_any())
        })
        // A short debounce folds the burst of watch events our own applies cause into one reconcile.
        .with_config(
            controller::Config::default()
                .concurrency(ctx.config.concurrency)
                .debounce(Duration::from_millis(300)),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(tenant = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}
