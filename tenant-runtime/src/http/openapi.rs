//! The OpenAPI document of the whole HTTP surface, assembled in one place from the route
//! modules' `#[utoipa::path]` annotations. `make generate` writes it to `openapi.json`; a test
//! fails when the file drifts from the code.

use utoipa::OpenApi;

use super::error::ErrorBody;
use super::routes::{auth, configurator, conversations, directory, privacy, webhooks, workspace};
use crate::domain::MessageContent;
use crate::domain::api::{
    AnonymizeReport, ChainReport, ContactDetails, ContactInput, IdentityInput, SubjectData,
};
use crate::domain::audit::{Broken, StoredEntry};
use crate::privacy::retention::RetentionReport;
use crate::privacy::transfer::{Format, RowError};

/// The OpenAPI document of `/api/v1`, `/auth` and the webhook.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Contact tenant runtime API",
        description = "Contacts, conversations, messages, the tenant directory, the Workspace and the Configurator. Integrators authenticate with `Authorization: Bearer <api_token>` (acts as an admin); browsers with the `contact_session` cookie from `/auth/login` plus `X-CSRF-Token` on state changes.",
        version = "v1",
        license(name = "Apache-2.0")
    ),
    paths(
        conversations::list_contacts, conversations::get_contact,
        conversations::list_conversations, conversations::get_conversation,
        conversations::list_messages, conversations::send_message,
        directory::list_users, directory::create_user, directory::list_skills,
        directory::create_skill, directory::list_categories, directory::create_category,
        webhooks::sinch_webhook,
        workspace::me, workspace::set_auto_allocate, workspace::set_my_skill,
        workspace::set_status, workspace::routing_decisions, workspace::dashboard,
        workspace::queue, workspace::pick, workspace::my_conversations,
        workspace::conversation_view, workspace::send, workspace::close, workspace::transfer,
        workspace::add_note, workspace::contact_attributes, workspace::set_contact_attributes,
        configurator::channels, configurator::categories, configurator::create_category,
        configurator::update_category, configurator::delete_category,
        configurator::rename_skill, configurator::delete_skill, configurator::set_user_skills,
        configurator::set_user_role, configurator::deactivate_user, configurator::routing,
        configurator::set_routing,
        auth::login, auth::logout, auth::create_invite, auth::list_invites,
        auth::lookup_invite, auth::accept_invite,
        privacy::search, privacy::subject, privacy::export_subject, privacy::anonymize,
        privacy::anonymize_user, privacy::audit, privacy::verify, privacy::run_retention,
        privacy::import_contacts, privacy::export_contacts, privacy::update_contact
    ),
    components(schemas(
        ErrorBody, MessageContent, conversations::SendMessage,
        ContactDetails, ContactInput, SubjectData, AnonymizeReport, privacy::AnonymizeRequest,
        ChainReport, StoredEntry, RetentionReport, privacy::UserAnonymizeReport,
        privacy::ImportReport, privacy::ImportedRow, RowError, Format, IdentityInput, Broken
    )),
    modifiers(&BearerAuth, &SessionAuth),
    security(("bearer" = [])),
    tags(
        (name = "conversations", description = "Conversations and their messages"),
        (name = "directory", description = "Users, skills and categories"),
        (name = "webhooks", description = "Conversation API callbacks (signed, no bearer token)"),
        (name = "workspace", description = "The agent Workspace: queue, picks, own conversations. Needs a signed-in user (session cookie + X-CSRF-Token on changes); the API token is refused where a person is needed."),
        (name = "configurator", description = "Admin settings: channels, categories, skills, users, invites, routing"),
        (name = "accounts", description = "Login, logout and invite acceptance (JSON only)"),
        (name = "privacy", description = "The DPO's search, export and anonymization, the audit log, retention, contact import/export")
    )
)]
pub(crate) struct ApiDoc;

/// The integrators' bearer token.
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

/// The browser session cookie.
struct SessionAuth;

impl utoipa::Modify for SessionAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::auth::SESSION_COOKIE,
                "Browser session from /auth/login; state-changing requests also need X-CSRF-Token",
            ))),
        );
    }
}

/// The OpenAPI document as pretty JSON with a trailing newline (what `openapi.json` holds).
pub fn openapi_json() -> String {
    let mut s = ApiDoc::openapi()
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
