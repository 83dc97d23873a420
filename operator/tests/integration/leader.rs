//! Two operator replicas on one control plane: exactly one leads (and reconciles); when it stops,
//! the other takes over; a leader whose lease is taken from it stops leading at once.

use crate::common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use std::time::Duration;

const LEASE: &str = "contact-operator";

/// A replica with the admin client, electing its leader on `LEASE` in `default`.
fn start(env: &Env, identity: &str) -> Replica {
    start_replica(env.admin.clone(), replica_settings("default", identity))
}

/// Who holds the Lease.
async fn holder(env: &Env) -> Option<String> {
    let lease = Api::<Lease>::namespaced(env.admin.clone(), "default")
        .get("contact-operator")
        .await
        .expect("lease");
    lease.spec.and_then(|s| s.holder_identity)
}

/// `eventually` for a check that needs no I/O (a replica's health).
async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let what = format!("timed out waiting for {what}");
    eventually(&what, timeout, || std::future::ready(f())).await;
}

#[tokio::test]
async fn one_leader_among_two_and_failover() {
    let env = env().await;
    let mut a = start(&env, "replica-a");
    let mut b = start(&env, "replica-b");

    wait_for("a leader", Duration::from_secs(30), || {
        a.health.is_leader() || b.health.is_leader()
    })
    .await;
    // Never two leaders at once, sampled over several lease renewals.
    for _ in 0..50 {
        assert!(
            !(a.health.is_leader() && b.health.is_leader()),
            "two leaders"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader, follower, leader_id, follower_id) = if a.health.is_leader() {
        (&mut a, &mut b, "replica-a", "replica-b")
    } else {
        (&mut b, &mut a, "replica-b", "replica-a")
    };
    assert_eq!(holder(&env).await.as_deref(), Some(leader_id));

    // The leader reconciles.
    create_tenant(&env.admin, tenant_json()).await;
    eventually(
        "the leader never provisioned the tenant",
        Duration::from_secs(60),
        || is_provisioned(&env.admin),
    )
    .await;

    // The leader stops: the follower takes over.
    let _ = leader.stop.take().map(|s| s.send(()));
    let stopped = tokio::time::timeout(Duration::from_secs(30), &mut leader.task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "a stopped leader exits cleanly: {stopped:?}"
    );
    let f = follower.health.clone();
    wait_for("the follower to take over", Duration::from_secs(30), || {
        f.is_leader()
    })
    .await;
    assert_eq!(holder(&env).await.as_deref(), Some(follower_id));

    let _ = follower.stop.take().map(|s| s.send(()));
    let _ = tokio::time::timeout(Duration::from_secs(30), &mut follower.task).await;
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops_leading() {
    let env = env().await;
    let mut a = start(&env, "replica-a");
    let health = a.health.clone();
    wait_for("replica-a to lead", Duration::from_secs(30), || {
        health.is_leader()
    })
    .await;

    // Someone takes the lease by hand (as a replica would after a partition).
    let leases = Api::<Lease>::namespaced(env.admin.clone(), "default");
    let mut lease = leases.get(LEASE).await.expect("lease");
    let spec = lease.spec.as_mut().expect("spec");
    spec.holder_identity = Some("rival".into());
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    leases
        .replace(LEASE, &Default::default(), &lease)
        .await
        .expect("take the lease");

    // The next renewal sees the rival: replica-a steps down, exits with an error (so its pod restarts as a follower) and leaves the rival's lease alone.
    let stopped = tokio::time::timeout(Duration::from_secs(30), &mut a.task).await;
    assert!(
        matches!(
            stopped,
            Ok(Ok(Err(contact_operator::run::Error::LeaseLost)))
        ),
        "a leader that lost its lease exits with LeaseLost: {stopped:?}"
    );
    assert!(!a.health.is_leader());
    let lease = leases.get(LEASE).await.expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("rival")
    );
    drop(a.stop.take());
}
