//! `/auth/*` (login, logout, invite acceptance) and the handlers of `/api/v1/admin/invites`
//! (mounted by [`super::configurator`], with the other admin routes).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router, middleware};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::Role;
use crate::domain::api::Invite;
use crate::http::auth::{
    self, Principal, Via, came_over_tls, client_ip, json_body, password, peer, session_cookie,
};
use crate::http::error::ErrorBody;
use crate::http::{AppState, Error};
use crate::storage::{AcceptOutcome, NewInvite, now_ms};

/// `/auth/*`: login and invite acceptance are public; logout needs the session (and CSRF).
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/auth/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(state, auth::authenticate))
        .route("/auth/login", post(login))
        .route("/auth/invite/lookup", post(lookup_invite))
        .route("/auth/invite/accept", post(accept_invite))
}

/// Login request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    /// E-mail.
    pub email: String,
    /// Password.
    pub password: String,
}

/// What a successful login (or `GET /api/v1/me`) tells the browser about the session.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionInfo {
    /// User id.
    pub user_id: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Send this in `X-CSRF-Token` on every state-changing request.
    pub csrf_token: String,
    /// Where the UI for this role lives.
    pub home: &'static str,
}

/// The page a role lands on.
pub(crate) fn home(role: Role) -> &'static str {
    match role {
        Role::Admin => "/admin",
        Role::Agent => "/workspace",
        Role::Dpo => "/dpo",
    }
}

async fn start_session(
    state: &AppState,
    headers: &HeaderMap,
    user_id: &str,
) -> Result<Response, Error> {
    let user = state.store.user(user_id).await?;
    let sid = password::random_token();
    let csrf = password::random_token();
    let ttl = state.settings.auth.session_ttl_secs;
    state
        .store
        .create_session(
            &password::token_hash(&sid),
            user_id,
            &csrf,
            now_ms() + ttl * 1000,
        )
        .await?;
    let secure = came_over_tls(&state.settings.auth, headers);
    let info = SessionInfo {
        user_id: user.id,
        display_name: user.display_name,
        role: user.role,
        csrf_token: csrf,
        home: home(user.role),
    };
    let mut resp = Json(info).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&sid, ttl, secure));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-store".parse().expect("static header"),
    );
    Ok(resp)
}

/// `POST /auth/login`: checks the password, starts a session, sets the cookie.
#[utoipa::path(post, path = "/auth/login", tag = "accounts", security(()), request_body = Login,
    responses((status = 200, description = "Signed in; sets the `contact_session` cookie", body = SessionInfo), (status = 401, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, description = "Too many failed logins (see `Retry-After`)", body = ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, Error> {
    let peer = peer(request.extensions());
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 64 * 1024)
        .await
        .map_err(|e| Error::bad_request("invalid_body", e.to_string()))?;
    let req: Login = json_body(&headers, &body)?;
    let ip = client_ip(&headers, peer);
    let limiter = &state.auth.limiter;
    let email = req.email.trim().to_owned();
    if let Some(retry_after_secs) = limiter.blocked(&email, &ip, Instant::now()) {
        tracing::warn!(%ip, "login refused: too many failures");
        return Err(Error::RateLimited { retry_after_secs });
    }
    if req.password.len() > 4 * password::MAX_PASSWORD_CHARS {
        return Err(Error::bad_request("invalid_password", "password too long"));
    }
    let creds = state.store.credentials(&email).await?;
    let pw = req.password;
    let stored = creds.as_ref().and_then(|c| c.password_hash.clone());
    // argon2 is CPU-bound: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || match stored {
        Some(h) => password::verify(&pw, &h),
        None => {
            password::verify(&pw, password::dummy_hash());
            false
        }
    })
    .await
    .unwrap_or(false);
    match (ok, creds) {
        (true, Some(c)) => {
            limiter.succeed(&email);
            tracing::info!(user_id = %c.user_id, "login");
            start_session(&state, &headers, &c.user_id).await
        }
        _ => {
            limiter.fail(&email, &ip, Instant::now());
            tracing::info!(%ip, "login failed");
            Err(Error::BadCredentials)
        }
    }
}

/// `POST /auth/logout`: ends the session and clears the cookie.
#[utoipa::path(post, path = "/auth/logout", tag = "accounts",
    responses((status = 204, description = "Signed out; the cookie is cleared"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
) -> Result<Response, Error> {
    if let Via::Session { id_hash, .. } = &who.via {
        state.store.delete_session(id_hash).await?;
    }
    let secure = came_over_tls(&state.settings.auth, &headers);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0, secure));
    Ok(resp)
}

/// An invite to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateInvite {
    /// Who.
    pub email: String,
    /// Name for the account (default: the part of the e-mail before `@`).
    #[serde(default)]
    pub display_name: Option<String>,
    /// Role.
    pub role: Role,
}

/// A created invite with its one-time link (shown once; only its hash is stored).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedInvite {
    /// The invite.
    #[serde(flatten)]
    pub invite: Invite,
    /// The link to send.
    pub url: String,
    /// Whether it was mailed (no SMTP configured yet: always false).
    pub mailed: bool,
}

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.settings.auth.public_url {
        return u.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if came_over_tls(&state.settings.auth, headers) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

/// `POST /api/v1/admin/invites` (admin): creates a one-time link that expires.
#[utoipa::path(post, path = "/api/v1/admin/invites", tag = "configurator", request_body = CreateInvite,
    responses((status = 201, body = CreatedInvite), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn create_invite(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedInvite>), Error> {
    let req: CreateInvite = json_body(&headers, &body)?;
    let email = req.email.trim().to_owned();
    if !email.contains('@') || email.len() > 254 || email.chars().any(char::is_whitespace) {
        return Err(Error::bad_request(
            "invalid_email",
            "email must look like name@domain",
        ));
    }
    if let Some(c) = state.store.credentials(&email).await?
        && c.password_hash.is_some()
    {
        return Err(Error::Conflict {
            code: "account_exists",
            message: format!("`{email}` already has an account"),
        });
    }
    let token = password::random_token();
    let display_name = req
        .display_name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| email.split('@').next().unwrap_or(&email).to_owned());
    let invite = state
        .store
        .create_invite(&NewInvite {
            token_hash: password::token_hash(&token),
            email: email.clone(),
            display_name,
            role: req.role,
            created_by: who.user_id.clone(),
            expires_at: now_ms() + state.settings.auth.invite_ttl_secs * 1000,
        })
        .await?;
    let url = format!("{}/invite#{token}", base_url(&state, &headers));
    let mailed = state.auth.mailer.send_invite(&email, &url);
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvite {
            invite,
            url,
            mailed,
        }),
    ))
}

/// `GET /api/v1/admin/invites` (admin).
#[utoipa::path(get, path = "/api/v1/admin/invites", tag = "configurator",
    responses((status = 200, body = Vec<Invite>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_invites(
    State(state): State<AppState>,
) -> Result<Json<Vec<Invite>>, Error> {
    Ok(Json(state.store.invites().await?))
}

/// An invite's token, sent in the body (never in a URL path, so it stays out of logs).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteToken {
    /// The token from the link.
    pub token: String,
}

/// `POST /auth/invite/lookup`: who the invite is for (so the page can greet them).
#[utoipa::path(post, path = "/auth/invite/lookup", tag = "accounts", security(()), request_body = InviteToken,
    responses((status = 200, body = Invite), (status = 404, body = ErrorBody), (status = 409, description = "Used or expired", body = ErrorBody)))]
pub(crate) async fn lookup_invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Invite>, Error> {
    let req: InviteToken = json_body(&headers, &body)?;
    let invite = state
        .store
        .invite_by_token_hash(&password::token_hash(&req.token))
        .await?
        .ok_or_else(|| Error::NotFound("no such invite".to_owned()))?;
    if invite.accepted_at.is_some() || invite.expires_at <= chrono::Utc::now() {
        return Err(gone());
    }
    Ok(Json(invite))
}

fn gone() -> Error {
    Error::Conflict {
        code: "invite_spent",
        message: "this invite link was used already or has expired; ask an admin for a new one"
            .to_owned(),
    }
}

/// Accepting an invite.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcceptInvite {
    /// The token from the link.
    pub token: String,
    /// The new password.
    pub password: String,
    /// Optional new display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `POST /auth/invite/accept`: sets the password and signs in.
#[utoipa::path(post, path = "/auth/invite/accept", tag = "accounts", security(()), request_body = AcceptInvite,
    responses((status = 200, description = "Password set and signed in", body = SessionInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, description = "Weak password", body = ErrorBody)))]
pub(crate) async fn accept_invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let req: AcceptInvite = json_body(&headers, &body)?;
    password::check_new(&req.password).map_err(|m| Error::Unprocessable {
        code: "weak_password",
        message: m,
    })?;
    let pw = req.password.clone();
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .ok()
        .flatten()
        .ok_or(Error::Hash)?;
    match state
        .store
        .accept_invite(
            &password::token_hash(&req.token),
            &hash,
            req.display_name.as_deref(),
        )
        .await?
    {
        AcceptOutcome::Accepted(user_id) => {
            // New accounts start with the tenant's auto-allocate default.
            state.routing.seed_new_user(&user_id).await?;
            start_session(&state, &headers, &user_id).await
        }
        AcceptOutcome::Unknown => Err(Error::NotFound("no such invite".to_owned())),
        AcceptOutcome::Spent => Err(gone()),
        AcceptOutcome::AccountExists => Err(Error::Conflict {
            code: "account_exists",
            message: "an account with this e-mail already has a password; sign in instead"
                .to_owned(),
        }),
    }
}
