//! Every reconcile failure reaches the tenant: `Ready=False` and `Provisioned=False` with a reason
//! and a message naming the object and the API server's answer, a Warning Event, and the failure
//! metric by reason. Children that do not depend on each other do not block each other: one the
//! API server refuses does not keep the workload from being applied.

use crate::common::*;
use contact_operator::reconcile::reconcile;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::json;
use std::sync::Arc;

#[tokio::test]
async fn a_refused_child_is_on_the_tenant_and_blocks_nothing_else() {
    // Any annotation key passes the platform's policy here: the API server is what refuses it.
    let config = contact_operator::config::OperatorConfig {
        ingress_annotations: vec!["*".into()],
        ..Default::default()
    };
    let env = env_with(config, true).await;
    let mut t = tenant_json();
    // Accepted by the CRD (annotations are free-form there) and the operator's policy (above),
    // refused by the API server when the operator applies the Ingress: an annotation key must be
    // a qualified name.
    t["spec"]["ingress"]["annotations"] = json!({ "not a valid key!": "x" });
    create_tenant(&env.admin, t).await;
    // Twice, as the controller would (the finalizer goes on in the first pass); both fail.
    for _ in 0..2 {
        let live = tenants(&env.admin).get("acme").await.expect("tenant");
        let err = reconcile(Arc::new(live), env.ctx.clone()).await;
        assert!(err.is_err(), "the Ingress is refused");
    }

    // Everything else, the workload included, is there.
    assert!(
        get_opt::<StatefulSet>(&env.admin, "acme").await.is_some(),
        "workload applied"
    );
    assert!(
        get_opt::<ConfigMap>(&env.admin, "acme-config")
            .await
            .is_some()
    );
    assert!(get_opt::<Ingress>(&env.admin, "acme").await.is_none());

    let message = assert_condition(&env.admin, "Ready", "False", "ApplyFailed").await;
    assert!(message.contains("Ingress acme"), "{message}");
    assert!(
        message.contains("not a valid key!"),
        "the API's answer: {message}"
    );
    assert_condition(&env.admin, "Provisioned", "False", "ApplyFailed").await;
    assert!(has_event(&env.admin, "ApplyFailed").await);
    let metrics = env.ctx.metrics.encode();
    assert!(
        metrics.contains("contact_operator_reconcile_errors_total{error=\"ApplyFailed\"}"),
        "{metrics}"
    );

    // Fixed: the next pass applies it and the tenant says so.
    patch_tenant(
        &env.admin,
        json!({ "spec": { "ingress": { "annotations": null } } }),
    )
    .await;
    reconcile_once(&env).await;
    assert!(get_opt::<Ingress>(&env.admin, "acme").await.is_some());
    assert_condition(&env.admin, "Provisioned", "True", "Applied").await;
}
