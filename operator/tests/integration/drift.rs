//! Drift: a hand edit of a field the operator owns is reverted, while idle passes still write
//! nothing.

use crate::common::*;
use contact_operator::config::OperatorConfig;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

fn image(sts: &StatefulSet) -> Option<String> {
    sts.spec.template.spec.as_ref()?.containers[0].image.clone()
}

/// Replaces the rendered configuration by hand (kubectl edit sends the same kind of patch).
async fn hand_edit_config(cms: &Api<ConfigMap>) {
    cms.patch(
        "acme-config",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "runtime.json": "{}" } })),
    )
    .await
    .expect("edit cm");
}

#[tokio::test]
async fn a_hand_edit_is_reverted_by_the_next_reconcile() {
    let (env, _) = settled_env().await;
    let cms = Api::<ConfigMap>::namespaced(env.admin.clone(), NS);
    let stss = Api::<StatefulSet>::namespaced(env.admin.clone(), NS);
    let rendered = cms.get("acme-config").await.expect("cm").data;

    // Someone edits both by hand (kubectl edit would send the same kind of patch).
    hand_edit_config(&cms).await;
    let edited = stss
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "template": { "spec": { "containers": [
                { "name": "runtime", "image": "example.com/evil:1" }
            ] } } } })),
        )
        .await
        .expect("edit sts");
    assert_eq!(image(&edited).as_deref(), Some("example.com/evil:1"));

    env.counter.reset();
    reconcile_once(&env).await;
    assert_eq!(cms.get("acme-config").await.expect("cm").data, rendered);
    let sts = stss.get("acme").await.expect("sts");
    assert_eq!(
        image(&sts).as_deref(),
        Some("ghcr.io/contact-dev/contact-runtime:1.0.0")
    );
    let writes = env.counter.writes();
    assert_eq!(
        writes.len(),
        2,
        "exactly the two edited objects: {writes:?}"
    );

    // Reverted, the next pass has nothing to do again.
    env.counter.reset();
    reconcile_once(&env).await;
    assert_eq!(env.counter.writes(), Vec::<String>::new());

    // A metadata edit moves no generation: our tenant label taken off the StatefulSet (which
    // would orphan it from label-mapped watches) is put back all the same, and someone else's
    // label next to ours stays.
    let edited = stss
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": {
                contact_operator::labels::TENANT: null, "team": "support"
            } } })),
        )
        .await
        .expect("edit labels");
    assert!(
        !edited
            .labels()
            .contains_key(contact_operator::labels::TENANT)
    );
    env.counter.reset();
    reconcile_once(&env).await;
    let sts = stss.get("acme").await.expect("sts");
    assert_eq!(
        sts.labels()
            .get(contact_operator::labels::TENANT)
            .map(String::as_str),
        Some("acme")
    );
    assert_eq!(
        sts.labels().get("team").map(String::as_str),
        Some("support")
    );
    assert_eq!(env.counter.writes().len(), 1, "{:?}", env.counter.writes());
    env.counter.reset();
    reconcile_once(&env).await;
    assert_eq!(env.counter.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn the_running_controller_reverts_an_edit_on_its_own() {
    let config = OperatorConfig {
        resync: Duration::from_secs(3600),
        ..OperatorConfig::default()
    };
    let env = env_with(config, true).await;
    let controller = start_controller(&env);
    create_tenant(&env.admin, tenant_json()).await;
    let cms = &Api::<ConfigMap>::namespaced(env.admin.clone(), NS);
    let provisioned = || async { cms.get("acme-config").await.is_ok() };
    eventually("never provisioned", Duration::from_secs(60), provisioned).await;
    let rendered = &cms.get("acme-config").await.expect("cm").data;
    tokio::time::sleep(Duration::from_secs(1)).await;

    hand_edit_config(cms).await;
    // No resync within the test: the edit's own watch event must bring the reconcile.
    let reverted = || async { &cms.get("acme-config").await.expect("cm").data == rendered };
    eventually(
        "the edit was not reverted",
        Duration::from_secs(30),
        reverted,
    )
    .await;
    controller.stop().await;
}
