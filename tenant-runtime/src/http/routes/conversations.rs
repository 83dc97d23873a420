//! The integrators' REST API for contacts, conversations and messages. Contacts and the
//! conversation list are for admins and DPOs; a single conversation also for its agent (the
//! ownership check is [`auth::conversation_guard`]); the API token counts as admin.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Page, limit, parse_json, query};
use crate::channels::{rules, sinch};
use crate::domain::Role::{Admin, Agent, Dpo};
use crate::domain::api::{Contact, Conversation, Message};
use crate::domain::{ConversationStatus, MessageContent};
use crate::http::error::ErrorBody;
use crate::http::{AppState, Error, auth};
use crate::storage::{ConversationFilter, NewOutbound, new_id};

/// `/contacts…` and `/conversations…` (under `/api/v1`, behind `authenticate`).
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    let readers = Router::new()
        .route("/contacts", get(list_contacts))
        .route("/contacts/{id}", get(get_contact))
        .route("/conversations", get(list_conversations))
        .route_layer(middleware::from_fn(auth::allow(&[Admin, Dpo])));
    let conversation = Router::new()
        .route("/conversations/{id}", get(get_conversation))
        .route(
            "/conversations/{id}/messages",
            get(list_messages).post(send_message),
        )
        .route_layer(middleware::from_fn_with_state(
            state,
            auth::conversation_guard,
        ))
        .route_layer(middleware::from_fn(auth::allow(&[Admin, Agent, Dpo])));
    readers.merge(conversation)
}

/// Contacts, newest first.
#[utoipa::path(get, path = "/api/v1/contacts", tag = "conversations", params(Page),
    responses((status = 200, body = Vec<Contact>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_contacts(
    State(state): State<AppState>,
    q: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Vec<Contact>>, Error> {
    let page = query(q)?;
    Ok(Json(state.store.contacts(limit(page.limit)?).await?))
}

/// One contact.
#[utoipa::path(get, path = "/api/v1/contacts/{id}", tag = "conversations",
    params(("id" = String, Path, description = "Contact id")),
    responses((status = 200, body = Contact), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_contact(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Contact>, Error> {
    Ok(Json(state.store.contact(&id).await?))
}

/// Conversation list filter.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConversationQuery {
    /// Only this status.
    pub status: Option<ConversationStatus>,
    /// At most this many (1–500, default 100).
    pub limit: Option<i64>,
}

/// Conversations, newest first.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations", params(ConversationQuery),
    responses((status = 200, body = Vec<Conversation>), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_conversations(
    State(state): State<AppState>,
    q: Result<Query<ConversationQuery>, QueryRejection>,
) -> Result<Json<Vec<Conversation>>, Error> {
    let q = query(q)?;
    let filter = ConversationFilter {
        status: q.status,
        limit: limit(q.limit)?,
    };
    Ok(Json(state.store.conversations(&filter).await?))
}

/// One conversation.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = Conversation), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, Error> {
    Ok(Json(state.store.conversation(&id).await?))
}

/// The messages of a conversation, oldest first.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = Vec<Message>), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Message>>, Error> {
    state.store.conversation(&id).await?;
    Ok(Json(state.store.messages(&id).await?))
}

/// An outbound message.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendMessage {
    /// What to send: `text`, `media` (with optional caption), `location` or `template`
    /// (WhatsApp only; the only kind allowed outside the 24-hour window).
    pub content: MessageContent,
    /// The agent sending it (shown as the agent name where the channel supports it).
    #[serde(default)]
    pub author_user_id: Option<String>,
}

/// Sends a message: stores it with an outbox row in one transaction (202); a background sender
/// delivers it. Repeat the request with the same `Idempotency-Key` header to get the first
/// message back (200) instead of a second one.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "conversations",
    params(
        ("id" = String, Path, description = "Conversation id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Client key (≤128 chars) making retries safe"),
    ),
    request_body = SendMessage,
    responses(
        (status = 202, description = "Stored and queued for delivery", body = Message),
        (status = 200, description = "Same Idempotency-Key as an earlier request: that message", body = Message),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 409, description = "Conversation closed or its channel app is gone", body = ErrorBody),
        (status = 422, description = "Breaks a channel rule (length, SMS segments, WhatsApp window, content kind)", body = ErrorBody),
    ))]
pub(crate) async fn send_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Message>), Error> {
    let req: SendMessage = parse_json(&body)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| {
                Error::bad_request("invalid_header", "Idempotency-Key must be visible ASCII")
            })?;
            if v.is_empty() || v.len() > 128 {
                return Err(Error::bad_request(
                    "invalid_header",
                    "Idempotency-Key must be 1 to 128 characters",
                ));
            }
            Some(v.to_owned())
        }
    };
    let conversation = state.store.conversation(&id).await?;
    if conversation.status == ConversationStatus::Closed {
        return Err(Error::Conflict {
            code: "conversation_closed",
            message: format!("conversation `{id}` is closed"),
        });
    }
    let app = state
        .apps
        .get(&conversation.channel_app)
        .ok_or_else(|| Error::Conflict {
            code: "channel_app_missing",
            message: format!(
                "channel app `{}` is no longer configured",
                conversation.channel_app
            ),
        })?;
    let agent_name = match &req.author_user_id {
        Some(user_id) => Some(
            state
                .store
                .user(user_id)
                .await
                .map_err(|_| Error::Unprocessable {
                    code: "unknown_author",
                    message: format!("user `{user_id}` does not exist"),
                })?
                .display_name,
        ),
        None => None,
    };
    rules::check_outbound(
        conversation.channel,
        &req.content,
        conversation.last_inbound_at,
        chrono::Utc::now(),
    )
    .map_err(|v| Error::Unprocessable {
        code: match v {
            rules::Violation::TooLong { .. } => "text_too_long",
            rules::Violation::TooManySegments { .. } => "sms_too_long",
            rules::Violation::OutsideWindow { .. } => "outside_customer_care_window",
            rules::Violation::Empty => "empty_text",
            rules::Violation::NotSendable(_) => "content_not_sendable",
            rules::Violation::TemplateNotSupported(_) => "template_not_supported",
            rules::Violation::BadMediaUrl => "invalid_media_url",
        },
        message: v.to_string(),
    })?;
    let message_id = new_id();
    let payload = sinch::send_request(
        app,
        &conversation.identity,
        &req.content,
        &message_id,
        agent_name.as_deref(),
    );
    let (message, created) = state
        .store
        .enqueue_outbound(&NewOutbound {
            id: message_id,
            conversation_id: id,
            content: req.content,
            payload,
            author_user_id: req.author_user_id,
            idempotency_key,
        })
        .await?;
    if created {
        state.outbox_wake.notify_one();
        Ok((StatusCode::ACCEPTED, Json(message)))
    } else {
        Ok((StatusCode::OK, Json(message)))
    }
}
