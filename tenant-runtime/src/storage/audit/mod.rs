//! The audit log's storage: appending inside the caller's transaction, chaining, reading,
//! verifying, redacting and purging. The chain rules live in [`crate::domain::audit`]; which
//! entries each write records, in [`entries`].
//!
//! Appending and chaining are separate steps. A change's transaction inserts its entries
//! *unchained* (content, salt and value hash; `seq`, `prev_hash` and `hash` NULL), so personal
//! data never commits without its audit record, yet concurrent transactions do not queue on the
//! chain head. One chainer per database then links committed entries in row order, in batches
//! (see [`Store::chain_audit`]): on PostgreSQL it holds a transaction-scoped advisory lock, so
//! one replica chains at a time; on SQLite write transactions are serialized anyway. The order
//! of the chain is the order in which the chainer found entries committed.
//!
//! Readers that promise a complete answer (entries, verification, purging) first
//! [`Store::settle_audit`]: they chain whatever is committed, waiting for the lock if another
//! chainer holds it. What commits after that is reported as `pending`, not as tampering.

pub(crate) mod entries;

use super::dialect::{link_audit_rows, lock_audit_chain};
use super::{AsConn, Conn, Result, Store, WriteTx, on_driver};
use crate::domain::api::ChainReport;
use crate::domain::audit::{
    AuditChange, ChainVerifier, GENESIS_HASH, Link, StoredEntry, Unchained, link, prepare,
};

/// Entries linked per chaining transaction.
pub(crate) const CHAIN_BATCH: i64 = 1000;

const SELECT_ENTRIES: &str = "SELECT seq, at, actor, action, entity, entity_id, subject_id, attribute, new_value, salt, value_hash, prev_hash, hash, redacted_at \
     FROM audit_log WHERE ($1 IS NULL OR subject_id = $1) AND seq > $2 ORDER BY seq LIMIT $3";

const INSERT_UNCHAINED: &str = "INSERT INTO audit_log (at, actor, action, entity, entity_id, subject_id, attribute, new_value, salt, value_hash) ";

/// Appends `changes` at time `at`, unchained, in one statement, inside the caller's write
/// transaction: the change and its entries commit together or not at all.
pub(crate) async fn append_audit(
    conn: &mut Conn<'_>,
    at: i64,
    changes: &[AuditChange],
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    on_driver!(conn, |c| {
        let mut q = sqlx::QueryBuilder::new(INSERT_UNCHAINED);
        q.push_values(changes, |mut row, change| {
            let e = prepare(at, change);
            row.push_bind(e.at)
                .push_bind(e.actor)
                .push_bind(e.action)
                .push_bind(e.entity)
                .push_bind(e.entity_id)
                .push_bind(e.subject_id)
                .push_bind(e.attribute)
                .push_bind(e.new_value)
                .push_bind(e.salt)
                .push_bind(e.value_hash);
        });
        q.build().execute(&mut **c).await?;
    });
    Ok(())
}

/// How to take the chainer's lock on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Give up at once when another chainer holds it (the background loop).
    No,
    /// Wait for it (readers that need everything chained).
    Yes,
}

const SELECT_HEAD: &str =
    "SELECT seq, hash FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)";
const SELECT_UNCHAINED: &str = "SELECT id, at, actor, action, entity, entity_id, subject_id, attribute, value_hash \
     FROM audit_log WHERE seq IS NULL ORDER BY id LIMIT $1";

/// The chain head: the newest chained entry, else the purge anchor, else the genesis.
async fn chain_head(conn: &mut Conn<'_>) -> Result<(i64, String)> {
    let head: Option<ChainPoint> = on_driver!(conn, |c| {
        match sqlx::query_as(SELECT_HEAD).fetch_optional(&mut **c).await? {
            Some(h) => Some(h),
            None => {
                sqlx::query_as("SELECT seq, hash FROM audit_anchor WHERE id = 1")
                    .fetch_optional(&mut **c)
                    .await?
            }
        }
    });
    Ok(head.map_or((0, GENESIS_HASH.to_owned()), |h| (h.seq, h.hash)))
}

/// A position in the chain: an entry's (or the purge anchor's) `seq` and `hash`.
#[derive(sqlx::FromRow)]
struct ChainPoint {
    seq: i64,
    hash: String,
}

/// An `audit_log` row as read for the API and verification.
#[derive(sqlx::FromRow)]
struct EntryRow {
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    entity: String,
    entity_id: String,
    subject_id: Option<String>,
    attribute: String,
    new_value: Option<String>,
    salt: Option<String>,
    value_hash: String,
    prev_hash: String,
    hash: String,
    redacted_at: Option<i64>,
}

impl From<EntryRow> for StoredEntry {
    fn from(r: EntryRow) -> Self {
        StoredEntry {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            entity: r.entity,
            entity_id: r.entity_id,
            subject_id: r.subject_id,
            attribute: r.attribute,
            new_value: r.new_value,
            salt: r.salt,
            value_hash: r.value_hash,
            prev_hash: r.prev_hash,
            hash: r.hash,
            redacted_at: r.redacted_at,
        }
    }
}

/// An `audit_log` row the chainer has not linked yet.
#[derive(sqlx::FromRow)]
struct UnchainedRow {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    entity: String,
    entity_id: String,
    subject_id: Option<String>,
    attribute: String,
    value_hash: String,
}

impl From<UnchainedRow> for Unchained {
    fn from(r: UnchainedRow) -> Self {
        Unchained {
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            entity: r.entity,
            entity_id: r.entity_id,
            subject_id: r.subject_id,
            attribute: r.attribute,
            value_hash: r.value_hash,
        }
    }
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
    /// Links up to `batch` committed, unchained entries after the chain head, in row order, in
    /// one transaction. Returns how many it linked: 0 when there was nothing to do or (on
    /// PostgreSQL) another chainer holds the lock.
    pub async fn chain_audit(&self, batch: i64) -> Result<u64> {
        self.chain_audit_with(batch, Wait::No).await
    }

    /// Chains everything committed so far (waiting for another chainer if need be).
    pub async fn settle_audit(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.chain_audit_with(CHAIN_BATCH, Wait::Yes).await?;
            total += n;
            if n < CHAIN_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Number of committed entries not chained yet.
    pub async fn audit_pending(&self) -> Result<u64> {
        let n: i64 = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE seq IS NULL"
        )
        .fetch_one(pool)
        .await?);
        Ok(n as u64)
    }

    async fn chain_audit_with(&self, batch: i64, wait: Wait) -> Result<u64> {
        // A plain read first: an idle tenant's chainer then never takes the write lock.
        let any: Option<i64> = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM audit_log WHERE seq IS NULL LIMIT 1"
        )
        .fetch_optional(pool)
        .await?);
        if any.is_none() {
            return Ok(0);
        }
        let linked = on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            if !lock_audit_chain(&mut tx.conn(), wait == Wait::Yes).await? {
                return Ok(0);
            }
            let head = chain_head(&mut tx.conn()).await?;
            let rows: Vec<UnchainedRow> = sqlx::query_as(SELECT_UNCHAINED)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
            let rows: Vec<Unchained> = rows.into_iter().map(Unchained::from).collect();
            let links = link((head.0, &head.1), &rows);
            let updated = link_audit_rows(&mut tx.conn(), &links).await?;
            linked_all(updated, &links)?;
            tx.commit().await?;
            links.len()
        });
        Ok(linked as u64)
    }

    /// Appends `changes` in a transaction of their own (for changes made outside the database,
    /// e.g. an export).
    pub async fn audit_append(&self, at: i64, changes: &[AuditChange]) -> Result<()> {
        on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            append_audit(&mut tx.conn(), at, changes).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Audit entries in `seq` order, after chaining what is committed.
    pub async fn audit_entries(&self, q: &AuditQuery) -> Result<Vec<StoredEntry>> {
        self.settle_audit().await?;
        let limit = if q.limit <= 0 { i64::MAX } else { q.limit };
        let rows: Vec<EntryRow> = on_driver!(self, |pool| sqlx::query_as(SELECT_ENTRIES)
            .bind(&q.subject_id)
            .bind(q.after_seq)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(StoredEntry::from).collect())
    }

    /// The purge anchor `(seq, hash)`, if entries were ever purged.
    pub(crate) async fn audit_anchor(&self) -> Result<Option<(i64, String)>> {
        let anchor: Option<ChainPoint> = on_driver!(self, |pool| sqlx::query_as(
            "SELECT seq, hash FROM audit_anchor WHERE id = 1"
        )
        .fetch_optional(pool)
        .await?);
        Ok(anchor.map(|a| (a.seq, a.hash)))
    }

    /// Chains what is committed, then verifies the whole stored chain, 1000 entries at a time;
    /// reports the first broken entry, and the entries committed since (pending).
    pub async fn verify_audit_chain(&self) -> Result<ChainReport> {
        self.settle_audit().await?;
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
                        pending: self.audit_pending().await?,
                    });
                }
            }
        }
        Ok(ChainReport {
            checked: v.checked(),
            anchor_seq,
            broken: None,
            pending: self.audit_pending().await?,
        })
    }

    /// Deletes entries older than `before_ms`, at most `batch` of them, oldest first, and moves
    /// the anchor to the last one deleted. Only a prefix of the chain is ever deleted, so what
    /// remains verifies from the anchor. Returns how many were deleted.
    pub async fn purge_audit(&self, before_ms: i64, batch: i64) -> Result<u64> {
        self.settle_audit().await?;
        let now = super::now_ms();
        let deleted = on_driver!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            // Moving the anchor under the chainer's lock keeps the head it reads consistent.
            lock_audit_chain(&mut tx.conn(), true).await?;
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
            let tail: Option<ChainPoint> = sqlx::query_as(
                "SELECT seq, hash FROM audit_log WHERE seq <= $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(last)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(ChainPoint { seq, hash }) = tail else {
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

/// Refuses to commit a batch in which not every entry got its link: a gap in `seq` would read
/// as tampering later. (Only a second chainer bypassing the lock could cause it.)
fn linked_all(updated: u64, links: &[Link]) -> Result<()> {
    if updated == links.len() as u64 {
        Ok(())
    } else {
        Err(super::Error::Contended)
    }
}
