//! The routing service: the pure core made durable and safe with several replicas.
//!
//! Every replica runs [`RoutingService::run`]. It reports the Workspace sessions it serves
//! (presence, per replica, with a heartbeat so a crashed replica's sessions end) and competes for
//! the allocator lease (a `routing_leader` row with an epoch). The holder builds an
//! [`allocator::Allocator`] from the database and feeds it, in order, what any replica wrote:
//! `conversation_events` and `routing_signals`. Its decisions are conditional claims fenced by
//! the epoch, so a deposed holder cannot assign anything, and manual picks from any replica race
//! safely with them on the same `status = 'queued'` condition. Replicas wake the local
//! allocator right after a write ([`RoutingService::wake`]); others' writes are seen within
//! [`POLL`].
//!
//! See `tenant-runtime/ROUTING.md` § "The service".

pub(crate) mod allocator;
pub(crate) mod convert;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::RoutingDefaults;
use crate::live::LiveHub;
use crate::storage::{
    self, AgentTransfer, Store, TransferOutcome, TransferPlan, TransferTarget, new_id, now_ms,
};
use allocator::{Allocator, Step};
use contact_routing::{AgentStatus, Exclusion, TransferFacts, TransferVerdict, decide_transfer};

/// How long a lease lasts without renewal.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(10);

/// How often the holder renews its lease, and how often others try to take it.
pub(crate) const LEASE_RENEW: Duration = Duration::from_secs(2);

/// How often the allocator reads the input tables when nothing wakes it (other replicas' writes).
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// How often a replica proves its sessions are alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);

/// The allocator state is rebuilt from the database this often (it keeps closed conversations
/// for sticky routing and reopening; rebuilding bounds that memory).
pub(crate) const REBUILD_EVERY: Duration = Duration::from_secs(600);

/// Errors of the routing service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error("routing storage failed")]
    Storage(#[from] storage::Error),
    /// Another replica holds the lease now.
    #[error("the allocator lease was taken over")]
    Deposed,
}

/// The per-process handle: wakes the allocator, reports presence, runs the lease loop.
#[derive(Debug)]
pub struct RoutingService {
    store: Store,
    defaults: RoutingDefaults,
    replica: String,
    live: Arc<LiveHub>,
    wake: Notify,
    leading: AtomicBool,
    epoch: AtomicI64,
}

impl RoutingService {
    /// A service for this replica (a fresh replica id per process).
    pub fn new(store: Store, defaults: RoutingDefaults, live: Arc<LiveHub>) -> Self {
        Self {
            store,
            defaults,
            replica: new_id(),
            live,
            wake: Notify::new(),
            leading: AtomicBool::new(false),
            epoch: AtomicI64::new(0),
        }
    }

    /// Something was written: let the allocator (if it runs here) read it now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether this replica holds the allocator lease.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// The lease epoch this replica holds (0 when it holds none).
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// The routing settings this replica started with (the operator's rendering or the file).
    pub(crate) fn defaults(&self) -> &RoutingDefaults {
        &self.defaults
    }

    /// The capacity of every agent now (spec default, or what an admin saved).
    pub async fn capacity(&self) -> storage::Result<u32> {
        let saved = self.store.tenant_setting("routing").await?;
        Ok(convert::settings(&self.defaults, saved.as_ref()).1)
    }

    /// Gives a new account the tenant's auto-allocate default (spec, or what an admin saved).
    pub(crate) async fn seed_new_user(&self, user_id: &str) -> storage::Result<()> {
        let saved = self.store.tenant_setting("routing").await?;
        let on = saved
            .as_ref()
            .and_then(|v| v.get("auto_allocate_by_default"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(self.defaults.auto_allocate_by_default);
        self.store.set_auto_allocate(user_id, on).await
    }

    /// Records an agent-level change and wakes the allocator.
    pub(crate) async fn signal(&self, user_id: Option<&str>, kind: &str) -> storage::Result<()> {
        self.store.routing_signal(user_id, kind).await?;
        self.wake();
        Ok(())
    }

    /// Transfers a conversation to a named agent (see [`Store::transfer_to_agent`]), decided by
    /// the routing core's [`decide_transfer`] on what the transaction reads; `force` hands it
    /// over even when the agent lacks required skills.
    pub(crate) async fn transfer_to_agent(
        &self,
        transfer: &AgentTransfer<'_>,
        force: bool,
    ) -> storage::Result<TransferOutcome<Vec<Exclusion>>> {
        let capacity = transfer.capacity;
        self.store
            .transfer_to_agent(transfer, |target| transfer_plan(target, capacity, force))
            .await
    }

    /// Gives the lease up if this replica holds it (graceful shutdown, after [`Self::run`] was
    /// aborted), so another replica takes over at its next try instead of after [`LEASE_TTL`].
    pub(crate) async fn release(&self) {
        let epoch = self.epoch();
        if epoch > 0
            && let Err(e) = self.store.release_lease(&self.replica, epoch).await
        {
            tracing::warn!(error = %e, "routing: lease not released");
        }
        self.leading.store(false, Ordering::Relaxed);
    }

    /// Runs until aborted: presence reporting, heartbeat and the lease loop.
    pub async fn run(self: Arc<Self>) {
        // One task for both, so aborting it stops both.
        tokio::select! {
            () = self.clone().report_presence() => {}
            () = self.lease_loop() => {}
        }
    }

    async fn report_presence(self: Arc<Self>) {
        let mut changes = self.live.presence_changes();
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut open = true;
        loop {
            tokio::select! {
                change = changes.recv(), if open => {
                    let Some((user, sessions)) = change else {
                        open = false;
                        continue;
                    };
                    let sessions = i64::try_from(sessions).unwrap_or(i64::MAX);
                    match self.store.set_presence(&self.replica, &user, sessions).await {
                        Ok(()) => self.wake(),
                        Err(e) => tracing::warn!(error = %e, %user, "routing: presence not recorded"),
                    }
                }
                _ = heartbeat.tick() => {
                    match self.store.replica_heartbeat(&self.replica, now_ms()).await {
                        Ok(gone) if !gone.is_empty() => self.wake(),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "routing: heartbeat failed"),
                    }
                }
            }
        }
    }

    async fn lease_loop(&self) {
        loop {
            let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX);
            match self.store.acquire_lease(&self.replica, now_ms(), ttl).await {
                Ok(Some(epoch)) => {
                    self.epoch.store(epoch, Ordering::Relaxed);
                    self.leading.store(true, Ordering::Relaxed);
                    tracing::info!(epoch, replica = %self.replica, "routing: allocator lease taken");
                    match self.lead(epoch).await {
                        Error::Deposed => tracing::info!(epoch, "routing: allocator lease lost"),
                        e => tracing::warn!(error = %e, epoch, "routing: allocator stopped"),
                    }
                    self.leading.store(false, Ordering::Relaxed);
                    self.epoch.store(0, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "routing: lease check failed"),
            }
            tokio::time::sleep(LEASE_RENEW).await;
        }
    }

    /// Allocates while the lease holds; returns why it stopped.
    async fn lead(&self, epoch: i64) -> Error {
        let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX);
        let load = || {
            Allocator::load(
                self.store.clone(),
                self.replica.clone(),
                epoch,
                &self.defaults,
                self.live.clone(),
            )
        };
        let mut allocator = match load().await {
            Ok(a) => a,
            Err(e) => return e,
        };
        let mut renewed = Instant::now();
        let mut built = Instant::now();
        loop {
            let deadline = allocator
                .next_deadline()
                .min(Instant::now() + POLL)
                .min(renewed + LEASE_RENEW);
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
            if renewed.elapsed() >= LEASE_RENEW {
                match self
                    .store
                    .renew_lease(&self.replica, epoch, now_ms(), ttl)
                    .await
                {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => return Error::Deposed,
                    // The claims' fence still protects; give up once the lease surely expired.
                    Err(e) if renewed.elapsed() >= LEASE_TTL => return e.into(),
                    Err(e) => tracing::warn!(error = %e, "routing: lease renewal failed"),
                }
            }
            let step = if built.elapsed() >= REBUILD_EVERY {
                Ok(Step::Reload)
            } else {
                allocator.step().await
            };
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Reload) => match load().await {
                    Ok(a) => {
                        allocator = a;
                        built = Instant::now();
                    }
                    Err(e) => return e,
                },
                Err(Error::Deposed) => return Error::Deposed,
                Err(e) => {
                    tracing::warn!(error = %e, "routing: allocation step failed; rebuilding");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match load().await {
                        Ok(a) => allocator = a,
                        Err(e) => return e,
                    }
                }
            }
        }
    }
}

/// The routing core's transfer decision over what storage read about the target.
fn transfer_plan(
    target: &TransferTarget,
    capacity: i64,
    force: bool,
) -> TransferPlan<Vec<Exclusion>> {
    let facts = TransferFacts {
        status: target
            .status
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(AgentStatus::Available),
        sessions: target.sessions,
        load: target.load,
        capacity,
        held: target.held.iter().map(convert::held_skill).collect(),
        required: target.required.iter().map(convert::requirement).collect(),
        force,
    };
    match decide_transfer(&facts) {
        TransferVerdict::AgentOffline => TransferPlan::Refuse(TransferOutcome::AgentOffline),
        TransferVerdict::LacksSkills { missing } => {
            TransferPlan::Refuse(TransferOutcome::LacksSkills { missing })
        }
        TransferVerdict::Proceed {
            waiting_for,
            overridden,
        } => TransferPlan::Proceed {
            waiting_for,
            overridden: (!overridden.is_empty()).then_some(overridden),
        },
    }
}
