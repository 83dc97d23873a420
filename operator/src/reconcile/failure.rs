//! A failed reconcile reaches the tenant: `Ready=False` and `Provisioned=False` with the failure's
//! reason and a message naming the object and the API server's answer, a Warning Event when that
//! changes, and the failure metric by reason. Before, a failure only went to the log, and a
//! tenant whose CronJob the API server refused showed nothing at all while its workload was
//! never applied.
//!
//! Only the two conditions change: the rest of the status (the other conditions, url, window,
//! pending changes, last backup) is what the last good pass wrote and stays true. They are
//! written with a merge patch of the conditions list rather than the pipeline's server-side
//! apply, which would drop every field the apply leaves out.

use super::status::note;
use super::{Ctx, Error, error_chain};
use chrono::{DateTime, Utc};
use contact_crds::v1alpha1::ContactTenant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use tracing::warn;

/// The conditions the API should hold after a failure with `reason` and `message` (pure):
/// `Ready` and `Provisioned` False with them, every other condition as it was. `None` when the
/// live conditions say so already (nothing to write, no new Event).
pub(crate) fn failed_conditions(
    live: &[Condition],
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Option<Vec<Condition>> {
    let says_so = |type_: &str| {
        live.iter().any(|c| {
            c.type_ == type_ && c.status == "False" && c.reason == reason && c.message == message
        })
    };
    if says_so("Ready") && says_so("Provisioned") {
        return None;
    }
    let mut out: Vec<Condition> = live.to_vec();
    for type_ in ["Ready", "Provisioned"] {
        let previous = out.iter().position(|c| c.type_ == type_);
        let last_transition_time = match previous.map(|i| &out[i]) {
            Some(p) if p.status == "False" => p.last_transition_time.clone(),
            _ => to_time(now),
        };
        let c = Condition {
            type_: type_.into(),
            status: "False".into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time,
        };
        match previous {
            Some(i) => out[i] = c,
            None => out.push(c),
        }
    }
    Some(out)
}

fn to_time(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).unwrap_or_default())
}

/// Reports `error` on the tenant: the metric always, the conditions and a Warning Event when
/// they change. Best effort: failing to report is logged, the reconcile's error stands.
pub(crate) async fn report(tenant: &ContactTenant, ctx: &Ctx, error: &Error) {
    let reason = error.reason();
    ctx.metrics.failed(reason);
    // The API's 1,000-character limit on Event notes; conditions take up to 32 KiB, but a
    // message that long helps no one.
    let message: String = error_chain(error).chars().take(1000).collect();
    let live = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = tenant.metadata.generation;
    let Some(conditions) = failed_conditions(&live, generation, reason, &message, ctx.clock.now())
    else {
        return;
    };
    // A failure to write the status itself is reported by the Event and the log only.
    if !matches!(error, Error::Status(_)) {
        let api: Api<ContactTenant> =
            Api::namespaced(ctx.client.clone(), &tenant.namespace().unwrap_or_default());
        let patch = serde_json::json!({ "status": { "conditions": conditions } });
        if let Err(e) = api
            .patch_status(
                &tenant.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            warn!(error = %e, "failed to report a reconcile failure on the tenant");
        }
    }
    note(ctx, tenant, EventType::Warning, reason, message).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: to_time(DateTime::<Utc>::UNIX_EPOCH),
        }
    }

    #[test]
    fn only_ready_and_provisioned_change_and_only_once() {
        let now = "2026-11-25T09:00:00Z".parse().expect("now");
        let live = vec![
            cond("Ready", "True", "RuntimeReady"),
            cond("Provisioned", "True", "Applied"),
            cond("BackupsHealthy", "True", "LastBackupSucceeded"),
        ];
        let out = failed_conditions(&live, Some(2), "ApplyFailed", "m", now).expect("changes");
        assert_eq!(out.len(), 3);
        assert_eq!(out[2], live[2], "other conditions stay");
        for c in &out[..2] {
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", "ApplyFailed")
            );
            assert_eq!(c.last_transition_time, to_time(now));
        }
        assert_eq!(
            failed_conditions(&out, Some(2), "ApplyFailed", "m", now),
            None
        );
        let later = now + chrono::Duration::minutes(1);
        let other = failed_conditions(&out, Some(2), "ReadFailed", "n", later).expect("changes");
        assert_eq!(
            other[0].last_transition_time,
            to_time(now),
            "still False: the transition time stays"
        );
    }
}
