//! A missing Secret or key is a condition with a precise reason and an Event, the reconcile
//! requeues instead of failing, and the tenant recovers once the Secret is right.

use crate::common::*;
use contact_operator::reconcile::SECRET_RETRY;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
use kube::runtime::controller::Action;

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
    let (status, reason, message) = condition(&env.admin, "Ready").await.expect("Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SecretNotFound")
    );
    assert!(message.contains("acme-sinch"), "{message}");
    assert_eq!(
        condition(&env.admin, "Provisioned").await.map(|c| c.1),
        Some("SecretNotFound".into())
    );
    assert!(
        event_reasons(&env.admin)
            .await
            .iter()
            .any(|r| r == "SecretNotFound")
    );
    assert!(
        Api::<StatefulSet>::namespaced(env.admin.clone(), NS)
            .get_opt("acme")
            .await
            .expect("get")
            .is_none()
    );

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
    assert!(
        event_reasons(&env.admin)
            .await
            .iter()
            .any(|r| r == "SecretKeyMissing")
    );

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
        condition(&env.admin, "Provisioned").await.map(|c| c.0),
        Some("True".into())
    );
    assert!(
        Api::<StatefulSet>::namespaced(env.admin.clone(), NS)
            .get_opt("acme")
            .await
            .expect("get")
            .is_some()
    );
}
