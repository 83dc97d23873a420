//! The reconcile pipeline and the controller that drives it.
//!
//! One reconcile of a `ContactTenant` runs, in order (`pipeline`, which reads as these steps):
//! 1. `dereference`: read referenced Secrets, the generated key Secret and the live workload;
//! 2. validate: parse the spec into a `ValidatedTenant` (pure, `crate::tenant`);
//! 3. build: `build::all` makes the `Children` bundle (pure), then `gating` decides (pure)
//!    whether the restart-requiring part may go now or waits for the maintenance window;
//! 4. `provision`: server-side apply of the bundle (`apply`: one field manager, `force`,
//!    skipping unchanged objects), in dependency order;
//! 5. status: `conditions` decides the status (pure: the validated tenant, what was applied and
//!    observed, the clock), `status` patches it only when it changed, one Event per transition.
//!
//! Deletion runs through a finalizer (`cleanup`): the runtime goes at once, the data is detached
//! and kept for the grace period (`lifecycle::grace`). `controller` wires the watches, the caches
//! (`cache`) and the callbacks below into a kube-rs `Controller`.
//!
//! Floors: this module stands on `build` and `tenant`; neither imports anything from here.

mod apply;
mod backups;
mod cache;
mod cleanup;
mod conditions;
mod controller;
mod dereference;
mod failure;
mod gating;
mod pipeline;
mod provision;
mod rollout;
mod scope;
mod status;
mod storage;

pub use apply::Memo;
pub use backups::parse_result;
pub use cache::Caches;
pub use cleanup::sweep;
pub use controller::run_controller;
pub use status::CONDITION_TYPES;

use crate::clock::Clock;
use crate::config::OperatorConfig;
use crate::labels;
use crate::lifecycle::grace;
use crate::lifecycle::ledger::LedgerStore;
use crate::metrics::Metrics;
use contact_crds::v1alpha1::ContactTenant;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{instrument, warn};

/// Everything a reconcile needs besides the tenant.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Operator-wide settings.
    pub(crate) config: OperatorConfig,
    /// Source of "now" (injectable for tests).
    pub(crate) clock: Arc<dyn Clock>,
    /// Event recorder (events.k8s.io).
    pub(crate) recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Caches of managed objects, set by `run_controller` (empty: every read is a GET).
    pub caches: std::sync::OnceLock<Caches>,
    /// What our last apply of each child left behind (skip unchanged, revert hand edits).
    pub memo: Memo,
    /// Key names of referenced Secrets by resourceVersion (no re-read of unchanged Secrets).
    pub(crate) secret_keys: dereference::SecretKeys,
    /// The record of deletions whose data the sweeper may purge.
    pub(crate) ledger: LedgerStore,
}

impl Ctx {
    /// A context with the given parts; events are reported as `contact-operator` / `instance`.
    pub fn new(
        client: Client,
        config: OperatorConfig,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: labels::FIELD_MANAGER.into(),
                instance,
            },
        );
        let ledger = LedgerStore::new(client.clone(), &config.own_namespace);
        Self {
            ledger,
            client,
            config,
            clock,
            recorder,
            metrics,
            caches: std::sync::OnceLock::new(),
            memo: Memo::default(),
            secret_keys: dereference::SecretKeys::default(),
        }
    }
}

/// A reconcile failure (transient: the API server said no). Spec problems are not errors: they
/// end up in conditions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading referenced or existing objects failed.
    #[error("failed to read referenced objects")]
    Dereference(#[from] dereference::Error),
    /// Applying or deleting a child failed.
    #[error("failed to apply children")]
    Apply(#[from] apply::Error),
    /// Writing the status failed.
    #[error("failed to update status")]
    Status(#[from] status::Error),
    /// Growing a volume failed (not refused: failed).
    #[error("failed to grow a volume")]
    Storage(#[from] storage::Error),
    /// Listing backup Jobs or Pods failed.
    #[error("failed to read backups")]
    Backups(#[from] backups::Error),
    /// Detaching, re-attaching or purging data failed.
    #[error("failed to handle tenant data")]
    Grace(#[from] grace::Error),
    /// Adding or removing the finalizer failed.
    #[error("failed to manage the finalizer")]
    Finalizer(#[source] kube::Error),
    /// Reading or replacing a runtime pod stuck on an old revision failed.
    #[error("failed to repair a rollout")]
    Rollout(#[from] rollout::Error),
    /// Several steps failed in one pass (each independent child is tried).
    #[error("{0}")]
    Several(Several),
}

/// The failures of one pass, each with its causes.
#[derive(Debug)]
pub struct Several(Vec<Error>);

impl From<Vec<Error>> for Several {
    fn from(errors: Vec<Error>) -> Self {
        Self(errors)
    }
}

impl std::fmt::Display for Several {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let each: Vec<_> = self.0.iter().map(|e| error_chain(e)).collect();
        f.write_str(&each.join("; "))
    }
}

impl Error {
    /// The condition reason, Event reason and metric label of the failure.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Error::Dereference(_) => "ReadFailed",
            Error::Apply(_) => "ApplyFailed",
            Error::Status(_) => "StatusWriteFailed",
            Error::Storage(_) => "StorageFailed",
            Error::Backups(_) => "BackupsReadFailed",
            Error::Grace(_) => "DataGraceFailed",
            Error::Finalizer(_) => "FinalizerFailed",
            Error::Rollout(_) => "RolloutRepairFailed",
            Error::Several(s) => s.0.first().map_or("ApplyFailed", Error::reason),
        }
    }
}

/// How long to wait before retrying a tenant whose referenced Secret is missing (the Secret
/// watch usually triggers sooner).
pub const SECRET_RETRY: Duration = Duration::from_secs(30);

/// Reconciles one tenant (the controller's callback; tests call it directly).
#[instrument(skip_all, fields(tenant = %tenant.name_any(), ns = tenant.namespace().unwrap_or_default()))]
pub async fn reconcile(tenant: Arc<ContactTenant>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = tenant.namespace().unwrap_or_default();
    // Tenants outside the namespaces this operator is limited to belong to another operator.
    if !ctx.config.watch_namespaces.is_empty() && !ctx.config.watch_namespaces.contains(&ns) {
        return Ok(Action::await_change());
    }
    // Boxed: the pipeline's future is large, and a reconcile must not be able to overflow a
    // worker thread's stack (debug builds made that happen in tests).
    let result = if tenant.meta().deletion_timestamp.is_some() {
        Box::pin(cleanup::on_delete(&tenant, &ctx)).await
    } else {
        // The finalizer goes on in the same pass as the children (not in a pass of its own that
        // waits for the watch to bring the tenant back): one reconcile provisions a new tenant.
        match cleanup::ensure_finalizer(&tenant, &ctx).await {
            Ok(()) => Box::pin(pipeline::apply_tenant(&tenant, &ctx)).await,
            Err(e) => Err(e),
        }
    };
    ctx.metrics.reconciled(started.elapsed());
    if let Err(e) = &result {
        failure::report(&tenant, &ctx, e).await;
    }
    result
}

/// What to do after a failed reconcile (`reconcile` has reported it on the tenant and counted
/// it): retry soon. Only transient failures get here; invalid specs are conditions and wait for
/// a change.
pub(crate) fn error_policy(tenant: Arc<ContactTenant>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(tenant = %tenant.name_any(), error = %error_chain(error), "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// The error with its causes, for logs and condition messages.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
