//! Maintenance gating (pure): decide whether the desired workload may be applied now, or waits for
//! the tenant's window.
//!
//! What restarts runtime pods waits: a new image, resources, replica count, the database, or any
//! other pod-template change (e.g. a new channel Secret mount). What the runtime reloads live (the
//! ConfigMap, Secret contents, Service, Ingress, NetworkPolicy, backups) never waits.
//!
//! The comparison is on "restart facts" recorded in an annotation on the workload when it is
//! applied, not on the live object: the API server defaults and normalises fields (`0.1` CPU
//! becomes `100m`), so comparing live objects would see changes that are not there.
//!
//! Nothing waits when no runtime pod would be disturbed: on creation, when scaling to zero
//! (suspension and trial expiry act at once), or when nothing is running (resuming).

use crate::build::Children;
use crate::maintenance::WindowState;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Annotation on the workload holding its `RestartFacts` as JSON.
pub(crate) const RESTART_FACTS: &str = "contact.dev/restart-facts";

/// The parts of a workload whose change restarts runtime pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RestartFacts {
    /// `StatefulSet` or `Deployment`.
    pub kind: String,
    /// Database identity (kind and, for CloudNativePG, the cluster shape).
    pub database: String,
    /// Runtime image.
    pub image: String,
    /// Hash of the resources.
    pub resources: String,
    /// Replica count.
    pub replicas: i32,
    /// Hash of the whole pod template.
    pub template: String,
}

fn short_hash<T: Serialize>(v: &T) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..8])
}

impl RestartFacts {
    /// Facts of the workload among `children` (whichever kind the database calls for);
    /// `database` identifies the database (kind and, for CloudNativePG, the cluster's shape).
    pub(crate) fn of(children: &Children, database: String) -> Self {
        let (kind, replicas, template) = match (&children.statefulset, &children.deployment) {
            (Some(s), _) => (
                "StatefulSet",
                s.spec.replicas.unwrap_or(1),
                Some(&s.spec.template),
            ),
            (None, Some(d)) => (
                "Deployment",
                d.spec.replicas.unwrap_or(1),
                Some(&d.spec.template),
            ),
            (None, None) => ("None", 0, None),
        };
        let container = template
            .and_then(|t| t.spec.as_ref())
            .and_then(|p| p.containers.first());
        Self {
            kind: kind.into(),
            database,
            image: container.and_then(|c| c.image.clone()).unwrap_or_default(),
            resources: short_hash(&container.and_then(|c| c.resources.clone())),
            replicas,
            template: short_hash(&template),
        }
    }

    /// Reads facts from a workload's annotations (`None` for workloads made before facts existed).
    pub(crate) fn from_annotation(
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> Option<Self> {
        let raw = meta.annotations.as_ref()?.get(RESTART_FACTS)?;
        serde_json::from_str(raw).ok()
    }

    /// JSON for the annotation.
    pub(crate) fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Human descriptions of what differs from `old`, most specific first; empty if nothing does.
    pub(crate) fn changes_from(&self, old: &RestartFacts) -> Vec<Change> {
        let mut out = Vec::new();
        if self.database != old.database || self.kind != old.kind {
            out.push(Change::new(
                "database",
                format!("database: {} → {}", old.database, self.database),
            ));
        }
        if self.image != old.image {
            out.push(Change::new(
                "image",
                format!("image: {} → {}", old.image, self.image),
            ));
        }
        if self.resources != old.resources {
            out.push(Change::new("resources", "resources change".to_string()));
        }
        if self.replicas != old.replicas {
            out.push(Change::new(
                "replicas",
                format!("replicas: {} → {}", old.replicas, self.replicas),
            ));
        }
        if out.is_empty() && self.template != old.template {
            out.push(Change::new(
                "podTemplate",
                "pod template change (e.g. a new channel secret mount)".to_string(),
            ));
        }
        out
    }
}

/// One restart-requiring change: which part, and from what to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// The part that changes: `database`, `image`, `resources`, `replicas` or `podTemplate`.
    pub field: &'static str,
    /// Human description, e.g. `image: a → b`.
    pub description: String,
}

impl Change {
    fn new(field: &'static str, description: String) -> Self {
        Self { field, description }
    }
}

/// The descriptions of `changes`, joined for a message.
pub(crate) fn describe(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| c.description.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What to do with the workload in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Apply it now; `changes` lists what restarts (empty for creation or no change).
    Apply {
        /// Restart-requiring changes being applied.
        changes: Vec<Change>,
    },
    /// Keep the existing workload; apply `pending` when the window opens.
    Hold {
        /// What waits.
        pending: Vec<Change>,
    },
}

/// Decides whether a change of restart facts from `existing` to `desired` may be applied now.
pub(crate) fn decide(
    desired: &RestartFacts,
    existing: Option<&RestartFacts>,
    window: Option<&WindowState>,
    apply_now: bool,
) -> Decision {
    let Some(existing) = existing else {
        return Decision::Apply {
            changes: Vec::new(),
        };
    };
    let changes = desired.changes_from(existing);
    let disturbs_running_pods = existing.replicas > 0 && desired.replicas > 0;
    let window_open = window.is_none_or(WindowState::is_open);
    if changes.is_empty() || !disturbs_running_pods || window_open || apply_now {
        Decision::Apply { changes }
    } else {
        Decision::Hold { pending: changes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintenance::WeeklyWindow;
    use chrono::{TimeZone, Utc};

    fn facts(image: &str, replicas: i32) -> RestartFacts {
        RestartFacts {
            kind: "Deployment".into(),
            database: "postgres".into(),
            image: image.into(),
            resources: "r".into(),
            replicas,
            template: format!("t-{image}"),
        }
    }

    fn states() -> (WindowState, WindowState) {
        let w = WeeklyWindow::parse("Saturday", "22:00", "4h", "UTC").expect("window");
        let closed = w.state_at(
            Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0)
                .single()
                .expect("t"),
        );
        let open = w.state_at(
            Utc.with_ymd_and_hms(2026, 11, 28, 23, 0, 0)
                .single()
                .expect("t"),
        );
        (closed, open)
    }

    #[test]
    fn creation_and_no_change_apply() {
        let (closed, _) = states();
        assert_eq!(
            decide(&facts("a", 1), None, Some(&closed), false),
            Decision::Apply { changes: vec![] }
        );
        assert_eq!(
            decide(&facts("a", 1), Some(&facts("a", 1)), Some(&closed), false),
            Decision::Apply { changes: vec![] }
        );
    }

    #[test]
    fn image_change_waits_for_the_window_unless_open_or_forced() {
        let (closed, open) = states();
        let d = decide(&facts("b", 2), Some(&facts("a", 2)), Some(&closed), false);
        assert_eq!(
            d,
            Decision::Hold {
                pending: vec![Change::new("image", "image: a → b".into())]
            }
        );
        assert!(matches!(
            decide(&facts("b", 2), Some(&facts("a", 2)), Some(&open), false),
            Decision::Apply { .. }
        ));
        assert!(matches!(
            decide(&facts("b", 2), Some(&facts("a", 2)), Some(&closed), true),
            Decision::Apply { .. }
        ));
        assert!(matches!(
            decide(&facts("b", 2), Some(&facts("a", 2)), None, false),
            Decision::Apply { .. }
        ));
    }

    #[test]
    fn scaling_to_or_from_zero_never_waits() {
        let (closed, _) = states();
        assert!(matches!(
            decide(&facts("a", 0), Some(&facts("a", 2)), Some(&closed), false),
            Decision::Apply { .. }
        ));
        assert!(matches!(
            decide(&facts("b", 2), Some(&facts("a", 0)), Some(&closed), false),
            Decision::Apply { .. }
        ));
    }

    #[test]
    fn lists_every_restart_reason() {
        let mut new = facts("b", 3);
        new.database = "cloudnativepg".into();
        new.resources = "r2".into();
        let got: Vec<_> = new
            .changes_from(&facts("a", 1))
            .into_iter()
            .map(|c| (c.field, c.description))
            .collect();
        assert_eq!(
            got,
            vec![
                ("database", "database: postgres → cloudnativepg".to_string()),
                ("image", "image: a → b".into()),
                ("resources", "resources change".into()),
                ("replicas", "replicas: 1 → 3".into())
            ]
        );
        let mut tpl = facts("a", 1);
        tpl.template = "other".into();
        assert_eq!(tpl.changes_from(&facts("a", 1))[0].field, "podTemplate");
    }
}
