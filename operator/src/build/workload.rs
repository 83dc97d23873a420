//! The runtime workload: a StatefulSet with a PVC template for embedded SQLite (one stable volume
//! per pod), or a Deployment with N replicas when the data lives in PostgreSQL/CloudNativePG.
//!
//! Pods are hardened the same way in both: non-root, read-only root filesystem (a writable `/tmp`
//! emptyDir instead), no capabilities, RuntimeDefault seccomp, no API token, resource requests,
//! and `/healthz` + `/readyz` probes on port 8080.

use super::{common_labels, data_labels, names, owned_meta, selector_labels};
use crate::labels::{self, RUNTIME_PORT};
use crate::tenant::{Database, ValidatedTenant};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};

/// The runtime workload, whichever kind the database calls for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Workload {
    /// SQLite: stable identity and a volume per pod.
    StatefulSet(StatefulSet),
    /// PostgreSQL/CloudNativePG: stateless replicas.
    Deployment(Deployment),
}

/// Where a channel Secret is mounted in the runtime.
pub fn secret_mount_path(secret: &str) -> String {
    format!("/var/run/contact/secrets/{secret}")
}

const CONFIG_DIR: &str = "/etc/contact";
const DATA_DIR: &str = "/var/lib/contact";
/// UID/GID the runtime runs as (the distroless "nonroot" user).
const RUNTIME_UID: i64 = 65532;

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// Env var holding the database URL, per database kind.
pub(crate) fn database_env(t: &ValidatedTenant) -> EnvVar {
    match &t.database {
        Database::Sqlite { .. } => plain_env(
            "CONTACT_DATABASE_URL",
            format!("sqlite:{DATA_DIR}/contact.db"),
        ),
        Database::Postgres { secret_name, key } => {
            secret_env("CONTACT_DATABASE_URL", secret_name, key)
        }
        // CloudNativePG writes `<cluster>-app` with a ready-made `uri` for the application user.
        Database::CloudNativePg { .. } => secret_env(
            "CONTACT_DATABASE_URL",
            &names::cnpg_app_secret(&t.name),
            "uri",
        ),
    }
}

/// Hardened container security context, shared with the backup job.
pub(crate) fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Hardened pod security context, shared with the backup job.
pub(crate) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUNTIME_UID),
        run_as_group: Some(RUNTIME_UID),
        fs_group: Some(RUNTIME_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Required node affinity for the hosting location's node labels (`None` when unconstrained).
pub(crate) fn node_affinity(t: &ValidatedTenant) -> Option<Affinity> {
    (!t.node_labels.is_empty()).then(|| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(
                        t.node_labels
                            .iter()
                            .map(|(k, v)| NodeSelectorRequirement {
                                key: k.clone(),
                                operator: "In".into(),
                                values: Some(vec![v.clone()]),
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// The runtime pod template (shared by both workload kinds).
pub(crate) fn pod_template(t: &ValidatedTenant) -> PodTemplateSpec {
    // Distinct channel Secrets, each mounted once, read-only, at a path the config file names.
    let secrets: BTreeSet<&str> = t
        .channels
        .iter()
        .flat_map(|c| [c.credentials_secret.as_str(), c.webhook_secret.as_str()])
        .collect();
    let keys = names::keys(&t.name);

    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config(&t.name),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ];
    for (i, s) in secrets.iter().enumerate() {
        let vol = format!("channel-secret-{i}");
        volumes.push(Volume {
            name: vol.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some((*s).to_string()),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: vol,
            mount_path: secret_mount_path(s),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if matches!(t.database, Database::Sqlite { .. }) {
        mounts.push(VolumeMount {
            name: names::DATA_VOLUME.into(),
            mount_path: DATA_DIR.into(),
            ..Default::default()
        });
    }

    let container = Container {
        name: "runtime".into(),
        image: Some(t.image.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: RUNTIME_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(vec![
            plain_env("CONTACT_TENANT", t.name.clone()),
            plain_env(
                "CONTACT_CONFIG",
                format!("{CONFIG_DIR}/{}", super::config_map::CONFIG_KEY),
            ),
            plain_env("CONTACT_LISTEN", format!("0.0.0.0:{RUNTIME_PORT}")),
            database_env(t),
            // The session key stays in the key Secret (it is generated once and kept), but the
            // runtime does not read it: no need to put a secret in its environment.
            secret_env("CONTACT_BACKUP_KEY", &keys, "backup-encryption-key"),
            secret_env("CONTACT_BOOTSTRAP_ADMIN_PASSWORD", &keys, "admin-password"),
        ]),
        resources: Some(t.resources.clone()),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(common_labels(t, "runtime")),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names::runtime(&t.name)),
            automount_service_account_token: Some(false),
            security_context: Some(pod_security()),
            affinity: node_affinity(t),
            containers: vec![container],
            volumes: Some(volumes),
            enable_service_links: Some(false),
            ..Default::default()
        }),
    }
}

/// Builds the workload with `replicas` (which lifecycle may have set to 0).
pub(crate) fn build_workload(t: &ValidatedTenant, replicas: i32) -> Workload {
    let mut meta = owned_meta(t, names::runtime(&t.name), "runtime");
    // Records which database the workload was built for, so a database change is recognised as a
    // restart-requiring change even when it also changes the workload kind.
    meta.annotations = Some(BTreeMap::from([(
        labels::DATABASE_KIND.to_string(),
        t.database.kind().to_string(),
    )]));
    let selector = LabelSelector {
        match_labels: Some(selector_labels(t)),
        ..Default::default()
    };
    match &t.database {
        Database::Sqlite {
            size,
            storage_class,
        } => Workload::StatefulSet(StatefulSet {
            metadata: meta,
            spec: StatefulSetSpec {
                replicas: Some(replicas),
                service_name: Some(names::runtime(&t.name)),
                selector,
                template: pod_template(t),
                // Data outlives the StatefulSet: PVCs are removed only by the deletion-grace sweeper.
                persistent_volume_claim_retention_policy: Some(
                    StatefulSetPersistentVolumeClaimRetentionPolicy {
                        when_deleted: Some("Retain".into()),
                        when_scaled: Some("Retain".into()),
                    },
                ),
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some(names::DATA_VOLUME.into()),
                        labels: Some(data_labels(t, "data")),
                        ..Default::default()
                    },
                    spec: Some(PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".into()]),
                        storage_class_name: storage_class.clone(),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".to_string(),
                                Quantity(size.clone()),
                            )])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        }),
        Database::Postgres { .. } | Database::CloudNativePg { .. } => {
            Workload::Deployment(Deployment {
                metadata: meta,
                spec: DeploymentSpec {
                    replicas: Some(replicas),
                    selector,
                    template: pod_template(t),
                    // Surge, never drop below the asked capacity while rolling.
                    strategy: Some(DeploymentStrategy {
                        type_: Some("RollingUpdate".into()),
                        rolling_update: Some(RollingUpdateDeployment {
                            max_surge: Some(IntOrString::Int(1)),
                            max_unavailable: Some(IntOrString::Int(0)),
                        }),
                    }),
                    ..Default::default()
                },
                ..Default::default()
            })
        }
    }
}
