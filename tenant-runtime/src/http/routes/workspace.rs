//! The JSON endpoints behind the agent Workspace: `/api/v1/me…`, `/api/v1/queue`,
//! `/api/v1/workspace/…`, pick/close/transfer/notes and contact attributes.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router, middleware};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::channels::rules;
use crate::config::MaintenanceWindow;
use crate::domain::Role::{Admin, Agent, Dpo};
use crate::domain::api::{
    Contact, Conversation, DecisionRecord, Figures, Message, Note, QueueItem,
};
use crate::domain::{AgentStatus, ChannelType, ConversationStatus, Role};
use crate::http::auth::{self, Principal, Via, check_conversation_access, json_body};
use crate::http::error::ErrorBody;
use crate::http::{AppState, Error};
use crate::storage::{AgentTransfer, PickRefusal, TransferOutcome, now_ms};

/// Everyone signed in: `/me`, `/live`; agents and admins: the rest (under `/api/v1`, behind
/// `authenticate`).
pub(crate) fn routes() -> Router<AppState> {
    let everyone = Router::new()
        .route("/me", get(me))
        .route("/live", get(super::live::stream))
        .route_layer(middleware::from_fn(auth::allow(&[Agent, Admin, Dpo])));
    let agents = Router::new()
        .route("/me/auto-allocate", put(set_auto_allocate))
        .route("/me/status", put(set_status))
        .route("/conversations/{id}/routing", get(routing_decisions))
        .route("/me/skills/{skill_id}", put(set_my_skill))
        .route("/me/dashboard", get(dashboard))
        .route("/me/conversations", get(my_conversations))
        .route("/queue", get(queue))
        .route("/conversations/{id}/pick", post(pick))
        .route("/conversations/{id}/close", post(close))
        .route("/conversations/{id}/transfer", post(transfer))
        .route("/conversations/{id}/notes", post(add_note))
        .route(
            "/contacts/{id}/attributes",
            get(contact_attributes).put(set_contact_attributes),
        )
        .route("/workspace/conversations/{id}", get(conversation_view))
        .route("/workspace/conversations/{id}/messages", post(send))
        .route_layer(middleware::from_fn(auth::allow(&[Agent, Admin])));
    everyone.merge(agents)
}

/// A skill as the agent sees it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MySkill {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Switched on.
    pub active: bool,
    /// Proficiency 1 (basic) to 5 (expert) an admin set, if any.
    pub level: Option<u8>,
}

/// `GET /api/v1/me`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Me {
    /// User id (`null` for the API token).
    pub user_id: Option<String>,
    /// E-mail.
    pub email: Option<String>,
    /// Name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// CSRF token of the session.
    pub csrf_token: Option<String>,
    /// Own skills.
    pub skills: Vec<MySkill>,
    /// Auto-allocate switch.
    pub auto_allocate: bool,
    /// Declared availability (`available`, `away`, `offline`; `null` for the API token).
    pub status: Option<String>,
    /// The next maintenance window, when one is announced and not over.
    pub maintenance: Option<MaintenanceWindow>,
}

/// `GET /api/v1/me`.
#[utoipa::path(get, path = "/api/v1/me", tag = "workspace", security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn me(State(state): State<AppState>, who: Principal) -> Result<Json<Me>, Error> {
    let maintenance = state
        .settings
        .maintenance
        .filter(|w| w.end > chrono::Utc::now());
    let csrf_token = match &who.via {
        Via::Session { csrf_token, .. } => Some(csrf_token.clone()),
        Via::ApiToken => None,
    };
    let Some(user_id) = who.user_id.clone() else {
        return Ok(Json(Me {
            user_id: None,
            email: None,
            display_name: who.display_name,
            role: who.role,
            csrf_token,
            skills: vec![],
            auto_allocate: false,
            status: None,
            maintenance,
        }));
    };
    let user = state.store.user(&user_id).await?;
    let names: HashMap<String, String> = state
        .store
        .skills()
        .await?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect();
    let mut skills: Vec<MySkill> = user
        .skills
        .iter()
        .map(|s| MySkill {
            name: names.get(&s.skill_id).cloned().unwrap_or_default(),
            id: s.skill_id.clone(),
            active: s.active,
            level: s.level,
        })
        .collect();
    skills.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(Me {
        auto_allocate: state.store.auto_allocate(&user_id).await?,
        status: Some(state.store.agent_status(&user_id).await?),
        user_id: Some(user.id),
        email: Some(user.email),
        display_name: user.display_name,
        role: user.role,
        csrf_token,
        skills,
        maintenance,
    }))
}

/// A switch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Switch {
    /// On or off.
    pub enabled: bool,
}

/// `PUT /api/v1/me/auto-allocate`.
#[utoipa::path(put, path = "/api/v1/me/auto-allocate", tag = "workspace", security(("session" = []), ("bearer" = [])), request_body = Switch,
    responses((status = 204, description = "Saved"), (status = 400, body = ErrorBody), (status = 415, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn set_auto_allocate(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let req: Switch = json_body(&headers, &body)?;
    state
        .store
        .set_auto_allocate(who.require_user()?, req.enabled)
        .await?;
    // The allocator reads the change (and allocates when it was switched on).
    state
        .routing
        .signal(who.user_id.as_deref(), "auto_allocate")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/me/skills/{skill_id}`: switch one of the own skills on or off.
#[utoipa::path(put, path = "/api/v1/me/skills/{skill_id}", tag = "workspace", security(("session" = []), ("bearer" = [])), params(("skill_id" = String, Path, description = "Skill id")), request_body = Switch,
    responses((status = 204, description = "Saved"), (status = 404, description = "The user lacks this skill", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn set_my_skill(
    State(state): State<AppState>,
    who: Principal,
    Path(skill_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let req: Switch = json_body(&headers, &body)?;
    state
        .store
        .set_user_skill_active(who.require_user()?, &skill_id, req.enabled)
        .await?;
    state
        .routing
        .signal(who.user_id.as_deref(), "skills")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A status change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusChange {
    /// The new status.
    pub status: AgentStatus,
}

/// `PUT /api/v1/me/status`: available, away or offline.
#[utoipa::path(put, path = "/api/v1/me/status", tag = "workspace", security(("session" = []), ("bearer" = [])), request_body = StatusChange,
    responses((status = 204, description = "Saved"), (status = 400, body = ErrorBody), (status = 415, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn set_status(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let req: StatusChange = json_body(&headers, &body)?;
    state
        .store
        .set_agent_status(who.require_user()?, req.status.as_str())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/conversations/{id}/routing`: every routing decision of the conversation with
/// its explanation (candidates, why this agent). Admins read any; agents the ones they hold.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/routing", tag = "workspace", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")),
    responses((status = 200, body = Vec<DecisionRecord>), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn routing_decisions(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vec<DecisionRecord>>, Error> {
    check_conversation_access(&state, &who, &id, false).await?;
    Ok(Json(state.store.routing_decisions(&id).await?))
}

/// Dashboard figures.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Dashboard {
    /// Own and tenant figures.
    #[serde(flatten)]
    pub figures: Figures,
    /// Agents connected to the Workspace with auto-allocate on.
    pub agents_available: usize,
    /// Agents connected to the Workspace.
    pub agents_online: usize,
}

/// `GET /api/v1/me/dashboard`.
#[utoipa::path(get, path = "/api/v1/me/dashboard", tag = "workspace", security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Dashboard), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn dashboard(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Dashboard>, Error> {
    let figures = state
        .store
        .figures(who.user_id.as_deref().unwrap_or(""), now_ms())
        .await?;
    let online = state.live.connected_users();
    let users = state.store.user_summaries().await?;
    let agents: Vec<_> = users
        .iter()
        .filter(|u| u.role == Role::Agent && online.contains(&u.id))
        .collect();
    Ok(Json(Dashboard {
        figures,
        agents_available: agents.iter().filter(|u| u.auto_allocate).count(),
        agents_online: agents.len(),
    }))
}

/// `GET /api/v1/queue`.
#[utoipa::path(get, path = "/api/v1/queue", tag = "workspace", security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Vec<QueueItem>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn queue(State(state): State<AppState>) -> Result<Json<Vec<QueueItem>>, Error> {
    Ok(Json(state.store.queue().await?))
}

/// `POST /api/v1/conversations/{id}/pick`: claims a queued conversation; 409 when someone else
/// was faster.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/pick", tag = "workspace", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")),
    responses((status = 200, description = "Picked: the conversation is the caller's now", body = Conversation), (status = 404, body = ErrorBody), (status = 409, description = "Someone else was faster or it is not queued (`already_taken`), the agent is at capacity (`at_capacity`), or it waits for another agent (`transferred_to_other`)", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn pick(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, Error> {
    let user = who.require_user()?;
    // Agents pick within their capacity; an admin picking is an explicit override.
    let capacity = match who.role {
        Role::Agent => Some(i64::from(state.routing.capacity().await?)),
        _ => None,
    };
    match state.store.claim_pick(&id, user, capacity).await? {
        Ok(()) => Ok(Json(state.store.conversation(&id).await?)),
        Err(PickRefusal::NotQueued { status }) => Err(Error::Conflict {
            code: "already_taken",
            message: format!("conversation `{id}` is no longer queued (it is {status})"),
        }),
        Err(PickRefusal::AtCapacity { load, capacity }) => Err(Error::Conflict {
            code: "at_capacity",
            message: format!(
                "you already have {load} open conversations (at most {capacity}); close one first"
            ),
        }),
        Err(PickRefusal::PinnedToOther { user_id }) => Err(Error::Conflict {
            code: "transferred_to_other",
            message: format!("conversation `{id}` was transferred to user `{user_id}`"),
        }),
    }
}

/// One line of the agent's conversation list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MyConversation {
    /// The conversation.
    #[serde(flatten)]
    pub conversation: Conversation,
    /// Customer name.
    pub contact_name: Option<String>,
}

/// `GET /api/v1/me/conversations`: open conversations assigned to the caller.
#[utoipa::path(get, path = "/api/v1/me/conversations", tag = "workspace", security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Vec<MyConversation>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn my_conversations(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Vec<MyConversation>>, Error> {
    let Some(user) = who.user_id.as_deref() else {
        return Ok(Json(vec![]));
    };
    let mut out = Vec::new();
    for id in state.store.assigned_conversation_ids(user).await? {
        let conversation = state.store.conversation(&id).await?;
        let contact_name = state
            .store
            .contact(&conversation.contact_id)
            .await
            .ok()
            .and_then(|c| c.display_name);
        out.push(MyConversation {
            conversation,
            contact_name,
        });
    }
    Ok(Json(out))
}

/// What the composer must respect.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Composer {
    /// Longest text (`null`: SMS segment rules apply).
    pub text_limit: Option<usize>,
    /// SMS: the most characters accepted.
    pub sms_max_chars: Option<usize>,
    /// WhatsApp: whether free text may be sent now.
    pub window_open: bool,
    /// WhatsApp: when the 24-hour window closes.
    pub window_closes_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether template messages are possible on this channel.
    pub templates: bool,
}

fn composer(conversation: &Conversation) -> Composer {
    let whatsapp = conversation.channel == ChannelType::Whatsapp;
    let closes = conversation
        .last_inbound_at
        .map(|t| t + chrono::Duration::hours(24));
    Composer {
        text_limit: rules::text_limit(conversation.channel),
        sms_max_chars: (conversation.channel == ChannelType::Sms).then_some(rules::SMS_MAX_CHARS),
        window_open: !whatsapp || closes.is_some_and(|c| c > chrono::Utc::now()),
        window_closes_at: if whatsapp { closes } else { None },
        templates: whatsapp,
    }
}

/// A colleague to transfer to.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Colleague {
    /// Id.
    pub id: String,
    /// Name.
    pub display_name: String,
    /// Connected now.
    pub online: bool,
}

/// Everything the conversation view shows.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConversationView {
    /// The conversation.
    pub conversation: Conversation,
    /// The customer.
    pub contact: Contact,
    /// Category name.
    pub category: Option<String>,
    /// Thread, oldest first.
    pub messages: Vec<Message>,
    /// Internal notes.
    pub notes: Vec<Note>,
    /// Channel constraints for the composer.
    pub composer: Composer,
    /// Agents it can be transferred to.
    pub colleagues: Vec<Colleague>,
    /// Names of users who wrote messages or notes.
    pub authors: HashMap<String, String>,
    /// The customer's attributes (`tier = gold`), editable while the agent holds the
    /// conversation.
    pub contact_attributes: BTreeMap<String, String>,
}

/// `GET /api/v1/workspace/conversations/{id}`.
#[utoipa::path(get, path = "/api/v1/workspace/conversations/{id}", tag = "workspace", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")),
    responses((status = 200, body = ConversationView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn conversation_view(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConversationView>, Error> {
    let conversation = check_conversation_access(&state, &who, &id, false).await?;
    let contact = state.store.contact(&conversation.contact_id).await?;
    let category = match &conversation.category_id {
        Some(cid) => state
            .store
            .categories()
            .await?
            .into_iter()
            .find(|c| &c.id == cid)
            .map(|c| c.name),
        None => None,
    };
    let online = state.live.connected_users();
    let users = state.store.user_summaries().await?;
    let authors = users
        .iter()
        .map(|u| (u.id.clone(), u.display_name.clone()))
        .collect();
    let colleagues = users
        .into_iter()
        .filter(|u| u.role == Role::Agent && Some(&u.id) != who.user_id.as_ref())
        .map(|u| Colleague {
            online: online.contains(&u.id),
            id: u.id,
            display_name: u.display_name,
        })
        .collect();
    Ok(Json(ConversationView {
        contact_attributes: state
            .store
            .contact_attributes(&conversation.contact_id)
            .await?,
        composer: composer(&conversation),
        messages: state.store.messages(&id).await?,
        notes: state.store.notes(&id).await?,
        conversation,
        contact,
        category,
        colleagues,
        authors,
    }))
}

/// A message from the Workspace composer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Compose {
    /// What to send.
    pub content: crate::domain::MessageContent,
}

/// `POST /api/v1/workspace/conversations/{id}/messages`: sends as the signed-in agent (the
/// author comes from the session, never from the body), through the same checks as the REST
/// API (channel limits, WhatsApp window, idempotency).
#[utoipa::path(post, path = "/api/v1/workspace/conversations/{id}/messages", tag = "workspace", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")), request_body = Compose,
    responses((status = 202, description = "Stored and queued for delivery", body = Message), (status = 409, body = ErrorBody), (status = 422, description = "Breaks a channel rule", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn send(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Message>), Error> {
    let req: Compose = json_body(&headers, &body)?;
    let conversation = check_conversation_access(&state, &who, &id, true).await?;
    if conversation.status != ConversationStatus::Assigned && who.role == Role::Agent {
        return Err(Error::Conflict {
            code: "not_assigned",
            message: "pick the conversation before answering".to_owned(),
        });
    }
    let body = json!({ "content": req.content, "author_user_id": who.user_id });
    let body = Bytes::from(body.to_string());
    super::conversations::send_message(State(state), Path(id), headers, body).await
}

/// `POST /api/v1/conversations/{id}/close`.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/close", tag = "workspace", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")),
    responses((status = 204, description = "Closed"), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn close(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    check_conversation_access(&state, &who, &id, true).await?;
    let by = who.user_id.clone().unwrap_or_else(|| "api".to_owned());
    let owner = (who.role == Role::Agent).then_some(by.as_str());
    if state.store.close_conversation(&id, owner, &by).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::Conflict {
            code: "conversation_closed",
            message: format!("conversation `{id}` is already closed"),
        })
    }
}

/// A transfer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Transfer {
    /// The agent to hand it to; `null` (and no category) puts it back in the queue, where
    /// automatic allocation will not give it to the same agent again.
    #[serde(default)]
    pub to_user_id: Option<String>,
    /// Move it to this category instead: back in the queue at its old place with the
    /// category's priority and skills.
    #[serde(default)]
    pub to_category_id: Option<String>,
    /// Hand it to `to_user_id` even though they lack skills the conversation requires (409
    /// `agent_lacks_skill` otherwise); the routing decision records the override and who made it.
    #[serde(default)]
    pub force: bool,
}

/// A transfer to an agent who cannot take the conversation now: it waits for them.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TransferWaiting {
    /// The agent it waits for.
    pub waiting_for: String,
    /// Their name.
    pub display_name: String,
    /// `away`, `disconnected` or `at_capacity`.
    pub because: String,
    /// After this many seconds anyone eligible may take it (`null`: it waits for them).
    pub fallback_after_secs: Option<u64>,
}

/// `POST /api/v1/conversations/{id}/transfer`.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/transfer", tag = "workspace", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")), request_body = Transfer,
    responses((status = 204, description = "Moved: to the agent (who had room), to the queue or to the category"), (status = 202, description = "The agent is away, disconnected or full: the conversation waits for them in the queue (pinned) until they take it or the fallback passes", body = TransferWaiting), (status = 409, description = "Not assigned (to you), closed, the agent is offline (`agent_offline`), or the agent lacks required skills and `force` was not set (`agent_lacks_skill`, naming them)", body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn transfer(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::response::Response, Error> {
    let req: Transfer = json_body(&headers, &body)?;
    check_conversation_access(&state, &who, &id, true).await?;
    if let Some(category) = &req.to_category_id {
        if req.to_user_id.is_some() {
            return Err(Error::bad_request(
                "invalid_transfer",
                "give either to_user_id or to_category_id, not both",
            ));
        }
        let by = who.user_id.clone().unwrap_or_else(|| "api".to_owned());
        let owner = (who.role == Role::Agent).then_some(by.as_str());
        return match state
            .store
            .transfer_to_category(&id, owner, category, &by)
            .await
        {
            Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
            Ok(false) => Err(Error::Conflict {
                code: "not_open",
                message: format!("conversation `{id}` is closed or not assigned to you"),
            }),
            Err(crate::storage::Error::NotFound { .. }) => Err(Error::Unprocessable {
                code: "unknown_category",
                message: format!("category `{category}` does not exist"),
            }),
            Err(e) => Err(e.into()),
        };
    }
    let by = who.user_id.clone().unwrap_or_else(|| "api".to_owned());
    let owner = (who.role == Role::Agent).then_some(by.as_str());
    if let Some(to) = &req.to_user_id {
        let target = state
            .store
            .user(to)
            .await
            .map_err(|_| Error::Unprocessable {
                code: "unknown_user",
                message: format!("user `{to}` does not exist"),
            })?;
        if target.role != Role::Agent {
            return Err(Error::Unprocessable {
                code: "not_an_agent",
                message: format!("`{}` is not an agent", target.display_name),
            });
        }
        let capacity = i64::from(state.routing.capacity().await?);
        let fallback = Some(state.routing.defaults().transfer_pin_fallback_secs).filter(|s| *s > 0);
        let transfer = AgentTransfer {
            conversation_id: &id,
            owner,
            to,
            by: &by,
            capacity,
            fallback_secs: fallback,
            now: now_ms(),
        };
        return match state
            .routing
            .transfer_to_agent(&transfer, req.force)
            .await?
        {
            TransferOutcome::Assigned => Ok(StatusCode::NO_CONTENT.into_response()),
            TransferOutcome::Waiting { because } => Ok((
                StatusCode::ACCEPTED,
                Json(TransferWaiting {
                    waiting_for: to.clone(),
                    display_name: target.display_name,
                    because: because.to_owned(),
                    fallback_after_secs: fallback,
                }),
            )
                .into_response()),
            TransferOutcome::AgentOffline => Err(Error::Conflict {
                code: "agent_offline",
                message: format!(
                    "{} is offline; transfer to someone else or back to the queue",
                    target.display_name
                ),
            }),
            TransferOutcome::LacksSkills { missing } => Err(Error::Conflict {
                code: "agent_lacks_skill",
                message: format!(
                    "{} does not meet this conversation's required skills: {}; transfer to \
                     someone else, or send \"force\": true to hand it over anyway",
                    target.display_name,
                    missing
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
            TransferOutcome::NotAssigned => Err(Error::Conflict {
                code: "not_assigned",
                message: format!("conversation `{id}` is not assigned (to you)"),
            }),
        };
    }
    if state
        .store
        .transfer_conversation(&id, owner, None, &by)
        .await?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Error::Conflict {
            code: "not_assigned",
            message: format!("conversation `{id}` is not assigned (to you)"),
        })
    }
}

/// A contact's attributes: key/value pairs such as `tier = gold` (keys 1 to 40 of `a-z`, `0-9`,
/// `_`, `-`, `.` starting with a letter; values 1 to 200 characters; at most 20).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContactAttributes {
    /// The attributes by key.
    pub attributes: BTreeMap<String, String>,
}

/// Admins (and the API token) may edit any contact's attributes; an agent those of a customer
/// whose conversation they hold.
async fn check_contact_access(
    state: &AppState,
    who: &Principal,
    contact_id: &str,
) -> Result<(), Error> {
    if who.role == Role::Admin {
        state.store.contact(contact_id).await?;
        return Ok(());
    }
    let holds = match &who.user_id {
        Some(user) => state.store.holds_contact(user, contact_id).await?,
        None => false,
    };
    if holds {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "you hold no open conversation with contact `{contact_id}`"
        )))
    }
}

/// `GET /api/v1/contacts/{id}/attributes`.
#[utoipa::path(get, path = "/api/v1/contacts/{id}/attributes", tag = "workspace", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Contact id")),
    responses((status = 200, body = ContactAttributes), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "An agent who holds no conversation of this contact", body = ErrorBody)))]
pub(crate) async fn contact_attributes(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ContactAttributes>, Error> {
    check_contact_access(&state, &who, &id).await?;
    Ok(Json(ContactAttributes {
        attributes: state.store.contact_attributes(&id).await?,
    }))
}

/// `PUT /api/v1/contacts/{id}/attributes`: replaces the contact's attributes; each added,
/// changed or removed key is audited (personal data).
#[utoipa::path(put, path = "/api/v1/contacts/{id}/attributes", tag = "workspace", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Contact id")), request_body = ContactAttributes,
    responses((status = 200, body = ContactAttributes), (status = 400, description = "A bad key or value, or too many", body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "An agent who holds no conversation of this contact", body = ErrorBody)))]
pub(crate) async fn set_contact_attributes(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ContactAttributes>, Error> {
    let req: ContactAttributes = json_body(&headers, &body)?;
    crate::domain::attributes::check(&req.attributes)
        .map_err(|e| Error::bad_request("invalid_attribute", e.to_string()))?;
    check_contact_access(&state, &who, &id).await?;
    let actor = who.user_id.clone().unwrap_or_else(|| "api".to_owned());
    state
        .store
        .set_contact_attributes(&id, &req.attributes, &actor, now_ms())
        .await?;
    Ok(Json(ContactAttributes {
        attributes: state.store.contact_attributes(&id).await?,
    }))
}

/// A note.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewNote {
    /// The text.
    pub text: String,
}

/// `POST /api/v1/conversations/{id}/notes`.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/notes", tag = "workspace", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")), request_body = NewNote,
    responses((status = 201, body = Note), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn add_note(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Note>), Error> {
    let req: NewNote = json_body(&headers, &body)?;
    let text = req.text.trim();
    if text.is_empty() || text.chars().count() > 4000 {
        return Err(Error::bad_request(
            "invalid_note",
            "a note has 1 to 4000 characters",
        ));
    }
    check_conversation_access(&state, &who, &id, true).await?;
    let note = state.store.add_note(&id, who.require_user()?, text).await?;
    Ok((StatusCode::CREATED, Json(note)))
}

// === Configurator ===
