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

use crate::build::{Child, Children, Slot};
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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The children bundle as the controller's stores: one per watched child kind, keeping what the
/// kind's `Child::Live` says (the whole object, or its metadata).
pub(crate) enum Stores {}

impl Slot for Stores {
    type One<K: Child> = Store<K::Live>;
    type Maybe<K: Child> = Store<K::Live>;
    type Unwatched<K> = ();
}

/// The controller's stores.
pub struct Caches {
    /// One store per watched child kind. The PersistentVolumeClaim store (`backup_pvc`) holds
    /// every claim the operator labels, the SQLite data claims too.
    pub(crate) children: Children<Stores>,
    /// Backup Jobs (made by the backup CronJobs, labelled by their template).
    pub(crate) jobs: Store<Job>,
    /// Backup Pods (their termination messages are the backups' results).
    pub(crate) pods: Store<Pod>,
    /// Metadata of every Secret the operator can see but its own key Secrets (to know whether a
    /// referenced Secret exists and changed without reading it).
    pub(crate) secret_meta: Store<PartialObjectMeta<Secret>>,
    /// Set once every store has listed once.
    pub(crate) ready: Arc<AtomicBool>,
}

/// A store's initial list: `true` once it has listed, `false` if its writer is gone.
pub(crate) type Listed = Pin<Box<dyn Future<Output = bool> + Send>>;

/// The initial list of `store` (each reflector registers its own as it is made).
pub(crate) fn listed<K>(store: &Store<K>) -> Listed
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let store = store.clone();
    Box::pin(async move { store.wait_until_ready().await.is_ok() })
}

/// Waits for every store's initial list, then marks the caches ready. A store that never lists
/// means the writer is gone (the controller stopped): reads stay on GETs.
pub(crate) async fn mark_ready(ready: Arc<AtomicBool>, listed: Vec<Listed>) {
    let all = futures::future::join_all(listed).await;
    if all.iter().all(|ok| *ok) {
        ready.store(true, Ordering::SeqCst);
    }
}

impl Caches {
    /// Whether every store has completed its initial list.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// What a store keeps of an object beyond what watching it brings: managed fields never, and pod
/// templates of workloads and CronJobs neither, since no read looks at them (a workload's restart
/// facts are in an annotation; see `gating`). They were most of the operator's memory: at 500
/// tenants the StatefulSet and CronJob templates alone were ~14 MiB of the stores' ~29 MiB.
pub(crate) trait Slim: kube::Resource + ResourceExt {
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

/// A child kind with a store in `Caches` (every watched one: the compiler asks for an entry here
/// when an apply or a deletion of a new kind needs it).
pub(crate) trait Cached:
    Child + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    /// Its store.
    fn store(c: &Children<Stores>) -> &Store<Self::Live>;
}

macro_rules! cached {
    ($($k:ty => $f:ident),* $(,)?) => {
        $(impl Cached for $k {
            fn store(c: &Children<Stores>) -> &Store<Self::Live> {
                &c.$f
            }
        })*
    };
}
cached!(
    ServiceAccount => service_account,
    Secret => keys,
    ConfigMap => config_map,
    Service => service,
    NetworkPolicy => network_policy,
    Ingress => ingress,
    PersistentVolumeClaim => backup_pvc,
    CronJob => backup_job,
    StatefulSet => statefulset,
    Deployment => deployment,
    PodDisruptionBudget => pdb,
);

/// The stored object `ns/name`, or `None` while the stores are not ready (or there are none).
fn stored<K: Cached>(
    caches: Option<&Caches>,
    ns: &str,
    name: &str,
) -> Option<Option<Arc<K::Live>>> {
    let c = caches.filter(|c| c.is_ready())?;
    Some(K::store(&c.children).get(&ObjectRef::new(name).within(ns)))
}

/// The live object `ns/name`: from the cache when it is ready, else by GET.
pub(crate) async fn live<K: Cached + Child<Live = K>>(
    caches: Option<&Caches>,
    api: &Api<K>,
    ns: &str,
    name: &str,
) -> Result<Option<K>, kube::Error> {
    match stored::<K>(caches, ns, name) {
        Some(o) => Ok(o.map(|o| (*o).clone())),
        None => api.get_opt(name).await,
    }
}

/// The live metadata of `ns/name`: from the cache when it is ready, else by a metadata GET.
pub(crate) async fn live_meta<K: Cached>(
    caches: Option<&Caches>,
    api: &Api<K>,
    ns: &str,
    name: &str,
) -> Result<Option<ObjectMeta>, kube::Error> {
    match stored::<K>(caches, ns, name) {
        Some(o) => Ok(o.map(|o| o.meta().clone())),
        None => Ok(api.get_metadata_opt(name).await?.map(|o| o.metadata)),
    }
}
