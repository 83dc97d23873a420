//! The audit chainer: the background loop that gives committed audit entries their place in the
//! hash chain (see `storage/audit.rs` for why entries are chained after commit).
//!
//! Every replica runs one; on PostgreSQL the advisory lock lets one of them chain at a time and
//! the others find the lock taken and wait for the next tick. A full batch means there is more
//! to do, so the loop goes again at once instead of waiting.

use std::time::Duration;

use crate::storage::{CHAIN_BATCH, Store};

/// How often an idle chainer looks for new entries. Short, so the unchained tail stays small;
/// an idle look is one indexed read that takes no lock.
pub(crate) const CHAIN_INTERVAL: Duration = Duration::from_millis(100);

/// The chainer of one database.
#[derive(Debug, Clone)]
pub struct AuditChainer {
    store: Store,
    interval: Duration,
}

impl AuditChainer {
    /// A chainer over `store` that looks every [`CHAIN_INTERVAL`].
    pub fn new(store: Store) -> Self {
        Self {
            store,
            interval: CHAIN_INTERVAL,
        }
    }

    /// Chains until the task is dropped. Errors are logged and retried on the next tick: the
    /// entries stay unchained (and reported as pending) meanwhile, nothing is lost.
    pub async fn run_forever(self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            loop {
                match self.store.chain_audit(CHAIN_BATCH).await {
                    Ok(n) if n == CHAIN_BATCH as u64 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "chaining audit entries failed");
                        break;
                    }
                }
            }
        }
    }
}
