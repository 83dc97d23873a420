//! PodDisruptionBudget: only when the runtime has more than one replica. With one replica a PDB
//! would block node drains forever, which is worse than the brief outage it prevents.

use super::{names, owned_meta, selector_labels};
use crate::tenant::ValidatedTenant;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Builds the PDB for `replicas` running replicas, or `None` when there is at most one.
pub(crate) fn build_pdb(t: &ValidatedTenant, replicas: i32) -> Option<PodDisruptionBudget> {
    (replicas > 1).then(|| PodDisruptionBudget {
        metadata: owned_meta(t, names::runtime(&t.name), "runtime"),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(t)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
