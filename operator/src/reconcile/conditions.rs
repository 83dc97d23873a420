//! What the status says (pure): from the validated tenant, what the apply step did and observed,
//! and the clock, the conditions, url, window, pending changes and last backup. No client: the
//! pipeline gathers `Observed`, this decides, `status::publish` writes.

use super::backups;
use super::gating::{self, Change};
use super::status::{Cond, Desired};
use super::storage::StorageProblem;
use crate::build;
use crate::lifecycle::{self, Phase};
use crate::maintenance::WindowState;
use crate::tenant::{Database, ValidatedTenant};
use chrono::{DateTime, Utc};
use contact_crds::v1alpha1::BackupRecord;
use k8s_openapi::api::batch::v1::CronJob;

/// The CloudNativePG `Cluster` as the apply step saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cnpg {
    /// Its CRD is not installed (the apply was refused with 404).
    Missing,
    /// Its ready instances (0 when it could not be read, or the tenant has none).
    Ready(i64),
}

impl Default for Cnpg {
    /// Not read (or not readable): no ready instance.
    fn default() -> Self {
        Cnpg::Ready(0)
    }
}

/// What the apply step did and observed, for the status.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    /// The tenant's generation this pass acted on.
    pub(crate) generation: Option<i64>,
    /// The last backup the status recorded (kept: the Pods it came from are pruned).
    pub(crate) previous_backup: Option<BackupRecord>,
    /// Ready replicas of the live workload.
    pub(crate) ready_replicas: i32,
    /// Volumes the API server refused to grow.
    pub(crate) storage_problems: Vec<StorageProblem>,
    /// The CloudNativePG Cluster.
    pub(crate) cnpg: Cnpg,
    /// Whether the ingress controller has assigned the Ingress an address.
    pub(crate) ingress_address: bool,
    /// The backup Jobs and Pods (empty when backups are off).
    pub(crate) backups: backups::Observed,
    /// The backup CronJob as it was before this pass's apply.
    pub(crate) backup_schedule: Option<CronJob>,
    /// Restart-requiring changes held for the maintenance window.
    pub(crate) pending: Vec<Change>,
}

/// The status of a tenant that could not be provisioned (a Secret problem, an invalid spec).
pub(crate) fn problem(
    generation: Option<i64>,
    previous_backup: Option<BackupRecord>,
    reason: &str,
    message: &str,
) -> Desired {
    Desired {
        observed_generation: generation,
        conditions: vec![
            Cond::new("Ready", Some(false), reason, message),
            Cond::new("Provisioned", Some(false), reason, message),
            Cond::new("DatabaseReady", None, "NotProvisioned", ""),
            Cond::new("IngressReady", None, "NotProvisioned", ""),
            Cond::new("BackupsHealthy", None, "NotProvisioned", ""),
            Cond::new("MaintenancePending", Some(false), "NothingPending", ""),
            Cond::new("TrialExpired", None, "NotProvisioned", ""),
        ],
        url: None,
        next_maintenance_window: None,
        pending_changes: Vec::new(),
        // A spec problem does not make the last backup any less taken.
        last_backup: previous_backup,
    }
}

/// The status of a provisioned tenant at `now`.
pub(crate) fn status(v: &ValidatedTenant, seen: Observed, now: DateTime<Utc>) -> Desired {
    let phase = lifecycle::phase(v, now);
    let window = v.window.map(|w| w.state_at(now));
    let (backups_healthy, last_backup) = backups::assess(
        v.backups.is_some(),
        &seen.backups,
        seen.backup_schedule.as_ref(),
        seen.previous_backup.as_ref(),
        now,
    );
    let conditions = vec![
        ready(v, phase, seen.ready_replicas),
        provisioned(&seen.storage_problems),
        database_ready(v, phase, &seen),
        ingress_ready(v, seen.ingress_address),
        backups_healthy,
        maintenance_pending(&seen.pending, window.as_ref()),
        trial_expired(v, phase),
    ];
    Desired {
        observed_generation: seen.generation,
        conditions,
        url: Some(build::ingress_url(v)),
        next_maintenance_window: window.map(|s| s.occurrence()),
        pending_changes: seen.pending,
        last_backup,
    }
}

fn ready(v: &ValidatedTenant, phase: Phase, ready: i32) -> Cond {
    let replicas = lifecycle::effective_replicas(v, phase);
    match phase {
        Phase::Suspended => Cond::new(
            "Ready",
            Some(false),
            "Suspended",
            "suspended: runtime scaled to zero, data kept",
        ),
        Phase::TrialExpired => Cond::new(
            "Ready",
            Some(false),
            "TrialExpired",
            "trial ended: runtime scaled to zero, data kept",
        ),
        Phase::Active if replicas > 0 && ready >= replicas => Cond::new(
            "Ready",
            Some(true),
            "RuntimeReady",
            format!("{ready}/{replicas} replicas ready"),
        ),
        Phase::Active => Cond::new(
            "Ready",
            Some(false),
            "RuntimeNotReady",
            format!("{ready}/{replicas} replicas ready"),
        ),
    }
}

fn provisioned(storage_problems: &[StorageProblem]) -> Cond {
    if storage_problems.is_empty() {
        return Cond::new("Provisioned", Some(true), "Applied", "all children applied");
    }
    let message = storage_problems
        .iter()
        .map(StorageProblem::describe)
        .collect::<Vec<_>>()
        .join("; ");
    Cond::new("Provisioned", Some(false), "StorageNotExpandable", message)
}

fn database_ready(v: &ValidatedTenant, phase: Phase, seen: &Observed) -> Cond {
    let cond = |ok: bool, reason: &str, message: String| {
        Cond::new("DatabaseReady", Some(ok), reason, message)
    };
    match (&v.database, seen.cnpg) {
        (Database::Sqlite { .. }, _) if seen.ready_replicas > 0 => {
            cond(true, "SqliteReady", "embedded SQLite on its volume".into())
        }
        (Database::Sqlite { .. }, _) if phase.scaled_down() => cond(
            false,
            phase.reason(),
            "runtime scaled to zero; the SQLite volume is kept".into(),
        ),
        (Database::Sqlite { .. }, _) => cond(
            false,
            "WaitingForRuntime",
            "embedded SQLite opens when the runtime starts".into(),
        ),
        (Database::Postgres { secret_name, .. }, _) => cond(
            true,
            "SecretResolved",
            format!("database URL from secret {secret_name}"),
        ),
        (Database::CloudNativePg { .. }, Cnpg::Missing) => cond(
            false,
            "CloudNativePGNotInstalled",
            "the postgresql.cnpg.io Cluster CRD is not installed".into(),
        ),
        (Database::CloudNativePg { instances, .. }, Cnpg::Ready(ready)) => {
            let message = format!("{ready}/{instances} instances ready");
            if ready >= *instances {
                cond(true, "ClusterReady", message)
            } else {
                cond(false, "ClusterNotReady", message)
            }
        }
    }
}

fn ingress_ready(v: &ValidatedTenant, has_address: bool) -> Cond {
    if has_address {
        Cond::new(
            "IngressReady",
            Some(true),
            "AddressAssigned",
            format!("serving {}", v.host),
        )
    } else {
        Cond::new(
            "IngressReady",
            Some(false),
            "AwaitingAddress",
            "the ingress controller has not assigned an address yet",
        )
    }
}

fn maintenance_pending(pending: &[Change], window: Option<&WindowState>) -> Cond {
    match window {
        Some(w) if !pending.is_empty() => Cond::new(
            "MaintenancePending",
            Some(true),
            "WaitingForWindow",
            format!(
                "{} wait for the maintenance window opening at {}",
                gating::describe(pending),
                w.occurrence().start.to_rfc3339()
            ),
        ),
        _ => Cond::new("MaintenancePending", Some(false), "NothingPending", ""),
    }
}

fn trial_expired(v: &ValidatedTenant, phase: Phase) -> Cond {
    match (phase, v.trial_ends_at) {
        (Phase::TrialExpired, Some(end)) => Cond::new(
            "TrialExpired",
            Some(true),
            "TrialEnded",
            format!("trial ended at {}", end.to_rfc3339()),
        ),
        (_, Some(end)) => Cond::new(
            "TrialExpired",
            Some(false),
            "TrialActive",
            format!("trial ends at {}", end.to_rfc3339()),
        ),
        (_, None) => Cond::new("TrialExpired", Some(false), "NoTrial", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::status::CONDITION_TYPES;

    /// Wednesday 2026-11-25 09:00 UTC: the test tenant's window (Saturday 22:00 UTC) is closed.
    fn wednesday() -> DateTime<Utc> {
        at("2026-11-25T09:00:00Z")
    }

    fn seen() -> Observed {
        Observed {
            generation: Some(3),
            previous_backup: None,
            ready_replicas: 1,
            storage_problems: Vec::new(),
            cnpg: Cnpg::Ready(0),
            ingress_address: true,
            backups: backups::Observed::default(),
            backup_schedule: None,
            pending: Vec::new(),
        }
    }

    fn by_type<'a>(d: &'a Desired, type_: &str) -> &'a Cond {
        d.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("every condition type is present")
    }

    /// `Status/Reason` of one condition.
    fn cond(d: &Desired, type_: &str) -> String {
        let c = by_type(d, type_);
        format!("{}/{}", c.status_str(), c.reason)
    }

    /// Every condition as `Type=Status/Reason`, in order.
    fn summary(d: &Desired) -> String {
        let all: Vec<_> = d
            .conditions
            .iter()
            .map(|c| format!("{}={}/{}", c.type_, c.status_str(), c.reason))
            .collect();
        all.join(" ")
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("instant")
    }

    #[test]
    fn a_running_tenant_is_ready_with_every_condition_in_order() {
        let d = status(&ValidatedTenant::test(), seen(), wednesday());
        assert_eq!(
            summary(&d),
            "Ready=True/RuntimeReady Provisioned=True/Applied DatabaseReady=True/SqliteReady \
             IngressReady=True/AddressAssigned BackupsHealthy=Unknown/NoBackupYet \
             MaintenancePending=False/NothingPending TrialExpired=False/NoTrial"
        );
        let types: Vec<_> = d.conditions.iter().map(|c| c.type_).collect();
        assert_eq!(types, CONDITION_TYPES);
        assert_eq!(by_type(&d, "Ready").message, "1/1 replicas ready");
        assert_eq!(d.observed_generation, Some(3));
        assert_eq!(d.url.as_deref(), Some("https://acme.contact.example.com"));
        let window = d.next_maintenance_window.expect("a window");
        assert_eq!(window.start, at("2026-11-28T22:00:00Z"));
    }

    #[test]
    fn a_suspended_or_expired_tenant_is_not_ready_and_keeps_its_data() {
        let stopped = || Observed {
            ready_replicas: 0,
            ..seen()
        };
        let mut v = ValidatedTenant::test();
        v.suspend = true;
        let d = status(&v, stopped(), wednesday());
        assert_eq!(cond(&d, "Ready"), "False/Suspended");
        assert_eq!(cond(&d, "DatabaseReady"), "False/Suspended");

        let mut v = ValidatedTenant::test();
        v.trial_ends_at = Some(wednesday() - chrono::Duration::days(1));
        let d = status(&v, stopped(), wednesday());
        assert_eq!(cond(&d, "Ready"), "False/TrialExpired");
        assert_eq!(cond(&d, "TrialExpired"), "True/TrialEnded");
        assert!(by_type(&d, "TrialExpired").is_warning());

        // Before the trial ends, a runtime that is not up yet is just that.
        v.trial_ends_at = Some(wednesday() + chrono::Duration::days(1));
        let d = status(&v, stopped(), wednesday());
        assert_eq!(cond(&d, "Ready"), "False/RuntimeNotReady");
        assert_eq!(cond(&d, "DatabaseReady"), "False/WaitingForRuntime");
        assert_eq!(cond(&d, "TrialExpired"), "False/TrialActive");
    }

    #[test]
    fn a_refused_resize_is_a_provisioning_problem_naming_the_claim() {
        let problem = StorageProblem {
            claim: "data-acme-0".into(),
            from: "5Gi".into(),
            to: "20Gi".into(),
            message: "storageclass does not allow expansion".into(),
        };
        let seen = Observed {
            storage_problems: vec![problem],
            ..seen()
        };
        let d = status(&ValidatedTenant::test(), seen, wednesday());
        assert_eq!(cond(&d, "Provisioned"), "False/StorageNotExpandable");
        let message = &by_type(&d, "Provisioned").message;
        assert!(message.contains("data-acme-0") && message.contains("5Gi to 20Gi"));
    }

    #[test]
    fn cloudnativepg_readiness_follows_the_cluster() {
        let mut v = ValidatedTenant::test().with_postgres(2);
        v.database = Database::CloudNativePg {
            instances: 3,
            size: "10Gi".into(),
        };
        let at = |cnpg| status(&v, Observed { cnpg, ..seen() }, wednesday());
        let missing = at(Cnpg::Missing);
        assert_eq!(
            cond(&missing, "DatabaseReady"),
            "False/CloudNativePGNotInstalled"
        );
        let coming_up = at(Cnpg::Ready(2));
        assert_eq!(cond(&coming_up, "DatabaseReady"), "False/ClusterNotReady");
        assert_eq!(
            by_type(&coming_up, "DatabaseReady").message,
            "2/3 instances ready"
        );
        assert_eq!(
            cond(&at(Cnpg::Ready(3)), "DatabaseReady"),
            "True/ClusterReady"
        );

        let postgres = status(
            &ValidatedTenant::test().with_postgres(2),
            seen(),
            wednesday(),
        );
        assert_eq!(cond(&postgres, "DatabaseReady"), "True/SecretResolved");
        assert_eq!(
            cond(&postgres, "Ready"),
            "False/RuntimeNotReady",
            "1 of 2 replicas"
        );
    }

    #[test]
    fn held_changes_wait_for_the_window_and_are_listed() {
        let pending = vec![Change {
            field: "image",
            description: "image: a → b".into(),
        }];
        let seen = Observed {
            pending: pending.clone(),
            ingress_address: false,
            ..seen()
        };
        let d = status(&ValidatedTenant::test(), seen, wednesday());
        assert_eq!(cond(&d, "MaintenancePending"), "True/WaitingForWindow");
        assert_eq!(
            by_type(&d, "MaintenancePending").message,
            "image: a → b wait for the maintenance window opening at 2026-11-28T22:00:00+00:00"
        );
        assert_eq!(d.pending_changes, pending);
        assert_eq!(cond(&d, "IngressReady"), "False/AwaitingAddress");
    }

    #[test]
    fn a_problem_fails_ready_and_provisioned_and_keeps_the_last_backup() {
        let record =
            backups::parse_result(r#"{"name":"b-1","time":"2026-11-24T02:00:05Z","sizeBytes":1}"#);
        assert!(record.is_some());
        let d = problem(
            Some(4),
            record.clone(),
            "SecretNotFound",
            "secret \"x\" not found",
        );
        assert_eq!(
            summary(&d),
            "Ready=False/SecretNotFound Provisioned=False/SecretNotFound \
             DatabaseReady=Unknown/NotProvisioned IngressReady=Unknown/NotProvisioned \
             BackupsHealthy=Unknown/NotProvisioned MaintenancePending=False/NothingPending \
             TrialExpired=Unknown/NotProvisioned"
        );
        assert_eq!(d.last_backup, record);
        assert_eq!((d.url, d.observed_generation), (None, Some(4)));
    }
}
