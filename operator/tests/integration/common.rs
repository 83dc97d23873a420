//! Shared fixtures: a control plane with the CRD, a namespace, a tenant, a context with a
//! manual clock, and a helper that reconciles the way the controller would.

use chrono::{DateTime, TimeZone, Utc};
use contact_crds::v1alpha1::ContactTenant;
use contact_operator::clock::ManualClock;
use contact_operator::config::OperatorConfig;
use contact_operator::instrument::{RequestCounter, counting_client};
use contact_operator::metrics::Metrics;
use contact_operator::reconcile::{Ctx, reconcile};
use contact_tests::controlplane::ControlPlane;
use contact_tests::kube_helpers::install_crds;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Namespace every test uses.
pub const NS: &str = "tenant-acme";

/// A Wednesday, far from the default Saturday 22:00 UTC window.
pub fn wednesday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0)
        .single()
        .expect("valid")
}

/// The control plane, an admin client and a counted client for the operator.
pub struct Env {
    /// Keeps the processes alive.
    pub _cp: ControlPlane,
    /// Admin client for setting up and asserting.
    pub admin: Client,
    /// Context the operator runs with.
    pub ctx: Arc<Ctx>,
    /// The operator's clock.
    pub clock: ManualClock,
    /// Requests the operator sent.
    pub counter: RequestCounter,
}

/// Starts a control plane, installs the CRD, creates the namespace and the channel Secret.
pub async fn env() -> Env {
    env_with(OperatorConfig::default(), true).await
}

/// `env` with a given operator configuration; `with_secret` creates the channel Secret.
pub async fn env_with(config: OperatorConfig, with_secret: bool) -> Env {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let admin = cp.client();
    install_crds(&admin, &contact_crds::crds_yaml().expect("crd yaml"))
        .await
        .expect("CRD installs");
    create_namespace(&admin, NS).await;
    if with_secret {
        put_channel_secret(&admin).await;
    }
    let (client, counter) = counting_client(cp.config().clone()).expect("client");
    let clock = ManualClock::new(wednesday());
    let ctx = Arc::new(Ctx::new(
        client,
        config,
        Arc::new(clock.clone()),
        Arc::new(Metrics::default()),
        Some("test".into()),
    ));
    Env {
        _cp: cp,
        admin,
        ctx,
        clock,
        counter,
    }
}

/// Lease timings shorter than the defaults so tests are quick; the renew deadline still leaves
/// the leader several renewals of slack on a loaded machine.
pub fn test_lease_timing() -> contact_operator::leader::Timing {
    contact_operator::leader::Timing::new(
        std::time::Duration::from_secs(8),
        std::time::Duration::from_secs(6),
        std::time::Duration::from_millis(500),
    )
    .expect("valid timing")
}

/// Creates a namespace.
pub async fn create_namespace(client: &Client, name: &str) {
    contact_tests::kube_helpers::create_namespace(client, name)
        .await
        .expect("namespace");
}

/// The channel Secret `tenant_json` refers to, with every key it names.
pub async fn put_channel_secret(client: &Client) {
    put_secret(
        client,
        "acme-sinch",
        &[
            ("key-id", "id"),
            ("key-secret", "s3cr3t"),
            ("webhook-secret", "hook"),
        ],
    )
    .await;
}

/// Creates or replaces a Secret in `NS`.
pub async fn put_secret(client: &Client, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS)
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("secret applied");
}

/// The tenant `acme` as JSON, to tweak before creating.
pub fn tenant_json() -> serde_json::Value {
    json!({
        "apiVersion": "contact.dev/v1alpha1",
        "kind": "ContactTenant",
        "metadata": { "name": "acme", "namespace": NS },
        "spec": {
            "displayName": "Acme Support",
            "hostingLocation": "eu-ireland",
            "ingress": { "host": "acme.contact.example.com", "className": "nginx", "tls": { "secretName": "acme-tls" } },
            "channels": [{
                "name": "whatsapp-main",
                "type": "WHATSAPP",
                "conversationApi": {
                    "region": "eu", "projectId": "p1", "appId": "a1",
                    "credentialsSecretRef": { "name": "acme-sinch" },
                    "webhookSecretRef": { "name": "acme-sinch", "key": "webhook-secret" }
                }
            }],
            "maintenanceWindow": { "day": "Saturday", "start": "22:00", "duration": "4h", "timeZone": "UTC" },
            "database": { "sqlite": { "storage": "5Gi" } },
            "runtime": { "image": "ghcr.io/contact-dev/contact-runtime:1.0.0", "replicas": 1 },
            "deletion": { "dataGraceDays": 30 }
        }
    })
}

/// The tenants API in `NS`.
pub fn tenants(client: &Client) -> Api<ContactTenant> {
    Api::namespaced(client.clone(), NS)
}

/// Creates a tenant from JSON.
pub async fn create_tenant(client: &Client, tenant: serde_json::Value) -> ContactTenant {
    let t: ContactTenant = serde_json::from_value(tenant).expect("tenant json");
    tenants(client)
        .create(&PostParams::default(), &t)
        .await
        .expect("tenant created")
}

/// Merge-patches the tenant.
pub async fn patch_tenant(client: &Client, patch: serde_json::Value) {
    tenants(client)
        .patch("acme", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("tenant patched");
}

/// Reads the tenant and reconciles it once, as the controller would.
pub async fn reconcile_once(env: &Env) -> Action {
    let t = tenants(&env.admin)
        .get("acme")
        .await
        .expect("tenant exists");
    reconcile(Arc::new(t), env.ctx.clone())
        .await
        .expect("reconcile succeeds")
}

/// Reconciles until the finalizer is in place and one full pass has run (what the controller
/// does on creation: the finalizer patch triggers the second pass).
pub async fn settle(env: &Env) -> Action {
    reconcile_once(env).await;
    reconcile_once(env).await
}

/// `env()` with the tenant `acme` (`tenant_json`) created and settled; returns the tenant as
/// created.
pub async fn settled_env() -> (Env, ContactTenant) {
    let env = env().await;
    let t = create_tenant(&env.admin, tenant_json()).await;
    settle(&env).await;
    (env, t)
}

/// The condition `type_` of the live tenant as (status, reason, message).
pub async fn condition(client: &Client, type_: &str) -> Option<(String, String, String)> {
    let t = tenants(client).get("acme").await.ok()?;
    let v = serde_json::to_value(t.status?).ok()?;
    v["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// Asserts that the tenant's condition `type_` has `status` and `reason`; returns its message.
pub async fn assert_condition(client: &Client, type_: &str, status: &str, reason: &str) -> String {
    let (s, r, message) = condition(client, type_).await.expect(type_);
    assert_eq!(
        (s.as_str(), r.as_str()),
        (status, reason),
        "{type_}: {message}"
    );
    message
}

/// Object `name` of kind `K` in `NS`, if it exists.
pub async fn get_opt<K>(client: &Client, name: &str) -> Option<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .expect("get")
}

/// Object `name` of kind `K` in `NS`, which must exist.
pub async fn get<K>(client: &Client, name: &str) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    get_opt(client, name)
        .await
        .unwrap_or_else(|| panic!("{} {name} exists", K::kind(&())))
}

/// The live tenant status as JSON.
pub async fn status(client: &Client) -> serde_json::Value {
    let t = tenants(client).get("acme").await.expect("tenant");
    serde_json::to_value(t.status).expect("status json")
}

/// Reasons of the Events recorded about the tenant.
pub async fn event_reasons(client: &Client) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("acme"))
        .filter_map(|e| e.reason)
        .collect()
}

/// The operator's controller running in this process (`run_controller` on the env's context).
pub struct RunningController {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the controller on `env`'s context.
pub fn start_controller(env: &Env) -> RunningController {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(contact_operator::reconcile::run_controller(
        env.ctx.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    RunningController { stop, task }
}

impl RunningController {
    /// Stops it gracefully (waiting at most 10 s).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.task).await;
    }
}

/// A whole operator replica (`run::run`: leader election, HTTP endpoints, controller) running in
/// this process.
pub struct Replica {
    /// Whether it leads.
    pub health: Arc<contact_operator::http::Health>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// Stops it gracefully (taken when sent).
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Its task: `Ok` once stopped, `Err` when it lost its lease.
    pub task: tokio::task::JoinHandle<Result<(), contact_operator::run::Error>>,
}

/// Settings of a replica `identity` electing its leader on the Lease `contact-operator` in
/// `lease_namespace` (test timings, HTTP on a free port, no sweep within a test).
pub fn replica_settings(lease_namespace: &str, identity: &str) -> contact_operator::run::Settings {
    contact_operator::run::Settings {
        // The record of deletions lives beside the Lease, in the operator's own namespace.
        config: OperatorConfig {
            own_namespace: lease_namespace.into(),
            ..OperatorConfig::default()
        },
        lease: Some(contact_operator::run::LeaseSettings {
            namespace: lease_namespace.into(),
            name: "contact-operator".into(),
            identity: identity.into(),
            timing: test_lease_timing(),
        }),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        sweep_interval: std::time::Duration::from_secs(3600),
        instance: Some(identity.into()),
    }
}

/// Starts a replica with `client` and `settings`.
pub fn start_replica(client: Client, settings: contact_operator::run::Settings) -> Replica {
    let health = Arc::new(contact_operator::http::Health::default());
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(contact_operator::run::run(
        client,
        settings,
        metrics.clone(),
        health.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    Replica {
        health,
        metrics,
        stop: Some(stop),
        task,
    }
}

/// Whether an Event about the tenant has `reason`.
pub async fn has_event(client: &Client, reason: &str) -> bool {
    event_reasons(client).await.iter().any(|r| r == reason)
}

/// The status (`True`, `False`, `Unknown`) of the tenant's condition `type_`.
pub async fn condition_status(client: &Client, type_: &str) -> Option<String> {
    condition(client, type_).await.map(|c| c.0)
}

/// Whether the tenant's `Provisioned` condition is `True`.
pub async fn is_provisioned(client: &Client) -> bool {
    condition_status(client, "Provisioned").await.as_deref() == Some("True")
}

/// Polls `check` until it holds; fails the test with `what` once `within` has passed.
pub async fn eventually<F, Fut>(what: &str, within: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Whether an object's owner references point at the tenant as controller.
pub fn owned_by_tenant<K: kube::Resource>(obj: &K, tenant: &ContactTenant) -> bool {
    obj.owner_references().iter().any(|o| {
        o.kind == "ContactTenant"
            && o.name == "acme"
            && Some(&o.uid) == tenant.uid().as_ref()
            && o.controller == Some(true)
    })
}
