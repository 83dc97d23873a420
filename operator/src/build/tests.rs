//! Unit tests of the builders: the fields that matter asserted one by one, plus snapshots of the
//! two workload shapes so any change to them is reviewed.

use super::secret::SECRET_KEYS;
use super::workload::pod_template;
use super::*;
use crate::tenant::{Database, ValidatedTenant};
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn tenant() -> ValidatedTenant {
    ValidatedTenant::test()
}

fn owned_by_tenant(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|o| o.len() == 1 && o[0].uid == "0000-uid" && o[0].controller == Some(true))
}

#[test]
fn service_account_mounts_no_token() {
    let sa = build_service_account(&tenant());
    assert_eq!(sa.automount_service_account_token, Some(false));
    assert!(owned_by_tenant(&sa.metadata));
}

#[test]
fn secret_generates_missing_and_keeps_existing() {
    let t = tenant();
    let mut rng = StdRng::seed_from_u64(7);
    let first = build_secret(&t, &BTreeMap::new(), &mut rng);
    let data = first.data.clone().unwrap_or_default();
    assert_eq!(data.len(), SECRET_KEYS.len());
    for (k, _) in SECRET_KEYS {
        assert!(
            data.get(*k).is_some_and(|v| v.0.len() >= 20),
            "{k} generated"
        );
    }
    // Second build with what exists: identical, whatever the RNG says.
    let mut other_rng = StdRng::seed_from_u64(99);
    let second = build_secret(&t, &data, &mut other_rng);
    assert_eq!(second.data, first.data);
    // A partially filled secret keeps its value and only fills the gap.
    let partial = BTreeMap::from([(
        "admin-password".to_string(),
        ByteString(b"hunter2-hunter2".to_vec()),
    )]);
    let third = build_secret(&t, &partial, &mut other_rng);
    let d3 = third.data.unwrap_or_default();
    assert_eq!(
        d3.get("admin-password").map(|v| v.0.as_slice()),
        Some(&b"hunter2-hunter2"[..])
    );
    assert_ne!(d3.get("session-key"), data.get("session-key"));
    // Data-bearing: labelled, not owned.
    assert!(first.metadata.owner_references.is_none());
    assert_eq!(
        first
            .metadata
            .labels
            .unwrap_or_default()
            .get(crate::labels::DATA)
            .map(String::as_str),
        Some("true")
    );
}

#[test]
fn config_map_renders_channels_routing_and_window() {
    let t = tenant();
    let next = t
        .window
        .map(|w| w.state_at(chrono::Utc::now()).occurrence());
    let cm = build_config_map(&t, next);
    let body = cm
        .data
        .unwrap_or_default()
        .remove("runtime.json")
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["tenant"]["name"], "acme");
    assert_eq!(v["auth"]["public_url"], "https://acme.contact.example.com");
    assert_eq!(v["channels"][0]["type"], "WHATSAPP");
    assert_eq!(
        v["channels"][0]["key_id_file"],
        "/var/run/contact/secrets/acme-sinch/key-id"
    );
    assert_eq!(
        v["channels"][0]["webhook_secret_file"],
        "/var/run/contact/secrets/acme-sinch/webhook-secret"
    );
    assert_eq!(v["routing"]["auto_allocate_by_default"], true);
    assert_eq!(v["routing"]["return_to_queue_after_disconnect_secs"], 60);
    assert_eq!(v["retention"]["audit_log_days"], 365);
    assert!(
        v["maintenance"]["start"]
            .as_str()
            .is_some_and(|s| s.contains("T22:00:00"))
    );
    assert!(!body.contains("hunter"), "no secret values in the config");
    assert!(owned_by_tenant(&cm.metadata));
}

#[test]
fn sqlite_tenant_gets_a_statefulset_with_a_retained_pvc_template() {
    let Workload::StatefulSet(sts) = build_workload(&tenant(), 1) else {
        panic!("sqlite must be a StatefulSet");
    };
    let spec = sts.spec.clone();
    assert_eq!(spec.replicas, Some(1));
    let tpl = &spec.volume_claim_templates.clone().expect("pvc template")[0];
    assert_eq!(tpl.metadata.name.as_deref(), Some("data"));
    assert_eq!(
        tpl.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::labels::DATA))
            .map(String::as_str),
        Some("true")
    );
    let pol = spec
        .persistent_volume_claim_retention_policy
        .expect("policy");
    assert_eq!(pol.when_deleted.as_deref(), Some("Retain"));
    assert!(owned_by_tenant(&sts.metadata));
    insta::assert_yaml_snapshot!("statefulset_sqlite", sts);
}

#[test]
fn postgres_tenant_gets_a_deployment_with_n_replicas_and_a_pdb() {
    let t = tenant().with_postgres(3);
    let Workload::Deployment(d) = build_workload(&t, 3) else {
        panic!("postgres must be a Deployment");
    };
    assert_eq!(d.spec.replicas, Some(3));
    let env = d
        .spec
        .template
        .spec
        .as_ref()
        .map(|p| p.containers[0].env.clone().unwrap_or_default())
        .unwrap_or_default();
    let db = env
        .iter()
        .find(|e| e.name == "CONTACT_DATABASE_URL")
        .expect("CONTACT_DATABASE_URL");
    let sel = db
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("from secret");
    assert_eq!((sel.name.as_str(), sel.key.as_str()), ("acme-db", "url"));
    assert!(build_pdb(&t, 3).is_some());
    assert!(build_pdb(&t, 1).is_none(), "no PDB for a single replica");
    insta::assert_yaml_snapshot!("deployment_postgres", d);
}

#[test]
fn pods_are_hardened_and_probed() {
    for t in [tenant(), tenant().with_postgres(2)] {
        let tpl = pod_template(&t);
        let pod = tpl.spec.expect("pod spec");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.expect("pod security");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.map(|s| s.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let c = &pod.containers[0];
        let sc = c.security_context.clone().expect("container security");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
        assert!(
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|r| r.contains_key("cpu"))
        );
        let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(c.ports.as_ref().map(|p| p[0].container_port), Some(8080));
        // Writable scratch space, since the root filesystem is read-only.
        assert!(
            c.volume_mounts
                .as_ref()
                .is_some_and(|m| m.iter().any(|m| m.mount_path == "/tmp"))
        );
    }
}

#[test]
fn hosting_location_becomes_required_node_affinity() {
    let mut t = tenant();
    assert!(pod_template(&t).spec.and_then(|s| s.affinity).is_none());
    t.node_labels = BTreeMap::from([(
        "topology.kubernetes.io/region".to_string(),
        "eu-west-1".to_string(),
    )]);
    let aff = pod_template(&t)
        .spec
        .and_then(|s| s.affinity)
        .and_then(|a| a.node_affinity)
        .expect("affinity");
    let term = &aff
        .required_during_scheduling_ignored_during_execution
        .expect("required")
        .node_selector_terms[0];
    let expr = &term.match_expressions.clone().expect("exprs")[0];
    assert_eq!(expr.key, "topology.kubernetes.io/region");
    assert_eq!(expr.values, Some(vec!["eu-west-1".to_string()]));
}

#[test]
fn service_and_ingress_route_the_host_to_port_8080() {
    let t = tenant();
    let svc = build_service(&t);
    assert_eq!(
        svc.spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(|p| p[0].port),
        Some(8080)
    );
    let ing = build_ingress(&t);
    let spec = ing.spec.expect("spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let tls = &spec.tls.expect("tls")[0];
    assert_eq!(tls.secret_name.as_deref(), Some("acme-tls"));
    assert_eq!(
        tls.hosts,
        Some(vec!["acme.contact.example.com".to_string()])
    );
    let rule = &spec.rules.expect("rules")[0];
    assert_eq!(rule.host.as_deref(), Some("acme.contact.example.com"));
    assert!(owned_by_tenant(&ing.metadata) && owned_by_tenant(&svc.metadata));
}

#[test]
fn network_policy_admits_only_ingress_and_own_namespace() {
    let np = build_network_policy(&tenant(), "ingress-nginx");
    let spec = np.spec.expect("spec");
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
    // Egress: anywhere but the link-local ranges (cloud instance metadata and credentials).
    let egress = spec.egress.clone().expect("egress");
    let blocks: Vec<_> = egress[0]
        .to
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.ip_block)
        .map(|b| (b.cidr, b.except.unwrap_or_default()))
        .collect();
    assert_eq!(
        blocks,
        vec![
            ("0.0.0.0/0".to_string(), vec!["169.254.0.0/16".to_string()]),
            ("::/0".to_string(), vec!["fe80::/10".to_string()]),
        ]
    );
    let dns: Vec<_> = egress[1]
        .ports
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.port, p.protocol))
        .collect();
    assert!(
        egress[1].to.is_none(),
        "DNS to any address, link-local included"
    );
    assert_eq!(
        dns,
        vec![
            (Some(IntOrString::Int(53)), Some("UDP".to_string())),
            (Some(IntOrString::Int(53)), Some("TCP".to_string())),
        ]
    );
    let rules = spec.ingress.expect("rules");
    assert_eq!(rules.len(), 1);
    let names: Vec<String> = rules[0]
        .from
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            p.namespace_selector?
                .match_labels?
                .get("kubernetes.io/metadata.name")
                .cloned()
        })
        .collect();
    assert_eq!(
        names,
        vec!["ingress-nginx".to_string(), "tenant-acme".to_string()]
    );
}

#[test]
fn backups_get_an_unowned_pvc_and_a_forbid_concurrency_cronjob() {
    let t = tenant();
    let pvc = build_backup_pvc(&t).expect("pvc");
    assert!(pvc.metadata.owner_references.is_none());
    assert_eq!(
        pvc.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::labels::TENANT))
            .map(String::as_str),
        Some("acme")
    );
    let cj = build_backup_cronjob(&t, false).expect("cronjob");
    let spec = cj.spec.clone();
    assert_eq!(spec.schedule, "0 2 * * *");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let args = spec
        .job_template
        .spec
        .and_then(|j| j.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default();
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--retain-days" && w[1] == "14")
    );
    assert!(owned_by_tenant(&cj.metadata));
    let mut off = t.clone();
    off.backups = None;
    assert!(build_backup_pvc(&off).is_none() && build_backup_cronjob(&off, false).is_none());
    assert_eq!(
        build_backup_cronjob(&t, true).and_then(|c| c.spec.suspend),
        Some(true)
    );
}

#[test]
fn cloudnativepg_cluster_is_a_dynamic_object_only_for_cnpg() {
    let mut t = tenant().with_postgres(2);
    assert!(build_cnpg_cluster(&t, None).is_none());
    t.database = Database::CloudNativePg {
        instances: 3,
        size: "20Gi".into(),
    };
    let c = build_cnpg_cluster(&t, None).expect("cluster");
    assert_eq!(
        c.types.as_ref().map(|t| t.api_version.as_str()),
        Some("postgresql.cnpg.io/v1")
    );
    assert_eq!(c.data["spec"]["instances"], 3);
    assert_eq!(c.data["spec"]["storage"]["size"], "20Gi");
    assert!(
        c.metadata.owner_references.is_none(),
        "the database is data: not owned"
    );
    let Workload::Deployment(d) = build_workload(&t, 2) else {
        panic!("cnpg runs a Deployment")
    };
    let env = d
        .spec
        .template
        .spec
        .map(|p| p.containers[0].env.clone().unwrap_or_default())
        .unwrap_or_default();
    let db = env
        .iter()
        .find(|e| e.name == "CONTACT_DATABASE_URL")
        .and_then(|e| e.value_from.clone())
        .and_then(|v| v.secret_key_ref)
        .expect("url");
    assert_eq!(db.name, "acme-db-app");
}

#[test]
fn builders_are_deterministic() {
    let t = tenant();
    assert_eq!(build_workload(&t, 1), build_workload(&t, 1));
    assert_eq!(build_config_map(&t, None), build_config_map(&t, None));
    assert_eq!(build_network_policy(&t, "x"), build_network_policy(&t, "x"));
}
