//! Live events: the in-process hub that carries conversation changes to browsers (over
//! Server-Sent Events, `http::routes::live`) and agent presence to the routing service.
//!
//! A service of its own rather than part of `http`: the routing service reads presence from it,
//! and services must not reach up into the HTTP floor.
//!
//! Source of truth is the append-only `conversation_events` table, which every write path already
//! fills in the same transaction as its change (webhooks, outbox, picks, closes, notes). One
//! tailer task per process reads new rows as soon as a state-changing request of this process
//! has been answered (the HTTP layer's `wake_on_write`), and at the latest every [`TAIL_INTERVAL`] (writes of
//! other replicas), and publishes them on an in-process broadcast channel; `GET /api/v1/live` subscribes and filters per user. Tailing the
//! table rather than hooking each write path keeps the write paths untouched and works the same
//! with several replicas on PostgreSQL (each tails the shared table). SSE rather than WebSocket:
//! the stream is one-way, needs no upgrade through ingresses, and `EventSource` reconnects by
//! itself with `Last-Event-ID`, which we honour by replaying from the table.
//!
//! Events are hints, not data: they carry ids, kinds and statuses but no customer content, and
//! the browser fetches what it shows through the API, which enforces access. Filtering: admins
//! see every event; agents see queue changes (opened, assigned, queued, closed) of every
//! conversation and message/note events only of conversations assigned to them; DPOs see none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::domain::Role;
use crate::storage::{EventCursor, EventRow, Store};

/// Shortest pause between two reads of the tailer.
pub(crate) const MIN_GAP: Duration = Duration::from_millis(10);

/// How often the tailer looks for new events when nothing wakes it.
pub(crate) const TAIL_INTERVAL: Duration = Duration::from_millis(100);

/// What a browser receives.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LiveEvent {
    /// Event id (also the SSE id).
    pub id: i64,
    /// Kind, e.g. `message_received`.
    pub kind: String,
    /// Conversation.
    pub conversation_id: String,
    /// Its status now.
    pub status: String,
    /// Its assignee now.
    pub assigned_user_id: Option<String>,
    /// The message concerned, for message events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The delivery status, for `message_status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_status: Option<String>,
}

impl From<&EventRow> for LiveEvent {
    fn from(e: &EventRow) -> Self {
        let field = |k: &str| e.data.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        LiveEvent {
            id: e.id,
            kind: e.kind.clone(),
            conversation_id: e.conversation_id.clone(),
            status: e.status.clone(),
            assigned_user_id: e.assigned_user_id.clone(),
            message_id: field("message_id"),
            delivery_status: field("status"),
        }
    }
}

/// Whether a user with `role` (`user_id`: `None` for the API token) may see `event`.
pub(crate) fn visible(role: Role, user_id: Option<&str>, event: &LiveEvent) -> bool {
    match role {
        Role::Admin => true,
        Role::Dpo => false,
        Role::Agent => match event.kind.as_str() {
            "conversation_opened"
            | "conversation_assigned"
            | "conversation_queued"
            | "conversation_closed" => true,
            _ => event.assigned_user_id.is_some() && event.assigned_user_id.as_deref() == user_id,
        },
    }
}

/// The in-process hub: the broadcast channel and who is connected.
#[derive(Debug)]
pub struct LiveHub {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    connected: Mutex<HashMap<String, usize>>,
    closing: tokio::sync::watch::Sender<bool>,
    wake: tokio::sync::Notify,
    presence: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(String, usize)>>>,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(4096).0,
            connected: Mutex::new(HashMap::new()),
            closing: tokio::sync::watch::channel(false).0,
            wake: tokio::sync::Notify::new(),
            presence: Mutex::new(None),
        }
    }
}

impl LiveHub {
    /// Makes the tailer look for new events now (something was written).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Ends every open stream (graceful shutdown waits for open connections).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// A receiver of every event published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// Turns `true` when the hub closes (graceful shutdown).
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Publishes an event to every subscriber.
    pub(crate) fn publish(&self, event: LiveEvent) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// Users with at least one open live stream.
    pub(crate) fn connected_users(&self) -> Vec<String> {
        self.connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Session counts per user as they change (`(user, open streams)`), for routing presence.
    /// A new call replaces the previous receiver.
    pub(crate) fn presence_changes(&self) -> tokio::sync::mpsc::UnboundedReceiver<(String, usize)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.presence.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    fn presence_changed(&self, user: &str, sessions: usize) {
        if let Some(tx) = &*self.presence.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send((user.to_owned(), sessions));
        }
    }

    /// Counts `user` as connected while the returned guard lives (one per open stream).
    pub(crate) fn enter(self: &Arc<Self>, user: &str) -> Presence {
        let sessions = {
            let mut map = self.connected.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(user.to_owned()).or_default();
            *n += 1;
            *n
        };
        self.presence_changed(user, sessions);
        Presence {
            hub: self.clone(),
            user: user.to_owned(),
        }
    }
}

/// Counts a user as connected while alive.
#[derive(Debug)]
pub(crate) struct Presence {
    hub: Arc<LiveHub>,
    user: String,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let sessions = {
            let mut map = self.hub.connected.lock().unwrap_or_else(|e| e.into_inner());
            let Some(n) = map.get_mut(&self.user) else {
                return;
            };
            *n -= 1;
            let left = *n;
            if left == 0 {
                map.remove(&self.user);
            }
            left
        };
        self.hub.presence_changed(&self.user, sessions);
    }
}

/// Tails `conversation_events` into the hub until aborted.
pub(crate) async fn tail(store: Store, hub: Arc<LiveHub>) {
    let mut cursor = loop {
        match store.last_event_id().await {
            Ok(id) => break EventCursor::after(id),
            Err(e) => {
                tracing::warn!(error = %e, "live: cannot read the event table yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut tick = tokio::time::interval(TAIL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = hub.wake.notified() => {}
        }
        // The cursor also returns events that commit after a higher id was read (PostgreSQL takes
        // ids at insert, not at commit), so an assignment is never skipped.
        match cursor.next(&store, 500).await {
            Ok(rows) => {
                for row in &rows {
                    hub.publish(LiveEvent::from(row));
                }
            }
            Err(e) => tracing::warn!(error = %e, "live: tailing conversation events failed"),
        }
        // Under a burst of writes the wake-ups coalesce: at most one read per MIN_GAP, so the
        // tailer never competes with the write paths for the database.
        tokio::time::sleep(MIN_GAP).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, assignee: Option<&str>) -> LiveEvent {
        LiveEvent {
            id: 1,
            kind: kind.to_owned(),
            conversation_id: "c".to_owned(),
            status: "assigned".to_owned(),
            assigned_user_id: assignee.map(str::to_owned),
            message_id: None,
            delivery_status: None,
        }
    }

    #[test]
    fn agents_see_queue_changes_and_their_own_messages_only() {
        let a = |e: &LiveEvent| visible(Role::Agent, Some("a"), e);
        assert!(a(&event("conversation_opened", None)));
        assert!(a(&event("conversation_assigned", Some("b"))));
        assert!(a(&event("message_received", Some("a"))));
        assert!(!a(&event("message_received", Some("b"))));
        assert!(!a(&event("message_received", None)));
        assert!(!a(&event("note_added", Some("b"))));
        assert!(!visible(
            Role::Dpo,
            Some("d"),
            &event("conversation_opened", None)
        ));
        assert!(visible(
            Role::Admin,
            Some("x"),
            &event("message_received", Some("b"))
        ));
    }
}
