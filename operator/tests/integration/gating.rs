//! Maintenance gating: restart-requiring changes wait for the window (with the reason in status),
//! live config applies at once, the window opening applies what waited, and `apply-now` skips
//! the wait.

use crate::common::*;
use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::Action;
use serde_json::json;
use std::time::Duration;

async fn image(env: &Env) -> String {
    let sts = get::<StatefulSet>(&env.admin, "acme").await;
    sts.spec.template.spec.expect("pod").containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

async fn routing(env: &Env) -> serde_json::Value {
    let cm = get::<ConfigMap>(&env.admin, "acme-config").await;
    let cfg: serde_json::Value =
        serde_json::from_str(&cm.data.expect("data")["runtime.json"]).expect("json");
    cfg["routing"].clone()
}

#[tokio::test]
async fn image_waits_for_the_window_config_does_not() {
    let (env, _) = settled_env().await;

    patch_tenant(
        &env.admin,
        json!({ "spec": {
            "runtime": { "image": "ghcr.io/contact-dev/contact-runtime:2.0.0" },
            "routing": { "maxConversationsPerAgent": 9 }
        }}),
    )
    .await;
    let action = reconcile_once(&env).await;
    assert_eq!(
        image(&env).await,
        "ghcr.io/contact-dev/contact-runtime:1.0.0",
        "image held"
    );
    assert_eq!(
        routing(&env).await["max_conversations_per_agent"],
        9,
        "config applied at once"
    );
    let message =
        assert_condition(&env.admin, "MaintenancePending", "True", "WaitingForWindow").await;
    assert!(
        message.contains("2.0.0") && message.contains("2026-11-28T22:00:00"),
        "{message}"
    );
    let s = status(&env.admin).await;
    assert_eq!(s["pendingChanges"][0]["field"], "image");
    assert_eq!(s["observedGeneration"], 2);
    assert!(has_event(&env.admin, "WaitingForWindow").await);
    // Requeued for the resync or the window opening, whichever is first.
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    // Just before the window: still waiting, and the wake-up is exactly the opening.
    env.clock.set(
        Utc.with_ymd_and_hms(2026, 11, 28, 21, 59, 0)
            .single()
            .expect("t"),
    );
    let action = reconcile_once(&env).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert_eq!(
        image(&env).await,
        "ghcr.io/contact-dev/contact-runtime:1.0.0"
    );

    // The window opens: what waited is applied.
    env.clock.advance(ChronoDuration::minutes(2));
    reconcile_once(&env).await;
    assert_eq!(
        image(&env).await,
        "ghcr.io/contact-dev/contact-runtime:2.0.0"
    );
    assert_eq!(
        condition_status(&env.admin, "MaintenancePending").await,
        Some("False".into())
    );
    assert!(
        status(&env.admin)
            .await
            .get("pendingChanges")
            .is_none_or(|p| p.as_array().is_none_or(Vec::is_empty))
    );
    assert!(has_event(&env.admin, "RestartChangesApplied").await);
}

#[tokio::test]
async fn apply_now_annotation_skips_the_wait() {
    let (env, _) = settled_env().await;
    patch_tenant(
        &env.admin,
        json!({
            "metadata": { "annotations": { "contact.dev/apply-now": "true" } },
            "spec": { "runtime": { "image": "ghcr.io/contact-dev/contact-runtime:3.0.0" } }
        }),
    )
    .await;
    reconcile_once(&env).await;
    assert_eq!(
        image(&env).await,
        "ghcr.io/contact-dev/contact-runtime:3.0.0"
    );
    assert_eq!(
        condition_status(&env.admin, "MaintenancePending").await,
        Some("False".into())
    );
}
