//! `Children`: every object a tenant has, one field per kind, built in one call (`all`).
//!
//! The bundle is the one list of a tenant's child kinds. It is generic over what it holds per
//! child (`Slot`): the built objects (`Built`, what `all` returns), their names (`Names`, what
//! deletion walks) and, in `reconcile::cache`, the controller's stores. Every place that handles
//! children destructures the bundle without `..`, so a new field is a compile error at each of
//! them until it is handled: adding a child kind is one edit that the compiler walks you through
//! (the steps are in the operator's README).

use super::{
    Workload, build_backup_cronjob, build_backup_pvc, build_cnpg_cluster, build_config_map,
    build_ingress, build_network_policy, build_pdb, build_secret, build_service,
    build_service_account, build_workload, cnpg_api_resource, names,
};
use crate::maintenance::Occurrence;
use crate::tenant::ValidatedTenant;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use rand::RngCore;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::marker::PhantomData;

/// A kind of object a tenant has, and what of a live object of it the operator reads: the whole
/// object, or only its metadata where the apply verdict needs nothing else (the controller then
/// watches and caches metadata only: see `reconcile::cache`).
pub trait Child: kube::Resource<DynamicType = ()> {
    /// What the controller's store keeps of a live object.
    type Live: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static;
}

macro_rules! child {
    ($($k:ty => $live:ty),* $(,)?) => {
        $(impl Child for $k {
            type Live = $live;
        })*
    };
}
child!(
    ServiceAccount => PartialObjectMeta<ServiceAccount>,
    Secret => Secret,
    ConfigMap => PartialObjectMeta<ConfigMap>,
    Service => PartialObjectMeta<Service>,
    NetworkPolicy => PartialObjectMeta<NetworkPolicy>,
    Ingress => Ingress,
    PersistentVolumeClaim => PersistentVolumeClaim,
    CronJob => CronJob,
    StatefulSet => StatefulSet,
    Deployment => Deployment,
    PodDisruptionBudget => PartialObjectMeta<PodDisruptionBudget>,
);

/// What a `Children` bundle holds per child.
pub trait Slot {
    /// For a child every tenant has.
    type One<K: Child>;
    /// For a child only some tenants have.
    type Maybe<K: Child>;
    /// For a child only some tenants have, of a kind the controller does not watch.
    type Unwatched<K>;
}

/// Every child of a tenant. Data-bearing children (`keys`, `backup_pvc`, `cnpg`) carry no owner
/// reference and are never deleted with the runtime (see `build`'s module docs).
pub struct Children<S: Slot = Built> {
    /// The runtime's ServiceAccount.
    pub service_account: S::One<ServiceAccount>,
    /// The generated keys (data).
    pub keys: S::One<Secret>,
    /// The runtime's configuration.
    pub config_map: S::One<ConfigMap>,
    /// The runtime's Service.
    pub service: S::One<Service>,
    /// Who may reach the runtime.
    pub network_policy: S::One<NetworkPolicy>,
    /// The public route.
    pub ingress: S::One<Ingress>,
    /// The backups' volume (data), when backups are on.
    pub backup_pvc: S::Maybe<PersistentVolumeClaim>,
    /// The backup schedule, when backups are on.
    pub backup_job: S::Maybe<CronJob>,
    /// The runtime on SQLite.
    pub statefulset: S::Maybe<StatefulSet>,
    /// The runtime on PostgreSQL / CloudNativePG.
    pub deployment: S::Maybe<Deployment>,
    /// The disruption budget, with more than one replica.
    pub pdb: S::Maybe<PodDisruptionBudget>,
    /// The CloudNativePG `Cluster` (data). Not watched: its CRD comes and goes with the cluster's
    /// add-ons, so the reconcile reads it and requeues instead.
    pub cnpg: S::Unwatched<DynamicObject>,
}

/// The built objects: what every tenant has, and what this one has of the rest.
pub enum Built {}

impl Slot for Built {
    type One<K: Child> = K;
    type Maybe<K: Child> = Option<K>;
    type Unwatched<K> = Option<K>;
}

/// The name of every child a tenant may have, whether it has it or not.
pub enum Names {}

impl Slot for Names {
    type One<K: Child> = Name<K>;
    type Maybe<K: Child> = Name<K>;
    type Unwatched<K> = Name<K>;
}

/// The kind and name of one child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name<K> {
    /// Its kind (`ConfigMap`, `Cluster`, ...).
    pub kind: Cow<'static, str>,
    /// Its name.
    pub name: String,
    kind_of: PhantomData<fn() -> K>,
}

impl<K> Name<K> {
    fn new(kind: impl Into<Cow<'static, str>>, name: String) -> Self {
        Self {
            kind: kind.into(),
            name,
            kind_of: PhantomData,
        }
    }
}

impl<K: Child> Name<K> {
    fn of(name: String) -> Self {
        Self::new(K::kind(&()), name)
    }
}

impl Children<Names> {
    /// The children of tenant `tenant`, by name.
    pub fn of(tenant: &str) -> Self {
        Self {
            service_account: Name::of(names::runtime(tenant)),
            keys: Name::of(names::keys(tenant)),
            config_map: Name::of(names::config(tenant)),
            service: Name::of(names::runtime(tenant)),
            network_policy: Name::of(names::network_policy(tenant)),
            ingress: Name::of(names::runtime(tenant)),
            backup_pvc: Name::of(names::backup_pvc(tenant)),
            backup_job: Name::of(names::backup_job(tenant)),
            statefulset: Name::of(names::runtime(tenant)),
            deployment: Name::of(names::runtime(tenant)),
            pdb: Name::of(names::runtime(tenant)),
            cnpg: Name::new(cnpg_api_resource().kind, names::cnpg(tenant)),
        }
    }
}

/// What the builders need besides the validated tenant.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Values of the key Secret as it exists (kept; only missing keys are generated).
    pub existing_keys: &'a BTreeMap<String, ByteString>,
    /// The maintenance window open now or next, for the runtime's configuration.
    pub next_window: Option<Occurrence>,
    /// Replicas to run (zero while suspended or after the trial).
    pub replicas: i32,
    /// Whether the tenant is scaled down (suspended or trial over): backups pause too.
    pub scaled_down: bool,
    /// Namespace of the ingress controller (the only outside namespace reaching the runtime).
    pub ingress_namespace: &'a str,
    /// CloudNativePG operand image, if not CloudNativePG's default.
    pub cnpg_image: Option<&'a str>,
}

/// Builds every child of `t` (pure but for `rng`, which only fills keys that do not exist yet).
pub fn all(t: &ValidatedTenant, inputs: Inputs<'_>, rng: &mut impl RngCore) -> Children {
    let Inputs {
        existing_keys,
        next_window,
        replicas,
        scaled_down,
        ingress_namespace,
        cnpg_image,
    } = inputs;
    let (statefulset, deployment) = match build_workload(t, replicas) {
        Workload::StatefulSet(s) => (Some(s), None),
        Workload::Deployment(d) => (None, Some(d)),
    };
    Children {
        service_account: build_service_account(t),
        keys: build_secret(t, existing_keys, rng),
        config_map: build_config_map(t, next_window),
        service: build_service(t),
        network_policy: build_network_policy(t, ingress_namespace),
        ingress: build_ingress(t),
        backup_pvc: build_backup_pvc(t),
        backup_job: build_backup_cronjob(t, scaled_down),
        statefulset,
        deployment,
        pdb: build_pdb(t, replicas),
        cnpg: build_cnpg_cluster(t, cnpg_image),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn inputs(keys: &BTreeMap<String, ByteString>, replicas: i32) -> Inputs<'_> {
        Inputs {
            existing_keys: keys,
            next_window: None,
            replicas,
            scaled_down: false,
            ingress_namespace: "ingress-nginx",
            cnpg_image: None,
        }
    }

    /// The bundle's names are the names the builders give: deletion finds what apply made.
    #[test]
    fn names_match_the_built_objects() {
        let keys = BTreeMap::new();
        let t = ValidatedTenant::test();
        let built = all(&t, inputs(&keys, 1), &mut StdRng::seed_from_u64(1));
        let named = Children::<Names>::of(&t.name);
        let b = &built;
        assert_eq!(b.service_account.name_any(), named.service_account.name);
        assert_eq!(b.keys.name_any(), named.keys.name);
        assert_eq!(b.config_map.name_any(), named.config_map.name);
        assert_eq!(b.service.name_any(), named.service.name);
        assert_eq!(b.network_policy.name_any(), named.network_policy.name);
        assert_eq!(b.ingress.name_any(), named.ingress.name);
        let pvc = b.backup_pvc.as_ref().expect("backups are on");
        assert_eq!(pvc.name_any(), named.backup_pvc.name);
        let job = b.backup_job.as_ref().expect("backups are on");
        assert_eq!(job.name_any(), named.backup_job.name);
        let sts = b.statefulset.as_ref().expect("SQLite runs a StatefulSet");
        assert_eq!(sts.name_any(), named.statefulset.name);
        assert!(b.deployment.is_none() && b.pdb.is_none() && b.cnpg.is_none());
        assert_eq!(named.statefulset.kind, "StatefulSet");
        assert_eq!(named.cnpg.kind, "Cluster");

        let t = ValidatedTenant::test().with_postgres(2);
        let built = all(
            &t,
            inputs(&BTreeMap::new(), 2),
            &mut StdRng::seed_from_u64(1),
        );
        assert!(built.statefulset.is_none());
        let deployment = built.deployment.expect("PostgreSQL runs a Deployment");
        assert_eq!(deployment.name_any(), named.deployment.name);
        assert_eq!(built.pdb.expect("two replicas").name_any(), named.pdb.name);
    }
}
