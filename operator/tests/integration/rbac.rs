//! The operator runs with nothing but the RBAC the Helm chart grants: the chart is rendered by
//! the real helm CLI and applied, and the operator's client impersonates the chart's
//! ServiceAccount (the API server runs with `--authorization-mode=RBAC`). A verb or resource the
//! operator uses but the chart forgot fails this test; no other test would notice, because they
//! all run as cluster admin. Both modes of the chart: cluster mode (a ClusterRole) and namespaced
//! mode (`watchNamespaces`: a Role per watched namespace, nothing cluster-wide, not even reading
//! Secrets); and a chart with one verb taken out does not provision.

use crate::common::*;
use contact_tests::controlplane::ControlPlane;
use contact_tests::kube_helpers::{apply_yaml, install_crds};
use contact_tests::tools::run_helm;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};
use std::time::Duration;
use tokio::time::Instant;

const RELEASE_NS: &str = "contact-system";
const CHART: &str = "charts/contact-operator";

fn helm_template(extra: &[&str]) -> String {
    let mut args = vec!["template", "contact", CHART, "--namespace", RELEASE_NS];
    args.extend(extra);
    let out = run_helm(&args);
    assert!(out.success, "helm template failed:\n{}", out.stderr);
    out.stdout
}

/// The chart, as `helm install` would create it with `values` (`--set` pairs): the CRD first,
/// then everything else, after `edit` (to take a verb out). Returns the name of the operator's
/// ServiceAccount.
async fn install_chart(admin: &Client, values: &[&str], edit: impl Fn(String) -> String) -> String {
    install_crds(
        admin,
        &helm_template(&["--show-only", "templates/crds.yaml"]),
    )
    .await
    .expect("the chart's CRD installs");
    let mut args = Vec::new();
    for v in values {
        args.extend(["--set", v]);
    }
    let rendered = edit(helm_template(&args));
    let applied = apply_yaml(admin, &rendered, RELEASE_NS)
        .await
        .expect("the chart applies");
    applied
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "ServiceAccount"))
        .expect("the chart has a ServiceAccount")
        .name_any()
}

/// A client that acts as the chart's ServiceAccount `sa`, as the operator's pod would.
async fn client_as(cp: &ControlPlane, sa: &str) -> Client {
    let mut config = cp.config().clone();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{RELEASE_NS}:{sa}"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{RELEASE_NS}"),
        "system:authenticated".into(),
    ]);
    let as_operator = Client::try_from(config).expect("impersonating client");
    // The premise: the client is held to the chart's RBAC (which grants no Namespace access).
    assert!(
        Api::<Namespace>::all(as_operator.clone())
            .list(&Default::default())
            .await
            .is_err(),
        "the impersonated client must be held to the chart's RBAC"
    );
    as_operator
}

/// The Lease was created in the release namespace and has been renewed since.
async fn assert_lease_renewed(admin: &Client) {
    let leases = Api::<Lease>::namespaced(admin.clone(), RELEASE_NS);
    let renewed = || async {
        let spec = leases
            .get("contact-operator")
            .await
            .expect("the lease is in the release namespace")
            .spec
            .expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("operator-0"));
        spec.renew_time.is_some() && spec.renew_time != spec.acquire_time
    };
    eventually(
        "the lease was never renewed",
        Duration::from_secs(15),
        renewed,
    )
    .await;
}

/// The Event goes out beside the status write, so it may land just after it.
async fn assert_an_event(admin: &Client) {
    eventually(
        "no Event about the tenant under the chart's RBAC",
        Duration::from_secs(15),
        || async { !event_reasons(admin).await.is_empty() },
    )
    .await;
}

/// Deletion under the same RBAC: the finalizer's cleanup (detaching the data from the tenant)
/// runs and releases the object.
async fn assert_deletion_completes(admin: &Client) {
    tenants(admin)
        .delete("acme", &Default::default())
        .await
        .expect("delete");
    eventually(
        "the finalizer was not released under the chart's RBAC",
        Duration::from_secs(30),
        || async { tenants(admin).get_opt("acme").await.expect("get").is_none() },
    )
    .await;
    let keys = get::<Secret>(admin, "acme-keys").await;
    assert!(
        keys.owner_references().is_empty(),
        "detached from the deleted tenant"
    );
}

/// The chart's modes.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `watchNamespaces` empty: a ClusterRole.
    Cluster,
    /// `watchNamespaces: [NS]`: a Role in NS.
    Namespaced,
}

impl Mode {
    fn values(self) -> Vec<String> {
        match self {
            Mode::Cluster => Vec::new(),
            Mode::Namespaced => vec![format!("watchNamespaces={{{NS}}}")],
        }
    }

    fn watch(self) -> Vec<String> {
        match self {
            Mode::Cluster => Vec::new(),
            Mode::Namespaced => vec![NS.to_string()],
        }
    }
}

/// A control plane with the chart installed in `mode` (after `edit`), the tenant's namespace and
/// channel Secret, and an operator replica running as the chart's ServiceAccount.
async fn operator_under_chart(
    mode: Mode,
    edit: impl Fn(String) -> String,
) -> (ControlPlane, Client, Replica) {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let admin = cp.client();
    create_namespace(&admin, RELEASE_NS).await;
    create_namespace(&admin, NS).await;
    put_channel_secret(&admin).await;
    let values = mode.values();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let sa = install_chart(&admin, &values, edit).await;
    let as_operator = client_as(&cp, &sa).await;
    if let Mode::Namespaced = mode {
        assert!(
            Api::<Secret>::all(as_operator.clone())
                .list_metadata(&Default::default())
                .await
                .is_err(),
            "namespaced mode grants no cluster-wide Secret access"
        );
    }
    let mut settings = replica_settings(RELEASE_NS, "operator-0");
    settings.config.watch_namespaces = mode.watch();
    let replica = start_replica(as_operator, settings);
    (cp, admin, replica)
}

async fn provisions_a_tenant_with_only_the_charts_rbac(mode: Mode) {
    let (_cp, admin, replica) = operator_under_chart(mode, |y| y).await;
    let Replica {
        health,
        metrics,
        stop,
        task: operator,
    } = replica;

    create_tenant(&admin, tenant_json()).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while condition(&admin, "Provisioned")
        .await
        .is_none_or(|c| c.0 != "True")
    {
        assert!(
            !operator.is_finished(),
            "the operator stopped: {:?}",
            operator.await
        );
        assert!(
            Instant::now() < deadline,
            "{mode:?}: not provisioned under the chart's RBAC (reconcile errors: {})",
            metrics
                .encode()
                .lines()
                .filter(|l| l.starts_with("contact_operator_reconcile_errors_total"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Everything a reconcile does went through: children (the key Secret among them), the
    // status, an Event, and the Lease in the release namespace.
    assert_lease_renewed(&admin).await;
    assert!(health.is_leader());
    get::<Secret>(&admin, "acme-keys").await;
    assert_an_event(&admin).await;
    assert!(
        !metrics
            .encode()
            .lines()
            .any(|l| l.starts_with("contact_operator_reconcile_errors_total")),
        "{mode:?}: no reconcile failed for want of a permission:\n{}",
        metrics.encode()
    );
    assert_deletion_completes(&admin).await;

    let _ = stop.map(|s| s.send(()));
    let stopped = tokio::time::timeout(Duration::from_secs(30), operator).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "the operator exits cleanly: {stopped:?}"
    );
}

#[tokio::test]
async fn the_operator_provisions_a_tenant_with_only_the_charts_rbac() {
    provisions_a_tenant_with_only_the_charts_rbac(Mode::Cluster).await;
}

#[tokio::test]
async fn namespaced_mode_is_enough_with_no_cluster_wide_rights() {
    provisions_a_tenant_with_only_the_charts_rbac(Mode::Namespaced).await;
}

/// The proof is not vacuous: the same chart with `patch` taken off the tenants' status (the
/// operator's status write) never gets a tenant to `Provisioned=True`, and the failure shows.
#[tokio::test]
async fn a_verb_taken_out_of_the_namespaced_role_is_missed() {
    let without_status_patch = |yaml: String| {
        let rule = "resources: [contacttenants/status]\n    verbs: [get, patch]";
        assert!(yaml.contains(rule), "the rendered chart names the rule");
        yaml.replace(rule, "resources: [contacttenants/status]\n    verbs: [get]")
    };
    let (_cp, admin, replica) = operator_under_chart(Mode::Namespaced, without_status_patch).await;
    create_tenant(&admin, tenant_json()).await;
    let failed = || async {
        replica
            .metrics
            .encode()
            .lines()
            .any(|l| l.starts_with("contact_operator_reconcile_errors_total"))
    };
    eventually("no reconcile failed", Duration::from_secs(60), failed).await;
    assert!(!is_provisioned(&admin).await);
    let _ = replica.stop.map(|s| s.send(()));
}
