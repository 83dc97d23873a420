//! Accounts and access: who is calling, and may they.
//!
//! Two ways in:
//! - **Browser sessions.** `POST /auth/login` checks the argon2id hash and sets the
//!   `contact_session` cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` when the request
//!   came over TLS or the settings force it). The cookie holds 32 random bytes; the database holds
//!   only their SHA-256 with the user and an absolute expiry. Every state-changing request of a
//!   session (any method but GET/HEAD/OPTIONS) must carry the session's synchronizer token in
//!   `X-CSRF-Token`; the token comes with `/auth/login` and `GET /api/v1/me`. The unauthenticated
//!   JSON endpoints (login, invite acceptance) insist on `Content-Type: application/json`, which a
//!   cross-site form cannot send without a CORS preflight that this server never grants.
//! - **Integrators and tests.** `Authorization: Bearer <api_token>` (from the settings) acts as an
//!   admin without a user; it needs no CSRF token because browsers never attach it on their own.
//!
//! Roles are checked per route group with [`allow`]; conversation routes also check ownership
//! (an agent sees only the conversations assigned to them). Failed logins are rate limited per
//! account and per client address ([`limit`]), answered with 429 and `Retry-After`.

pub mod limit;
pub mod password;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppState, Error};
use crate::config::AuthSettings;
use crate::domain::Role;
use crate::domain::api::{Conversation, NewUser};
use crate::storage::{self, Store};

/// Name of the session cookie.
pub(crate) const SESSION_COOKIE: &str = "contact_session";
/// Header carrying the CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// Sends invite e-mails. The seam for SMTP: without a mailer the admin passes the link on.
pub(crate) trait Mailer: Send + Sync + std::fmt::Debug {
    /// Sends the invite link; returns whether it was sent.
    fn send_invite(&self, to: &str, url: &str) -> bool;
}

/// The mailer used when none is configured: sends nothing.
#[derive(Debug, Default)]
pub(crate) struct NoMailer;

impl Mailer for NoMailer {
    fn send_invite(&self, _to: &str, _url: &str) -> bool {
        false
    }
}

/// Process-wide authentication state shared by the handlers.
#[derive(Debug)]
pub(crate) struct AuthState {
    /// Failed-login counters.
    pub limiter: limit::FailureLimiter,
    /// Sends invite links (the SMTP seam).
    pub mailer: Box<dyn Mailer>,
}

impl AuthState {
    /// State for `settings`, without a mailer.
    pub(crate) fn new(settings: &AuthSettings) -> Self {
        Self {
            limiter: limit::FailureLimiter::new(
                std::time::Duration::from_secs(settings.failure_window_secs),
                settings.max_failures_per_account,
                settings.max_failures_per_ip,
            ),
            mailer: Box::new(NoMailer),
        }
    }
}

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    /// A browser session (id hash, CSRF token).
    Session {
        /// SHA-256 of the session id.
        id_hash: String,
        /// The synchronizer token.
        csrf_token: String,
    },
    /// The integrators' bearer token.
    ApiToken,
}

/// The authenticated caller, put into the request extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    /// The user; `None` for the API token.
    pub user_id: Option<String>,
    /// Role (the API token counts as admin).
    pub role: Role,
    /// Display name.
    pub display_name: String,
    /// How.
    pub via: Via,
}

impl Principal {
    /// The user id, or 403 for the API token (the action needs a person).
    pub(crate) fn require_user(&self) -> Result<&str, Error> {
        self.user_id.as_deref().ok_or_else(|| {
            Error::Forbidden("this action needs a signed-in user, not the API token".to_owned())
        })
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Error> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(Error::Unauthenticated)
    }
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request reached us over TLS (directly or through the ingress).
pub(crate) fn came_over_tls(settings: &AuthSettings, headers: &HeaderMap) -> bool {
    settings.secure_cookies.unwrap_or_else(|| {
        headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim() == "https"))
    })
}

/// `Set-Cookie` value for a session (or, with `max_age` 0, one that deletes it).
pub(crate) fn session_cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("contact_session=; Path=/; Max-Age=0"))
}

/// The client address for rate limiting: the right-most `X-Forwarded-For` entry (the one the
/// ingress appended, which the client cannot forge), else the peer address.
pub(crate) fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .or_else(|| peer.map(|p| p.ip().to_string()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Resolves the caller from the session cookie or bearer token (`None`: neither present).
pub(crate) async fn principal(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, Error> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let given = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        return match &state.settings.api_token {
            Some(expected) if password::same_secret(given, expected.expose()) => {
                Ok(Some(Principal {
                    user_id: None,
                    role: Role::Admin,
                    display_name: "API token".to_owned(),
                    via: Via::ApiToken,
                }))
            }
            _ => Err(Error::Unauthorized {
                code: "unauthorized",
                message: "missing or wrong bearer token".to_owned(),
            }),
        };
    }
    let Some(sid) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let id_hash = password::token_hash(sid);
    Ok(state.store.session(&id_hash).await?.map(|s| Principal {
        user_id: Some(s.user_id),
        role: s.role,
        display_name: s.display_name,
        via: Via::Session {
            id_hash,
            csrf_token: s.csrf_token,
        },
    }))
}

/// Middleware: requires a principal, checks CSRF on state changes of sessions, and stores the
/// principal in the request extensions.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let found = match principal(&state, request.headers()).await {
        Ok(Some(p)) => p,
        Ok(None) => return Error::Unauthenticated.into_response(),
        Err(e) => return e.into_response(),
    };
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if let Via::Session { csrf_token, .. } = &found.via
        && !safe
    {
        let given = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !password::same_secret(given, csrf_token) {
            return Error::Csrf.into_response();
        }
    }
    request.extensions_mut().insert(found);
    next.run(request).await
}

/// Route-layer guard: only `roles` may pass (after [`authenticate`]).
pub(crate) fn allow(
    roles: &'static [Role],
) -> impl Fn(Request, Next) -> std::pin::Pin<Box<dyn Future<Output = Response> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    move |request: Request, next: Next| {
        Box::pin(async move {
            match request.extensions().get::<Principal>() {
                None => Error::Unauthenticated.into_response(),
                Some(p) if roles.contains(&p.role) => next.run(request).await,
                Some(p) => Error::Forbidden(format!(
                    "the {} role may not do this (allowed: {})",
                    p.role,
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .into_response(),
            }
        })
    }
}

/// Checks that an agent owns the conversation (admins and the API token may see all; DPOs may
/// read all). Used by the conversation routes.
pub(crate) async fn check_conversation_access(
    state: &AppState,
    who: &Principal,
    conversation_id: &str,
    write: bool,
) -> Result<Conversation, Error> {
    let conversation = state.store.conversation(conversation_id).await?;
    match who.role {
        Role::Admin => Ok(conversation),
        Role::Dpo if !write => Ok(conversation),
        Role::Dpo => Err(Error::Forbidden(
            "the dpo role may read conversations but not act on them".to_owned(),
        )),
        Role::Agent => {
            if conversation.assigned_user_id.is_some()
                && conversation.assigned_user_id.as_deref() == who.user_id.as_deref()
            {
                Ok(conversation)
            } else {
                Err(Error::Forbidden(format!(
                    "conversation `{conversation_id}` is not assigned to you"
                )))
            }
        }
    }
}

/// Middleware for the `/conversations/{id}…` routes of the REST API: ownership per
/// [`check_conversation_access`]; writing through these routes is for admins and the API token
/// (agents write through the Workspace routes, which set the author from the session).
pub(crate) async fn conversation_guard(
    State(state): State<AppState>,
    axum::extract::Path(params): axum::extract::Path<std::collections::HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(who) = request.extensions().get::<Principal>().cloned() else {
        return Error::Unauthenticated.into_response();
    };
    if who.role == Role::Admin {
        // Admins (and the API token) may see and write every conversation: no lookup needed.
        return next.run(request).await;
    }
    let write = !matches!(*request.method(), Method::GET | Method::HEAD);
    if write {
        return Error::Forbidden(
            "agents send messages through /api/v1/workspace/conversations/{id}/messages".to_owned(),
        )
        .into_response();
    }
    let id = params.get("id").cloned().unwrap_or_default();
    match check_conversation_access(&state, &who, &id, write).await {
        Ok(_) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Requires `Content-Type: application/json` and parses the body.
pub(crate) fn json_body<T: for<'de> serde::Deserialize<'de>>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Error> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Error::NotJson);
    }
    serde_json::from_slice(body).map_err(|e| Error::bad_request("invalid_json", e.to_string()))
}

/// Creates the first admin from the settings when the password is set and the account does not
/// exist yet (or exists without a password). An existing password is never overwritten.
pub async fn bootstrap_admin(store: &Store, settings: &AuthSettings) -> Result<(), storage::Error> {
    let Some(pw) = &settings.bootstrap_admin_password else {
        return Ok(());
    };
    let email = settings.bootstrap_admin_email.trim();
    let Some(hash) = password::hash(pw.expose()) else {
        tracing::error!("could not hash the bootstrap admin password");
        return Ok(());
    };
    match store.credentials(email).await? {
        Some(c) if c.password_hash.is_some() => {}
        Some(c) => store.set_password_hash(&c.user_id, &hash).await?,
        None => {
            store
                .create_user(&NewUser {
                    email: email.to_owned(),
                    display_name: "Administrator".to_owned(),
                    role: Role::Admin,
                    password_hash: Some(hash),
                    skill_ids: vec![],
                })
                .await?;
            tracing::info!(email, "bootstrap admin created");
        }
    }
    Ok(())
}

/// Peer address when the server was started with connect info.
pub(crate) fn peer(request_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_addresses() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; contact_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        let v = session_cookie("t", 60, true);
        let v = v.to_str().unwrap();
        assert!(v.contains("HttpOnly") && v.contains("SameSite=Strict") && v.ends_with("Secure"));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 10.0.0.7"),
        );
        assert_eq!(client_ip(&h, None), "10.0.0.7");
        let s = AuthSettings::default();
        assert!(!came_over_tls(&s, &h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(came_over_tls(&s, &h));
    }
}
