//! The per-tenant pipeline of a live tenant, as its steps: dereference → validate → build and
//! gate → provision → status, then when to look again.

use super::conditions::{self, Cnpg, Observed};
use super::dereference::{self, Dereferenced, ExistingWorkload};
use super::gating::{self, Change, Decision, RestartFacts};
use super::provision::{Provisioned, provision};
use super::status::{self, note};
use super::{Ctx, Error, SECRET_RETRY, backups, error_chain, rollout};
use crate::build::{self, Children, Inputs};
use crate::lifecycle::{self, grace};
use crate::maintenance::WindowState;
use crate::tenant::{self, Database, ValidatedTenant};
use chrono::{DateTime, Utc};
use contact_crds::v1alpha1::ContactTenant;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::time::Duration;
use tracing::info;

/// The whole pipeline for a live tenant (the finalizer is on).
pub(crate) async fn apply_tenant(tenant: &ContactTenant, ctx: &Ctx) -> Result<Action, Error> {
    let now = ctx.clock.now();
    let generation = tenant.metadata.generation;
    let previous_backup = tenant.status.as_ref().and_then(|s| s.last_backup.clone());

    // 1. dereference
    let caches = ctx.caches.get();
    let deref = dereference::dereference(&ctx.client, caches, &ctx.secret_keys, tenant).await?;
    if let Some(first) = deref.secret_problems.first() {
        let messages: Vec<_> = deref.secret_problems.iter().map(|p| p.message()).collect();
        let message = messages.join("; ");
        let desired = conditions::problem(generation, previous_backup, first.reason(), &message);
        status::publish(tenant, ctx, &desired).await?;
        return Ok(Action::requeue(SECRET_RETRY));
    }

    // 2. validate
    let v = match tenant::validate(tenant, &ctx.config) {
        Ok(v) => v,
        Err(e) => {
            let desired =
                conditions::problem(generation, previous_backup, e.reason(), &error_chain(&e));
            status::publish(tenant, ctx, &desired).await?;
            // Only a spec change can fix it.
            return Ok(Action::await_change());
        }
    };

    // 3. build (pure) and gate (pure)
    let children = build_children(ctx, &v, &deref, now);
    let facts = RestartFacts::of(&children, database_identity(&v));
    let live_facts = live_workload(&deref, &children).and_then(facts_of_existing);
    let window = v.window.map(|w| w.state_at(now));
    let decision = gating::decide(&facts, live_facts.as_ref(), window.as_ref(), v.apply_now);

    // 4. provision, in dependency order: identity and config before the workload that mounts them
    // Data a deletion recorded is re-attached (the key Secret's mark covers data detached before
    // the ledger existed).
    if deref.keys_detached
        || ctx
            .ledger
            .holds(&v.namespace, &v.name)
            .await
            .map_err(grace::Error::from)?
    {
        reattach(ctx, tenant, &v).await?;
    }
    let ready_replicas = ready_replicas(live_workload(&deref, &children));
    let done = provision(ctx, &v, children, &deref, &decision, &facts).await?;
    if done.written > 0 {
        info!(applied = done.written, "applied changed children");
    }
    let pending = announce_or_hold(ctx, tenant, decision, live_facts.is_some()).await;
    repair_rollout(ctx, tenant, &deref).await?;

    // 5. status
    let wake = requeue_after(&v, done.cnpg, window, ctx.config.resync, now);
    let backups = match v.backups {
        Some(_) => backups::read(&ctx.client, caches, &v.namespace, &v.name).await?,
        None => backups::Observed::default(),
    };
    let Provisioned {
        written: _,
        storage_problems,
        backup_schedule,
        ingress,
        cnpg,
    } = done;
    let seen = Observed {
        generation,
        previous_backup,
        ready_replicas,
        storage_problems,
        cnpg,
        ingress_address: has_address(ingress.as_ref()),
        backups,
        backup_schedule,
        pending,
    };
    status::publish(tenant, ctx, &conditions::status(&v, seen, now)).await?;
    Ok(Action::requeue(wake))
}

/// A tenant re-created within its data's grace period: its data is attached again.
async fn reattach(ctx: &Ctx, tenant: &ContactTenant, v: &ValidatedTenant) -> Result<(), Error> {
    let back = grace::reattach(&ctx.client, &ctx.ledger, &v.namespace, &v.name).await?;
    let what: Vec<_> = back
        .iter()
        .map(|d| format!("{}/{}", d.kind, d.name))
        .collect();
    let what = what.join(", ");
    note(ctx, tenant, EventType::Normal, "DataReattached", what).await;
    Ok(())
}

/// A pod stuck on an old revision that the StatefulSet controller will not replace (see
/// `rollout`) is deleted, so the new revision (a fixed image, say) can start.
async fn repair_rollout(
    ctx: &Ctx,
    tenant: &ContactTenant,
    deref: &Dereferenced,
) -> Result<(), Error> {
    for w in &deref.workloads {
        let ExistingWorkload::StatefulSet(sts) = w else {
            continue;
        };
        let ns = sts.metadata.namespace.as_deref().unwrap_or_default();
        for (pod, revision) in rollout::replace_stuck_pods(&ctx.client, ns, sts).await? {
            let what = format!(
                "pod {pod} of revision {revision} never became Ready: deleted so the StatefulSet \
                 controller recreates it from the new revision"
            );
            note(ctx, tenant, EventType::Warning, "StuckPodReplaced", what).await;
        }
    }
    Ok(())
}

/// The changes held for the window; restart-requiring changes applied to a running workload
/// are announced in an Event instead.
async fn announce_or_hold(
    ctx: &Ctx,
    tenant: &ContactTenant,
    decision: Decision,
    was_running: bool,
) -> Vec<Change> {
    match decision {
        Decision::Apply { changes } => {
            if !changes.is_empty() && was_running {
                let what = gating::describe(&changes);
                let reason = "RestartChangesApplied";
                note(ctx, tenant, EventType::Normal, reason, what).await;
            }
            Vec::new()
        }
        Decision::Hold { pending } => pending,
    }
}

/// Every child of `v` as this pass wants it (lifecycle decides the replicas).
fn build_children(
    ctx: &Ctx,
    v: &ValidatedTenant,
    deref: &Dereferenced,
    now: DateTime<Utc>,
) -> Children {
    let phase = lifecycle::phase(v, now);
    let inputs = Inputs {
        existing_keys: &deref.keys,
        next_window: v.window.map(|w| w.state_at(now).occurrence()),
        replicas: lifecycle::effective_replicas(v, phase),
        scaled_down: phase.scaled_down(),
        ingress_namespace: &ctx.config.ingress_namespace,
        cnpg_image: ctx.config.cnpg_image.as_deref(),
    };
    build::all(v, inputs, &mut rand::rng())
}

fn database_identity(v: &ValidatedTenant) -> String {
    match &v.database {
        Database::CloudNativePg { instances, size } => {
            format!("cloudnativepg({instances}×{size})")
        }
        d => d.kind().to_string(),
    }
}

/// The live workload of the kind we want, else of the other kind (a database change).
fn live_workload<'a>(deref: &'a Dereferenced, children: &Children) -> Option<&'a ExistingWorkload> {
    let wanted = |w: &&ExistingWorkload| match w {
        ExistingWorkload::StatefulSet(_) => children.statefulset.is_some(),
        ExistingWorkload::Deployment(_) => children.deployment.is_some(),
    };
    deref
        .workloads
        .iter()
        .find(wanted)
        .or_else(|| deref.workloads.first())
}

fn facts_of_existing(w: &ExistingWorkload) -> Option<RestartFacts> {
    match w {
        ExistingWorkload::StatefulSet(s) => RestartFacts::from_annotation(&s.metadata),
        ExistingWorkload::Deployment(d) => RestartFacts::from_annotation(&d.metadata),
    }
}

fn ready_replicas(w: Option<&ExistingWorkload>) -> i32 {
    let ready = match w {
        Some(ExistingWorkload::StatefulSet(s)) => s.status.as_ref().and_then(|s| s.ready_replicas),
        Some(ExistingWorkload::Deployment(d)) => d.status.as_ref().and_then(|s| s.ready_replicas),
        None => None,
    };
    ready.unwrap_or(0)
}

fn has_address(ingress: Option<&k8s_openapi::api::networking::v1::Ingress>) -> bool {
    ingress
        .and_then(|i| i.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref())
        .is_some_and(|l| !l.is_empty())
}

/// When to look again without an event: the window opening or closing (apply held changes;
/// refresh the window in the ConfigMap), the trial ending, a CloudNativePG Cluster coming up or
/// its CRD missing, or the resync period, whichever is first (at least a second from now).
fn requeue_after(
    v: &ValidatedTenant,
    cnpg: Cnpg,
    window: Option<WindowState>,
    resync: Duration,
    now: DateTime<Utc>,
) -> Duration {
    let mut wake = chrono::Duration::from_std(resync).unwrap_or(chrono::Duration::minutes(5));
    if let Some(w) = window {
        let boundary = match w {
            WindowState::Open { current } => current.end,
            WindowState::Closed { next } => next.start,
        };
        wake = wake.min(boundary - now);
    }
    if let Some(t) = lifecycle::until_trial_end(v, now) {
        wake = wake.min(t);
    }
    // CloudNativePG's Cluster is not watched (its CRD may come and go with the cluster's
    // add-ons): while the database is not ready, look again soon, so DatabaseReady follows it.
    if let Some(after) = cnpg_recheck(v, cnpg) {
        wake = wake.min(after);
    }
    wake.to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

/// When to read a CloudNativePG Cluster again: soon while it is coming up, now and then while
/// its CRD is missing (an add-on being installed), not at all when it is ready or not used.
fn cnpg_recheck(v: &ValidatedTenant, cnpg: Cnpg) -> Option<chrono::Duration> {
    match (&v.database, cnpg) {
        (Database::CloudNativePg { .. }, Cnpg::Missing) => Some(chrono::Duration::seconds(60)),
        (Database::CloudNativePg { instances, .. }, Cnpg::Ready(ready)) if ready < *instances => {
            Some(chrono::Duration::seconds(10))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("instant")
    }

    #[test]
    fn wakes_at_the_first_thing_that_changes_by_itself() {
        let resync = Duration::from_secs(300);
        let mut v = ValidatedTenant::test();
        let window = |now| v.window.map(|w| w.state_at(now));
        // Saturday 21:59: the window (22:00 UTC) opens in a minute, before the resync.
        let now = at("2026-11-28T21:59:00Z");
        let wake = requeue_after(&v, Cnpg::Ready(0), window(now), resync, now);
        assert_eq!(wake, Duration::from_secs(60));
        // Wednesday: nothing before the resync.
        let now = at("2026-11-25T09:00:00Z");
        assert_eq!(
            requeue_after(&v, Cnpg::Ready(0), window(now), resync, now),
            resync
        );
        // A trial ending in 30 s.
        v.trial_ends_at = Some(now + chrono::Duration::seconds(30));
        let wake = requeue_after(&v, Cnpg::Ready(0), None, resync, now);
        assert_eq!(wake, Duration::from_secs(30));
    }

    #[test]
    fn a_cloudnativepg_cluster_coming_up_or_missing_is_read_again_soon() {
        let mut v = ValidatedTenant::test().with_postgres(1);
        assert_eq!(cnpg_recheck(&v, Cnpg::Ready(0)), None, "not used");
        v.database = Database::CloudNativePg {
            instances: 2,
            size: "1Gi".into(),
        };
        let secs = |c| cnpg_recheck(&v, c).map(|d| d.num_seconds());
        assert_eq!(secs(Cnpg::Ready(1)), Some(10));
        assert_eq!(secs(Cnpg::Missing), Some(60));
        assert_eq!(secs(Cnpg::Ready(2)), None);
    }
}
