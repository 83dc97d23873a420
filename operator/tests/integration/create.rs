//! Creating a tenant: every child exists with the expected fields, owned children point at the
//! tenant, data-bearing children do not, the status says what happened, Events were recorded.

use crate::common::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn sqlite_tenant_gets_every_child() {
    let env = env().await;
    create_tenant(&env.admin, tenant_json()).await;
    let action = settle(&env).await;
    // The next wake-up is the window opening (Saturday 22:00 UTC), not later than the resync.
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    let c = &env.admin;
    let tenant = tenants(c).get("acme").await.expect("tenant");
    assert!(
        tenant
            .finalizers()
            .iter()
            .any(|f| f == "contact.dev/finalizer")
    );

    let sa = get::<ServiceAccount>(c, "acme").await;
    assert_eq!(sa.automount_service_account_token, Some(false));
    assert!(owned_by_tenant(&sa, &tenant));

    let sts = get::<StatefulSet>(c, "acme").await;
    assert!(owned_by_tenant(&sts, &tenant));
    assert_eq!(sts.spec.replicas, Some(1));
    let pod = sts.spec.template.spec.clone().expect("pod");
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("ghcr.io/contact-dev/contact-runtime:1.0.0")
    );
    let sc = pod.containers[0]
        .security_context
        .clone()
        .expect("security");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        sts.spec.volume_claim_templates.as_ref().map(Vec::len),
        Some(1)
    );
    assert!(
        get_opt::<Deployment>(c, "acme").await.is_none(),
        "SQLite runs a StatefulSet, not a Deployment"
    );

    let svc = get::<Service>(c, "acme").await;
    assert!(owned_by_tenant(&svc, &tenant));
    let ing = get::<Ingress>(c, "acme").await;
    assert!(owned_by_tenant(&ing, &tenant));
    let spec = ing.spec.expect("ingress spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(
        spec.rules.expect("rules")[0].host.as_deref(),
        Some("acme.contact.example.com")
    );
    let np = get::<NetworkPolicy>(c, "acme-runtime").await;
    assert!(owned_by_tenant(&np, &tenant));
    let cm = get::<ConfigMap>(c, "acme-config").await;
    assert!(owned_by_tenant(&cm, &tenant));
    let cfg: serde_json::Value =
        serde_json::from_str(&cm.data.expect("data")["runtime.json"]).expect("runtime.json");
    assert_eq!(cfg["channels"][0]["name"], "whatsapp-main");
    assert_eq!(cfg["maintenance"]["start"], "2026-11-28T22:00:00+00:00");
    let cj = get::<CronJob>(c, "acme-backup").await;
    assert!(owned_by_tenant(&cj, &tenant));
    assert_eq!(cj.spec.schedule, "0 2 * * *");
    assert!(
        get_opt::<PodDisruptionBudget>(c, "acme").await.is_none(),
        "no PDB for a single replica"
    );

    // Data-bearing children: labelled, never owned.
    let keys = get::<Secret>(c, "acme-keys").await;
    assert!(keys.owner_references().is_empty());
    assert_eq!(
        keys.labels().get("contact.dev/tenant").map(String::as_str),
        Some("acme")
    );
    assert_eq!(keys.data.as_ref().map(|d| d.len()), Some(3));
    let pvc = get::<PersistentVolumeClaim>(c, "acme-backups").await;
    assert!(pvc.owner_references().is_empty());
    assert_eq!(
        pvc.labels().get("contact.dev/data").map(String::as_str),
        Some("true")
    );

    let st = status(c).await;
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(st["url"], "https://acme.contact.example.com");
    assert_eq!(st["nextMaintenanceWindow"]["start"], "2026-11-28T22:00:00Z");
    assert_eq!(
        condition_status(c, "Provisioned").await,
        Some("True".into())
    );
    // No kubelet here: the runtime never becomes ready, and says so.
    assert_eq!(
        condition(c, "Ready").await.map(|c| (c.0, c.1)),
        Some(("False".into(), "RuntimeNotReady".into()))
    );
    assert_eq!(
        condition_status(c, "MaintenancePending").await,
        Some("False".into())
    );
    assert_eq!(
        condition(c, "TrialExpired").await.map(|c| c.1),
        Some("NoTrial".into())
    );
    let reasons = event_reasons(c).await;
    assert!(reasons.iter().any(|r| r == "Applied"), "{reasons:?}");
}

#[tokio::test]
async fn postgres_tenant_gets_a_deployment_and_a_pdb() {
    let env = env().await;
    put_secret(
        &env.admin,
        "acme-db",
        &[("uri", "postgres://u:p@db/contact")],
    )
    .await;
    let mut t = tenant_json();
    t["spec"]["database"] = json!({ "postgres": { "secretRef": { "name": "acme-db" } } });
    t["spec"]["runtime"]["replicas"] = json!(3);
    create_tenant(&env.admin, t).await;
    settle(&env).await;
    let c = &env.admin;
    let d = get::<Deployment>(c, "acme").await;
    assert_eq!(d.spec.replicas, Some(3));
    let pdb = get::<PodDisruptionBudget>(c, "acme").await;
    assert!(pdb.spec.and_then(|s| s.max_unavailable).is_some());
    assert!(get_opt::<StatefulSet>(c, "acme").await.is_none());
    assert_eq!(
        condition(c, "DatabaseReady").await.map(|c| (c.0, c.1)),
        Some(("True".into(), "SecretResolved".into()))
    );
}

#[tokio::test]
async fn cloudnativepg_without_its_crd_is_a_condition_not_a_crash() {
    let env = env().await;
    let mut t = tenant_json();
    t["spec"]["database"] = json!({ "cloudNativePG": { "instances": 3 } });
    t["spec"]["runtime"]["replicas"] = json!(2);
    create_tenant(&env.admin, t).await;
    let action = settle(&env).await;
    assert_eq!(
        condition(&env.admin, "DatabaseReady")
            .await
            .map(|c| (c.0, c.1)),
        Some(("False".into(), "CloudNativePGNotInstalled".into()))
    );
    // The CRD may be installed later (an add-on): look again now and then.
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert!(
        get_opt::<Deployment>(&env.admin, "acme").await.is_some(),
        "the runtime is still provisioned"
    );
}

#[tokio::test]
async fn unknown_hosting_location_is_reported_and_nothing_is_built() {
    let mut config = contact_operator::config::OperatorConfig::default();
    config.locations.insert(
        "us-east".into(),
        [(
            "topology.kubernetes.io/region".to_string(),
            "us-east-1".to_string(),
        )]
        .into(),
    );
    let env = env_with(config, true).await;
    create_tenant(&env.admin, tenant_json()).await;
    let action = settle(&env).await;
    assert_eq!(action, Action::await_change());
    let message = assert_condition(&env.admin, "Ready", "False", "UnknownHostingLocation").await;
    assert!(message.contains("us-east"), "{message}");
    assert!(get_opt::<StatefulSet>(&env.admin, "acme").await.is_none());
}

/// A stand-in for CloudNativePG's `clusters.postgresql.cnpg.io` CRD: the group, version, kind,
/// scope and status subresource of the real one, with an open schema (the real CRD's schema
/// runs to thousands of lines and is CloudNativePG's to validate, not ours).
const CNPG_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: clusters.postgresql.cnpg.io
spec:
  group: postgresql.cnpg.io
  scope: Namespaced
  names: { plural: clusters, singular: cluster, kind: Cluster }
  versions:
    - name: v1
      served: true
      storage: true
      subresources: { status: {} }
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

#[tokio::test]
async fn cloudnativepg_cluster_is_built_kept_and_followed_when_its_crd_is_installed() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let env = env().await;
    contact_tests::kube_helpers::install_crds(&env.admin, CNPG_CRD)
        .await
        .expect("CNPG CRD installs");
    let mut t = tenant_json();
    t["spec"]["database"] = json!({ "cloudNativePG": { "instances": 3, "storage": "20Gi" } });
    t["spec"]["runtime"]["replicas"] = json!(2);
    create_tenant(&env.admin, t).await;
    let action = settle(&env).await;

    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "postgresql.cnpg.io",
        "v1",
        "Cluster",
    ));
    let clusters = Api::<DynamicObject>::namespaced_with(env.admin.clone(), NS, &ar);
    let cluster = clusters.get("acme-db").await.expect("the Cluster exists");
    assert_eq!(cluster.data["spec"]["instances"], json!(3));
    assert_eq!(cluster.data["spec"]["storage"]["size"], json!("20Gi"));
    assert_eq!(
        cluster.data["spec"]["bootstrap"]["initdb"]["database"],
        json!("contact")
    );
    // The database is data: it outlives the tenant object (detached on deletion), so no owner.
    assert!(cluster.owner_references().is_empty());
    assert_eq!(
        condition(&env.admin, "DatabaseReady")
            .await
            .map(|c| (c.0, c.1, c.2)),
        Some((
            "False".into(),
            "ClusterNotReady".into(),
            "0/3 instances ready".into()
        ))
    );
    // Not watched: the reconcile comes back soon to follow the Cluster coming up.
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));

    // A hand edit of the Cluster is reverted like any other child's.
    clusters
        .patch(
            "acme-db",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "instances": 1 } })),
        )
        .await
        .expect("edit");
    env.counter.reset();
    reconcile_once(&env).await;
    let cluster = clusters.get("acme-db").await.expect("cluster");
    assert_eq!(cluster.data["spec"]["instances"], json!(3), "reverted");
    assert!(
        env.counter
            .writes()
            .iter()
            .any(|w| w.contains("clusters/acme-db")),
        "{:?}",
        env.counter.writes()
    );

    // CloudNativePG reports its instances ready: DatabaseReady follows, and nothing is written
    // but the status.
    clusters
        .patch_status(
            "acme-db",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "readyInstances": 3 } })),
        )
        .await
        .expect("status");
    env.counter.reset();
    reconcile_once(&env).await;
    assert_eq!(
        condition(&env.admin, "DatabaseReady")
            .await
            .map(|c| (c.0, c.1)),
        Some(("True".into(), "ClusterReady".into()))
    );
    let writes = env.counter.writes();
    assert!(
        writes
            .iter()
            .all(|w| w.contains("contacttenants/acme/status") || w.contains("events")),
        "{writes:?}"
    );
    env.counter.reset();
    reconcile_once(&env).await;
    assert_eq!(env.counter.writes(), Vec::<String>::new(), "then idle");
}
