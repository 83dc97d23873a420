//! Wiring for the binary: HTTP endpoints, leader election on a `coordination.k8s.io` Lease, the
//! controller and the deletion-grace sweeper. Only the leader reconciles and sweeps, so two
//! replicas are safe; losing the lease stops this replica's controller and returns an error, so
//! the process exits and restarts as a follower (the usual controller-runtime behaviour).

use crate::clock::{Clock, SystemClock};
use crate::config::OperatorConfig;
use crate::http::{Health, router};
use crate::lifecycle::grace;
use crate::metrics::Metrics;
use crate::reconcile::{Ctx, run_controller};
use futures::FutureExt;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{error, info, warn};

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP listener could not be bound.
    #[error("failed to bind {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// The API server could not be reached at start.
    #[error("failed to reach the API server")]
    ApiServer(#[source] kube::Error),
    /// The lease manager could not be created.
    #[error("failed to set up leader election")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    /// Another replica took the lease.
    #[error("lost the leader lease")]
    LeaseLost,
}

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// Seconds a lease is valid without renewal.
    pub duration_secs: u64,
    /// Seconds before expiry the holder renews.
    pub grace_secs: u64,
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Operator-wide configuration.
    pub config: OperatorConfig,
    /// Leader election, or `None` to run unconditionally (single replica, development).
    pub lease: Option<LeaseSettings>,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: SocketAddr,
    /// How often the sweeper purges data past its grace period.
    pub sweep_interval: Duration,
    /// Identity reported on Events.
    pub instance: Option<String>,
}

/// Runs the operator until `shutdown` resolves (Ok) or the lease is lost (Err).
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let Settings {
        config,
        lease,
        http_addr,
        sweep_interval,
        instance,
    } = settings;
    let shutdown = shutdown.shared();

    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| Error::Bind(http_addr, e))?;
    let app = router(metrics.clone(), health.clone());
    let http_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(http_shutdown)
            .await
        {
            error!(error = %e, "http server failed");
        }
    });

    client.apiserver_version().await.map_err(Error::ApiServer)?;
    health.ready.store(true, Ordering::SeqCst);

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ctx = Arc::new(Ctx::new(
        client.clone(),
        config,
        clock.clone(),
        metrics,
        instance,
    ));

    let Some(lease) = lease else {
        health.leader.store(true, Ordering::SeqCst);
        lead(ctx, sweep_interval, shutdown).await;
        return Ok(());
    };

    let manager = LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_secs)
        .with_grace(lease.grace_secs)
        .with_field_manager(format!("{}-lease", crate::labels::FIELD_MANAGER))
        .build()
        .await
        .map_err(Error::Lease)?;
    let (mut is_leader, lease_task) = manager.watch().await;

    // Follow until we hold the lease (or are told to stop).
    info!(identity = %lease.identity, "waiting for the leader lease");
    loop {
        if *is_leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = is_leader.changed() => if changed.is_err() { return Err(Error::LeaseLost) },
            () = shutdown.clone() => return Ok(()),
        }
    }
    info!(identity = %lease.identity, "acquired the leader lease");
    health.leader.store(true, Ordering::SeqCst);

    // Lead until shutdown or until the lease is lost.
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let watch_lease = async move {
        while is_leader.changed().await.is_ok() {
            if !*is_leader.borrow() {
                break;
            }
        }
        let _ = lost_tx.send(());
        // Keep the receiver alive until here; dropping it releases the lease.
        drop(is_leader);
    };
    let lost = lost_rx.map(|_| ()).shared();
    let stop =
        futures::future::select(Box::pin(shutdown.clone()), Box::pin(lost.clone())).map(|_| ());
    let watcher = tokio::spawn(watch_lease);
    lead(ctx, sweep_interval, stop).await;
    health.leader.store(false, Ordering::SeqCst);

    let lost_lease = lost.now_or_never().is_some() && shutdown.clone().now_or_never().is_none();
    watcher.abort();
    // The receiver is gone with the aborted task: the lease task releases the lease and exits.
    if let Ok(Err(e)) = lease_task.await {
        warn!(error = %e, "failed to release the lease");
    }
    if lost_lease {
        Err(Error::LeaseLost)
    } else {
        Ok(())
    }
}

/// The leader's work: the controller and the sweeper, until `stop`.
async fn lead(
    ctx: Arc<Ctx>,
    sweep_interval: Duration,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let stop = stop.shared();
    let sweeper = {
        let ctx = ctx.clone();
        let stop = stop.clone();
        async move {
            let mut tick = tokio::time::interval(sweep_interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.clone() => break,
                }
                match grace::sweep(&ctx.client, ctx.clock.now()).await {
                    Ok(purged) if !purged.is_empty() => {
                        info!(?purged, "purged data past its grace period")
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %crate::reconcile::error_chain(&e), "sweep failed"),
                }
            }
        }
    };
    tokio::join!(run_controller(ctx, stop), sweeper);
}
