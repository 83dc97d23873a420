//! A crash-looping tenant can be repaired by a new image (issue 14): the StatefulSet controller
//! (`OrderedReady`) never replaces a pod of the old revision that never became Ready, so the
//! operator does. No controller-manager or kubelet runs here: the test writes the StatefulSet's
//! and the pods' status as they would.

use crate::common::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// A runtime pod `name` made from `revision`, Ready or not (as the kubelet would report it).
async fn runtime_pod(client: &Client, name: &str, revision: &str, ready: bool) {
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": {
            "app.kubernetes.io/name": "contact-runtime",
            "app.kubernetes.io/instance": "acme",
            "controller-revision-hash": revision,
        } },
        "spec": { "containers": [{ "name": "runtime", "image": "runtime:old" }] }
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    let status = json!({ "status": { "conditions": [{
        "type": "Ready", "status": if ready { "True" } else { "False" },
        "lastTransitionTime": "2026-11-25T09:00:00Z"
    }] } });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
}

/// The StatefulSet controller's view: rolling from `current` to `update`, nothing ready.
async fn rolling(client: &Client, replicas: i32, current: &str, update: &str) {
    let status = json!({ "status": {
        "replicas": replicas, "readyReplicas": 0,
        "currentRevision": current, "updateRevision": update,
    } });
    Api::<StatefulSet>::namespaced(client.clone(), NS)
        .patch_status("acme", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("statefulset status");
}

#[tokio::test]
async fn a_pod_of_the_old_revision_that_never_became_ready_is_replaced() {
    let (env, _) = settled_env().await;
    runtime_pod(&env.admin, "acme-0", "acme-old", false).await;
    rolling(&env.admin, 1, "acme-old", "acme-new").await;
    reconcile_once(&env).await;
    assert!(
        get_opt::<Pod>(&env.admin, "acme-0").await.is_none(),
        "the stuck pod was not replaced"
    );
    assert!(has_event(&env.admin, "StuckPodReplaced").await);
}

#[tokio::test]
async fn ready_pods_and_pods_of_the_new_revision_are_left_to_the_controller() {
    let (env, _) = settled_env().await;
    runtime_pod(&env.admin, "acme-0", "acme-old", true).await;
    rolling(&env.admin, 1, "acme-old", "acme-new").await;
    reconcile_once(&env).await;
    assert!(
        get_opt::<Pod>(&env.admin, "acme-0").await.is_some(),
        "a Ready pod stays"
    );

    Api::<Pod>::namespaced(env.admin.clone(), NS)
        .delete("acme-0", &Default::default())
        .await
        .expect("delete");
    runtime_pod(&env.admin, "acme-0", "acme-new", false).await;
    reconcile_once(&env).await;
    assert!(
        get_opt::<Pod>(&env.admin, "acme-0").await.is_some(),
        "the rollout's own pod stays while it starts"
    );
}
