//! Idempotence: once a tenant is applied, reconciling it again makes no write at all, whether
//! the reconcile is called directly or driven by the running controller's resyncs.

use crate::common::*;
use contact_operator::config::OperatorConfig;
use std::time::Duration;

#[tokio::test]
async fn a_reconcile_with_nothing_to_do_writes_nothing() {
    let (env, _) = settled_env().await;
    assert!(
        !env.counter.writes().is_empty(),
        "the first passes did write"
    );

    env.counter.reset();
    reconcile_once(&env).await;
    reconcile_once(&env).await;
    assert_eq!(env.counter.writes(), Vec::<String>::new());
    assert!(env.counter.total() > 0, "it did read");
}

#[tokio::test]
async fn the_running_controller_idles_without_writes() {
    let config = OperatorConfig {
        resync: Duration::from_millis(500),
        ..OperatorConfig::default()
    };
    let env = env_with(config, true).await;
    let controller = start_controller(&env);
    create_tenant(&env.admin, tenant_json()).await;

    // Wait for the controller to provision the tenant on its own.
    eventually(
        "controller never provisioned the tenant",
        Duration::from_secs(60),
        || is_provisioned(&env.admin),
    )
    .await;
    // Let the watch events caused by our own writes drain.
    tokio::time::sleep(Duration::from_secs(2)).await;

    env.counter.reset();
    let before = env.ctx.metrics.reconciles();
    // Wait for at least three resync reconciles (bounded, in case the machine is busy).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.ctx.metrics.reconciles() - before < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ran = env.ctx.metrics.reconciles() - before;
    assert!(ran >= 3, "resyncs kept reconciling ({ran})");
    assert_eq!(
        env.counter.writes(),
        Vec::<String>::new(),
        "after {ran} idle reconciles"
    );

    controller.stop().await;
}
