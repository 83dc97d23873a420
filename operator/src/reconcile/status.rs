//! Step 5 of the pipeline: the tenant's status (conditions with `observedGeneration`, url, next
//! maintenance window, pending changes), patched through the status subresource by server-side
//! apply, and only when it changed. Condition transitions are returned so the caller publishes
//! one Event per transition. `plan` is pure; `write` and `publish` are the I/O. What the status
//! says is decided in `conditions`.

use super::Ctx;
use crate::labels;
use chrono::{DateTime, Utc};
use contact_crds::v1alpha1::ContactTenant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::warn;

/// Condition types, in the order they are written.
pub const CONDITION_TYPES: &[&str] = &[
    "Ready",
    "Provisioned",
    "DatabaseReady",
    "IngressReady",
    "BackupsHealthy",
    "MaintenancePending",
    "TrialExpired",
];

/// Failure to write the status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The status patch failed.
    #[error("failed to patch status of {0}")]
    Patch(String, #[source] kube::Error),
}

/// A condition as the reconciler decides it, before transition bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cond {
    /// Condition type.
    pub type_: &'static str,
    /// `Some(true)` True, `Some(false)` False, `None` Unknown.
    pub status: Option<bool>,
    /// CamelCase reason.
    pub reason: String,
    /// Human message.
    pub message: String,
}

impl Cond {
    /// A condition.
    pub(crate) fn new(
        type_: &'static str,
        status: Option<bool>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub(crate) fn status_str(&self) -> &'static str {
        match self.status {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        }
    }

    /// Whether this condition describes a problem (for the Event type).
    pub(crate) fn is_warning(&self) -> bool {
        match self.type_ {
            "MaintenancePending" => false,
            "TrialExpired" => self.status == Some(true),
            _ => {
                self.status == Some(false)
                    && !matches!(
                        self.reason.as_str(),
                        "Suspended"
                            | "Progressing"
                            | "AwaitingAddress"
                            | "WaitingForRuntime"
                            | "RuntimeNotReady"
                            | "Disabled"
                    )
            }
        }
    }
}

/// The status the reconciler wants.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Desired {
    /// Generation acted on.
    pub observed_generation: Option<i64>,
    /// Conditions (every type in `CONDITION_TYPES` should be present).
    pub conditions: Vec<Cond>,
    /// Public URL.
    pub url: Option<String>,
    /// The window open now, or the next one.
    pub next_maintenance_window: Option<crate::maintenance::Occurrence>,
    /// Changes waiting for the window.
    pub pending_changes: Vec<crate::reconcile::gating::Change>,
    /// The last successful backup (kept once known: the Pods it came from are pruned).
    pub last_backup: Option<contact_crds::v1alpha1::BackupRecord>,
}

fn to_time(t: DateTime<Utc>) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).unwrap_or_default())
}

/// Turns decided conditions into API conditions, keeping `lastTransitionTime` of conditions whose
/// status did not change. Returns the conditions and those that transitioned.
pub(crate) fn conditions(
    desired: &Desired,
    previous: &[Condition],
    now: DateTime<Utc>,
) -> (Vec<Condition>, Vec<Cond>) {
    let mut out = Vec::new();
    let mut transitions = Vec::new();
    for c in &desired.conditions {
        let prev = previous.iter().find(|p| p.type_ == c.type_);
        let changed = prev.is_none_or(|p| p.status != c.status_str());
        if prev.is_none_or(|p| p.status != c.status_str() || p.reason != c.reason) {
            transitions.push(c.clone());
        }
        let last_transition_time = match prev {
            Some(p) if !changed => p.last_transition_time.clone(),
            _ => to_time(now),
        };
        out.push(Condition {
            type_: c.type_.to_string(),
            status: c.status_str().to_string(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            observed_generation: desired.observed_generation,
            last_transition_time,
        });
    }
    (out, transitions)
}

/// The status object as JSON (only the fields this operator owns).
pub(crate) fn render(desired: &Desired, conditions: &[Condition]) -> Value {
    let mut s = json!({ "conditions": conditions });
    if let Some(g) = desired.observed_generation {
        s["observedGeneration"] = json!(g);
    }
    if let Some(u) = &desired.url {
        s["url"] = json!(u);
    }
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let Some(w) = desired.next_maintenance_window {
        s["nextMaintenanceWindow"] = json!({ "start": ts(w.start), "end": ts(w.end) });
    }
    if let Some(b) = &desired.last_backup {
        s["lastBackup"] = serde_json::to_value(b).unwrap_or(Value::Null);
    }
    if !desired.pending_changes.is_empty() {
        s["pendingChanges"] = desired
            .pending_changes
            .iter()
            .map(|c| json!({ "field": c.field, "description": c.description }))
            .collect();
    }
    s
}

fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    }
}

/// Whether the live status differs from `rendered` in any field we own (absent, null and empty
/// are the same thing, since the CRD types may serialize defaults either way).
pub(crate) fn differs(live: &Value, rendered: &Value) -> bool {
    const OWNED: &[&str] = &[
        "conditions",
        "observedGeneration",
        "url",
        "nextMaintenanceWindow",
        "pendingChanges",
        "lastBackup",
    ];
    OWNED.iter().any(|k| {
        let (a, b) = (live.get(*k), rendered.get(*k));
        if is_empty(a) && is_empty(b) {
            return false;
        }
        a != b
    })
}

/// What `update` decided: the condition transitions (one Event each) and the status to write,
/// if it differs from the live one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Conditions that transitioned.
    pub transitions: Vec<Cond>,
    /// The server-side-apply body for the status subresource (`None`: unchanged).
    pub patch: Option<Value>,
}

/// Decides the status write and the transitions (pure).
pub(crate) fn plan(tenant: &ContactTenant, desired: &Desired, now: DateTime<Utc>) -> Plan {
    let live = tenant
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    let previous: Vec<Condition> = live
        .get("conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let (conds, mut transitions) = conditions(desired, &previous, now);
    // On the first visit every condition "transitions" from nothing; seven Events saying so
    // would bury the one that matters. Report provisioning and problems only.
    if previous.is_empty() {
        transitions.retain(|c| c.type_ == "Provisioned" || c.is_warning());
    }
    let rendered = render(desired, &conds);
    let patch = differs(&live, &rendered).then(|| {
        json!({
            "apiVersion": "contact.dev/v1alpha1",
            "kind": "ContactTenant",
            "status": rendered,
        })
    });
    Plan { transitions, patch }
}

/// Writes a planned status (server-side apply on the status subresource).
pub(crate) async fn write(
    api: &Api<ContactTenant>,
    name: &str,
    patch: &Value,
) -> Result<(), Error> {
    api.patch_status(
        name,
        &PatchParams::apply(labels::FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| Error::Patch(name.to_string(), e))
}

/// Publishes `desired`: the status write (if it changed) and one Event per condition
/// transition, then the tenant's condition gauges.
pub(crate) async fn publish(
    tenant: &ContactTenant,
    ctx: &Ctx,
    desired: &Desired,
) -> Result<(), super::Error> {
    let ns = tenant.namespace().unwrap_or_default();
    let api: Api<ContactTenant> = Api::namespaced(ctx.client.clone(), &ns);
    let plan = plan(tenant, desired, ctx.clock.now());
    let name = tenant.name_any();
    let written = async {
        match &plan.patch {
            Some(p) => write(&api, &name, p).await,
            None => Ok(()),
        }
    };
    let events = async {
        for c in &plan.transitions {
            let type_ = if c.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            };
            let text = format!("{}={}: {}", c.type_, c.status_str(), c.message);
            note(ctx, tenant, type_, &c.reason, text).await;
        }
    };
    // The Events go out alongside the status write rather than after it: they are best effort,
    // and a reconcile should not wait a round trip for them (client-go's recorder is
    // asynchronous for the same reason).
    let (written, ()) = futures::join!(written, events);
    written?;
    let gauges = desired
        .conditions
        .iter()
        .map(|c| (c.type_.to_string(), c.status_str().to_string()))
        .collect();
    ctx.metrics
        .set_conditions(&format!("{ns}/{name}"), Some(gauges));
    Ok(())
}

/// Publishes one Event about `tenant` (best effort: failing to record one must not fail the
/// reconcile). The note is cut to the API's 1,000 characters.
pub(crate) async fn note(
    ctx: &Ctx,
    tenant: &ContactTenant,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &tenant.object_ref(&())).await {
        warn!(error = %e, "failed to publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn desired(ready: bool) -> Desired {
        Desired {
            observed_generation: Some(2),
            conditions: vec![
                Cond::new(
                    "Ready",
                    Some(ready),
                    if ready {
                        "RuntimeReady"
                    } else {
                        "RuntimeNotReady"
                    },
                    "m",
                ),
                Cond::new("TrialExpired", Some(false), "NoTrial", ""),
            ],
            url: Some("https://x".into()),
            next_maintenance_window: None,
            pending_changes: vec![],
            last_backup: None,
        }
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let t0 = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("t");
        let t1 = t0 + chrono::Duration::minutes(5);
        let (c0, tr0) = conditions(&desired(false), &[], t0);
        assert_eq!(tr0.len(), 2, "first visit: every condition is a transition");
        let (c1, tr1) = conditions(&desired(false), &c0, t1);
        assert!(tr1.is_empty());
        assert_eq!(c1, c0);
        assert!(!differs(
            &render(&desired(false), &c0),
            &render(&desired(false), &c1)
        ));
        let (c2, tr2) = conditions(&desired(true), &c1, t1);
        assert_eq!(tr2.len(), 1);
        assert_eq!(c2[0].last_transition_time, to_time(t1));
        assert_eq!(c2[1].last_transition_time, to_time(t0));
        assert!(differs(
            &render(&desired(false), &c1),
            &render(&desired(true), &c2)
        ));
        assert!(c2.iter().all(|c| c.observed_generation == Some(2)));
    }

    #[test]
    fn empty_and_absent_are_equal() {
        let a = json!({"conditions": [], "url": "u"});
        let b = json!({"url": "u", "pendingChanges": []});
        assert!(!differs(&a, &b));
        assert!(differs(&a, &json!({"url": "v"})));
    }
}
