//! Backups: a PVC that holds them (data-bearing, so not owned) and a CronJob that runs the
//! runtime's own `backup` command on the tenant's schedule, keeping `retainDays` days.
//!
//! For SQLite the job mounts the runtime's data PVC. That PVC is ReadWriteOnce, so the job is
//! given pod affinity to the runtime pod to land on the same node.

use super::workload::{container_security, database_env, node_affinity, pod_security};
use super::{common_labels, data_meta, names, owned_meta, selector_labels};
use crate::tenant::{Backups, Database, ValidatedTenant};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, EnvVarSource, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodAffinity, PodAffinityTerm, PodSpec, PodTemplateSpec,
    SecretKeySelector, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

const BACKUP_DIR: &str = "/backups";
/// Where the backup container leaves its result (or error) for the kubelet: the container's
/// termination message, which the operator reads into `status.lastBackup` / `BackupsHealthy`.
pub(crate) const TERMINATION_LOG: &str = "/dev/termination-log";
/// The backup container's name (the operator finds its termination state by it).
pub(crate) const CONTAINER: &str = "backup";

/// Builds the backup PVC, or `None` when backups are off.
pub(crate) fn build_backup_pvc(t: &ValidatedTenant) -> Option<PersistentVolumeClaim> {
    let b = t.backups.as_ref()?;
    Some(PersistentVolumeClaim {
        metadata: data_meta(t, names::backup_pvc(&t.name), "backups"),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: b.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(b.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn job_pod(t: &ValidatedTenant, b: &Backups) -> PodSpec {
    let mut volumes = vec![Volume {
        name: "backups".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: names::backup_pvc(&t.name),
            read_only: Some(false),
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "backups".into(),
        mount_path: BACKUP_DIR.into(),
        ..Default::default()
    }];
    let mut affinity = node_affinity(t);
    if matches!(t.database, Database::Sqlite { .. }) {
        volumes.push(Volume {
            name: names::DATA_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names::sqlite_pvc(&t.name),
                read_only: Some(false),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: names::DATA_VOLUME.into(),
            mount_path: "/var/lib/contact".into(),
            ..Default::default()
        });
        affinity.get_or_insert_with(Affinity::default).pod_affinity = Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(t)),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
    }
    PodSpec {
        restart_policy: Some("OnFailure".into()),
        service_account_name: Some(names::runtime(&t.name)),
        automount_service_account_token: Some(false),
        security_context: Some(pod_security()),
        affinity,
        containers: vec![Container {
            name: CONTAINER.into(),
            image: Some(t.image.clone()),
            args: Some(vec![
                "backup".into(),
                "--dir".into(),
                BACKUP_DIR.into(),
                "--retain-days".into(),
                b.retain_days.to_string(),
                "--termination-log".into(),
                TERMINATION_LOG.into(),
            ]),
            termination_message_path: Some(TERMINATION_LOG.into()),
            // A crash before the runtime could write its error still leaves a reason: the tail
            // of the log.
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            env: Some(vec![
                database_env(t),
                EnvVar {
                    name: "CONTACT_BACKUP_KEY".into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: names::keys(&t.name),
                            key: "backup-encryption-key".into(),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            resources: Some(t.resources.clone()),
            security_context: Some(container_security()),
            volume_mounts: Some(mounts),
            ..Default::default()
        }],
        volumes: Some(volumes),
        ..Default::default()
    }
}

/// Builds the backup CronJob, or `None` when backups are off. `suspend` pauses it (suspended or
/// expired tenants keep their data but make no new backups).
pub fn build_backup_cronjob(t: &ValidatedTenant, suspend: bool) -> Option<CronJob> {
    let b = t.backups.as_ref()?;
    Some(CronJob {
        metadata: owned_meta(t, names::backup_job(&t.name), "backup"),
        spec: CronJobSpec {
            schedule: b.schedule.clone(),
            time_zone: b.time_zone.clone(),
            suspend: Some(suspend || b.suspend),
            // Two backups at once would compete for the same RWO volume and the same files.
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            starting_deadline_seconds: Some(3600),
            job_template: JobTemplateSpec {
                // Labelled like the pods, so the operator can watch its backup Jobs.
                metadata: Some(ObjectMeta {
                    labels: Some(common_labels(t, "backup")),
                    ..Default::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(common_labels(t, "backup")),
                            ..Default::default()
                        }),
                        spec: Some(job_pod(t, b)),
                    },
                    ..Default::default()
                }),
            },
        },
        ..Default::default()
    })
}
