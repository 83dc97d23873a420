//! Live events: conversation changes pushed to browsers over Server-Sent Events.
//!
//! Source of truth is the append-only `conversation_events` table, which every write path already
//! fills in the same transaction as its change (webhooks, outbox, picks, closes, notes). One
//! tailer task per process reads new rows as soon as a state-changing request of this process
//! has been answered ([`wake_on_write`]), and at the latest every [`TAIL_INTERVAL`] (writes of
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
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::broadcast;

use super::AppState;
use super::auth::{Error as AuthError, Principal};
use crate::domain::Role;
use crate::storage::{EventRow, Store};

/// Shortest pause between two reads of the tailer.
pub const MIN_GAP: Duration = Duration::from_millis(10);

/// How often the tailer looks for new events when nothing wakes it.
pub const TAIL_INTERVAL: Duration = Duration::from_millis(100);

/// What a browser receives.
#[derive(Debug, Clone, Serialize)]
pub struct LiveEvent {
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

/// Whether `who` may see `event`.
pub fn visible(who: &Principal, event: &LiveEvent) -> bool {
    match who.role {
        Role::Admin => true,
        Role::Dpo => false,
        Role::Agent => match event.kind.as_str() {
            "conversation_opened"
            | "conversation_assigned"
            | "conversation_queued"
            | "conversation_closed" => true,
            _ => {
                event.assigned_user_id.is_some()
                    && event.assigned_user_id.as_deref() == who.user_id.as_deref()
            }
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
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Ends every open stream (graceful shutdown waits for open connections).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Publishes an event to every subscriber.
    pub fn publish(&self, event: LiveEvent) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// Users with at least one open live stream.
    pub fn connected_users(&self) -> Vec<String> {
        self.connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Session counts per user as they change (`(user, open streams)`), for routing presence.
    /// A new call replaces the previous receiver.
    pub fn presence_changes(&self) -> tokio::sync::mpsc::UnboundedReceiver<(String, usize)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.presence.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    fn presence_changed(&self, user: &str, sessions: usize) {
        if let Some(tx) = &*self.presence.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send((user.to_owned(), sessions));
        }
    }

    fn enter(self: &Arc<Self>, user: &str) -> Presence {
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
struct Presence {
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
pub async fn tail(store: Store, hub: Arc<LiveHub>) {
    let mut cursor = loop {
        match store.last_event_id().await {
            Ok(id) => break crate::storage::EventCursor::after(id),
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

/// Middleware: after a state-changing request (webhook, reply, pick, …) has been answered, its
/// transaction is committed, so the tailer can pick its events up at once.
pub async fn wake_on_write(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let write = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let response = next.run(request).await;
    if write {
        state.live.wake();
        state.routing.wake();
    }
    response
}

fn sse(event: &LiveEvent) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.clone())
        .data(serde_json::to_string(event).unwrap_or_default())
}

/// `GET /api/v1/live`: the caller's event stream (`text/event-stream`).
///
/// A `Last-Event-ID` header (sent by `EventSource` on reconnect) replays what was missed, up to
/// 500 events; a subscriber that falls behind the broadcast buffer gets a `resync` event and
/// should reload its views.
pub async fn stream(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AuthError> {
    let rx = state.live.tx.subscribe();
    let mut backlog = Vec::new();
    if let Some(after) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
    {
        for row in state.store.events_after(after, 500).await? {
            let e = LiveEvent::from(&row);
            if visible(&who, &e) {
                backlog.push(e);
            }
        }
    }
    let replayed_to = backlog.last().map_or(0, |e| e.id);
    let presence = who.user_id.as_deref().map(|u| state.live.enter(u));
    let hello = Event::default().event("ready").data("{}");
    let head = futures::stream::iter(
        std::iter::once(hello)
            .chain(backlog.iter().map(sse))
            .map(Ok)
            .collect::<Vec<_>>(),
    );
    let closing = state.live.closing.subscribe();
    let tail = futures::stream::unfold(
        (rx, who, presence, closing),
        move |(mut rx, who, presence, mut closing)| async move {
            loop {
                if *closing.borrow() {
                    return None;
                }
                let next = tokio::select! {
                    next = rx.recv() => next,
                    _ = closing.changed() => return None,
                };
                match next {
                    Ok(e) if e.id > replayed_to && visible(&who, &e) => {
                        return Some((Ok(sse(&e)), (rx, who, presence, closing)));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let resync = Event::default().event("resync").data("{}");
                        return Some((Ok(resync), (rx, who, presence, closing)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    use futures::StreamExt as _;
    Ok(Sse::new(head.chain(tail)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::Via;

    fn agent(id: &str) -> Principal {
        Principal {
            user_id: Some(id.to_owned()),
            role: Role::Agent,
            display_name: id.to_owned(),
            via: Via::ApiToken,
        }
    }

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
        let a = agent("a");
        assert!(visible(&a, &event("conversation_opened", None)));
        assert!(visible(&a, &event("conversation_assigned", Some("b"))));
        assert!(visible(&a, &event("message_received", Some("a"))));
        assert!(!visible(&a, &event("message_received", Some("b"))));
        assert!(!visible(&a, &event("message_received", None)));
        assert!(!visible(&a, &event("note_added", Some("b"))));
        let mut dpo = agent("d");
        dpo.role = Role::Dpo;
        assert!(!visible(&dpo, &event("conversation_opened", None)));
        let mut admin = agent("x");
        admin.role = Role::Admin;
        assert!(visible(&admin, &event("message_received", Some("b"))));
    }
}
