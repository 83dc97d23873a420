//! Deletion grace: deleting a tenant removes its runtime at once, detaches and stamps its data,
//! the sweeper purges the data only after the grace period, and re-creating the tenant within
//! the grace period re-attaches the data with its keys intact.

use crate::common::*;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use contact_operator::config::OperatorConfig;
use contact_operator::reconcile::sweep;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;

/// What the StatefulSet controller would create from the volume claim template (no
/// controller-manager runs here). It carries an owner reference to the tenant to prove detach
/// removes it.
async fn sqlite_pvc(client: &Client, tenant_uid: &str) {
    let labels = string_map(&[
        ("contact.dev/tenant", "acme"),
        ("contact.dev/data", "true"),
        ("contact.dev/component", "data"),
    ]);
    let pvc = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data-acme-0".into()),
            labels: Some(labels),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "contact.dev/v1alpha1".into(),
                    kind: "ContactTenant".into(),
                    name: "acme".into(),
                    uid: tenant_uid.into(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity("5Gi".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pvc)
        .await
        .expect("pvc");
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn stamp(obj: &impl kube::Resource, key: &str) -> Option<DateTime<Utc>> {
    obj.annotations()
        .get(key)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

async fn delete_and_cleanup(env: &Env) {
    tenants(&env.admin)
        .delete("acme", &DeleteParams::default())
        .await
        .expect("delete");
    // The finalizer holds the object; the operator's cleanup releases it.
    reconcile_once(env).await;
    assert!(
        tenants(&env.admin)
            .get_opt("acme")
            .await
            .expect("get")
            .is_none(),
        "finalizer removed"
    );
}

/// Gone, or terminating (PVCs keep `kubernetes.io/pvc-protection` until a controller-manager,
/// absent here, releases it).
async fn purged<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .expect("get")
        .is_none_or(|o| o.meta().deletion_timestamp.is_some())
}

#[tokio::test]
async fn runtime_goes_at_once_data_after_the_grace_period() {
    let (env, t) = settled_env().await;
    sqlite_pvc(&env.admin, &t.uid().unwrap_or_default()).await;
    let c = &env.admin;
    assert!(
        !env.ctx.memo.is_empty(),
        "the operator remembers its applies"
    );

    delete_and_cleanup(&env).await;
    // Nothing of a deleted tenant stays in the operator's memory.
    assert_eq!(env.ctx.memo.len(), 0, "memo after deletion");
    let now = wednesday();
    for gone in [
        get_opt::<StatefulSet>(c, "acme").await.is_none(),
        get_opt::<Service>(c, "acme").await.is_none(),
        get_opt::<Ingress>(c, "acme").await.is_none(),
        get_opt::<NetworkPolicy>(c, "acme-runtime").await.is_none(),
        get_opt::<CronJob>(c, "acme-backup").await.is_none(),
        get_opt::<ConfigMap>(c, "acme-config").await.is_none(),
        get_opt::<ServiceAccount>(c, "acme").await.is_none(),
    ] {
        assert!(gone, "the runtime is removed at once");
    }
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(c.clone(), NS);
    let secrets = Api::<Secret>::namespaced(c.clone(), NS);
    for pvc in ["data-acme-0", "acme-backups"] {
        let p = pvcs.get(pvc).await.expect("data kept");
        assert!(p.owner_references().is_empty(), "{pvc} detached");
        assert_eq!(stamp(&p, "contact.dev/tenant-deleted-at"), Some(now));
        assert_eq!(
            stamp(&p, "contact.dev/purge-after"),
            Some(now + ChronoDuration::days(30))
        );
    }
    let keys = secrets.get("acme-keys").await.expect("keys kept");
    assert_eq!(
        stamp(&keys, "contact.dev/purge-after"),
        Some(now + ChronoDuration::days(30))
    );
    assert!(has_event(c, "DataDetached").await);

    // Within the grace period the sweeper leaves everything alone.
    let purged_early = sweep(&env.ctx, now + ChronoDuration::days(29))
        .await
        .expect("sweep");
    assert!(purged_early.is_empty(), "{purged_early:?}");
    assert!(
        pvcs.get("data-acme-0")
            .await
            .expect("kept")
            .metadata
            .deletion_timestamp
            .is_none()
    );

    // After it, the data goes.
    let purged_now = sweep(&env.ctx, now + ChronoDuration::days(30))
        .await
        .expect("sweep");
    let mut names: Vec<_> = purged_now.iter().map(|d| d.name.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["acme-backups", "acme-keys", "data-acme-0"]);
    assert!(purged(&pvcs, "data-acme-0").await);
    assert!(purged(&pvcs, "acme-backups").await);
    assert!(purged(&secrets, "acme-keys").await);
}

#[tokio::test]
async fn recreating_within_grace_reattaches_the_data() {
    let (env, t) = settled_env().await;
    sqlite_pvc(&env.admin, &t.uid().unwrap_or_default()).await;
    let secrets = Api::<Secret>::namespaced(env.admin.clone(), NS);
    let keys_before = secrets.get("acme-keys").await.expect("keys").data;

    delete_and_cleanup(&env).await;
    env.clock.advance(ChronoDuration::days(3));
    create_tenant(&env.admin, tenant_json()).await;
    settle(&env).await;

    let pvcs = Api::<PersistentVolumeClaim>::namespaced(env.admin.clone(), NS);
    for pvc in ["data-acme-0", "acme-backups"] {
        let p = pvcs.get(pvc).await.expect("pvc");
        assert!(
            !p.annotations().contains_key("contact.dev/purge-after"),
            "{pvc} re-attached"
        );
    }
    let keys = secrets.get("acme-keys").await.expect("keys");
    assert!(!keys.annotations().contains_key("contact.dev/purge-after"));
    assert_eq!(
        keys.data, keys_before,
        "same keys: sessions, backups and admin password still valid"
    );
    // A late sweep finds nothing to purge: the tenant exists and the marks are gone.
    let purged = sweep(&env.ctx, wednesday() + ChronoDuration::days(60))
        .await
        .expect("sweep");
    assert!(purged.is_empty(), "{purged:?}");
}

#[tokio::test]
async fn a_second_deletion_restarts_the_grace_period() {
    let (env, t) = settled_env().await;
    sqlite_pvc(&env.admin, &t.uid().unwrap_or_default()).await;
    delete_and_cleanup(&env).await;
    let first = wednesday();

    // Re-created on day 29 while its channel Secret is missing: its reconcile stops at the
    // Secret and never reaches re-attachment. Deleted again the same day.
    env.clock.advance(ChronoDuration::days(29));
    Api::<Secret>::namespaced(env.admin.clone(), NS)
        .delete("acme-sinch", &DeleteParams::default())
        .await
        .expect("delete the channel Secret");
    create_tenant(&env.admin, tenant_json()).await;
    settle(&env).await;
    assert_condition(&env.admin, "Ready", "False", "SecretNotFound").await;
    delete_and_cleanup(&env).await;

    // The first deletion's grace has passed, the second's has not: nothing goes.
    let early = sweep(&env.ctx, first + ChronoDuration::days(31))
        .await
        .expect("sweep");
    assert!(early.is_empty(), "purged by the older deletion: {early:?}");
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(env.admin.clone(), NS);
    let p = pvcs.get("data-acme-0").await.expect("kept");
    assert!(p.metadata.deletion_timestamp.is_none());
    assert_eq!(
        stamp(&p, "contact.dev/purge-after"),
        Some(first + ChronoDuration::days(59)),
        "the newest deletion is stamped"
    );
    let late = sweep(&env.ctx, first + ChronoDuration::days(59))
        .await
        .expect("sweep");
    assert_eq!(late.len(), 3, "{late:?}");
    assert!(purged(&pvcs, "data-acme-0").await);
}

/// A labelled, annotated object of someone else's: what the sweeper once purged on sight.
async fn bait_secret(client: &Client, ns: &str, name: &str) {
    let labels = string_map(&[
        ("contact.dev/tenant", "acme"),
        ("contact.dev/data", "true"),
        ("app.kubernetes.io/managed-by", "contact-operator"),
    ]);
    let annotations = string_map(&[
        ("contact.dev/tenant-deleted-at", "2020-01-01T00:00:00Z"),
        ("contact.dev/purge-after", "2020-01-02T00:00:00Z"),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("bait secret");
}

#[tokio::test]
async fn the_sweeper_purges_only_what_it_recorded_in_its_namespaces_and_says_so() {
    let config = OperatorConfig {
        watch_namespaces: vec![NS.into()],
        ..OperatorConfig::default()
    };
    let env = env_with(config, true).await;
    create_namespace(&env.admin, "elsewhere").await;
    bait_secret(&env.admin, "elsewhere", "acme-keys").await;
    bait_secret(&env.admin, NS, "precious").await;
    create_tenant(&env.admin, tenant_json()).await;
    settle(&env).await;
    delete_and_cleanup(&env).await;

    let purged_now = sweep(&env.ctx, wednesday() + ChronoDuration::days(30))
        .await
        .expect("sweep");
    let mut names: Vec<_> = purged_now
        .iter()
        .map(|d| format!("{}/{}", d.namespace, d.name))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![format!("{NS}/acme-backups"), format!("{NS}/acme-keys")]
    );
    for (ns, name) in [("elsewhere", "acme-keys"), (NS, "precious")] {
        let s = Api::<Secret>::namespaced(env.admin.clone(), ns)
            .get_opt(name)
            .await
            .expect("get");
        assert!(
            s.is_some_and(|s| s.metadata.deletion_timestamp.is_none()),
            "{ns}/{name} was not the operator's to purge"
        );
    }
    // Each purge is an Event on the namespace and counted.
    let events = Api::<Event>::namespaced(env.admin.clone(), NS)
        .list(&ListParams::default())
        .await
        .expect("events");
    let purges: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("DataPurged"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Namespace"))
        .filter_map(|e| e.note.clone())
        .collect();
    assert_eq!(purges.len(), 2, "{purges:?}");
    assert!(purges.iter().any(|n| n.contains("acme-keys")), "{purges:?}");
    assert_eq!(env.ctx.metrics.purged_count("Secret"), 1);
    assert_eq!(env.ctx.metrics.purged_count("PersistentVolumeClaim"), 1);
    // Nothing left to purge: the record is gone with the data.
    let again = sweep(&env.ctx, wednesday() + ChronoDuration::days(90))
        .await
        .expect("sweep");
    assert!(again.is_empty(), "{again:?}");
}

/// An admission policy that refuses every update of the claim `data-acme-0`: a detach that
/// fails for one object, as a webhook or a quota might make it.
const FREEZE_CLAIM: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: { name: freeze-claim }
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - { apiGroups: [""], apiVersions: [v1], operations: [UPDATE], resources: [persistentvolumeclaims] }
  validations:
    - expression: "object.metadata.name != 'data-acme-0'"
      message: data-acme-0 is frozen
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: { name: freeze-claim }
spec:
  policyName: freeze-claim
  validationActions: [Deny]
"#;

#[tokio::test]
async fn a_detach_failing_for_one_object_detaches_the_others_and_keeps_the_finalizer() {
    let (env, t) = settled_env().await;
    sqlite_pvc(&env.admin, &t.uid().unwrap_or_default()).await;
    contact_tests::kube_helpers::apply_yaml(&env.admin, FREEZE_CLAIM, NS)
        .await
        .expect("policy");
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(env.admin.clone(), NS);
    let touch = json!({ "metadata": { "annotations": { "probe": "1" } } });
    let frozen = || async {
        pvcs.patch(
            "data-acme-0",
            &PatchParams::default(),
            &Patch::Merge(&touch),
        )
        .await
        .is_err()
    };
    eventually(
        "the policy never took effect",
        std::time::Duration::from_secs(30),
        frozen,
    )
    .await;

    tenants(&env.admin)
        .delete("acme", &DeleteParams::default())
        .await
        .expect("delete");
    let live = tenants(&env.admin)
        .get("acme")
        .await
        .expect("held by the finalizer");
    let failed =
        contact_operator::reconcile::reconcile(std::sync::Arc::new(live), env.ctx.clone()).await;
    assert!(failed.is_err(), "the frozen claim could not be detached");
    assert!(
        tenants(&env.admin)
            .get_opt("acme")
            .await
            .expect("get")
            .is_some(),
        "the finalizer stays while an object is still attached"
    );
    // The others were detached all the same.
    let keys = Api::<Secret>::namespaced(env.admin.clone(), NS)
        .get("acme-keys")
        .await
        .expect("keys");
    assert!(
        stamp(&keys, "contact.dev/purge-after").is_some(),
        "keys detached"
    );
    let backups = pvcs.get("acme-backups").await.expect("backup claim");
    assert!(
        stamp(&backups, "contact.dev/purge-after").is_some(),
        "backup claim detached"
    );
    assert!(has_event(&env.admin, "DataGraceFailed").await);

    // Once the object can be written, the retry completes the deletion.
    Api::<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>::all(
        env.admin.clone(),
    )
    .delete("freeze-claim", &DeleteParams::default())
    .await
    .expect("unfreeze");
    let released = || async {
        if let Some(t) = tenants(&env.admin).get_opt("acme").await.expect("get") {
            let _ = contact_operator::reconcile::reconcile(std::sync::Arc::new(t), env.ctx.clone())
                .await;
        }
        tenants(&env.admin)
            .get_opt("acme")
            .await
            .expect("get")
            .is_none()
    };
    eventually(
        "never released",
        std::time::Duration::from_secs(30),
        released,
    )
    .await;
    let p = pvcs.get("data-acme-0").await.expect("kept");
    assert!(p.owner_references().is_empty(), "detached");
}
