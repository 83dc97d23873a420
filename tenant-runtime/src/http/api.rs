//! The versioned REST API under `/api/v1` and its OpenAPI document.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::channels::{rules, sinch};
use crate::domain::{ConversationStatus, MessageContent};
use crate::storage::{
    Category, Contact, Conversation, ConversationFilter, Message, NewCategory, NewOutbound,
    NewSkill, NewUser, Skill, User, new_id,
};

/// The OpenAPI document of `/api/v1` (and the webhook).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Contact tenant runtime API",
        description = "Contacts, conversations, messages, the tenant directory, the Workspace and the Configurator. Integrators authenticate with `Authorization: Bearer <api_token>` (acts as an admin); browsers with the `contact_session` cookie from `/auth/login` plus `X-CSRF-Token` on state changes.",
        version = "v1",
        license(name = "Apache-2.0")
    ),
    paths(
        list_contacts, get_contact, list_conversations, get_conversation, list_messages,
        send_message, list_users, create_user, list_skills, create_skill, list_categories,
        create_category, super::webhooks::sinch_webhook
    ),
    components(schemas(ErrorBody, MessageContent, SendMessage)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "conversations", description = "Conversations and their messages"),
        (name = "directory", description = "Users, skills and categories"),
        (name = "webhooks", description = "Conversation API callbacks (signed, no bearer token)")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document as pretty JSON with a trailing newline (what `openapi.json` holds).
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::http::ui::api::WorkspaceDoc::openapi());
    doc.merge(crate::privacy::http::PrivacyApiDoc::openapi());
    let mut s = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

/// `GET /api/v1/openapi.json`
pub async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// At most this many items (1–500, default 100).
    pub limit: Option<i64>,
}

fn limit(l: Option<i64>) -> Result<i64, ApiError> {
    match l {
        None => Ok(100),
        Some(n) if (1..=500).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and 500, got {n}"),
        )),
    }
}

/// Contacts, newest first.
#[utoipa::path(get, path = "/api/v1/contacts", tag = "conversations", params(Page),
    responses((status = 200, body = Vec<Contact>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_contacts(
    State(state): State<AppState>,
    q: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Vec<Contact>>, ApiError> {
    let page = query(q)?;
    Ok(Json(state.store.contacts(limit(page.limit)?).await?))
}

/// One contact.
#[utoipa::path(get, path = "/api/v1/contacts/{id}", tag = "conversations",
    params(("id" = String, Path, description = "Contact id")),
    responses((status = 200, body = Contact), (status = 404, body = ErrorBody)))]
pub async fn get_contact(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Contact>, ApiError> {
    Ok(Json(state.store.contact(&id).await?))
}

/// Conversation list filter.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConversationQuery {
    /// Only this status.
    pub status: Option<ConversationStatus>,
    /// At most this many (1–500, default 100).
    pub limit: Option<i64>,
}

/// Conversations, newest first.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations", params(ConversationQuery),
    responses((status = 200, body = Vec<Conversation>), (status = 400, body = ErrorBody)))]
pub async fn list_conversations(
    State(state): State<AppState>,
    q: Result<Query<ConversationQuery>, QueryRejection>,
) -> Result<Json<Vec<Conversation>>, ApiError> {
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
pub async fn get_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(state.store.conversation(&id).await?))
}

/// The messages of a conversation, oldest first.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = Vec<Message>), (status = 404, body = ErrorBody)))]
pub async fn list_messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Message>>, ApiError> {
    state.store.conversation(&id).await?;
    Ok(Json(state.store.messages(&id).await?))
}

/// An outbound message.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
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
pub async fn send_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let req: SendMessage = parse_json(&body)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_header", "Idempotency-Key must be visible ASCII")
            })?;
            if v.is_empty() || v.len() > 128 {
                return Err(ApiError::bad_request(
                    "invalid_header",
                    "Idempotency-Key must be 1 to 128 characters",
                ));
            }
            Some(v.to_owned())
        }
    };
    let conversation = state.store.conversation(&id).await?;
    if conversation.status == ConversationStatus::Closed {
        return Err(ApiError::Conflict {
            code: "conversation_closed",
            message: format!("conversation `{id}` is closed"),
        });
    }
    let app = state
        .apps
        .get(&conversation.channel_app)
        .ok_or_else(|| ApiError::Conflict {
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
                .map_err(|_| ApiError::Unprocessable {
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
    .map_err(|v| ApiError::Unprocessable {
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

/// Every user.
#[utoipa::path(get, path = "/api/v1/users", tag = "directory",
    responses((status = 200, body = Vec<User>)))]
pub async fn list_users(State(state): State<AppState>) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(state.store.users().await?))
}

/// Creates a user (no password yet: login comes later).
#[utoipa::path(post, path = "/api/v1/users", tag = "directory", request_body = NewUser,
    responses((status = 201, body = User), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let new: NewUser = parse_json(&body)?;
    if !new.email.contains('@') || new.display_name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_user",
            "email must contain `@` and display_name must not be empty",
        ));
    }
    let user = state.store.create_user(&new).await?;
    state.routing.seed_new_user(&user.id).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Every skill.
#[utoipa::path(get, path = "/api/v1/skills", tag = "directory",
    responses((status = 200, body = Vec<Skill>)))]
pub async fn list_skills(State(state): State<AppState>) -> Result<Json<Vec<Skill>>, ApiError> {
    Ok(Json(state.store.skills().await?))
}

/// Creates a skill.
#[utoipa::path(post, path = "/api/v1/skills", tag = "directory", request_body = NewSkill,
    responses((status = 201, body = Skill), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_skill(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Skill>), ApiError> {
    let new: NewSkill = parse_json(&body)?;
    if new.name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_skill",
            "name must not be empty",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(state.store.create_skill(&new).await?),
    ))
}

/// Every category.
#[utoipa::path(get, path = "/api/v1/categories", tag = "directory",
    responses((status = 200, body = Vec<Category>)))]
pub async fn list_categories(
    State(state): State<AppState>,
) -> Result<Json<Vec<Category>>, ApiError> {
    Ok(Json(state.store.categories().await?))
}

/// Creates a category.
#[utoipa::path(post, path = "/api/v1/categories", tag = "directory", request_body = NewCategory,
    responses((status = 201, body = Category), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_category(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Category>), ApiError> {
    let new: NewCategory = parse_json(&body)?;
    if new.name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_category",
            "name must not be empty",
        ));
    }
    let category = state.store.create_category(&new).await?;
    // The allocator rebuilds its categories.
    state.routing.signal(None, "settings").await?;
    Ok((StatusCode::CREATED, Json(category)))
}
