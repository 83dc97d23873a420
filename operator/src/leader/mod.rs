//! Leader election on a `coordination.k8s.io` Lease, so that of several operator replicas exactly
//! one reconciles.
//!
//! The protocol is client-go's: the leader renews every `retry_period` with a conditional update
//! (resourceVersion precondition); followers read the Lease as often and may take it only when it
//! has not changed for `lease_duration` by their own clock. The guarantee comes from the leader's
//! side: it leads only until `renew_deadline` after it *sent* its last successful renewal, and
//! `renew_deadline < lease_duration`, so a leader that cannot renew (a partition, a stalled API
//! server, a starved process) stops before anyone may take over. [`Health::is_leader`] is computed
//! from that deadline, not set by a task that might run late.
//!
//! Why not a crate: the one we used renewed only `grace` seconds before expiry and kept reporting
//! leadership until a renewal *failed*, so a slow renewal let the follower take the lease while the
//! old leader still reconciled (two leaders, seen in CI on a loaded machine).

mod rule;

pub use rule::{Timing, TimingError};

use rule::{Record, Step, decide};

use crate::http::Health;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use std::future::Future;
use std::time::Duration;
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::{info, warn};

/// Why an election step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the Lease failed (other than losing a race for it).
    #[error("failed to {0} the Lease")]
    Kube(&'static str, #[source] kube::Error),
}

/// How leading ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended<T> {
    /// The work finished (shutdown); the lease was released for the next leader.
    Finished(T),
    /// The lease was lost: not renewed in time, or taken by `holder`. The work was dropped.
    Lost {
        /// Who holds it now, if known.
        holder: Option<String>,
    },
}

/// One replica's view of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The Lease's resourceVersion as last read and when we first saw it.
    observed: Option<(String, Instant)>,
}

/// The outcome of one read-decide-write attempt.
enum Attempt {
    /// We hold the lease and lead until this instant.
    Held(Instant),
    /// Someone else holds it.
    Other(Option<String>),
}

impl Elector {
    /// An elector for Lease `name` in `api`'s namespace.
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        identity: impl Into<String>,
        timing: Timing,
    ) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            timing,
            observed: None,
        }
    }

    /// Waits until this replica holds the lease and returns until when it leads, or `None`
    /// when `shutdown` resolves first. Errors of the API server are logged and retried.
    pub async fn acquire(&mut self, shutdown: impl Future<Output = ()>) -> Option<Instant> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut waiting_for = None;
        loop {
            match self.attempt().await {
                Ok(Attempt::Held(until)) => {
                    info!(identity = %self.identity, "acquired the leader lease");
                    return Some(until);
                }
                Ok(Attempt::Other(holder)) => {
                    if holder != waiting_for {
                        info!(identity = %self.identity, holder = ?holder, "waiting for the leader lease");
                        waiting_for = holder;
                    }
                }
                Err(e) => warn!(error = %crate::reconcile::error_chain(&e), "leader election"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.timing.retry_period) => {}
                () = &mut shutdown => return None,
            }
        }
    }

    /// Runs `work` while renewing the lease, starting from a lead that lasts `until`.
    ///
    /// When `work` finishes the lease is released so a follower takes over at once. When the
    /// lease cannot be renewed by the deadline, or another replica holds it, `work` is dropped
    /// (cancelled) and [`Ended::Lost`] is returned.
    pub async fn lead<T>(
        &mut self,
        until: Instant,
        health: &Health,
        work: impl Future<Output = T>,
    ) -> Ended<T> {
        health.lead_until(until);
        let ended = tokio::select! {
            out = work => Ended::Finished(out),
            holder = self.renew(until, health) => Ended::Lost { holder },
        };
        health.follow();
        match &ended {
            Ended::Finished(_) => self.release().await,
            Ended::Lost { holder } => {
                warn!(identity = %self.identity, holder = ?holder, "lost the leader lease")
            }
        }
        ended
    }

    /// Renews every retry period until it cannot; returns who holds the lease then, if known.
    async fn renew(&mut self, mut until: Instant, health: &Health) -> Option<String> {
        loop {
            sleep_until(until.min(Instant::now() + self.timing.retry_period)).await;
            if Instant::now() >= until {
                return None;
            }
            match timeout_at(until, self.attempt()).await {
                Err(_) => return None,
                Ok(Ok(Attempt::Held(next))) => {
                    until = next;
                    health.lead_until(until);
                }
                Ok(Ok(Attempt::Other(holder))) => return holder,
                Ok(Err(e)) => {
                    warn!(error = %crate::reconcile::error_chain(&e), "failed to renew the leader lease; retrying until the deadline")
                }
            }
        }
    }

    /// Reads the Lease, decides, and writes when the rule says so.
    async fn attempt(&mut self) -> Result<Attempt, Error> {
        let lease = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| Error::Kube("read", e))?;
        let now = Instant::now();
        let observed_at = match (&lease, &self.observed) {
            (Some(l), Some((rv, at))) if l.metadata.resource_version.as_ref() == Some(rv) => *at,
            _ => now,
        };
        self.observed = lease
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone())
            .map(|rv| (rv, observed_at));
        let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
        let holder = spec.and_then(|s| s.holder_identity.clone());
        let record = lease.as_ref().map(|_| Record {
            holder: holder.as_deref(),
            lease_duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
        });
        let step = decide(&self.identity, record, observed_at, now, &self.timing);
        let sent_at = Instant::now();
        let written = match (step, lease) {
            (Step::Wait { .. }, _) => return Ok(Attempt::Other(holder)),
            (Step::Create, _) => self
                .api
                .create(&PostParams::default(), &self.held(None, None))
                .await
                .map(Some),
            (Step::Take | Step::Renew, Some(lease)) => {
                let ours = self.held(Some(lease), holder.as_deref());
                self.api
                    .replace(&self.name, &PostParams::default(), &ours)
                    .await
                    .map(Some)
            }
            // `decide` says Create when there is no Lease; nothing to write otherwise.
            (Step::Take | Step::Renew, None) => Ok(None),
        };
        match written {
            Ok(Some(lease)) => {
                self.observed = lease.metadata.resource_version.map(|rv| (rv, sent_at));
                Ok(Attempt::Held(self.timing.leads_until(sent_at)))
            }
            Ok(None) => Ok(Attempt::Other(None)),
            // Another replica wrote first (409 on create or on the resourceVersion precondition).
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Other(holder)),
            Err(e) => Err(Error::Kube("write", e)),
        }
    }

    /// The Lease as we write it when taking or renewing `base` (or creating it, without one).
    fn held(&self, base: Option<Lease>, holder: Option<&str>) -> Lease {
        let now = Some(MicroTime(Timestamp::now()));
        // Every change of holder counts as a transition, as in client-go; a new Lease has none.
        let transition = i32::from(base.is_some());
        let mut lease = base.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if holder != Some(self.identity.as_str()) {
            spec.acquire_time = now.clone();
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + transition);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds =
            Some(i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX));
        spec.renew_time = now;
        lease
    }

    /// Hands the lease back so a follower need not wait for it to expire: clears the holder and
    /// promises one second, if we still hold it (a conditional update; a race is harmless).
    async fn release(&mut self) {
        let mut lease = match self.api.get_opt(&self.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %crate::reconcile::error_chain(&Error::Kube("read", e)), "failed to release the leader lease");
                return;
            }
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(identity = %self.identity, "released the leader lease"),
            Err(e) => {
                warn!(error = %crate::reconcile::error_chain(&Error::Kube("write", e)), "failed to release the leader lease")
            }
        }
    }
}
