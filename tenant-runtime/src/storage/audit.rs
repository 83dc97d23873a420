//! The audit log's storage: appending inside the caller's transaction, reading, verifying,
//! redacting and purging. The chain rules live in [`crate::privacy::audit`].
//!
//! Appends are serialized so that each entry links to the one before it: SQLite write
//! transactions already are (`BEGIN IMMEDIATE`); on PostgreSQL the transaction first takes a
//! transaction-scoped advisory lock. Entries are written in the same transaction as the change
//! they describe, so a change and its audit entry commit or roll back together.

use super::{Result, Store, WriteTx, on_pool};
use crate::privacy::audit::{AuditChange, Broken, ChainVerifier, GENESIS_HASH, StoredEntry, seal};

/// Advisory lock key that serializes audit appends on PostgreSQL ("audit" in ASCII).
const PG_AUDIT_LOCK: i64 = 0x0061_7564_6974;

const SELECT_ENTRIES: &str = "SELECT seq, at, actor, action, entity, entity_id, subject_id, attribute, new_value, salt, value_hash, prev_hash, hash, redacted_at \
     FROM audit_log WHERE ($1 IS NULL OR subject_id = $1) AND seq > $2 ORDER BY seq LIMIT $3";

/// Appends audit entries on an open connection (inside the caller's write transaction).
pub(crate) trait AuditTx {
    /// Appends `changes` at time `at`, chained after the current head.
    async fn append_audit(&mut self, at: i64, changes: &[AuditChange]) -> Result<()>;
}

macro_rules! impl_audit_tx {
    ($conn:ty, $lock:expr) => {
        impl AuditTx for $conn {
            async fn append_audit(&mut self, at: i64, changes: &[AuditChange]) -> Result<()> {
                if changes.is_empty() {
                    return Ok(());
                }
                if let Some(lock) = $lock {
                    sqlx::query(lock)
                        .bind(PG_AUDIT_LOCK)
                        .execute(&mut *self)
                        .await?;
                }
                let head: Option<(i64, String)> =
                    sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut *self)
                        .await?;
                let head = match head {
                    Some(h) => h,
                    None => sqlx::query_as("SELECT seq, hash FROM audit_anchor WHERE id = 1")
                        .fetch_optional(&mut *self)
                        .await?
                        .unwrap_or((0, GENESIS_HASH.to_owned())),
                };
                let (mut seq, mut prev) = head;
                for change in changes {
                    seq += 1;
                    let e = seal(seq, at, &prev, change);
                    sqlx::query(
                        "INSERT INTO audit_log (seq, at, actor, action, entity, entity_id, subject_id, attribute, new_value, salt, value_hash, prev_hash, hash, redacted_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL)",
                    )
                    .bind(e.seq)
                    .bind(e.at)
                    .bind(&e.actor)
                    .bind(&e.action)
                    .bind(&e.entity)
                    .bind(&e.entity_id)
                    .bind(&e.subject_id)
                    .bind(&e.attribute)
                    .bind(&e.new_value)
                    .bind(&e.salt)
                    .bind(&e.value_hash)
                    .bind(&e.prev_hash)
                    .bind(&e.hash)
                    .execute(&mut *self)
                    .await?;
                    prev = e.hash;
                }
                Ok(())
            }
        }
    };
}

impl_audit_tx!(sqlx::SqliteConnection, None::<&str>);
impl_audit_tx!(sqlx::PgConnection, Some("SELECT pg_advisory_xact_lock($1)"));

/// Result of verifying the stored chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ChainReport {
    /// Entries checked.
    pub checked: u64,
    /// The anchor verification started from (`seq` of the last purged entry), if any.
    pub anchor_seq: Option<i64>,
    /// The first broken entry, if any.
    pub broken: Option<Broken>,
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only entries about this subject.
    pub subject_id: Option<String>,
    /// Only entries after this seq.
    pub after_seq: i64,
    /// At most this many.
    pub limit: i64,
}

impl Store {
    /// Appends `changes` in a transaction of their own (for changes made outside the database,
    /// e.g. an export).
    pub async fn audit_append(&self, at: i64, changes: &[AuditChange]) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            tx.append_audit(at, changes).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Audit entries in `seq` order.
    pub async fn audit_entries(&self, q: &AuditQuery) -> Result<Vec<StoredEntry>> {
        let limit = if q.limit <= 0 { i64::MAX } else { q.limit };
        Ok(on_pool!(self, |pool| sqlx::query_as(SELECT_ENTRIES)
            .bind(&q.subject_id)
            .bind(q.after_seq)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// The purge anchor `(seq, hash)`, if entries were ever purged.
    pub async fn audit_anchor(&self) -> Result<Option<(i64, String)>> {
        Ok(on_pool!(self, |pool| sqlx::query_as(
            "SELECT seq, hash FROM audit_anchor WHERE id = 1"
        )
        .fetch_optional(pool)
        .await?))
    }

    /// Verifies the whole stored chain, 1000 entries at a time; reports the first broken entry.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport> {
        let anchor = self.audit_anchor().await?;
        let anchor_seq = anchor.as_ref().map(|(s, _)| *s);
        let mut v = ChainVerifier::new(anchor);
        loop {
            let batch = self
                .audit_entries(&AuditQuery {
                    subject_id: None,
                    after_seq: v.head().0,
                    limit: 1000,
                })
                .await?;
            if batch.is_empty() {
                break;
            }
            for e in &batch {
                if let Err(broken) = v.check(e) {
                    return Ok(ChainReport {
                        checked: v.checked(),
                        anchor_seq,
                        broken: Some(broken),
                    });
                }
            }
        }
        Ok(ChainReport {
            checked: v.checked(),
            anchor_seq,
            broken: None,
        })
    }

    /// Deletes entries older than `before_ms`, at most `batch` of them, oldest first, and moves
    /// the anchor to the last one deleted. Only a prefix of the chain is ever deleted, so what
    /// remains verifies from the anchor. Returns how many were deleted.
    pub async fn purge_audit(&self, before_ms: i64, batch: i64) -> Result<u64> {
        let now = super::now_ms();
        let deleted = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            // The newest entry of the prefix: stop at the first entry that is not old enough,
            // even if later ones are (clock steps must not punch holes into the chain).
            let first_kept: Option<i64> =
                sqlx::query_scalar("SELECT MIN(seq) FROM audit_log WHERE at >= $1")
                    .bind(before_ms)
                    .fetch_one(&mut *tx)
                    .await?;
            let first: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM audit_log")
                .fetch_one(&mut *tx)
                .await?;
            let Some(first) = first else {
                return Ok(0);
            };
            let mut last = first + batch - 1;
            if let Some(kept) = first_kept {
                last = last.min(kept - 1);
            }
            let tail: Option<(i64, String)> = sqlx::query_as(
                "SELECT seq, hash FROM audit_log WHERE seq <= $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(last)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((seq, hash)) = tail else {
                return Ok(0);
            };
            sqlx::query(
                "INSERT INTO audit_anchor (id, seq, hash, purged_at) VALUES (1, $1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, purged_at = excluded.purged_at",
            )
            .bind(seq)
            .bind(&hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let n = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
                .bind(seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            n
        });
        Ok(deleted)
    }
}
