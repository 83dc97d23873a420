//! What admission cannot check is checked by the operator and shown on the tenant: a time zone
//! missing from the time zone database (a CEL rule cannot hold the list), and a Conversation API
//! host that is neither Sinch's nor on the operator's allow-list (a tenant's author must not be
//! able to make the runtime fetch internal URLs). Nothing is applied for such a tenant.

use crate::common::*;
use contact_operator::config::OperatorConfig;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

#[tokio::test]
async fn an_unknown_backup_time_zone_is_a_condition() {
    let env = env().await;
    let mut t = tenant_json();
    // The shape of an IANA name (admission lets it through), but no such zone.
    t["spec"]["backups"] = json!({ "schedule": "0 2 * * *", "timeZone": "Mars/Olympus_Mons" });
    create_tenant(&env.admin, t).await;
    settle(&env).await;
    let message = assert_condition(&env.admin, "Ready", "False", "InvalidTimeZone").await;
    assert!(message.contains("Mars/Olympus_Mons"), "{message}");
    assert!(get_opt::<StatefulSet>(&env.admin, "acme").await.is_none());

    patch_tenant(
        &env.admin,
        json!({ "spec": { "backups": { "timeZone": "Europe/Berlin" } } }),
    )
    .await;
    reconcile_once(&env).await;
    assert!(is_provisioned(&env.admin).await);
}

fn pointing_at(api: &str, auth: &str) -> serde_json::Value {
    let mut t = tenant_json();
    let c = &mut t["spec"]["channels"][0]["conversationApi"];
    c["apiBaseUrl"] = json!(api);
    c["authUrl"] = json!(auth);
    t
}

#[tokio::test]
async fn a_conversation_api_host_off_the_allow_list_is_refused() {
    let env = env().await;
    let internal = "http://10.0.0.1:8080";
    create_tenant(
        &env.admin,
        pointing_at(internal, "http://10.0.0.1:8080/oauth2/token"),
    )
    .await;
    settle(&env).await;
    let message = assert_condition(
        &env.admin,
        "Ready",
        "False",
        "ConversationApiHostNotAllowed",
    )
    .await;
    assert!(message.contains("10.0.0.1:8080"), "{message}");
    assert!(
        get_opt::<ConfigMap>(&env.admin, "acme-config")
            .await
            .is_none(),
        "the runtime is never told the address"
    );
}

#[tokio::test]
async fn an_allow_listed_host_is_accepted() {
    let config = OperatorConfig {
        conversation_api_hosts: vec!["simulator.tests.svc:9090".into()],
        ..OperatorConfig::default()
    };
    let env = env_with(config, true).await;
    let sim = "http://simulator.tests.svc:9090";
    create_tenant(&env.admin, pointing_at(sim, &format!("{sim}/oauth2/token"))).await;
    settle(&env).await;
    assert!(is_provisioned(&env.admin).await);
}

#[tokio::test]
async fn the_platform_decides_runtime_images_and_ingress_annotations() {
    let env = env().await;
    let mut t = tenant_json();
    t["spec"]["runtime"]["image"] = json!("example.com/evil:1");
    create_tenant(&env.admin, t).await;
    settle(&env).await;
    let message = assert_condition(&env.admin, "Ready", "False", "RuntimeImageNotAllowed").await;
    assert!(message.contains("example.com/evil:1"), "{message}");
    assert!(get_opt::<StatefulSet>(&env.admin, "acme").await.is_none());

    // Another version of the platform's image is the tenant's to pick; a snippet annotation is
    // not.
    let patch = json!({ "spec": {
        "runtime": { "image": "ghcr.io/contact-dev/contact-runtime:1.2.3" },
        "ingress": { "annotations": {
            "cert-manager.io/cluster-issuer": "letsencrypt",
            "nginx.ingress.kubernetes.io/server-snippet": "location / { proxy_pass http://10.0.0.1; }"
        } }
    } });
    patch_tenant(&env.admin, patch).await;
    reconcile_once(&env).await;
    let message =
        assert_condition(&env.admin, "Ready", "False", "IngressAnnotationNotAllowed").await;
    assert!(message.contains("server-snippet"), "{message}");

    let drop_snippet = json!({ "spec": { "ingress": { "annotations": {
        "nginx.ingress.kubernetes.io/server-snippet": null
    } } } });
    patch_tenant(&env.admin, drop_snippet).await;
    reconcile_once(&env).await;
    assert!(is_provisioned(&env.admin).await);
}
