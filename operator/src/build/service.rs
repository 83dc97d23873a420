//! The runtime's ClusterIP Service on port 8080 (HTTP: API, UI, webhooks).

use super::{names, owned_meta, selector_labels};
use crate::labels::RUNTIME_PORT;
use crate::tenant::ValidatedTenant;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Builds the runtime Service.
pub(crate) fn build_service(t: &ValidatedTenant) -> Service {
    Service {
        metadata: owned_meta(t, names::runtime(&t.name), "runtime"),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(t)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: RUNTIME_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}
