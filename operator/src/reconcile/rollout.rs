//! A rollout the StatefulSet controller does not finish by itself. With `OrderedReady` pod
//! management (the default, and the operator's) it replaces pods in order and waits for each to
//! become Ready first, so a pod of the old revision that never became Ready (a crash-looping
//! image) is never replaced: the new image that would repair the tenant never runs. The operator
//! deletes such a pod; the controller recreates it from the new revision.
//!
//! Only pods of an old revision that are not Ready are touched: a Ready one is the controller's
//! to replace in order, and one of the update revision is what the rollout wants.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::{Client, ResourceExt};

/// Failure to read or replace a runtime pod.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a pod failed.
    #[error("failed to read pod {0}")]
    Read(String, #[source] kube::Error),
    /// Deleting a pod failed.
    #[error("failed to replace pod {0}")]
    Delete(String, #[source] kube::Error),
}

/// The label the StatefulSet controller puts on each pod: the revision it was made from.
const REVISION: &str = "controller-revision-hash";

/// The revision a rollout is moving to, if one is under way (`updateRevision` differs from
/// `currentRevision`).
fn rolling_to(sts: &StatefulSet) -> Option<&str> {
    let s = sts.status.as_ref()?;
    let update = s.update_revision.as_deref()?;
    (s.current_revision.as_deref() != Some(update)).then_some(update)
}

/// Whether `pod` is of an old revision and not Ready (nor already going).
pub(crate) fn stuck(pod: &Pod, update_revision: &str) -> bool {
    let old = pod.labels().get(REVISION).map(String::as_str) != Some(update_revision);
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    old && !ready && pod.metadata.deletion_timestamp.is_none()
}

/// Deletes the pods of `sts` that are stuck on an old revision; returns their names. Reads no pod
/// unless a rollout is under way.
pub(crate) async fn replace_stuck_pods(
    client: &Client,
    ns: &str,
    sts: &StatefulSet,
) -> Result<Vec<(String, String)>, Error> {
    let Some(update) = rolling_to(sts) else {
        return Ok(Vec::new());
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let replicas = sts.spec.replicas.unwrap_or(1);
    let mut replaced = Vec::new();
    for ordinal in 0..replicas {
        let name = format!("{}-{ordinal}", sts.name_any());
        let pod = pods
            .get_opt(&name)
            .await
            .map_err(|e| Error::Read(name.clone(), e))?;
        let Some(pod) = pod.filter(|p| stuck(p, update)) else {
            continue;
        };
        let revision = pod.labels().get(REVISION).cloned().unwrap_or_default();
        // The uid precondition: a pod the controller has just recreated is not deleted again.
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&name, &dp).await {
            Ok(_) => replaced.push((name, revision)),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(Error::Delete(name, e)),
        }
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(revision: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "acme-0", "labels": { REVISION: revision } },
            "status": { "conditions": [
                { "type": "Ready", "status": if ready { "True" } else { "False" } }
            ] }
        }))
        .expect("pod")
    }

    #[test]
    fn only_a_not_ready_pod_of_an_old_revision_is_stuck() {
        assert!(stuck(&pod("old", false), "new"));
        assert!(
            !stuck(&pod("old", true), "new"),
            "the controller replaces it"
        );
        assert!(!stuck(&pod("new", false), "new"), "the rollout's own pod");
    }

    #[test]
    fn a_rollout_is_under_way_only_when_the_revisions_differ() {
        let sts = |current: &str, update: &str| -> StatefulSet {
            serde_json::from_value(json!({
                "metadata": { "name": "acme" },
                "spec": { "selector": {}, "serviceName": "acme", "template": {} },
                "status": { "replicas": 1, "currentRevision": current, "updateRevision": update }
            }))
            .expect("sts")
        };
        assert_eq!(rolling_to(&sts("a", "b")), Some("b"));
        assert_eq!(rolling_to(&sts("b", "b")), None);
    }
}
