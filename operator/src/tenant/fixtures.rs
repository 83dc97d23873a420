//! Test fixtures: a validated tenant built field by field, with `with_*` tweaks.

use crate::maintenance::WeeklyWindow;
use crate::tenant::{Backups, Channel, Database, ValidatedTenant, default_resources};
use std::collections::BTreeMap;

impl ValidatedTenant {
    /// A SQLite tenant `acme` in `tenant-acme` with one WhatsApp channel, backups and a window.
    pub(crate) fn test() -> Self {
        Self {
            name: "acme".into(),
            namespace: "tenant-acme".into(),
            uid: "0000-uid".into(),
            display_name: "Acme Support".into(),
            host: "acme.contact.example.com".into(),
            ingress_class: Some("nginx".into()),
            tls_secret: Some("acme-tls".into()),
            ingress_annotations: BTreeMap::new(),
            channels: vec![Channel {
                name: "whatsapp-main".into(),
                channel_type: "WHATSAPP".into(),
                region: "eu".into(),
                project_id: "p1".into(),
                app_id: "a1".into(),
                api_base_url: "https://eu.conversation.api.sinch.com".into(),
                auth_url: None,
                credentials_secret: "acme-sinch".into(),
                key_id_key: "key-id".into(),
                key_secret_key: "key-secret".into(),
                webhook_secret: "acme-sinch".into(),
                webhook_key: "webhook-secret".into(),
            }],
            routing: contact_crds::v1alpha1::RoutingSpec::default(),
            return_to_queue_secs: 60,
            retention: contact_crds::v1alpha1::RetentionSpec::default(),
            backups: Some(Backups {
                schedule: "0 2 * * *".into(),
                time_zone: None,
                suspend: false,
                retain_days: 14,
                size: "10Gi".into(),
                storage_class: None,
            }),
            window: WeeklyWindow::parse("Saturday", "22:00", "4h", "UTC").ok(),
            database: Database::Sqlite {
                size: "5Gi".into(),
                storage_class: Some("fast".into()),
            },
            image: "ghcr.io/contact-dev/contact-runtime:1.0.0".into(),
            replicas: 1,
            resources: default_resources(),
            node_labels: BTreeMap::new(),
            hosting_location: "eu-ireland".into(),
            trial_ends_at: None,
            data_grace_days: 30,
            suspend: false,
            apply_now: false,
        }
    }

    /// The same tenant on external PostgreSQL with `replicas` replicas.
    pub(crate) fn with_postgres(mut self, replicas: i32) -> Self {
        self.database = Database::Postgres {
            secret_name: "acme-db".into(),
            key: "url".into(),
        };
        self.replicas = replicas;
        self
    }
}
