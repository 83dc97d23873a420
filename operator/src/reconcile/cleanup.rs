//! The finalizer and what it guards: a deleted tenant's runtime goes at once, its data is detached
//! and kept for the grace period (`lifecycle::grace`), and only then the finalizer comes off.

use super::apply::{self, At, memo_key};
use super::cache::Cached;
use super::status::note;
use super::{Ctx, Error};
use crate::build::{Children, Name, Names};
use crate::labels;
use crate::lifecycle::grace;
use contact_crds::v1alpha1::ContactTenant;
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

fn finalizer_index(t: &ContactTenant) -> Option<usize> {
    t.finalizers().iter().position(|f| f == labels::FINALIZER)
}

fn tenants(ctx: &Ctx, t: &ContactTenant) -> Api<ContactTenant> {
    Api::namespaced(ctx.client.clone(), &t.namespace().unwrap_or_default())
}

/// Adds our finalizer unless it is there. The JSON patch tests the list it extends, so a
/// concurrent change of the finalizers fails the patch (and the reconcile retries) instead of
/// losing an entry.
pub(crate) async fn ensure_finalizer(t: &ContactTenant, ctx: &Ctx) -> Result<(), Error> {
    if finalizer_index(t).is_some() {
        return Ok(());
    }
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
    finalizer_patch(&tenants(ctx, t), t, patch).await
}

/// A deleted tenant: clean up, then remove our finalizer (at index `i`). Without our finalizer
/// there is nothing left to do.
pub(crate) async fn on_delete(t: &ContactTenant, ctx: &Ctx) -> Result<Action, Error> {
    let Some(i) = finalizer_index(t) else {
        return Ok(Action::await_change());
    };
    let action = cleanup_tenant(t, ctx).await?;
    let path = format!("/metadata/finalizers/{i}");
    let patch = serde_json::json!([
        { "op": "test", "path": path, "value": labels::FINALIZER },
        { "op": "remove", "path": path },
    ]);
    match finalizer_patch(&tenants(ctx, t), t, patch).await {
        // Already gone: the tenant was deleted meanwhile.
        Err(Error::Finalizer(kube::Error::Api(s))) if s.code == 404 => Ok(action),
        other => other.map(|()| action),
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

/// Deletes one owned child of the tenant, if it exists and is ours.
async fn delete<K>(at: At<'_>, client: &Client, ns: &str, child: Name<K>) -> Result<bool, Error>
where
    K: Cached + Serialize + Resource<Scope = NamespaceResourceScope>,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    Ok(apply::delete_if_ours(at, &api, ns, &child.name).await?)
}

/// Removes the runtime at once and detaches the data.
async fn cleanup_tenant(tenant: &ContactTenant, ctx: &Ctx) -> Result<Action, Error> {
    let now = ctx.clock.now();
    let ns = tenant.namespace().unwrap_or_default();
    let name = tenant.name_any();
    let (c, at) = (&ctx.client, At::uncached(&ctx.memo));
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
    } = Children::<Names>::of(&name);
    // The garbage collector would remove owned children too, but only after the tenant object is
    // gone; removing the runtime here stops it at once, before data is detached. The workload
    // goes first.
    delete(at, c, &ns, statefulset).await?;
    delete(at, c, &ns, deployment).await?;
    delete(at, c, &ns, backup_job).await?;
    delete(at, c, &ns, ingress).await?;
    delete(at, c, &ns, service).await?;
    delete(at, c, &ns, pdb).await?;
    delete(at, c, &ns, network_policy).await?;
    delete(at, c, &ns, config_map).await?;
    delete(at, c, &ns, service_account).await?;
    // The data objects are found by their labels (SQLite claims too, which no field names).
    let grace_days = tenant.spec.deletion.data_grace_days;
    let (detached, purge) = grace::detach(c, &ctx.ledger, tenant, grace_days, now).await?;
    let what: Vec<_> = detached
        .iter()
        .map(|d| format!("{}/{}", d.kind, d.name))
        .collect();
    let message = format!(
        "runtime removed; {} data object(s) kept until {} ({})",
        detached.len(),
        purge.to_rfc3339(),
        what.join(", ")
    );
    note(ctx, tenant, EventType::Normal, "DataDetached", message).await;
    // The runtime's children left the memo as they were deleted above; the data objects stay
    // in the cluster (detached) but not in the memo: a process that provisions and deletes
    // tenants for months must not keep a record of every one it ever had.
    for (kind, name) in [
        (keys.kind, keys.name),
        (backup_pvc.kind, backup_pvc.name),
        (cnpg.kind, cnpg.name),
    ] {
        ctx.memo.forget(&memo_key(&kind, &ns, &name));
    }
    ctx.metrics.set_conditions(&format!("{ns}/{name}"), None);
    Ok(Action::await_change())
}

/// Purges the data of deleted tenants whose grace has passed (`grace::sweep`, in the namespaces
/// this operator watches), and says so: one Warning Event per purged object on its namespace,
/// and the `data_purged` metric. Returns what was purged.
pub async fn sweep(
    ctx: &Ctx,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<grace::DataObject>, grace::Error> {
    let swept = grace::sweep(&ctx.client, &ctx.ledger, &ctx.config.watch_namespaces, now).await?;
    for d in &swept.purged {
        ctx.metrics.purged(&d.kind);
        let note = format!(
            "{} {} of a deleted tenant purged after its grace period",
            d.kind, d.name
        );
        namespace_event(ctx, d, EventType::Warning, "DataPurged", note).await;
    }
    for (d, why) in &swept.failed {
        let note = format!("{} {} not purged: {why}", d.kind, d.name);
        namespace_event(ctx, d, EventType::Warning, "PurgeFailed", note).await;
    }
    Ok(swept.purged)
}

/// One Event about the namespace of `d` (the tenant it belonged to is gone) naming `d` as the
/// related object, so Events about different objects are not folded into one series; best
/// effort.
async fn namespace_event(
    ctx: &Ctx,
    d: &grace::DataObject,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ns = &d.namespace;
    let object = k8s_openapi::api::core::v1::ObjectReference {
        kind: Some(d.kind.clone()),
        name: Some(d.name.clone()),
        namespace: Some(ns.clone()),
        ..Default::default()
    };
    let ev = kube::runtime::events::Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Purge".into(),
        secondary: Some(object),
    };
    let namespace = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Namespace".into()),
        name: Some(ns.clone()),
        // The Event lives in the namespace itself, where its tenants' people look (and where a
        // namespaced operator may write Events).
        namespace: Some(ns.clone()),
        ..Default::default()
    };
    if let Err(e) = ctx.recorder.publish(&ev, &namespace).await {
        tracing::warn!(error = %e, "failed to publish event");
    }
}
