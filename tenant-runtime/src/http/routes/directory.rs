//! The tenant directory for integrators and admins: users, skills and categories.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router, middleware};

use super::parse_json;
use crate::domain::Role::Admin;
use crate::domain::api::{Category, NewCategory, NewSkill, NewUser, Skill, User};
use crate::http::error::ErrorBody;
use crate::http::{AppState, Error, auth};

/// `/users`, `/skills`, `/categories` (under `/api/v1`, behind `authenticate`): admins only.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/skills", get(list_skills).post(create_skill))
        .route("/categories", get(list_categories).post(create_category))
        .route_layer(middleware::from_fn(auth::allow(&[Admin])))
}

/// Every user.
#[utoipa::path(get, path = "/api/v1/users", tag = "directory",
    responses((status = 200, body = Vec<User>)))]
pub(crate) async fn list_users(State(state): State<AppState>) -> Result<Json<Vec<User>>, Error> {
    Ok(Json(state.store.users().await?))
}

/// Creates a user (no password yet: login comes later).
#[utoipa::path(post, path = "/api/v1/users", tag = "directory", request_body = NewUser,
    responses((status = 201, body = User), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<User>), Error> {
    let new: NewUser = parse_json(&body)?;
    if !new.email.contains('@') || new.display_name.trim().is_empty() {
        return Err(Error::bad_request(
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
pub(crate) async fn list_skills(State(state): State<AppState>) -> Result<Json<Vec<Skill>>, Error> {
    Ok(Json(state.store.skills().await?))
}

/// Creates a skill.
#[utoipa::path(post, path = "/api/v1/skills", tag = "directory", request_body = NewSkill,
    responses((status = 201, body = Skill), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_skill(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Skill>), Error> {
    let new: NewSkill = parse_json(&body)?;
    if new.name.trim().is_empty() {
        return Err(Error::bad_request(
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
pub(crate) async fn list_categories(
    State(state): State<AppState>,
) -> Result<Json<Vec<Category>>, Error> {
    Ok(Json(state.store.categories().await?))
}

/// Creates a category.
#[utoipa::path(post, path = "/api/v1/categories", tag = "directory", request_body = NewCategory,
    responses((status = 201, body = Category), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_category(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Category>), Error> {
    let new: NewCategory = parse_json(&body)?;
    if new.name.trim().is_empty() {
        return Err(Error::bad_request(
            "invalid_category",
            "name must not be empty",
        ));
    }
    let category = state.store.create_category(&new).await?;
    // The allocator rebuilds its categories.
    state.routing.signal(None, "settings").await?;
    Ok((StatusCode::CREATED, Json(category)))
}
