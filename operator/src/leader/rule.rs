//! The election rule without I/O: given the Lease as last read, when this replica first saw that
//! version of it, and the time now, what to do next.
//!
//! Expiry is judged by this replica's own monotonic clock from the moment it *observed* a
//! version of the Lease, never by comparing the timestamps written in it with the local clock
//! (as client-go does), so clock skew between nodes cannot hand the lease to two replicas.

use std::time::Duration;
use tokio::time::Instant;

/// The three durations of the protocol (client-go's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long others wait, from the last change they saw, before they may take the lease.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal. Shorter than
    /// `lease_duration`, so a leader that cannot renew stops before anyone may take over.
    pub renew_deadline: Duration,
    /// How often the leader renews and followers look again.
    pub retry_period: Duration,
}

/// Timings that would break the protocol's guarantee.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    /// `renew_deadline` must be shorter than `lease_duration`.
    #[error(
        "the renew deadline ({renew_deadline:?}) must be shorter than the lease duration ({lease_duration:?}): a leader that cannot renew must stop before another may take over"
    )]
    DeadlineNotShorterThanLease {
        /// The renew deadline given.
        renew_deadline: Duration,
        /// The lease duration given.
        lease_duration: Duration,
    },
    /// `retry_period` must be shorter than `renew_deadline` and not zero.
    #[error(
        "the retry period ({retry_period:?}) must be above zero and shorter than the renew deadline ({renew_deadline:?}), or the leader gets no second try"
    )]
    RetryNotShorterThanDeadline {
        /// The retry period given.
        retry_period: Duration,
        /// The renew deadline given.
        renew_deadline: Duration,
    },
}

impl Timing {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub const DEFAULT: Timing = Timing {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };

    /// Checked timings.
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, TimingError> {
        if renew_deadline >= lease_duration {
            return Err(TimingError::DeadlineNotShorterThanLease {
                renew_deadline,
                lease_duration,
            });
        }
        if retry_period.is_zero() || retry_period >= renew_deadline {
            return Err(TimingError::RetryNotShorterThanDeadline {
                retry_period,
                renew_deadline,
            });
        }
        Ok(Self {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    /// Until when a leader leads after a renewal it *sent* at `sent_at`.
    ///
    /// Counting from the send (not the answer) matters: others can only have seen the renewed
    /// Lease after it was sent, and they wait `lease_duration` from then.
    pub fn leads_until(&self, sent_at: Instant) -> Instant {
        sent_at + self.renew_deadline
    }
}

/// The part of a Lease the rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// Who holds it; `None` or empty when it was released.
    pub holder: Option<&'a str>,
    /// The holder's promised lease duration, if it wrote one.
    pub lease_duration: Option<Duration>,
}

/// What to do with the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// There is no Lease: create it, held by us.
    Create,
    /// It is free or its holder let it expire: take it (a conditional update).
    Take,
    /// We hold it: renew it (a conditional update).
    Renew,
    /// Someone else holds it; it cannot expire before `until`.
    Wait {
        /// The earliest time it may be taken, unless it changes first.
        until: Instant,
    },
}

/// Decides the next step for `me`, with `record` first observed at `observed_at`.
pub(crate) fn decide(
    me: &str,
    record: Option<Record<'_>>,
    observed_at: Instant,
    now: Instant,
    timing: &Timing,
) -> Step {
    let Some(record) = record else {
        return Step::Create;
    };
    match record.holder.filter(|h| !h.is_empty()) {
        None => Step::Take,
        Some(holder) if holder == me => Step::Renew,
        Some(_) => {
            let until = observed_at + record.lease_duration.unwrap_or(timing.lease_duration);
            if now >= until {
                Step::Take
            } else {
                Step::Wait { until }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn held_by(holder: &str) -> Record<'_> {
        Record {
            holder: Some(holder),
            lease_duration: Some(15 * S),
        }
    }

    #[test]
    fn no_lease_is_created_and_a_released_one_is_taken_at_once() {
        let t = Timing::DEFAULT;
        let now = Instant::now();
        assert_eq!(decide("a", None, now, now, &t), Step::Create);
        for holder in [None, Some("")] {
            let released = Record {
                holder,
                lease_duration: Some(S),
            };
            assert_eq!(decide("a", Some(released), now, now, &t), Step::Take);
        }
    }

    #[test]
    fn our_own_lease_is_renewed() {
        let now = Instant::now();
        assert_eq!(
            decide("a", Some(held_by("a")), now, now, &Timing::DEFAULT),
            Step::Renew
        );
    }

    #[test]
    fn another_holder_is_waited_for_from_when_we_saw_the_lease() {
        let t = Timing::DEFAULT;
        let seen = Instant::now();
        let step = decide("a", Some(held_by("b")), seen, seen + 14 * S, &t);
        assert_eq!(
            step,
            Step::Wait {
                until: seen + 15 * S
            }
        );
        assert_eq!(
            decide("a", Some(held_by("b")), seen, seen + 15 * S, &t),
            Step::Take
        );
    }

    #[test]
    fn the_holders_promised_duration_wins_over_ours() {
        let t = Timing::DEFAULT;
        let seen = Instant::now();
        let long = Record {
            holder: Some("b"),
            lease_duration: Some(60 * S),
        };
        assert_eq!(
            decide("a", Some(long), seen, seen + 30 * S, &t),
            Step::Wait {
                until: seen + 60 * S
            }
        );
        let unstated = Record {
            holder: Some("b"),
            lease_duration: None,
        };
        assert_eq!(
            decide("a", Some(unstated), seen, seen + 15 * S, &t),
            Step::Take
        );
    }

    #[test]
    fn timings_that_break_the_guarantee_are_refused() {
        assert_eq!(
            Timing::new(10 * S, 10 * S, S),
            Err(TimingError::DeadlineNotShorterThanLease {
                renew_deadline: 10 * S,
                lease_duration: 10 * S
            })
        );
        assert!(matches!(
            Timing::new(15 * S, 10 * S, 10 * S),
            Err(TimingError::RetryNotShorterThanDeadline { .. })
        ));
        assert!(matches!(
            Timing::new(15 * S, 10 * S, Duration::ZERO),
            Err(TimingError::RetryNotShorterThanDeadline { .. })
        ));
        assert_eq!(Timing::new(15 * S, 10 * S, 2 * S), Ok(Timing::DEFAULT));
    }

    /// The guarantee, on one clock: a leader that last sent a renewal at `sent` stops leading
    /// before any follower that observed that renewal (necessarily at or after `sent`) may take
    /// the lease.
    #[test]
    fn a_leader_stops_before_anyone_may_take_over() {
        let t = Timing::DEFAULT;
        let sent = Instant::now();
        for seen_after_ms in [0, 1, 500, 5_000] {
            let seen = sent + Duration::from_millis(seen_after_ms);
            let Step::Wait { until } = decide("b", Some(held_by("a")), seen, seen, &t) else {
                panic!("a fresh lease is waited for");
            };
            assert!(t.leads_until(sent) < until);
        }
    }
}
