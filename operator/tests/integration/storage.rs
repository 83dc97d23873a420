//! Growing volumes: a larger size grows the existing claims in place (the StatefulSet's claim
//! templates are immutable and stay as they are); a StorageClass that cannot expand is a
//! condition, not a silent no-op. Shrinking is refused at admission (`crd_admission` tests).
//!
//! No controller-manager runs here: the test creates the SQLite claim as the StatefulSet
//! controller would and marks claims `Bound` as the PV controller would, because the API server
//! only resizes bound claims.

use crate::common::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

async fn storage_class(env: &Env, name: &str, expandable: bool) {
    Api::<StorageClass>::all(env.admin.clone())
        .create(
            &PostParams::default(),
            &StorageClass {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                provisioner: "csi.example.com".into(),
                allow_volume_expansion: Some(expandable),
                ..Default::default()
            },
        )
        .await
        .expect("storage class");
}

/// The claim the StatefulSet controller makes from the template, already bound.
async fn sqlite_claim(env: &Env, class: &str, size: &str) {
    let api = Api::<PersistentVolumeClaim>::namespaced(env.admin.clone(), NS);
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": "data-acme-0", "labels": {
            "app.kubernetes.io/managed-by": "contact-operator",
            "app.kubernetes.io/name": "contact-runtime",
            "app.kubernetes.io/instance": "acme",
            "contact.dev/tenant": "acme", "contact.dev/component": "data", "contact.dev/data": "true" } },
        "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": class,
                  "volumeName": "pv-data-acme-0",
                  "resources": { "requests": { "storage": size } } }
    }))
    .expect("pvc json");
    api.create(&PostParams::default(), &pvc)
        .await
        .expect("sqlite claim");
    bind(env, "data-acme-0", size).await;
}

async fn bind(env: &Env, name: &str, size: &str) {
    Api::<PersistentVolumeClaim>::namespaced(env.admin.clone(), NS)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "status": { "phase": "Bound", "capacity": { "storage": size } } }),
            ),
        )
        .await
        .expect("bound");
}

async fn requested(env: &Env, name: &str) -> Option<String> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(env.admin.clone(), NS)
        .get(name)
        .await
        .ok()?;
    Some(pvc.spec?.resources?.requests?.get("storage")?.0.clone())
}

async fn template_size(env: &Env) -> Option<String> {
    let sts = Api::<StatefulSet>::namespaced(env.admin.clone(), NS)
        .get("acme")
        .await
        .ok()?;
    let t = sts.spec.volume_claim_templates?.into_iter().next()?;
    Some(t.spec?.resources?.requests?.get("storage")?.0.clone())
}

#[tokio::test]
async fn a_larger_size_grows_the_bound_claims_in_place() {
    let env = env().await;
    storage_class(&env, "expandable", true).await;
    let mut t = tenant_json();
    t["spec"]["database"] =
        json!({ "sqlite": { "storage": "5Gi", "storageClassName": "expandable" } });
    t["spec"]["backups"] =
        json!({ "storage": { "size": "10Gi", "storageClassName": "expandable" } });
    create_tenant(&env.admin, t).await;
    settle(&env).await;
    sqlite_claim(&env, "expandable", "5Gi").await;
    bind(&env, "acme-backups", "10Gi").await;

    patch_tenant(
        &env.admin,
        json!({ "spec": { "database": { "sqlite": { "storage": "20Gi" } },
                          "backups": { "storage": { "size": "50Gi" } } } }),
    )
    .await;
    reconcile_once(&env).await;
    assert_eq!(
        requested(&env, "data-acme-0").await.as_deref(),
        Some("20Gi")
    );
    assert_eq!(
        requested(&env, "acme-backups").await.as_deref(),
        Some("50Gi")
    );
    // The template is immutable; the claims are what counts.
    assert_eq!(template_size(&env).await.as_deref(), Some("5Gi"));
    let provisioned = condition(&env.admin, "Provisioned").await.expect("cond");
    assert_eq!(provisioned.0, "True", "{provisioned:?}");

    // Grown, the next pass writes nothing.
    env.counter.reset();
    reconcile_once(&env).await;
    assert_eq!(env.counter.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_class_that_cannot_expand_is_a_condition() {
    let env = env().await;
    storage_class(&env, "fixed", false).await;
    let mut t = tenant_json();
    t["spec"]["database"] = json!({ "sqlite": { "storage": "5Gi", "storageClassName": "fixed" } });
    create_tenant(&env.admin, t).await;
    settle(&env).await;
    sqlite_claim(&env, "fixed", "5Gi").await;

    patch_tenant(
        &env.admin,
        json!({ "spec": { "database": { "sqlite": { "storage": "20Gi" } } } }),
    )
    .await;
    reconcile_once(&env).await;
    assert_eq!(requested(&env, "data-acme-0").await.as_deref(), Some("5Gi"));
    let message =
        assert_condition(&env.admin, "Provisioned", "False", "StorageNotExpandable").await;
    assert!(
        message.contains("data-acme-0") && message.contains("5Gi") && message.contains("20Gi"),
        "{message}"
    );
    assert!(
        event_reasons(&env.admin)
            .await
            .contains(&"StorageNotExpandable".to_string())
    );
}
