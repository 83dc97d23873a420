//! The contract between the operator and the runtime: the settings file the operator renders
//! into the tenant's ConfigMap is read by the runtime's own loader, field for field. Both sides
//! refuse unknown fields, so a rename on either side fails here instead of in a cluster.

use std::collections::HashMap;

use contact_crds::v1alpha1::ContactTenant;
use contact_operator::build::build_config_map;
use contact_operator::config::OperatorConfig;
use contact_operator::tenant::validate;
use contact_runtime::config::Settings;

fn tenant_from_example(file: &str) -> ContactTenant {
    let text =
        std::fs::read_to_string(contact_tests::repo_root().join("examples").join(file)).unwrap();
    let docs = contact_tests::kube_helpers::parse_documents(&text).unwrap();
    let obj = docs
        .into_iter()
        .find(|d| d.types.as_ref().is_some_and(|t| t.kind == "ContactTenant"))
        .expect("the example has a tenant");
    let mut tenant: ContactTenant =
        serde_json::from_value(serde_json::to_value(obj).unwrap()).unwrap();
    // What the apiserver adds before the operator ever sees an object.
    tenant.metadata.namespace = Some("tenant-test".into());
    tenant.metadata.uid = Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into());
    tenant
}

#[test]
fn the_runtime_reads_what_the_operator_renders() {
    for example in ["minimal.yaml", "production.yaml", "external-postgres.yaml"] {
        let tenant = tenant_from_example(example);
        let config = OperatorConfig {
            locations: [
                (
                    "eu-ireland".to_owned(),
                    [(
                        "topology.kubernetes.io/region".to_owned(),
                        "eu-west-1".to_owned(),
                    )]
                    .into(),
                ),
                (
                    "us-east".to_owned(),
                    [(
                        "topology.kubernetes.io/region".to_owned(),
                        "us-east-1".to_owned(),
                    )]
                    .into(),
                ),
            ]
            .into(),
            ..OperatorConfig::default()
        };
        let validated = validate(&tenant, &config).unwrap_or_else(|e| panic!("{example}: {e}"));
        let now = chrono::Utc::now();
        let next = validated
            .window
            .as_ref()
            .map(|w| w.state_at(now).occurrence());
        let cm = build_config_map(&validated, next);
        let body = cm
            .data
            .unwrap_or_default()
            .remove("runtime.json")
            .expect("rendered settings");

        // The mounted Secret files the rendering names, as the kubelet would lay them out.
        let dir = tempfile::tempdir().unwrap();
        let mut rewritten = body.clone();
        for channel in &tenant.spec.channels {
            let secret_dir = contact_operator::build::secret_mount_path(
                &channel.conversation_api.credentials_secret_ref.name,
            );
            let local = dir
                .path()
                .join(channel.conversation_api.credentials_secret_ref.name.clone());
            std::fs::create_dir_all(&local).unwrap();
            for (key, value) in [
                ("key-id", "kid"),
                ("key-secret", "ksecret"),
                ("webhook-secret", "whsecret"),
            ] {
                std::fs::write(local.join(key), format!("{value}\n")).unwrap();
            }
            rewritten = rewritten.replace(&secret_dir, &local.display().to_string());
        }

        let settings = Settings::from_yaml(&rewritten).unwrap_or_else(|e| {
            panic!("{example}: the runtime refuses the operator's settings: {e}\n{body}")
        });
        let settings = settings
            .with_env(&HashMap::new())
            .unwrap_or_else(|e| panic!("{example}: {e}"));
        assert_eq!(settings.tenant.name, tenant.metadata.name.clone().unwrap());
        assert_eq!(settings.tenant.display_name, tenant.spec.display_name);
        assert_eq!(
            settings.channels.len(),
            tenant.spec.channels.len(),
            "{example}"
        );
        for (app, spec) in settings.channels.iter().zip(&tenant.spec.channels) {
            assert_eq!(app.name, spec.name);
            assert_eq!(app.app_id, spec.conversation_api.app_id);
            assert_eq!(app.project_id, spec.conversation_api.project_id);
            assert_eq!(
                app.key_id, "kid",
                "secrets come from the mounted files, newline trimmed"
            );
            assert_eq!(app.key_secret.expose(), "ksecret");
            assert_eq!(app.webhook_secret.expose(), "whsecret");
            assert!(app.api_base().contains("conversation.api.sinch.com"));
        }
        let r = &tenant.spec.retention;
        assert_eq!(
            settings.retention.anonymize_conversations_after_days,
            i64::from(r.anonymize_conversations_after_days)
        );
        assert_eq!(
            settings.retention.delete_conversations_after_days,
            i64::from(r.delete_conversations_after_days)
        );
        assert_eq!(
            settings.retention.audit_log_days,
            i64::from(r.audit_log_days)
        );
        assert_eq!(
            settings.routing.max_conversations_per_agent,
            tenant.spec.routing.max_conversations_per_agent
        );
        assert_eq!(
            settings.routing.auto_allocate_by_default,
            tenant.spec.routing.auto_allocate_by_default
        );
        let window = settings
            .maintenance
            .expect("the next maintenance window reaches the runtime");
        assert!(window.end > window.start);
        assert!(
            settings
                .auth
                .public_url
                .as_deref()
                .is_some_and(|u| u.ends_with(&tenant.spec.ingress.host)),
            "invite links use the tenant's public URL"
        );
    }
}

#[test]
fn the_backup_job_speaks_the_runtime_cli_and_its_key_decodes() {
    use clap::Parser;

    let tenant = tenant_from_example("minimal.yaml");
    let validated = validate(&tenant, &OperatorConfig::default()).unwrap();
    let job = contact_operator::build::build_backup_cronjob(&validated, false)
        .expect("backups are on by default");
    let pod = job
        .spec
        .job_template
        .spec
        .expect("job spec")
        .template
        .spec
        .expect("pod spec");
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap_or_default();
    let argv = std::iter::once("contact-runtime".to_owned()).chain(args.iter().cloned());
    let cli = contact_runtime::cli::Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("the runtime refuses the backup job's arguments {args:?}: {e}"));
    // The runtime leaves its result where the kubelet reads the termination message.
    match cli.command {
        Some(contact_runtime::cli::Command::Backup {
            termination_log, ..
        }) => {
            assert_eq!(
                termination_log.as_deref().and_then(|p| p.to_str()),
                container.termination_message_path.as_deref(),
                "--termination-log is the container's terminationMessagePath"
            );
            assert!(termination_log.is_some());
        }
        other => panic!("the backup job runs {other:?}, not `backup`"),
    }
    assert_eq!(
        container.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError"),
        "a crash before the runtime writes its error still leaves a reason"
    );

    // What the runtime writes there on success is what the operator reads into status.lastBackup.
    let result = contact_runtime::backup::BackupResult {
        name: "backup-20261125T020003Z".into(),
        time: "2026-11-25T02:00:03.250Z".into(),
        size_bytes: 48_213,
        pruned: vec!["backup-20261110T020001Z".into()],
    };
    let record =
        contact_operator::reconcile::parse_result(&serde_json::to_string(&result).unwrap())
            .expect("the operator reads the runtime's result line");
    assert_eq!(record.name, result.name);
    assert_eq!(record.size_bytes, Some(48_213));
    assert_eq!(record.time.0.as_millisecond(), 1_795_572_003_250);

    // The generated backup key is one the runtime's backup command accepts.
    let secret =
        contact_operator::build::build_secret(&validated, &Default::default(), &mut rand::rng());
    let key = &secret.data.unwrap()["backup-encryption-key"];
    let text = String::from_utf8(key.0.clone()).unwrap();
    contact_runtime::backup::BackupKey::parse(&text)
        .unwrap_or_else(|e| panic!("the runtime refuses the operator's backup key: {e}"));
}
