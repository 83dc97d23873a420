//! The controller: watches of tenants and of every child kind (whose stores become the
//! reconciler's `Caches`), what of their events triggers a reconcile, and the kube-rs `Controller`
//! that calls `reconcile` and `error_policy`.

use super::apply::{self, Memo};
use super::cache::{self, Cached, Caches, Listed, Stores};
use super::{Ctx, dereference, error_policy, reconcile, scope};
use crate::build::Children;
use crate::labels;
use contact_crds::v1alpha1::ContactTenant;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{
    WatchStreamExt, reflector,
    watcher::{self},
};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

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
fn not_echo<K>(memo: &Memo) -> impl FnMut(&K) -> futures::future::Ready<bool> + use<K>
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

type Events<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The controller being wired: each child kind's reflector registers its stream here (so its
/// events trigger reconciles of the tenant they belong to) and its readiness, and hands back
/// its store.
struct Wiring {
    controller: Option<Controller<ContactTenant>>,
    client: Client,
    /// The namespaces watched (empty: all).
    namespaces: Vec<String>,
    memo: Memo,
    listed: Vec<Listed>,
}

impl Wiring {
    /// A child kind the tenant owns: its events map to the tenant by owner reference.
    fn owned<K: Cached>(&mut self) -> Store<K::Live>
    where
        K::Live: cache::Slim + Resource<Scope = NamespaceResourceScope>,
    {
        let (store, stream) = self.reflect::<K>();
        self.controller = self.controller.take().map(|c| c.owns_stream(stream));
        store
    }

    /// A data-bearing child kind (no owner reference): its events map to the tenant by label.
    fn data<K: Cached>(&mut self) -> Store<K::Live>
    where
        K::Live: cache::Slim + Resource<Scope = NamespaceResourceScope>,
    {
        let (store, stream) = self.reflect::<K>();
        self.controller = self
            .controller
            .take()
            .map(|c| c.watches_stream(stream, by_tenant_label));
        store
    }

    /// One reflector of a child kind: its store serves the reconciler's reads (see `cache`),
    /// its stream triggers reconciles. Only what this operator made (by label) is watched, and
    /// only what `Child::Live` says is kept: Api<PartialObjectMeta<K>> sends metadata-only
    /// requests, so no body is encoded, sent, decoded or kept.
    fn reflect<K: Cached>(&mut self) -> (Store<K::Live>, Events<K::Live>)
    where
        K::Live: cache::Slim + Resource<Scope = NamespaceResourceScope>,
    {
        let owned = watcher::Config::default().labels(&format!(
            "{}={}",
            labels::MANAGED_BY,
            labels::FIELD_MANAGER
        ));
        let (reader, writer) = reflector::store::<K::Live>();
        let stream = scope::watch(&self.client, &self.namespaces, owned, reader.clone())
            // managedFields are most of an object's size and never read here (nor are pod
            // templates: see `cache::Slim`).
            .modify(cache::Slim::slim)
            .reflect(writer)
            .touched_objects()
            .try_filter(not_echo(&self.memo))
            .boxed();
        self.listed.push(cache::listed(&reader));
        (reader, stream)
    }
}

/// A reflector of the backup component's objects of kind `K` (Jobs, Pods): the runtime's own
/// pods never matter here.
fn reflect_backups<K>(client: &Client, namespaces: &[String]) -> (Store<K>, Events<K>)
where
    K: cache::Slim + Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    K: Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let backup_only = watcher::Config::default().labels(&format!(
        "{}={},{}=backup",
        labels::MANAGED_BY,
        labels::FIELD_MANAGER,
        labels::COMPONENT
    ));
    let (reader, writer) = reflector::store::<K>();
    let stream = scope::watch(client, namespaces, backup_only, reader.clone())
        .modify(cache::Slim::slim)
        .reflect(writer)
        .touched_objects()
        .boxed();
    (reader, stream)
}

/// Channel and database Secrets are the user's: watch their metadata only (the name maps an
/// event to tenants, the resourceVersion says whether a Secret changed since we read its keys),
/// so Secret data never has to sit in this process's memory. Our own key Secrets are left out:
/// the children's key store has them, and each would otherwise cost a second watch event per
/// write.
fn reflect_user_secrets(
    client: &Client,
    namespaces: &[String],
) -> (
    Store<PartialObjectMeta<Secret>>,
    Events<PartialObjectMeta<Secret>>,
) {
    let not_ours = watcher::Config::default().labels(&format!(
        "{}!={}",
        labels::MANAGED_BY,
        labels::FIELD_MANAGER
    ));
    let (reader, writer) = reflector::store::<PartialObjectMeta<Secret>>();
    let stream = scope::watch(client, namespaces, not_ours, reader.clone())
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects()
        .boxed();
    (reader, stream)
}

/// Data-bearing objects carry no owner reference: map them back by their tenant label.
fn by_tenant_label<K: Resource>(obj: K) -> Option<ObjectRef<ContactTenant>> {
    let tenant = obj.labels().get(labels::TENANT)?;
    Some(ObjectRef::new(tenant).within(&obj.namespace()?))
}

/// Runs the controller until `shutdown` resolves.
pub async fn run_controller(
    ctx: Arc<Ctx>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (tenant_store, tenant_writer) = reflector::store::<ContactTenant>();
    let namespaces = ctx.config.watch_namespaces.clone();
    let tenant_stream = scope::watch(
        &client,
        &namespaces,
        watcher::Config::default(),
        tenant_store.clone(),
    )
    .modify(|t| t.managed_fields_mut().clear())
    .reflect(tenant_writer)
    .applied_objects()
    // Only what the reconcile acts on triggers it: our own status patch (and finalizer) would
    // otherwise bring every tenant back for a pass with nothing to do. The store above still
    // sees every change.
    .predicate_filter(tenant_trigger, PredicateConfig::default());
    let controller = Controller::for_stream(tenant_stream, tenant_store);
    let tenants = controller.store();

    let mut w = Wiring {
        controller: Some(controller),
        client: client.clone(),
        namespaces: namespaces.clone(),
        memo: ctx.memo.clone(),
        listed: Vec::new(),
    };
    let children = Children::<Stores> {
        service_account: w.owned::<ServiceAccount>(),
        keys: w.data::<Secret>(),
        config_map: w.owned::<ConfigMap>(),
        service: w.owned::<Service>(),
        network_policy: w.owned::<NetworkPolicy>(),
        ingress: w.owned::<Ingress>(),
        // Every claim the operator labels: the backup claim and the SQLite data claims.
        backup_pvc: w.data::<PersistentVolumeClaim>(),
        backup_job: w.owned::<CronJob>(),
        statefulset: w.owned::<StatefulSet>(),
        deployment: w.owned::<Deployment>(),
        pdb: w.owned::<PodDisruptionBudget>(),
        cnpg: (),
    };
    let Wiring {
        controller,
        mut listed,
        ..
    } = w;
    let Some(controller) = controller else {
        return;
    };
    let (jobs, jobs_s) = reflect_backups::<Job>(&client, &namespaces);
    let (pods, pods_s) = reflect_backups::<Pod>(&client, &namespaces);
    let (secret_meta, secret_meta_s) = reflect_user_secrets(&client, &namespaces);
    listed.extend([
        cache::listed(&jobs),
        cache::listed(&pods),
        cache::listed(&secret_meta),
    ]);
    let caches = Caches {
        children,
        jobs,
        pods,
        secret_meta,
        ready: Arc::default(),
    };
    let ready = caches.ready.clone();
    if ctx.caches.set(caches).is_ok() {
        tokio::spawn(cache::mark_ready(ready, listed));
    }
    controller
        // Backup Jobs are owned by the CronJob, their Pods by the Job: map them by label too.
        .watches_stream(jobs_s, by_tenant_label)
        .watches_stream(pods_s, by_tenant_label)
        // Channel and database Secrets are the user's, not owned: map each Secret event to the
        // tenants that refer to it (the generated key Secret is mapped by label above).
        .watches_stream(secret_meta_s, move |secret| {
            let ns = secret.namespace().unwrap_or_default();
            dereference::tenants_for_secret(&tenants.state(), &ns, &secret.name_any())
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
