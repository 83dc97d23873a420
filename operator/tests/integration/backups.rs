//! Backups: the CronJob's Jobs and Pods feed `status.lastBackup` and `BackupsHealthy`.
//!
//! No controller-manager or kubelet runs here: the test creates the Job as the CronJob
//! controller would (from the CronJob's template, owned by it), its Pod as the Job controller
//! would, and writes their status as the kubelet and the Job controller would, including the
//! container's termination message the runtime's `backup --termination-log` leaves.

use crate::common::*;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Creates Job `name` from the CronJob's template and one Pod for it, ended with `exit_code`
/// and `message` at `at`, then ends the Job (Complete for 0, Failed otherwise).
async fn run_backup_job(env: &Env, name: &str, exit_code: i32, message: &str, at: &str) {
    let cron = get::<CronJob>(&env.admin, "acme-backup").await;
    let template = cron.spec.job_template.clone();
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("the job template is labelled");
    let jobs = Api::<Job>::namespaced(env.admin.clone(), NS);
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels, "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": "acme-backup",
            "uid": cron.uid(), "controller": true }] },
        "spec": template.spec,
    }))
    .expect("job json");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("job created");

    let pod_spec = template
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    let mut pod_labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
    pod_labels.insert("batch.kubernetes.io/job-name".into(), name.into());
    pod_labels.insert("job-name".into(), name.into());
    let pods = Api::<Pod>::namespaced(env.admin.clone(), NS);
    let pod_name = format!("{name}-x7k2p");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": pod_name, "labels": pod_labels },
        "spec": pod_spec,
    }))
    .expect("pod json");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    let container = json!({
        "name": "backup", "image": "ghcr.io/contact-dev/contact-runtime:1.0.0", "imageID": "",
        "ready": false, "restartCount": 0,
        "state": { "terminated": { "exitCode": exit_code, "reason": if exit_code == 0 { "Completed" } else { "Error" },
                                   "message": message, "startedAt": "2026-11-25T02:00:00Z", "finishedAt": at } }
    });
    pods.patch_status(
        &pod_name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
            "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": [container] } })),
    )
    .await
    .expect("pod status");

    let status = if exit_code == 0 {
        json!({ "startTime": "2026-11-25T02:00:00Z", "completionTime": at, "succeeded": 1,
            "conditions": [
                { "type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastTransitionTime": at },
                { "type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastTransitionTime": at }] })
    } else {
        json!({ "startTime": "2026-11-25T02:00:00Z", "failed": 3,
            "conditions": [
                { "type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": at },
                { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": at }] })
    };
    jobs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .expect("job status");
}

#[tokio::test]
async fn the_last_backup_and_a_failure_reach_the_status() {
    let env = env().await;
    let mut t = tenant_json();
    t["spec"]["backups"] = json!({ "schedule": "0 2 * * *" });
    create_tenant(&env.admin, t).await;
    settle(&env).await;
    assert_condition(&env.admin, "BackupsHealthy", "Unknown", "NoBackupYet").await;

    // What the runtime's `backup --termination-log` writes, from the runtime's own type.
    let result = contact_runtime::backup::BackupResult {
        name: "backup-20261125T020003Z".into(),
        time: "2026-11-25T02:00:03Z".into(),
        size_bytes: 48_213,
        pruned: vec![],
    };
    let line = serde_json::to_string(&result).expect("json");
    run_backup_job(
        &env,
        "acme-backup-29400000",
        0,
        &line,
        "2026-11-25T02:00:04Z",
    )
    .await;
    reconcile_once(&env).await;
    let st = status(&env.admin).await;
    assert_eq!(
        st["lastBackup"],
        json!({ "name": "backup-20261125T020003Z", "time": "2026-11-25T02:00:03Z", "sizeBytes": 48213 })
    );
    let message =
        assert_condition(&env.admin, "BackupsHealthy", "True", "LastBackupSucceeded").await;
    assert!(message.contains("backup-20261125T020003Z"), "{message}");

    // The next night's backup fails: the runtime's error is the reason.
    run_backup_job(
        &env,
        "acme-backup-29401440",
        1,
        "failed to write /backups/backup-20261126T020001Z.enc: No space left on device (os error 28)",
        "2026-11-26T02:00:02Z",
    )
    .await;
    reconcile_once(&env).await;
    let message = assert_condition(&env.admin, "BackupsHealthy", "False", "BackupFailed").await;
    assert!(
        message.contains("acme-backup-29401440") && message.contains("No space left on device"),
        "{message}"
    );
    assert!(
        event_reasons(&env.admin)
            .await
            .contains(&"BackupFailed".to_string())
    );
    // The last good backup is still the one reported.
    assert_eq!(
        status_field(&env, "lastBackup").await["name"],
        "backup-20261125T020003Z"
    );

    // Nothing changed since: the next pass writes nothing.
    env.counter.reset();
    reconcile_once(&env).await;
    assert_eq!(env.counter.writes(), Vec::<String>::new());
}

async fn status_field(env: &Env, field: &str) -> serde_json::Value {
    status(&env.admin).await[field].clone()
}
