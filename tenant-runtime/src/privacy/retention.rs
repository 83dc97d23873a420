//! The retention job: anonymizes closed conversations after `anonymize_conversations_after_days`,
//! deletes them after `delete_conversations_after_days`, and purges audit entries older than
//! `audit_log_days`. User data (agents, admins) is kept until explicitly deleted.
//!
//! Each step works in batches; every batch commits its changes together with a checkpoint
//! (cutoff and cursor), so a run that is interrupted resumes where it stopped with the same
//! cutoff, and running a finished job again finds nothing to do (idempotent).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::clock::Clock;
use crate::config::RetentionSettings;
use crate::storage::{self, Checkpoint, RetentionStep, Store};

const DAY_MS: i64 = 86_400_000;

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RetentionReport {
    /// Conversations anonymized.
    pub anonymized: u64,
    /// Conversations deleted.
    pub deleted: u64,
    /// Audit entries purged.
    pub audit_purged: u64,
    /// Transactions committed.
    pub batches: u64,
}

/// The cutoff of a step at `now`: rows older than this are due (`None`: the step is off).
pub(crate) fn cutoff(now_ms: i64, days: i64) -> Option<i64> {
    (days > 0).then(|| now_ms - days * DAY_MS)
}

/// The retention job.
#[derive(Debug, Clone)]
pub struct RetentionJob {
    store: Store,
    clock: Arc<dyn Clock>,
    settings: RetentionSettings,
}

impl RetentionJob {
    /// A job over `store` with `settings`, telling time by `clock`.
    pub fn new(store: Store, clock: Arc<dyn Clock>, settings: RetentionSettings) -> Self {
        Self {
            store,
            clock,
            settings,
        }
    }

    /// Runs every step to completion (or, with `max_batches`, stops after that many batches,
    /// leaving checkpoints to resume from).
    pub async fn run_once(&self, max_batches: Option<u64>) -> storage::Result<RetentionReport> {
        let mut report = RetentionReport::default();
        let now = self.clock.now_ms();
        for (step, days) in [
            (
                RetentionStep::Anonymize,
                self.settings.anonymize_conversations_after_days,
            ),
            (
                RetentionStep::Delete,
                self.settings.delete_conversations_after_days,
            ),
        ] {
            let Some(cut) = cutoff(now, days) else {
                continue;
            };
            let mut cp = match self.store.retention_checkpoint(step.job()).await? {
                Some(cp) => cp,
                None => Checkpoint {
                    job: step.job().to_owned(),
                    cutoff: cut,
                    cursor_at: i64::MIN,
                    cursor_id: String::new(),
                    processed: 0,
                },
            };
            loop {
                if max_batches.is_some_and(|m| report.batches >= m) {
                    return Ok(report);
                }
                let (next, n) = self
                    .store
                    .retention_batch(step, &cp, self.settings.batch_size, now)
                    .await?;
                report.batches += 1;
                match step {
                    RetentionStep::Anonymize => report.anonymized += n,
                    RetentionStep::Delete => report.deleted += n,
                }
                cp = next;
                if n == 0 {
                    self.store.clear_retention_checkpoint(step.job()).await?;
                    break;
                }
            }
        }
        if let Some(cut) = cutoff(now, self.settings.audit_log_days) {
            loop {
                if max_batches.is_some_and(|m| report.batches >= m) {
                    return Ok(report);
                }
                let n = self
                    .store
                    .purge_audit(cut, self.settings.batch_size)
                    .await?;
                report.batches += 1;
                report.audit_purged += n;
                if n == 0 {
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Runs the job every `interval_secs` until the task is dropped.
    pub async fn run_forever(self) {
        let mut tick =
            tokio::time::interval(Duration::from_secs(self.settings.interval_secs.max(1)));
        loop {
            tick.tick().await;
            match self.run_once(None).await {
                Ok(r) if r.anonymized + r.deleted + r.audit_purged > 0 => {
                    tracing::info!(?r, "retention run finished");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention run failed; it resumes next time"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_yaml_file() {
        let s = crate::config::Settings::from_yaml(
            "retention:\n  anonymize_conversations_after_days: 30\n  audit_log_days: 0\n",
        )
        .unwrap();
        assert_eq!(s.retention.anonymize_conversations_after_days, 30);
        assert_eq!(s.retention.delete_conversations_after_days, 365);
        assert_eq!(s.retention.audit_log_days, 0);
        assert!(crate::config::Settings::from_yaml("retention:\n  keep_forever: true\n").is_err());
    }

    #[test]
    fn zero_days_turns_a_step_off() {
        assert_eq!(cutoff(10 * DAY_MS, 0), None);
        assert_eq!(cutoff(10 * DAY_MS, 3), Some(7 * DAY_MS));
    }
}
