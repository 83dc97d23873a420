//! The Helm chart, rendered by a real helm CLI and created on a real control plane.

use contact_tests::controlplane::ControlPlane;
use contact_tests::kube_helpers::{apply_yaml, create_namespace, parse_documents};
use contact_tests::tools::run_helm;
use kube::api::DynamicObject;

const CHART: &str = "charts/contact-operator";

fn render(sets: &[&str]) -> Vec<DynamicObject> {
    let mut args = vec![
        "template",
        "contact",
        CHART,
        "--namespace",
        "contact-system",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = run_helm(&args);
    assert!(
        out.success,
        "helm template {sets:?} failed:\n{}",
        out.stderr
    );
    parse_documents(&out.stdout).expect("rendered YAML parses")
}

fn kinds(objs: &[DynamicObject]) -> Vec<String> {
    objs.iter()
        .map(|o| o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default())
        .collect()
}

fn find<'a>(objs: &'a [DynamicObject], kind: &str) -> Option<&'a DynamicObject> {
    objs.iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
}

#[test]
fn the_chart_lints_clean() {
    let out = run_helm(&["lint", "--strict", CHART]);
    assert!(
        out.success,
        "helm lint --strict failed:\n{}{}",
        out.stdout, out.stderr
    );
}

#[test]
fn default_values_render_a_hardened_ha_operator() {
    let objs = render(&[]);
    let kinds = kinds(&objs);
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "default render lacks a {kind}: {kinds:?}"
        );
    }
    let deploy = find(&objs, "Deployment").unwrap();
    assert_eq!(
        deploy.data["spec"]["replicas"], 2,
        "two replicas with leader election by default"
    );
    let pod = &deploy.data["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env = c["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "CONTACT_LEADER_ELECTION" && e["value"] == "true")
    );

    // Least privilege: no wildcard anywhere, and no access to pods/exec or RBAC objects.
    for role in objs
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind.ends_with("Role")))
    {
        for rule in role.data["rules"].as_array().unwrap() {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    !rule[field].as_array().unwrap().iter().any(|v| v == "*"),
                    "wildcard in {field} of {:?}",
                    role.metadata.name
                );
            }
            let resources = rule["resources"].as_array().unwrap();
            assert!(
                !resources
                    .iter()
                    .any(|r| r == "pods/exec" || r == "clusterroles" || r == "roles")
            );
        }
    }
}

#[test]
fn the_chart_crd_is_crdgen_output_byte_for_byte() {
    let out = run_helm(&[
        "template",
        "contact",
        CHART,
        "--show-only",
        "templates/crds.yaml",
    ]);
    assert!(out.success, "{}", out.stderr);
    let generated = contact_crds::crds_yaml().unwrap();
    let body = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with('#') && *l != "---" && !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        body(&out.stdout),
        body(&generated),
        "the chart's CRD differs from crdgen's output"
    );
    let crd = find(
        &parse_documents(&out.stdout).unwrap(),
        "CustomResourceDefinition",
    )
    .cloned()
    .unwrap();
    assert_eq!(
        crd.metadata
            .annotations
            .unwrap_or_default()
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep"),
        "uninstalling the chart must not delete the CRD (and with it every tenant)"
    );
}

#[test]
fn value_switches_change_what_renders() {
    let objs = render(&[
        "crds.create=false",
        "replicaCount=1",
        "leaderElection.enabled=false",
    ]);
    let k = kinds(&objs);
    assert!(
        !k.iter().any(|k| k == "CustomResourceDefinition"),
        "crds.create=false leaves the CRD out"
    );
    assert!(
        !k.iter().any(|k| k == "PodDisruptionBudget"),
        "one replica needs no PDB"
    );
    let roles: Vec<_> = objs
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "Role"))
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert!(
        !roles.iter().any(|r| r.ends_with("-leader-election")),
        "no lease RBAC without leader election: {roles:?}"
    );
    assert!(
        roles.iter().any(|r| r.ends_with("-deletions")),
        "the record of deletions is written with or without leader election: {roles:?}"
    );

    let objs = render(&[
        "serviceMonitor.enabled=true",
        "grafanaDashboard.enabled=true",
        "hostingLocations.eu-ireland.topology\\.kubernetes\\.io/region=eu-west-1",
        "watchNamespaces={tenant-a,tenant-b}",
        "concurrency=64",
    ]);
    let k = kinds(&objs);
    assert!(k.iter().any(|k| k == "ServiceMonitor"));
    let dashboard = objs
        .iter()
        .find(|o| o.metadata.name.as_deref() == Some("contact-contact-operator-dashboard"))
        .expect("dashboard ConfigMap");
    let json = dashboard.data["data"]["contact-operator.json"]
        .as_str()
        .unwrap();
    serde_json::from_str::<serde_json::Value>(json).expect("the dashboard is valid JSON");
    let env = &find(&objs, "Deployment").unwrap().data["spec"]["template"]["spec"]["containers"][0]
        ["env"];
    let value = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(value("CONTACT_WATCH_NAMESPACES"), "tenant-a,tenant-b");
    // Namespaced mode: a Role per watched namespace, nothing cluster-wide.
    assert!(
        !k.iter().any(|k| k.starts_with("Cluster")),
        "watchNamespaces grants nothing cluster-wide: {k:?}"
    );
    let mut role_namespaces: Vec<_> = objs
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "Role"))
        .filter(|o| o.metadata.name.as_deref() == Some("contact-contact-operator"))
        .filter_map(|o| o.metadata.namespace.clone())
        .collect();
    role_namespaces.sort();
    assert_eq!(role_namespaces, vec!["tenant-a", "tenant-b"]);
    assert_eq!(value("CONTACT_CONCURRENCY"), "64");
    let locations: serde_json::Value =
        serde_json::from_str(value("CONTACT_HOSTING_LOCATIONS").as_str().unwrap()).unwrap();
    assert_eq!(
        locations["eu-ireland"]["topology.kubernetes.io/region"],
        "eu-west-1"
    );
}

#[test]
fn the_values_schema_refuses_bad_values() {
    for (set, expected) in [
        ("replicaCount=0", "replicaCount"),
        ("concurrency=0", "concurrency"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("logFormat=xml", "logFormat"),
        ("metrics.port=80", "port"),
        ("imagTag=typo", "imagTag"),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
    ] {
        let out = run_helm(&["template", "contact", CHART, "--set", set]);
        assert!(
            !out.success,
            "--set {set} must be refused by values.schema.json"
        );
        assert!(
            out.stderr.contains(expected),
            "--set {set}: the error should name {expected}:\n{}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn the_rendered_chart_is_accepted_by_a_real_apiserver() {
    let cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client();
    create_namespace(&client, "contact-system").await.unwrap();
    let out = run_helm(&[
        "template",
        "contact",
        CHART,
        "--namespace",
        "contact-system",
    ]);
    assert!(out.success, "{}", out.stderr);
    // The CRD first (discovery must see it before anything uses it), then everything else.
    let crd_yaml = run_helm(&[
        "template",
        "contact",
        CHART,
        "--show-only",
        "templates/crds.yaml",
    ])
    .stdout;
    contact_tests::kube_helpers::install_crds(&client, &crd_yaml)
        .await
        .expect("the chart's CRD installs");
    let applied = apply_yaml(&client, &out.stdout, "contact-system")
        .await
        .expect("every rendered object is accepted");
    assert!(applied.len() >= 9, "applied {} objects", applied.len());
    // A tenant from the examples is accepted once the chart's CRD is in.
    let minimal =
        std::fs::read_to_string(contact_tests::repo_root().join("examples/minimal.yaml")).unwrap();
    apply_yaml(&client, &minimal, "contact-system")
        .await
        .expect("the minimal example applies on the chart's CRD");
}
