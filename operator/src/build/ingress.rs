//! The tenant's Ingress: its public host, class and TLS secret, routed to the runtime Service.

use super::{names, owned_meta};
use crate::labels::RUNTIME_PORT;
use crate::tenant::ValidatedTenant;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

/// Builds the Ingress.
pub(crate) fn build_ingress(t: &ValidatedTenant) -> Ingress {
    let mut metadata = owned_meta(t, names::runtime(&t.name), "runtime");
    if !t.ingress_annotations.is_empty() {
        metadata.annotations = Some(t.ingress_annotations.clone());
    }
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: t.ingress_class.clone(),
            tls: t.tls_secret.as_ref().map(|s| {
                vec![IngressTLS {
                    hosts: Some(vec![t.host.clone()]),
                    secret_name: Some(s.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(t.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: names::runtime(&t.name),
                                port: Some(ServiceBackendPort {
                                    number: Some(RUNTIME_PORT),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The URL users reach the tenant at.
pub(crate) fn url(t: &ValidatedTenant) -> String {
    let scheme = if t.tls_secret.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", t.host)
}
