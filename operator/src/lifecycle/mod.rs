//! Tenant lifecycle beyond "running": trial expiry and suspension (scale to zero, keep the data),
//! and deletion grace (remove the runtime at once, keep the data for `dataGraceDays`, then purge).
//!
//! The phase decision is pure and takes `now` from the injected clock; `grace` holds the API
//! calls of detaching, re-attaching and sweeping data, `ledger` the record of deletions the
//! sweeper reads.

pub mod grace;
pub mod ledger;

use crate::tenant::ValidatedTenant;
use chrono::{DateTime, Utc};

/// Whether a tenant should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Running normally.
    Active,
    /// `spec.suspend: true`: scaled to zero by the platform team.
    Suspended,
    /// `trial.endsAt` has passed: scaled to zero until the trial is extended or removed.
    TrialExpired,
}

impl Phase {
    /// Whether the runtime is scaled to zero.
    pub(crate) fn scaled_down(self) -> bool {
        self != Phase::Active
    }

    /// Reason for the Ready condition when scaled down.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Phase::Active => "Active",
            Phase::Suspended => "Suspended",
            Phase::TrialExpired => "TrialExpired",
        }
    }
}

/// The phase of `t` at `now`. Suspension wins over trial expiry: it is the explicit decision.
pub(crate) fn phase(t: &ValidatedTenant, now: DateTime<Utc>) -> Phase {
    if t.suspend {
        Phase::Suspended
    } else if t.trial_ends_at.is_some_and(|end| now >= end) {
        Phase::TrialExpired
    } else {
        Phase::Active
    }
}

/// Replicas to run in `phase`.
pub(crate) fn effective_replicas(t: &ValidatedTenant, phase: Phase) -> i32 {
    if phase.scaled_down() { 0 } else { t.replicas }
}

/// Time until the trial ends, if it ends in the future (so the controller wakes up for it).
pub(crate) fn until_trial_end(t: &ValidatedTenant, now: DateTime<Utc>) -> Option<chrono::Duration> {
    t.trial_ends_at
        .filter(|end| *end > now)
        .map(|end| end - now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn trial_and_suspension() {
        let now = Utc
            .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
            .single()
            .expect("t");
        let mut t = ValidatedTenant::test();
        t.replicas = 1;
        assert_eq!(phase(&t, now), Phase::Active);
        t.trial_ends_at = Some(now + chrono::Duration::hours(1));
        assert_eq!(phase(&t, now), Phase::Active);
        assert_eq!(until_trial_end(&t, now), Some(chrono::Duration::hours(1)));
        assert_eq!(
            phase(&t, now + chrono::Duration::hours(1)),
            Phase::TrialExpired
        );
        assert_eq!(effective_replicas(&t, Phase::TrialExpired), 0);
        t.suspend = true;
        assert_eq!(phase(&t, now), Phase::Suspended);
        assert_eq!(effective_replicas(&t, Phase::Suspended), 0);
        assert_eq!(effective_replicas(&t, Phase::Active), 1);
    }
}
