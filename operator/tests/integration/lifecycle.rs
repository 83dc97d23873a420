//! Trial expiry and suspension: the runtime scales to zero at once (no window), Ready says why,
//! the data stays; lifting the suspension brings the runtime back.

use crate::common::*;
use chrono::Duration as ChronoDuration;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use serde_json::json;

async fn replicas(env: &Env) -> Option<i32> {
    get::<StatefulSet>(&env.admin, "acme").await.spec.replicas
}

#[tokio::test]
async fn trial_expiry_scales_to_zero_and_keeps_data() {
    let env = env().await;
    let mut t = tenant_json();
    let ends = wednesday() + ChronoDuration::hours(1);
    t["spec"]["trial"] =
        json!({ "endsAt": ends.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) });
    create_tenant(&env.admin, t).await;
    let action = settle(&env).await;
    assert_eq!(replicas(&env).await, Some(1));
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(300)),
        "resync (5 min) comes before the trial end (1 h)"
    );
    assert_eq!(
        condition(&env.admin, "TrialExpired").await.map(|c| c.1),
        Some("TrialActive".into())
    );
    let keys_before = get::<Secret>(&env.admin, "acme-keys").await.data;

    env.clock.advance(ChronoDuration::hours(2));
    reconcile_once(&env).await;
    assert_eq!(
        replicas(&env).await,
        Some(0),
        "scaled to zero outside the window: nothing to disturb"
    );
    assert_eq!(
        condition(&env.admin, "Ready").await.map(|c| (c.0, c.1)),
        Some(("False".into(), "TrialExpired".into()))
    );
    assert_eq!(
        condition_status(&env.admin, "TrialExpired").await,
        Some("True".into())
    );
    let cj = get::<CronJob>(&env.admin, "acme-backup").await;
    assert_eq!(cj.spec.suspend, Some(true), "no new backups while expired");
    assert!(
        get_opt::<PersistentVolumeClaim>(&env.admin, "acme-backups")
            .await
            .is_some()
    );
    let keys_after = get::<Secret>(&env.admin, "acme-keys").await.data;
    assert_eq!(
        keys_before, keys_after,
        "generated keys are never regenerated"
    );
    assert!(has_event(&env.admin, "TrialEnded").await);
}

#[tokio::test]
async fn suspension_scales_to_zero_and_back() {
    let (env, _) = settled_env().await;
    patch_tenant(&env.admin, json!({ "spec": { "suspend": true } })).await;
    reconcile_once(&env).await;
    assert_eq!(replicas(&env).await, Some(0));
    assert_eq!(
        condition(&env.admin, "Ready").await.map(|c| c.1),
        Some("Suspended".into())
    );
    patch_tenant(&env.admin, json!({ "spec": { "suspend": false } })).await;
    reconcile_once(&env).await;
    assert_eq!(
        replicas(&env).await,
        Some(1),
        "resuming disturbs nothing running: at once"
    );
    assert_eq!(
        condition(&env.admin, "Ready").await.map(|c| c.1),
        Some("RuntimeNotReady".into())
    );
}
