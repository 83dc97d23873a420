//! The ContactTenant CRD on a real kube-apiserver: it installs, every example applies, every
//! invalid example is refused with its documented message, and a full object loses nothing.

use std::path::Path;

use contact_crds::v1alpha1::*;
use contact_tests::controlplane::ControlPlane;
use contact_tests::kube_helpers::{
    TEST_MANAGER, apply_yaml, create_namespace, install_crds, parse_documents,
};
use contact_tests::repo_root;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource};

async fn control_plane_with_crd() -> (ControlPlane, Client) {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let client = cp.client();
    let yaml = std::fs::read_to_string(repo_root().join(contact_crds::GENERATED_PATHS[0]))
        .expect("CRD YAML is committed");
    let installed = install_crds(&client, &yaml)
        .await
        .expect("the generated CRD installs");
    assert_eq!(installed.len(), 1);
    (cp, client)
}

async fn namespace(client: &Client, name: &str) {
    create_namespace(client, name)
        .await
        .expect("namespace is created");
}

fn yaml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn every_example_applies() {
    let (_cp, client) = control_plane_with_crd().await;
    let files = yaml_files(&repo_root().join("examples"));
    assert!(
        files.len() >= 3,
        "examples/ holds the minimal, production and external-postgres tenants"
    );
    for (i, file) in files.iter().enumerate() {
        let ns = format!("example-{i}");
        namespace(&client, &ns).await;
        let yaml = std::fs::read_to_string(file).expect("readable example");
        let applied = apply_yaml(&client, &yaml, &ns)
            .await
            .unwrap_or_else(|e| panic!("{} must apply: {e}", file.display()));
        let tenants: Vec<_> = applied
            .iter()
            .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "ContactTenant"))
            .collect();
        assert_eq!(
            tenants.len(),
            1,
            "{} declares one ContactTenant",
            file.display()
        );
        // What the apiserver stored must deserialize into our types, defaults included.
        let typed: ContactTenant =
            serde_json::from_value(serde_json::to_value(tenants[0]).expect("serializable"))
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: stored object does not match the Rust types: {e}",
                        file.display()
                    )
                });
        assert!(!typed.spec.display_name.is_empty());
    }
}

/// The expectation written in an invalid example's header.
enum Expect {
    OnCreate(String),
    OnUpdate(String),
}

fn expectation(text: &str, file: &Path) -> Expect {
    for line in text.lines() {
        if let Some(m) = line.strip_prefix("# expect: ") {
            return Expect::OnCreate(m.trim().to_owned());
        }
        if let Some(m) = line.strip_prefix("# expect-on-update: ") {
            return Expect::OnUpdate(m.trim().to_owned());
        }
    }
    panic!(
        "{} has no `# expect:` or `# expect-on-update:` header",
        file.display()
    )
}

#[tokio::test]
async fn invalid_examples_are_refused_with_their_message() {
    let (_cp, client) = control_plane_with_crd().await;
    namespace(&client, "invalid").await;
    let ar = ApiResource::erase::<ContactTenant>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "invalid", &ar);
    let ssa = PatchParams::apply(TEST_MANAGER).force();

    let files = yaml_files(&repo_root().join("examples/invalid"));
    assert!(
        files.len() >= 20,
        "at least 20 invalid examples, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let docs = parse_documents(&text).expect("invalid examples are still YAML objects");
        let name = docs[0].metadata.name.clone().expect("named");
        let (expected, result) = match expectation(&text, file) {
            Expect::OnCreate(m) => {
                assert_eq!(docs.len(), 1, "{}", file.display());
                (
                    m,
                    api.create(&PostParams::default(), &docs[0])
                        .await
                        .map(|_| ()),
                )
            }
            Expect::OnUpdate(m) => {
                assert_eq!(
                    docs.len(),
                    2,
                    "{}: a valid object, then the refused update",
                    file.display()
                );
                if let Err(e) = api.patch(&name, &ssa, &Patch::Apply(&docs[0])).await {
                    failures.push(format!(
                        "{}: the first document must be valid, got {e}",
                        file.display()
                    ));
                    continue;
                }
                (
                    m,
                    api.patch(&name, &ssa, &Patch::Apply(&docs[1]))
                        .await
                        .map(|_| ()),
                )
            }
        };
        match result {
            Ok(()) => failures.push(format!(
                "{}: accepted, expected refusal with {expected:?}",
                file.display()
            )),
            Err(kube::Error::Api(status))
                if status.code == 422 && status.message.contains(&expected) => {}
            Err(e) => failures.push(format!(
                "{}: expected a 422 containing {expected:?}, got {e}",
                file.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid examples misbehaved:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

fn full_tenant() -> ContactTenant {
    let channel = |name: &str, t: ChannelType, region: Region| ChannelSpec {
        name: name.into(),
        channel_type: t,
        conversation_api: ConversationApiSpec {
            region,
            project_id: "7d1f0c3e-5a2b-4c8d-9e0f-1a2b3c4d5e6f".into(),
            app_id: format!("APP-{name}"),
            credentials_secret_ref: CredentialsSecretRef {
                name: "creds".into(),
                key_id_key: "id".into(),
                key_secret_key: "secret".into(),
            },
            webhook_secret_ref: SecretKeyRef {
                name: "hooks".into(),
                key: "signing".into(),
            },
            api_base_url: Some("http://simulator.test:8090".into()),
            auth_url: Some("http://simulator.test:8090/oauth2/token".into()),
        },
    };
    let mut t = ContactTenant::new(
        "roundtrip",
        ContactTenantSpec {
            display_name: "Round Trip".into(),
            hosting_location: Some("eu-ireland".into()),
            ingress: IngressSpec {
                host: "rt.contact.example.com".into(),
                class_name: Some("nginx".into()),
                tls: Some(IngressTls {
                    secret_name: "rt-tls".into(),
                }),
                annotations: [("cert-manager.io/cluster-issuer".to_owned(), "le".to_owned())]
                    .into(),
            },
            channels: vec![
                channel("sms", ChannelType::Sms, Region::Us),
                channel("whatsapp", ChannelType::Whatsapp, Region::Eu),
                channel("messenger", ChannelType::Messenger, Region::Br),
                channel("instagram", ChannelType::Instagram, Region::Eu),
                channel("viber", ChannelType::Viber, Region::Eu),
                channel("telegram", ChannelType::Telegram, Region::Eu),
            ],
            routing: RoutingSpec {
                auto_allocate_by_default: false,
                max_conversations_per_agent: 7,
                return_to_queue_after_disconnect: "1m30s".into(),
            },
            retention: RetentionSpec {
                anonymize_conversations_after_days: 30,
                delete_conversations_after_days: 60,
                audit_log_days: 400,
            },
            backups: BackupsSpec {
                schedule: "15 3 * * 1-5".into(),
                time_zone: Some("Europe/Berlin".into()),
                retain_days: 21,
                storage: StorageSpec {
                    size: Quantity("20Gi".into()),
                    storage_class_name: Some("fast".into()),
                },
                suspend: true,
            },
            maintenance_window: MaintenanceWindowSpec {
                day: Weekday::Tuesday,
                start: "01:30".into(),
                duration: "1h30m".into(),
                time_zone: "America/New_York".into(),
            },
            database: DatabaseSpec {
                sqlite: None,
                postgres: Some(PostgresSpec {
                    secret_ref: UriSecretRef {
                        name: "db".into(),
                        key: "url".into(),
                    },
                }),
                cloud_native_pg: None,
            },
            runtime: RuntimeSpec {
                image: Some("registry.example.com/contact-runtime:1.2.3".into()),
                replicas: 3,
                resources: Some(ResourceRequirements {
                    requests: Some([("cpu".to_owned(), Quantity("250m".into()))].into()),
                    limits: Some([("memory".to_owned(), Quantity("1Gi".into()))].into()),
                    ..Default::default()
                }),
            },
            trial: Some(TrialSpec {
                ends_at: Time(
                    "2027-06-13T00:00:00Z"
                        .parse::<Timestamp>()
                        .expect("valid time"),
                ),
            }),
            deletion: DeletionSpec {
                data_grace_days: 10,
            },
            suspend: true,
        },
    );
    t.meta_mut().namespace = Some("roundtrip".into());
    t
}

#[tokio::test]
async fn a_full_tenant_round_trips_and_prints_its_columns() {
    let (_cp, client) = control_plane_with_crd().await;
    namespace(&client, "roundtrip").await;
    let api: Api<ContactTenant> = Api::namespaced(client.clone(), "roundtrip");
    let tenant = full_tenant();
    api.create(&PostParams::default(), &tenant)
        .await
        .expect("a full tenant is valid");
    let stored = api.get("roundtrip").await.expect("stored");
    // Pruning drops fields the schema does not declare; comparing JSON catches any.
    assert_eq!(
        serde_json::to_value(&stored.spec).unwrap(),
        serde_json::to_value(&tenant.spec).unwrap()
    );
    assert_eq!(stored.spec, tenant.spec);

    // The status subresource takes what the operator writes, and kubectl's columns show it.
    // Kubernetes stores times with second precision.
    let now = Time("2026-11-25T10:00:00Z".parse::<Timestamp>().unwrap());
    let status = ContactTenantStatus {
        observed_generation: stored.metadata.generation,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "Suspended".into(),
            message: "spec.suspend is true: the runtime is scaled to zero, data is kept".into(),
            last_transition_time: now.clone(),
            observed_generation: stored.metadata.generation,
        }],
        url: Some("https://rt.contact.example.com".into()),
        last_backup: Some(BackupRecord {
            time: now.clone(),
            name: "backup-1".into(),
            size_bytes: Some(1234),
        }),
        next_maintenance_window: Some(WindowRecord {
            start: now.clone(),
            end: now.clone(),
        }),
        pending_changes: vec![PendingChange {
            field: "runtime.image".into(),
            description: "image a -> b".into(),
        }],
    };
    let patch = serde_json::json!({"apiVersion": "contact.dev/v1alpha1", "kind": "ContactTenant", "status": status});
    let patched = api
        .patch_status(
            "roundtrip",
            &PatchParams::apply("contact-operator").force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("status patch is accepted");
    assert_eq!(patched.status.as_ref(), Some(&status));
    assert_eq!(
        patched.spec, tenant.spec,
        "a status write leaves the spec alone"
    );

    let req = http::Request::get("/apis/contact.dev/v1alpha1/namespaces/roundtrip/contacttenants")
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let table: serde_json::Value = client.request(req).await.expect("table view");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Ready",
            "Reason",
            "URL",
            "Last Backup",
            "Next Maintenance",
            "Age"
        ]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "roundtrip");
    assert_eq!(cells[1], "False");
    assert_eq!(cells[2], "Suspended");
    assert_eq!(cells[3], "https://rt.contact.example.com");
}

#[tokio::test]
async fn short_name_and_category_are_served() {
    let (_cp, client) = control_plane_with_crd().await;
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let req = http::Request::get("/apis/contact.dev/v1alpha1")
        .body(Vec::new())
        .unwrap();
    let list: serde_json::Value = client.request(req).await.expect("resource list");
    let res = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "contacttenants")
        .expect("contacttenants is served");
    assert_eq!(res["shortNames"], serde_json::json!(["ctn"]));
    assert_eq!(res["categories"], serde_json::json!(["contact"]));
    assert!(discovery.has_group("contact.dev"));
}

/// The cron rule is strict (five real fields with their ranges), but not stricter than the
/// CronJob controller: what it schedules, the CRD accepts.
#[tokio::test]
async fn cron_schedules_the_cronjob_controller_accepts_are_accepted() {
    let (_cp, client) = control_plane_with_crd().await;
    namespace(&client, "cron").await;
    let api: Api<ContactTenant> = Api::namespaced(client.clone(), "cron");
    let schedules = [
        "0 2 * * *",
        "*/15 0-6,22-23 * * *",
        "30 3 1,15 * 0",
        "59 23 31 12 7",
        "0 4 * JAN-MAR mon-fri",
        "5 0 ? * SUN",
        "0 0/6 1-31/2 */3 *",
        "@daily",
        "@weekly",
    ];
    for (i, schedule) in schedules.into_iter().enumerate() {
        let mut t = full_tenant();
        t.metadata.name = Some(format!("cron-{i}"));
        t.metadata.namespace = Some("cron".into());
        t.spec.backups.schedule = schedule.into();
        api.create(&PostParams::default(), &t)
            .await
            .unwrap_or_else(|e| panic!("{schedule:?} must be accepted: {e}"));
    }
}
