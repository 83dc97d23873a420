//! The web UI: the Workspace (agents), the Configurator (admins), the data protection page
//! (DPOs), login and invite pages.
//!
//! The sources in `tenant-runtime/ui/` are plain HTML, CSS and framework-free ES modules,
//! embedded into the binary with `include_str!`: no Node toolchain builds or serves them, and a
//! release is one file. Every page is served with a strict Content-Security-Policy (scripts only
//! from this origin, no inline script, no `eval`), and the scripts render all customer text with
//! `textContent`, never as HTML: a message that contains markup shows as that markup.
//!
//! Page routes check the session server-side: no session → redirect to `/login`; a role that
//! may not see the page → 403. The data behind the pages comes from the other route modules
//! under `/api/v1` ([`super::workspace`], [`super::configurator`], [`super::privacy`]).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tower_http::compression::CompressionLayer;

use super::auth::home;
use crate::domain::Role;
use crate::http::{AppState, auth};

/// Content-Security-Policy of every page.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; media-src https: http:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The embedded UI files: `(name, content type, body)`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../../ui/app.css"),
    ),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../ui/common.js"),
    ),
    (
        "login.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../ui/login.js"),
    ),
    (
        "invite.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../ui/invite.js"),
    ),
    (
        "workspace.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../ui/workspace.js"),
    ),
    (
        "admin.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../ui/admin.js"),
    ),
    (
        "dpo.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../ui/dpo.js"),
    ),
];

const LOGIN_HTML: &str = include_str!("../../../ui/login.html");
const INVITE_HTML: &str = include_str!("../../../ui/invite.html");
const WORKSPACE_HTML: &str = include_str!("../../../ui/workspace.html");
const ADMIN_HTML: &str = include_str!("../../../ui/admin.html");
const ACCOUNT_HTML: &str = include_str!("../../../ui/account.html");
const DPO_HTML: &str = include_str!("../../../ui/dpo.html");
const FORBIDDEN_HTML: &str = include_str!("../../../ui/forbidden.html");

fn page(status: StatusCode, body: &'static str) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Invite links carry their token in the fragment; never leak the page URL onwards.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Serves a page to signed-in users with one of `roles`.
async fn guarded(
    state: &AppState,
    headers: &HeaderMap,
    roles: &[Role],
    body: &'static str,
) -> Response {
    match auth::principal(state, headers).await {
        Ok(Some(p)) if roles.contains(&p.role) => page(StatusCode::OK, body),
        Ok(Some(_)) => page(StatusCode::FORBIDDEN, FORBIDDEN_HTML),
        // A wrong bearer token or a database failure: sign in (again).
        Ok(None) | Err(_) => Redirect::to("/login").into_response(),
    }
}

async fn root(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match auth::principal(&state, &headers).await {
        Ok(Some(p)) => Redirect::to(home(p.role)).into_response(),
        _ => Redirect::to("/login").into_response(),
    }
}

async fn login_page() -> Response {
    page(StatusCode::OK, LOGIN_HTML)
}

async fn invite_page() -> Response {
    page(StatusCode::OK, INVITE_HTML)
}

async fn workspace_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    guarded(
        &state,
        &headers,
        &[Role::Agent, Role::Admin],
        WORKSPACE_HTML,
    )
    .await
}

async fn admin_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    guarded(&state, &headers, &[Role::Admin], ADMIN_HTML).await
}

async fn account_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    guarded(
        &state,
        &headers,
        &[Role::Agent, Role::Admin, Role::Dpo],
        ACCOUNT_HTML,
    )
    .await
}

async fn dpo_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    guarded(&state, &headers, &[Role::Dpo], DPO_HTML).await
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ctype, body)) => {
            let mut r = (*body).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

/// The page and asset routes (public; pages check the session themselves).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/login", get(login_page))
        .route("/invite", get(invite_page))
        .route("/workspace", get(workspace_page))
        .route("/admin", get(admin_page))
        .route("/account", get(account_page))
        .route("/dpo", get(dpo_page))
        .route("/ui/{name}", get(asset))
        .layer(CompressionLayer::new())
}
