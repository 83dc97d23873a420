//! Reflector caches of the objects the operator manages, so an idle reconcile reads memory
//! instead of sending a GET per child to the API server.
//!
//! The controller's own watches on the children (which trigger reconciles) fill these stores, so
//! caching costs no extra watch. Objects are selected by `app.kubernetes.io/managed-by`, so the
//! stores hold only what this operator made. A cache can lag behind our own last write by one
//! watch event; `apply::Memo` knows what we wrote, so a stale object is not applied again.
//!
//! Kinds whose live objects are read only for their metadata (the apply verdict needs no more:
//! Services, NetworkPolicies, PDBs, ConfigMaps, ServiceAccounts) are watched as metadata only, so
//! neither the API server nor this process encodes, decodes or keeps their bodies.
//!
//! When no controller runs (tests calling `reconcile` directly), or before the stores have listed
//! once, lookups fall back to a GET.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One store per managed kind.
#[derive(Clone)]
pub struct Caches {
    /// StatefulSets.
    pub statefulsets: Store<StatefulSet>,
    /// Deployments.
    pub deployments: Store<Deployment>,
    /// Services (metadata).
    pub services: Store<PartialObjectMeta<Service>>,
    /// Ingresses.
    pub ingresses: Store<Ingress>,
    /// NetworkPolicies (metadata).
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    /// PodDisruptionBudgets (metadata).
    pub pdbs: Store<PartialObjectMeta<PodDisruptionBudget>>,
    /// CronJobs.
    pub cronjobs: Store<CronJob>,
    /// ConfigMaps (metadata).
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    /// ServiceAccounts (metadata).
    pub service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    /// PVCs (backup and SQLite data).
    pub pvcs: Store<PersistentVolumeClaim>,
    /// Secrets the operator generated.
    pub secrets: Store<Secret>,
    /// Backup Jobs (made by the backup CronJobs, labelled by their template).
    pub jobs: Store<Job>,
    /// Backup Pods (their termination messages are the backups' results).
    pub pods: Store<Pod>,
    /// Metadata of every Secret the operator can see but its own key Secrets (to know whether a
    /// referenced Secret exists and changed without reading it).
    pub secret_meta: Store<PartialObjectMeta<Secret>>,
    /// Set once every store has listed once.
    pub ready: Arc<AtomicBool>,
}

impl Caches {
    /// Whether every store has completed its initial list.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Waits for every store's initial list, then marks the caches ready.
    pub async fn wait_ready(&self) {
        // An error means the writer is gone (controller stopped): stay on GETs.
        let all = futures::future::join_all([
            Box::pin(self.statefulsets.wait_until_ready())
                as std::pin::Pin<Box<dyn Future<Output = _> + Send>>,
            Box::pin(self.deployments.wait_until_ready()),
            Box::pin(self.services.wait_until_ready()),
            Box::pin(self.ingresses.wait_until_ready()),
            Box::pin(self.network_policies.wait_until_ready()),
            Box::pin(self.pdbs.wait_until_ready()),
            Box::pin(self.cronjobs.wait_until_ready()),
            Box::pin(self.config_maps.wait_until_ready()),
            Box::pin(self.service_accounts.wait_until_ready()),
            Box::pin(self.pvcs.wait_until_ready()),
            Box::pin(self.secrets.wait_until_ready()),
            Box::pin(self.secret_meta.wait_until_ready()),
            Box::pin(self.jobs.wait_until_ready()),
            Box::pin(self.pods.wait_until_ready()),
        ])
        .await;
        if all.iter().all(Result::is_ok) {
            self.ready.store(true, Ordering::SeqCst);
        }
    }
}

/// What a store keeps of an object beyond what watching it brings: managed fields never, and pod
/// templates of workloads and CronJobs neither, since no read looks at them (a workload's restart
/// facts are in an annotation; see `gating`). They were most of the operator's memory: at 500
/// tenants the StatefulSet and CronJob templates alone were ~14 MiB of the stores' ~29 MiB.
pub trait Slim: kube::Resource + ResourceExt {
    /// Drops what the stores never read (called on every watched object before it is stored).
    fn slim(&mut self) {
        self.managed_fields_mut().clear();
    }
}

impl Slim for StatefulSet {
    fn slim(&mut self) {
        self.managed_fields_mut().clear();
        self.spec.template.spec = None;
    }
}

impl Slim for Deployment {
    fn slim(&mut self) {
        self.managed_fields_mut().clear();
        self.spec.template.spec = None;
    }
}

impl Slim for CronJob {
    fn slim(&mut self) {
        self.managed_fields_mut().clear();
        if let Some(job) = self.spec.job_template.spec.as_mut() {
            job.template.spec = None;
        }
    }
}

impl Slim for Ingress {}
impl Slim for PersistentVolumeClaim {}
impl Slim for Secret {}
impl Slim for Job {}
impl Slim for Pod {}
impl<K: kube::Resource> Slim for PartialObjectMeta<K> {}

/// A kind with a store in `Caches`.
pub trait Cached:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Its store.
    fn store(c: &Caches) -> &Store<Self>;
}

/// A kind whose live metadata can be looked up, from a full store or a metadata-only one.
pub trait MetaCached:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The cached metadata of `ns/name`, if the store has it.
    fn cached_meta(c: &Caches, ns: &str, name: &str) -> Option<ObjectMeta>;
}

macro_rules! cached {
    ($($k:ty => $f:ident),* $(,)?) => {
        $(impl Cached for $k {
            fn store(c: &Caches) -> &Store<Self> {
                &c.$f
            }
        })*
    };
}
cached!(
    StatefulSet => statefulsets,
    Deployment => deployments,
    Ingress => ingresses,
    CronJob => cronjobs,
    PersistentVolumeClaim => pvcs,
    Secret => secrets,
);

macro_rules! meta_cached {
    ($($k:ty => $f:ident),* $(,)?) => {
        $(impl MetaCached for $k {
            fn cached_meta(c: &Caches, ns: &str, name: &str) -> Option<ObjectMeta> {
                c.$f.get(&ObjectRef::new(name).within(ns)).map(|o| o.meta().clone())
            }
        })*
    };
}
meta_cached!(
    StatefulSet => statefulsets,
    Deployment => deployments,
    Ingress => ingresses,
    CronJob => cronjobs,
    PersistentVolumeClaim => pvcs,
    Secret => secrets,
    Service => services,
    NetworkPolicy => network_policies,
    PodDisruptionBudget => pdbs,
    ConfigMap => config_maps,
    ServiceAccount => service_accounts,
);

/// The live object `ns/name`: from the cache when it is ready, else by GET.
pub async fn live<K: Cached>(
    caches: Option<&Caches>,
    api: &Api<K>,
    ns: &str,
    name: &str,
) -> Result<Option<K>, kube::Error> {
    if let Some(c) = caches.filter(|c| c.is_ready()) {
        return Ok(K::store(c)
            .get(&ObjectRef::new(name).within(ns))
            .map(|o| (*o).clone()));
    }
    api.get_opt(name).await
}

/// The live metadata of `ns/name`: from the cache when it is ready, else by a metadata GET.
pub async fn live_meta<K: MetaCached>(
    caches: Option<&Caches>,
    api: &Api<K>,
    ns: &str,
    name: &str,
) -> Result<Option<ObjectMeta>, kube::Error> {
    if let Some(c) = caches.filter(|c| c.is_ready()) {
        return Ok(K::cached_meta(c, ns, name));
    }
    Ok(api.get_metadata_opt(name).await?.map(|o| o.metadata))
}
