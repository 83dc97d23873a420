//! Wiring for the binary: HTTP endpoints, leader election on a `coordination.k8s.io` Lease, the
//! controller and the deletion-grace sweeper. Only the leader reconciles and sweeps, so two
//! replicas are safe; losing the lease stops this replica's controller and returns an error, so
//! the process exits and restarts as a follower (the usual controller-runtime behaviour).

use crate::clock::{Clock, SystemClock};
use crate::config::OperatorConfig;
use crate::http::{Health, router};
use crate::leader::{Elector, Ended, Timing};
use crate::metrics::Metrics;
use crate::reconcile::{Ctx, run_controller};
use futures::FutureExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
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
    /// The lease was not renewed in time, or another replica took it.
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
    /// Lease duration, renew deadline and retry period.
    pub timing: Timing,
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
        health.lead_always();
        lead(ctx, sweep_interval, shutdown).await;
        return Ok(());
    };

    let api = Api::<Lease>::namespaced(client, &lease.namespace);
    let mut elector = Elector::new(api, &lease.name, &lease.identity, lease.timing);
    let Some(until) = elector.acquire(shutdown.clone()).await else {
        return Ok(());
    };
    // Shutdown stops the controller gracefully and then releases the lease; a lost lease drops
    // the controller at once and exits, so the process restarts as a follower (the usual
    // controller-runtime behaviour).
    match elector
        .lead(until, &health, lead(ctx, sweep_interval, shutdown))
        .await
    {
        Ended::Finished(()) => Ok(()),
        Ended::Lost { .. } => Err(Error::LeaseLost),
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
                match crate::reconcile::sweep(&ctx, ctx.clock.now()).await {
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
