//! Backup health and `status.lastBackup`, from the backup Jobs and Pods the tenant's CronJob made.
//!
//! The backup container runs `contact-runtime backup --termination-log /dev/termination-log`:
//! on success it leaves its result line (`name`, `time`, `sizeBytes`) as the container's
//! termination message, on failure its error (and with `FallbackToLogsOnError`, a crash leaves
//! the log tail). So the newest successful termination is the last backup, and the newest
//! finished Job says whether backups are healthy: a failed one sets `BackupsHealthy=False/
//! BackupFailed` with the pod's message as the reason. `assess` is pure; `read` is the I/O edge
//! (the controller's stores, or a LIST when no controller runs).

use super::cache::Caches;
use super::status::Cond;
use crate::build::BACKUP_CONTAINER;
use crate::labels;
use contact_crds::v1alpha1::BackupRecord;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

/// Failure to list backup Jobs or Pods.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The LIST failed.
    #[error("failed to list backup {0}")]
    List(&'static str, #[source] kube::Error),
}

/// What the runtime's `backup` writes on success (the fields the status needs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResultLine {
    /// Backup name.
    pub name: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Size of the encrypted file.
    pub size_bytes: u64,
}

/// Parses a termination message of a successful backup into a record (`None`: not a result line).
pub fn parse_result(message: &str) -> Option<BackupRecord> {
    let line: ResultLine = serde_json::from_str(message.trim()).ok()?;
    let time: Time = serde_json::from_value(serde_json::Value::String(line.time)).ok()?;
    Some(BackupRecord {
        time,
        name: line.name,
        size_bytes: i64::try_from(line.size_bytes).ok(),
    })
}

/// The backup Jobs and Pods of one tenant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    /// Jobs the CronJob made (labelled by the job template).
    pub jobs: Vec<Job>,
    /// Their Pods.
    pub pods: Vec<Pod>,
}

fn selector(tenant: &str) -> String {
    format!(
        "{}={tenant},{}=backup,{}={}",
        labels::TENANT,
        labels::COMPONENT,
        labels::MANAGED_BY,
        labels::FIELD_MANAGER
    )
}

fn of_tenant<K: kube::Resource>(o: &K, ns: &str, tenant: &str) -> bool {
    o.meta().namespace.as_deref() == Some(ns)
        && o.labels().get(labels::TENANT).map(String::as_str) == Some(tenant)
}

/// Reads the tenant's backup Jobs and Pods: from the stores when they are ready, else by LIST.
pub(crate) async fn read(
    client: &Client,
    caches: Option<&Caches>,
    ns: &str,
    tenant: &str,
) -> Result<Observed, Error> {
    if let Some(c) = caches.filter(|c| c.is_ready()) {
        let jobs = c
            .jobs
            .state()
            .iter()
            .filter(|j| of_tenant(&***j, ns, tenant))
            .map(|j| (**j).clone())
            .collect();
        let pods = c
            .pods
            .state()
            .iter()
            .filter(|p| of_tenant(&***p, ns, tenant))
            .map(|p| (**p).clone())
            .collect();
        return Ok(Observed { jobs, pods });
    }
    let lp = ListParams::default().labels(&selector(tenant));
    let jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| Error::List("jobs", e))?
        .items;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| Error::List("pods", e))?
        .items;
    Ok(Observed { jobs, pods })
}

/// How a Job ended, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Failed,
}

fn job_end(job: &Job) -> Option<(End, i64, String)> {
    let st = job.status.as_ref()?;
    st.conditions.iter().flatten().find_map(|c| {
        if c.status != "True" {
            return None;
        }
        let end = match c.type_.as_str() {
            "Complete" => End::Complete,
            "Failed" => End::Failed,
            _ => return None,
        };
        let at = c
            .last_transition_time
            .as_ref()
            .or(st.completion_time.as_ref())
            .map_or(0, |t| t.0.as_second());
        let why = [c.reason.as_deref(), c.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        Some((end, at, why))
    })
}

fn job_of(pod: &Pod) -> Option<&String> {
    let l = pod.labels();
    l.get("batch.kubernetes.io/job-name")
        .or_else(|| l.get("job-name"))
}

/// Every finished run of the backup container in `pod` (the current state and the previous
/// one: with `restartPolicy: OnFailure` a retry replaces the state, keeping one before it).
fn terminations(pod: &Pod) -> Vec<&ContainerStateTerminated> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter(|c| c.name == BACKUP_CONTAINER)
        .flat_map(|c| {
            [
                c.state.as_ref().and_then(|s| s.terminated.as_ref()),
                c.last_state.as_ref().and_then(|s| s.terminated.as_ref()),
            ]
        })
        .flatten()
        .collect()
}

fn finished_at(t: &ContainerStateTerminated) -> i64 {
    t.finished_at.as_ref().map_or(0, |t| t.0.as_second())
}

/// The newest successful backup among the pods, or `previous` if that is newer (pods are pruned
/// by the CronJob's history limits; the status keeps the record).
pub(crate) fn last_backup(pods: &[Pod], previous: Option<&BackupRecord>) -> Option<BackupRecord> {
    let newest = pods
        .iter()
        .flat_map(terminations)
        .filter(|t| t.exit_code == 0)
        .filter_map(|t| parse_result(t.message.as_deref()?))
        .max_by_key(|r| r.time.0);
    match (newest, previous) {
        (Some(n), Some(p)) if p.time.0 >= n.time.0 => Some(p.clone()),
        (Some(n), _) => Some(n),
        (None, p) => p.cloned(),
    }
}

/// `BackupsHealthy` and `status.lastBackup`, from what the CronJob made.
pub(crate) fn assess(
    configured: bool,
    observed: &Observed,
    cron: Option<&CronJob>,
    previous: Option<&BackupRecord>,
    now: chrono::DateTime<chrono::Utc>,
) -> (Cond, Option<BackupRecord>) {
    let last = last_backup(&observed.pods, previous);
    if !configured {
        return (
            Cond::new(
                "BackupsHealthy",
                None,
                "NotConfigured",
                "spec.backups is not set",
            ),
            last,
        );
    }
    let newest_job = observed
        .jobs
        .iter()
        .filter_map(|j| job_end(j).map(|e| (j, e)))
        .max_by_key(|(_, (_, at, _))| *at);
    let cond = match newest_job {
        Some((job, (End::Failed, _, why))) => {
            let name = job.name_any();
            // The newest failed run of that Job: the runtime's error, or the log tail.
            let message = observed
                .pods
                .iter()
                .filter(|p| job_of(p) == Some(&name))
                .flat_map(terminations)
                .filter(|t| t.exit_code != 0)
                .max_by_key(|t| finished_at(t))
                .map(|t| {
                    t.message
                        .clone()
                        .filter(|m| !m.trim().is_empty())
                        .unwrap_or_else(|| format!("exit code {}", t.exit_code))
                });
            let detail = match message {
                Some(m) => format!("{}: {}", why, m.trim()),
                None => why,
            };
            Cond::new(
                "BackupsHealthy",
                Some(false),
                "BackupFailed",
                format!("backup job {name} failed: {detail}"),
            )
        }
        Some((job, (End::Complete, _, _))) => Cond::new(
            "BackupsHealthy",
            Some(true),
            "LastBackupSucceeded",
            match &last {
                Some(r) => format!(
                    "backup {} taken at {}",
                    r.name,
                    r.time.0.strftime("%Y-%m-%dT%H:%M:%SZ")
                ),
                None => format!("backup job {} succeeded", job.name_any()),
            },
        ),
        None => from_schedule(cron, now),
    };
    (cond, last)
}

/// Without a finished Job to go by: the CronJob's own times.
fn from_schedule(cron: Option<&CronJob>, now: chrono::DateTime<chrono::Utc>) -> Cond {
    let st = cron.and_then(|c| c.status.as_ref());
    let secs = |t: &Option<Time>| t.as_ref().map(|t| t.0.as_second());
    let last_ok = st.and_then(|s| secs(&s.last_successful_time));
    let last_run = st.and_then(|s| secs(&s.last_schedule_time));
    match (last_ok, last_run) {
        (Some(ok), Some(run)) if run > ok && now.timestamp() - ok > 36 * 3600 => Cond::new(
            "BackupsHealthy",
            Some(false),
            "BackupOverdue",
            "the last scheduled backup did not succeed",
        ),
        (Some(_), _) => Cond::new(
            "BackupsHealthy",
            Some(true),
            "LastBackupSucceeded",
            "the last backup succeeded",
        ),
        (None, Some(run)) if now.timestamp() - run > 36 * 3600 => Cond::new(
            "BackupsHealthy",
            Some(false),
            "BackupOverdue",
            "no backup has succeeded yet",
        ),
        _ => Cond::new(
            "BackupsHealthy",
            None,
            "NoBackupYet",
            "no backup has run yet",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(name: &str, end: &str, at: &str) -> Job {
        serde_json::from_value(json!({
            "metadata": { "name": name },
            "status": { "conditions": [{ "type": end, "status": "True",
                "reason": if end == "Failed" { "BackoffLimitExceeded" } else { "Completed" },
                "message": if end == "Failed" { "Job has reached the specified backoff limit" } else { "" },
                "lastTransitionTime": at }] }
        }))
        .expect("job")
    }

    fn pod(job: &str, exit: i32, message: &str, at: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": format!("{job}-x"), "labels": { "batch.kubernetes.io/job-name": job } },
            "status": { "containerStatuses": [{
                "name": "backup", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": exit, "message": message, "finishedAt": at } }
            }] }
        }))
        .expect("pod")
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        "2026-11-25T12:00:00Z".parse().expect("now")
    }

    const OK1: &str =
        r#"{"name":"b-1","time":"2026-11-24T02:00:05Z","sizeBytes":1234,"pruned":[]}"#;
    const OK2: &str =
        r#"{"name":"b-2","time":"2026-11-25T02:00:07Z","sizeBytes":2345,"pruned":[]}"#;

    #[test]
    fn the_newest_success_is_the_last_backup() {
        let seen = Observed {
            jobs: vec![
                job("j1", "Complete", "2026-11-24T02:00:06Z"),
                job("j2", "Complete", "2026-11-25T02:00:08Z"),
            ],
            pods: vec![
                pod("j2", 0, OK2, "2026-11-25T02:00:08Z"),
                pod("j1", 0, OK1, "2026-11-24T02:00:06Z"),
            ],
        };
        let (cond, last) = assess(true, &seen, None, None, now());
        let last = last.expect("a record");
        assert_eq!((last.name.as_str(), last.size_bytes), ("b-2", Some(2345)));
        assert_eq!(cond.status, Some(true));
        assert_eq!(cond.reason, "LastBackupSucceeded");
        assert!(cond.message.contains("b-2"), "{}", cond.message);
    }

    #[test]
    fn a_failed_newest_job_is_unhealthy_with_the_pod_message() {
        let seen = Observed {
            jobs: vec![
                job("j1", "Complete", "2026-11-24T02:00:06Z"),
                job("j2", "Failed", "2026-11-25T02:03:00Z"),
            ],
            pods: vec![
                pod("j1", 0, OK1, "2026-11-24T02:00:06Z"),
                pod(
                    "j2",
                    1,
                    "error: backup key: not set",
                    "2026-11-25T02:02:00Z",
                ),
            ],
        };
        let (cond, last) = assess(true, &seen, None, None, now());
        assert_eq!(cond.status, Some(false));
        assert_eq!(cond.reason, "BackupFailed");
        assert!(
            cond.message.contains("j2") && cond.message.contains("backup key: not set"),
            "{}",
            cond.message
        );
        assert!(cond.is_warning());
        // The last good backup is still reported.
        assert_eq!(last.map(|r| r.name), Some("b-1".to_string()));
    }

    #[test]
    fn the_status_keeps_a_newer_record_than_the_pods_left() {
        let previous = parse_result(OK2).expect("record");
        let seen = Observed {
            jobs: vec![job("j1", "Complete", "2026-11-24T02:00:06Z")],
            pods: vec![pod("j1", 0, OK1, "2026-11-24T02:00:06Z")],
        };
        let (_, last) = assess(true, &seen, None, Some(&previous), now());
        assert_eq!(last, Some(previous));
    }

    #[test]
    fn without_jobs_the_schedule_decides_and_garbage_is_ignored() {
        let (cond, last) = assess(true, &Observed::default(), None, None, now());
        assert_eq!(cond.reason, "NoBackupYet");
        assert_eq!(last, None);
        assert_eq!(parse_result("panic: something"), None);
        let (cond, _) = assess(false, &Observed::default(), None, None, now());
        assert_eq!(cond.reason, "NotConfigured");
    }
}
