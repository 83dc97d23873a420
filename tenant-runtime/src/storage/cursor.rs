//! Reading `conversation_events` in order without losing late commits.
//!
//! On PostgreSQL an identity value is taken when the row is inserted, and transactions commit in
//! another order: a reader that asks for `id > last` can see id 11 before id 10 commits, and would
//! then never see 10. [`EventCursor`] remembers the ids it skipped and asks for them again for
//! [`GAP_PATIENCE`]; an id still missing after that belonged to a transaction that rolled back
//! (or one slower than that, which the readers' periodic rebuilds cover). On SQLite writers are
//! serialized and ids commit in order, so the holes are only rollbacks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::workspace::EventRecord;
use super::{EventRow, Result, Store, on_driver};

/// How long a hole in the ids is read again.
pub(crate) const GAP_PATIENCE: Duration = Duration::from_secs(5);

/// Most holes remembered at once (a burst of rollbacks must not grow it without bound).
const MAX_GAPS: usize = 10_000;

/// A position in `conversation_events` plus the holes below it.
#[derive(Debug, Clone)]
pub(crate) struct EventCursor {
    last: i64,
    gaps: BTreeMap<i64, Instant>,
}

impl EventCursor {
    /// A cursor that returns events after `last`.
    pub(crate) fn after(last: i64) -> Self {
        Self {
            last,
            gaps: BTreeMap::new(),
        }
    }

    /// The highest id returned so far.
    #[cfg(test)]
    fn last(&self) -> i64 {
        self.last
    }

    /// Ids skipped and still awaited.
    #[cfg(test)]
    fn pending_gaps(&self) -> usize {
        self.gaps.len()
    }

    /// The next events: new ones in id order, and late commits that fill earlier holes (each
    /// event is returned once).
    pub(crate) async fn next(&mut self, store: &Store, limit: i64) -> Result<Vec<EventRow>> {
        let from = self.from(Instant::now());
        let mut rows = Vec::new();
        if from < self.last {
            // Only the range of the holes: reading everything from the oldest hole would return
            // rows already seen and, past `limit`, stall new ones until the hole is given up.
            let upto = self.gaps.keys().next_back().copied().unwrap_or(self.last);
            rows = store.events_between(from, upto, limit).await?;
            rows.retain(|r| self.gaps.contains_key(&r.id));
        }
        rows.extend(store.events_after(self.last, limit).await?);
        Ok(self.accept(rows, Instant::now()))
    }

    /// Where the next read starts: below the oldest hole still awaited.
    fn from(&mut self, now: Instant) -> i64 {
        self.gaps
            .retain(|_, seen| now.duration_since(*seen) < GAP_PATIENCE);
        self.gaps
            .keys()
            .next()
            .map_or(self.last, |first| (first - 1).min(self.last))
    }

    /// Keeps the rows not returned before and records the holes they reveal (pure).
    fn accept(&mut self, rows: Vec<EventRow>, now: Instant) -> Vec<EventRow> {
        let mut fresh = Vec::with_capacity(rows.len());
        for row in rows {
            if row.id <= self.last {
                if self.gaps.remove(&row.id).is_some() {
                    fresh.push(row);
                }
                continue;
            }
            for missing in (self.last + 1)..row.id {
                if self.gaps.len() < MAX_GAPS {
                    self.gaps.insert(missing, now);
                }
            }
            self.last = row.id;
            fresh.push(row);
        }
        fresh
    }
}

impl Store {
    /// Conversation events with `after < id <= upto`, as [`Store::events_after`] returns them.
    pub(crate) async fn events_between(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let rows: Vec<EventRecord> = on_driver!(self, |pool| {
            sqlx::query_as(
                "SELECT e.id, e.conversation_id, e.kind, e.data, e.created_at, c.status, c.assigned_user_id FROM conversation_events e JOIN conversations c ON c.id = e.conversation_id WHERE e.id > $1 AND e.id <= $2 ORDER BY e.id LIMIT $3",
            )
            .bind(after)
            .bind(upto)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(EventRow::from).collect())
    }

    /// Ids of the conversations waiting in the queue (the allocator's periodic reconciliation).
    pub(crate) async fn queued_conversation_ids(&self) -> Result<Vec<String>> {
        Ok(on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM conversations WHERE status = 'queued'"
        )
        .fetch_all(pool)
        .await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64) -> EventRow {
        EventRow {
            id,
            conversation_id: "c".to_owned(),
            kind: "conversation_assigned".to_owned(),
            data: serde_json::Value::Null,
            created_at: chrono::Utc::now(),
            status: "assigned".to_owned(),
            assigned_user_id: None,
        }
    }

    fn ids(rows: &[EventRow]) -> Vec<i64> {
        rows.iter().map(|r| r.id).collect()
    }

    #[test]
    fn a_late_commit_below_the_position_is_returned_once() {
        let start = Instant::now();
        let mut c = EventCursor::after(9);
        // 11 committed before 10: 10 is a hole.
        assert_eq!(ids(&c.accept(vec![row(11)], start)), vec![11]);
        assert_eq!((c.last(), c.pending_gaps()), (11, 1));
        assert_eq!(c.from(start), 9, "the next read starts below the hole");
        // 10 commits: returned; 11 is not returned twice.
        assert_eq!(
            ids(&c.accept(vec![row(10), row(11), row(12)], start)),
            vec![10, 12]
        );
        assert_eq!((c.last(), c.pending_gaps()), (12, 0));
        assert_eq!(c.from(start), 12);
    }

    #[test]
    fn holes_are_given_up_after_the_patience() {
        let start = Instant::now();
        let mut c = EventCursor::after(0);
        c.accept(vec![row(3)], start);
        assert_eq!(c.from(start), 0);
        assert_eq!(c.from(start + GAP_PATIENCE), 3);
        assert_eq!(c.pending_gaps(), 0);
    }
}
