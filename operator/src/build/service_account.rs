//! The runtime's ServiceAccount: its own identity, with no API token mounted because the runtime
//! never talks to the Kubernetes API (a stolen pod then holds no credentials).

use super::{names, owned_meta};
use crate::tenant::ValidatedTenant;
use k8s_openapi::api::core::v1::ServiceAccount;

/// Builds the runtime's ServiceAccount.
pub(crate) fn build_service_account(t: &ValidatedTenant) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(t, names::runtime(&t.name), "runtime"),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}
