//! `GET /api/v1/live`: a signed-in user's live events over Server-Sent Events, filtered by
//! [`crate::live::visible`]; the hub behind it is the [`crate::live`] service.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast;

use crate::http::auth::Principal;
use crate::http::{AppState, Error};
use crate::live::{LiveEvent, visible};

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
pub(crate) async fn stream(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    let rx = state.live.subscribe();
    let mut backlog = Vec::new();
    if let Some(after) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
    {
        for row in state.store.events_after(after, 500).await? {
            let e = LiveEvent::from(&row);
            if visible(who.role, who.user_id.as_deref(), &e) {
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
    let closing = state.live.closing();
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
                    Ok(e)
                        if e.id > replayed_to && visible(who.role, who.user_id.as_deref(), &e) =>
                    {
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
