//! A missing Secret or key is a condition with a precise reason and an Event, the reconcile
//! requeues instead of failing, and the tenant recovers once the Secret is right.

use crate::common::*;
use contact_operator::reconcile::SECRET_RETRY;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::controller::Action;
use std::time::Duration;

#[tokio::test]
async fn missing_secret_then_missing_key_then_recovery() {
    let env = env_with(Default::default(), false).await;
    create_tenant(&env.admin, tenant_json()).await;
    let action = settle(&env).await;
    assert_eq!(
        action,
        Action::requeue(SECRET_RETRY),
        "requeue, no error, no crash loop"
    );
    let message = assert_condition(&env.admin, "Ready", "False", "SecretNotFound").await;
    assert!(message.contains("acme-sinch"), "{message}");
    assert_eq!(
        condition(&env.admin, "Provisioned").await.map(|c| c.1),
        Some("SecretNotFound".into())
    );
    assert!(has_event(&env.admin, "SecretNotFound").await);
    assert!(get_opt::<StatefulSet>(&env.admin, "acme").await.is_none());

    // The Secret appears without the webhook key.
    put_secret(
        &env.admin,
        "acme-sinch",
        &[("key-id", "id"), ("key-secret", "s")],
    )
    .await;
    reconcile_once(&env).await;
    let (_, reason, message) = condition(&env.admin, "Ready").await.expect("Ready");
    assert_eq!(reason, "SecretKeyMissing");
    assert!(message.contains("webhook-secret"), "{message}");
    assert!(has_event(&env.admin, "SecretKeyMissing").await);

    // Fixed: the tenant is provisioned.
    put_secret(
        &env.admin,
        "acme-sinch",
        &[
            ("key-id", "id"),
            ("key-secret", "s"),
            ("webhook-secret", "w"),
        ],
    )
    .await;
    reconcile_once(&env).await;
    assert_eq!(
        condition_status(&env.admin, "Provisioned").await,
        Some("True".into())
    );
    assert!(get_opt::<StatefulSet>(&env.admin, "acme").await.is_some());
}

/// With the controller running, creating the missing Secret wakes the tenant through the Secret
/// watch, before the 30 s retry would have.
#[tokio::test]
async fn the_secret_watch_wakes_the_tenant() {
    let env = env_with(Default::default(), false).await;
    let controller = start_controller(&env);
    create_tenant(&env.admin, tenant_json()).await;
    let c = &env.admin;
    eventually(
        "no SecretNotFound condition",
        Duration::from_secs(20),
        || async {
            condition(c, "Ready")
                .await
                .is_some_and(|c| c.1 == "SecretNotFound")
        },
    )
    .await;
    put_secret(
        c,
        "acme-sinch",
        &[
            ("key-id", "i"),
            ("key-secret", "s"),
            ("webhook-secret", "w"),
        ],
    )
    .await;
    // Strictly less than SECRET_RETRY after the last reconcile: only the watch can explain it.
    let within = SECRET_RETRY - Duration::from_secs(5);
    eventually(
        "the Secret watch did not wake the tenant",
        within,
        || async { condition_status(c, "Provisioned").await.as_deref() == Some("True") },
    )
    .await;
    controller.stop().await;
}
