//! NetworkPolicy: only the ingress controller's namespace and the tenant's own namespace may reach
//! the runtime. Egress goes to any pod of the cluster (DNS, an in-cluster database) and any
//! address outside it (the Conversation API, an external database) except the link-local ranges,
//! where clouds serve instance metadata and credentials: a runtime talked into fetching a URL
//! of a tenant author's choosing cannot reach them. DNS (port 53) goes anywhere, link-local
//! included (NodeLocal DNSCache).

use super::{names, owned_meta, selector_labels};
use crate::labels::RUNTIME_PORT;
use crate::tenant::ValidatedTenant;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Builds the NetworkPolicy; `ingress_namespace` is the ingress controller's namespace.
pub(crate) fn build_network_policy(t: &ValidatedTenant, ingress_namespace: &str) -> NetworkPolicy {
    // `kubernetes.io/metadata.name` is set by the API server on every namespace (1.21+), so it
    // selects a namespace by name without asking admins to label anything.
    let ns = |name: &str| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: owned_meta(t, names::network_policy(&t.name), "runtime"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(t)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![
                        // Every pod of every namespace (ipBlock need not match pod addresses).
                        NetworkPolicyPeer {
                            namespace_selector: Some(LabelSelector::default()),
                            ..Default::default()
                        },
                        outside("0.0.0.0/0", "169.254.0.0/16"),
                        outside("::/0", "fe80::/10"),
                    ]),
                    ports: None,
                },
                // DNS anywhere: NodeLocal DNSCache listens on a link-local address (169.254.20.10).
                NetworkPolicyEgressRule {
                    to: None,
                    ports: Some(
                        ["UDP", "TCP"]
                            .map(|protocol| NetworkPolicyPort {
                                port: Some(IntOrString::Int(53)),
                                protocol: Some(protocol.into()),
                                ..Default::default()
                            })
                            .to_vec(),
                    ),
                },
            ]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![ns(ingress_namespace), ns(&t.namespace)]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(RUNTIME_PORT)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            }]),
        }),
    }
}

/// Every address of `cidr` but `except`.
fn outside(cidr: &str, except: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.into(),
            except: Some(vec![except.into()]),
        }),
        ..Default::default()
    }
}
