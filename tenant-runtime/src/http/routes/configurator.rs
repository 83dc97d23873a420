//! The Configurator's JSON endpoints (`/api/v1/admin/…`): channels (read-only: the operator
//! owns them), categories, skills, users, invites and routing settings. Admins only.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router, middleware};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::auth::{create_invite, list_invites};
use crate::domain::ChannelType;
use crate::domain::Role::{self, Admin};
use crate::domain::api::{CategoryEdit, ChannelHealth};
use crate::http::auth::{self, Principal, json_body};
use crate::http::error::ErrorBody;
use crate::http::{AppState, Error};

/// `/admin/…` (under `/api/v1`, behind `authenticate`): admins only.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/channels", get(channels))
        .route("/admin/categories", get(categories).post(create_category))
        .route(
            "/admin/categories/{id}",
            put(update_category).delete(delete_category),
        )
        .route(
            "/admin/skills/{id}",
            patch(rename_skill).delete(delete_skill),
        )
        .route("/admin/users/{id}/skills", put(set_user_skills))
        .route("/admin/users/{id}/role", put(set_user_role))
        .route("/admin/users/{id}/deactivate", post(deactivate_user))
        .route("/admin/invites", get(list_invites).post(create_invite))
        .route("/admin/routing", get(routing).put(set_routing))
        .route_layer(middleware::from_fn(auth::allow(&[Admin])))
}

/// A channel app as the Configurator shows it (read-only: the operator owns it).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChannelView {
    /// Name.
    pub name: String,
    /// Channel.
    pub channel: ChannelType,
    /// Region.
    #[schema(value_type = String)]
    pub region: crate::config::Region,
    /// Project id.
    pub project_id: String,
    /// App id.
    pub app_id: String,
    /// Webhook path to configure in the Conversation API app.
    pub webhook_path: String,
    /// Default category.
    pub category: Option<String>,
    /// Who owns the definition.
    pub managed_by: &'static str,
    /// Health.
    pub health: ChannelHealth,
}

/// `GET /api/v1/admin/channels`.
#[utoipa::path(get, path = "/api/v1/admin/channels", tag = "configurator", security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Vec<ChannelView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn channels(
    State(state): State<AppState>,
) -> Result<Json<Vec<ChannelView>>, Error> {
    let mut health = state.store.channel_health().await?;
    Ok(Json(
        state
            .settings
            .channels
            .iter()
            .map(|a| ChannelView {
                name: a.name.clone(),
                channel: a.channel,
                region: a.region,
                project_id: a.project_id.clone(),
                app_id: a.app_id.clone(),
                webhook_path: format!("/webhooks/sinch/{}", a.name),
                category: a.category.clone(),
                managed_by: "operator",
                health: health.remove(&a.name).unwrap_or_default(),
            })
            .collect(),
    ))
}

/// A category with its routing attributes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CategoryView {
    /// The category.
    #[serde(flatten)]
    pub category: crate::domain::api::Category,
    /// Priority.
    pub priority: i64,
    /// Rules.
    pub rules: Vec<crate::domain::CategoryRule>,
    /// Whether it is the default (cannot be deleted).
    pub default: bool,
}

/// `GET /api/v1/admin/categories`.
#[utoipa::path(get, path = "/api/v1/admin/categories", tag = "configurator", security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Vec<CategoryView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn categories(
    State(state): State<AppState>,
) -> Result<Json<Vec<CategoryView>>, Error> {
    let mut routing = state.store.category_routing().await?;
    Ok(Json(
        state
            .store
            .categories()
            .await?
            .into_iter()
            .map(|c| {
                let r = routing.remove(&c.id);
                CategoryView {
                    default: c.id == crate::storage::GENERAL_CATEGORY_ID,
                    priority: r.as_ref().map_or(0, |r| r.priority),
                    rules: r.map(|r| r.rules).unwrap_or_default(),
                    category: c,
                }
            })
            .collect(),
    ))
}

/// Proficiency levels run from 1 (basic) to [`contact_routing::MAX_LEVEL`] (expert).
fn check_level(level: u8, what: &str) -> Result<(), Error> {
    if (1..=contact_routing::MAX_LEVEL).contains(&level) {
        return Ok(());
    }
    Err(Error::bad_request(
        "invalid_level",
        format!(
            "{what}: level {level} is out of range; levels run from 1 to {}",
            contact_routing::MAX_LEVEL
        ),
    ))
}

fn check_category(edit: &CategoryEdit) -> Result<(), Error> {
    if edit.name.trim().is_empty() || edit.name.chars().count() > 100 {
        return Err(Error::bad_request(
            "invalid_category",
            "name must have 1 to 100 characters",
        ));
    }
    if !(-1000..=1000).contains(&edit.priority) {
        return Err(Error::bad_request(
            "invalid_category",
            "priority must be between -1000 and 1000",
        ));
    }
    for rule in &edit.rules {
        crate::domain::attributes::check(&rule.contact_attributes)
            .map_err(|e| Error::bad_request("invalid_category", format!("rule: {e}")))?;
    }
    for (skill, option) in &edit.skill_options {
        if !edit.skill_ids.contains(skill) {
            return Err(Error::bad_request(
                "invalid_skill_option",
                format!("skill_options names `{skill}`, which is not in skill_ids"),
            ));
        }
        if let Some(level) = option.min_level {
            check_level(level, &format!("min_level of skill `{skill}`"))?;
        }
    }
    Ok(())
}

/// `POST /api/v1/admin/categories`.
#[utoipa::path(post, path = "/api/v1/admin/categories", tag = "configurator", security(("session" = []), ("bearer" = [])), request_body = CategoryEdit,
    responses((status = 201, description = "Created; the body has its id"), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn create_category(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), Error> {
    let edit: CategoryEdit = json_body(&headers, &body)?;
    check_category(&edit)?;
    let id = state.store.save_category(None, &edit).await?;
    state.routing.signal(None, "settings").await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

/// `PUT /api/v1/admin/categories/{id}`.
#[utoipa::path(put, path = "/api/v1/admin/categories/{id}", tag = "configurator", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")), request_body = CategoryEdit,
    responses((status = 204, description = "Saved"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn update_category(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let edit: CategoryEdit = json_body(&headers, &body)?;
    check_category(&edit)?;
    state.store.save_category(Some(&id), &edit).await?;
    state.routing.signal(None, "settings").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/admin/categories/{id}`: its conversations move to General.
#[utoipa::path(delete, path = "/api/v1/admin/categories/{id}", tag = "configurator", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")),
    responses((status = 204, description = "Deleted; its conversations moved to General"), (status = 404, body = ErrorBody), (status = 409, description = "The default category", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn delete_category(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    if id == crate::storage::GENERAL_CATEGORY_ID {
        return Err(Error::Conflict {
            code: "default_category",
            message: "the General category catches everything else and cannot be deleted"
                .to_owned(),
        });
    }
    state.store.delete_category(&id).await?;
    state.routing.signal(None, "settings").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A skill rename.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenameSkill {
    /// New name.
    pub name: String,
}

/// `PATCH /api/v1/admin/skills/{id}`.
#[utoipa::path(patch, path = "/api/v1/admin/skills/{id}", tag = "configurator", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")), request_body = RenameSkill,
    responses((status = 204, description = "Renamed"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn rename_skill(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let req: RenameSkill = json_body(&headers, &body)?;
    if req.name.trim().is_empty() {
        return Err(Error::bad_request(
            "invalid_skill",
            "name must not be empty",
        ));
    }
    state.store.rename_skill(&id, req.name.trim()).await?;
    state.routing.signal(None, "settings").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/admin/skills/{id}`.
#[utoipa::path(delete, path = "/api/v1/admin/skills/{id}", tag = "configurator", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn delete_skill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    state.store.delete_skill(&id).await?;
    state.routing.signal(None, "settings").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The skills a user holds, with their levels.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserSkills {
    /// Skill ids (replaces the user's set; the agent's on/off switches of kept skills stay).
    pub skill_ids: Vec<String>,
    /// Proficiency 1 (basic) to 5 (expert) per skill id; every key must be in `skill_ids`.
    /// A skill missing here has no level.
    #[serde(default)]
    pub levels: std::collections::BTreeMap<String, u8>,
}

/// `PUT /api/v1/admin/users/{id}/skills`.
#[utoipa::path(put, path = "/api/v1/admin/users/{id}/skills", tag = "configurator", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")), request_body = UserSkills,
    responses((status = 204, description = "Saved"), (status = 400, description = "A level out of 1..=5 or for a skill not in skill_ids", body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn set_user_skills(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let req: UserSkills = json_body(&headers, &body)?;
    for (skill, &level) in &req.levels {
        if !req.skill_ids.contains(skill) {
            return Err(Error::bad_request(
                "invalid_level",
                format!("levels names `{skill}`, which is not in skill_ids"),
            ));
        }
        check_level(level, &format!("skill `{skill}`"))?;
    }
    state.store.user(&id).await?;
    state
        .store
        .set_user_skills(&id, &req.skill_ids, &req.levels)
        .await?;
    state.routing.signal(Some(&id), "skills").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A role change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleChange {
    /// The new role.
    pub role: Role,
}

fn not_yourself(who: &Principal, id: &str, what: &str) -> Result<(), Error> {
    if who.user_id.as_deref() == Some(id) {
        return Err(Error::Conflict {
            code: "own_account",
            message: format!("you cannot {what} your own account; ask another admin"),
        });
    }
    Ok(())
}

#[utoipa::path(put, path = "/api/v1/admin/users/{id}/role", tag = "configurator", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")), request_body = RoleChange,
    responses((status = 204, description = "Changed; applies at the user's next request"), (status = 404, body = ErrorBody), (status = 409, description = "Own account", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
/// `PUT /api/v1/admin/users/{id}/role`.
pub(crate) async fn set_user_role(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let req: RoleChange = json_body(&headers, &body)?;
    not_yourself(&who, &id, "change the role of")?;
    state.store.set_user_role(&id, req.role).await?;
    state.routing.signal(Some(&id), "role").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/admin/users/{id}/deactivate", tag = "configurator", security(("session" = []), ("bearer" = [])), params(("id" = String, Path, description = "Id")),
    responses((status = 204, description = "Password removed and every session ended"), (status = 404, body = ErrorBody), (status = 409, description = "Own account", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
/// `POST /api/v1/admin/users/{id}/deactivate`: signs the user out everywhere and removes the
/// password; a new invite reactivates the account.
pub(crate) async fn deactivate_user(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    not_yourself(&who, &id, "deactivate")?;
    state.store.deactivate_user(&id).await?;
    // A deactivated agent takes nothing and their conversations return to the queue.
    state.store.set_agent_status(&id, "offline").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Routing settings of the tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoutingSettings {
    /// New agents start with auto-allocate on.
    pub auto_allocate_by_default: bool,
    /// Most open conversations per agent that routing assigns.
    pub max_conversations_per_agent: u32,
    /// Seconds before a disconnected agent's conversations return to the queue.
    pub return_to_queue_after_disconnect_secs: u32,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        Self {
            auto_allocate_by_default: true,
            max_conversations_per_agent: 5,
            return_to_queue_after_disconnect_secs: 60,
        }
    }
}

const ROUTING_KEY: &str = "routing";

/// `GET /api/v1/admin/routing`.
#[utoipa::path(get, path = "/api/v1/admin/routing", tag = "configurator", security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = RoutingSettings), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn routing(State(state): State<AppState>) -> Result<Json<RoutingSettings>, Error> {
    Ok(Json(
        state
            .store
            .tenant_setting(ROUTING_KEY)
            .await?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
    ))
}

/// `PUT /api/v1/admin/routing`.
#[utoipa::path(put, path = "/api/v1/admin/routing", tag = "configurator", security(("session" = []), ("bearer" = [])), request_body = RoutingSettings,
    responses((status = 200, body = RoutingSettings), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn set_routing(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<RoutingSettings>, Error> {
    let req: RoutingSettings = json_body(&headers, &body)?;
    if !(1..=50).contains(&req.max_conversations_per_agent) {
        return Err(Error::bad_request(
            "invalid_routing",
            "max_conversations_per_agent must be between 1 and 50",
        ));
    }
    let value = serde_json::to_value(&req)
        .map_err(|e| Error::bad_request("invalid_routing", e.to_string()))?;
    state.store.set_tenant_setting(ROUTING_KEY, &value).await?;
    state.routing.signal(None, "settings").await?;
    Ok(Json(req))
}
