//! The privacy routes: the DPO's `/api/v1/privacy/...`, contact import and export, and audited
//! contact edits. They sit behind the same authentication as the rest of `/api/v1`
//! ([`crate::http::auth::authenticate`]), and every handler takes the [`Principal`] that layer
//! established: the acting user recorded in the audit log is the session's user (or
//! [`API_ACTOR`] for the integrators' token), never something the request says about itself.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::query;
use crate::domain::Role;
use crate::domain::api::{AnonymizeReport, ChainReport, ContactDetails, ContactInput, SubjectData};
use crate::domain::audit::{AuditAction, AuditChange, StoredEntry};
use crate::http::auth::Principal;
use crate::http::error::ErrorBody;
use crate::http::{AppState, Error};
use crate::privacy::SystemClock;
use crate::privacy::retention::{RetentionJob, RetentionReport};
use crate::privacy::transfer::{self, Format, RowError};
use crate::storage::{self, AuditQuery, now_ms};

/// The actor recorded for the integrators' bearer token, which stands for no user.
pub(crate) const API_ACTOR: &str = "api";

/// The privacy routes, to merge into `/api/v1` (inside its auth guard). Each handler checks the
/// role of the authenticated principal itself (dpo; admin too for import, export and
/// retention) and records it as the actor.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/privacy/subjects", get(search))
        .route("/privacy/subjects/{id}", get(subject))
        .route("/privacy/subjects/{id}/export", get(export_subject))
        .route("/privacy/subjects/{id}/anonymize", post(anonymize))
        .route("/privacy/users/{id}/anonymize", post(anonymize_user))
        .route("/privacy/audit", get(audit))
        .route("/privacy/audit/verify", get(verify))
        .route("/privacy/retention/run", post(run_retention))
        .route("/privacy/contacts/import", post(import_contacts))
        .route("/privacy/contacts/export", get(export_contacts))
        .route("/privacy/contacts/{id}", patch(update_contact))
}

/// Who the audit log records for `who`: the signed-in user's id, or [`API_ACTOR`].
pub(crate) fn actor_id(who: &Principal) -> String {
    who.user_id.clone().unwrap_or_else(|| API_ACTOR.to_owned())
}

/// The acting user, who must hold one of `roles`; returns the id to record in the audit log.
///
/// The role is the one [`crate::http::auth::authenticate`] read with the session (so a role
/// change applies at the next request); the API token counts as admin and acts as
/// [`API_ACTOR`]. Routes for the `dpo` role alone therefore need a signed-in DPO.
pub(crate) fn require(who: &Principal, roles: &[Role]) -> Result<String, Error> {
    if roles.contains(&who.role) {
        return Ok(actor_id(who));
    }
    let names = roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(" or ");
    Err(Error::Forbidden(match &who.user_id {
        Some(id) => format!("user `{id}` has role {}, {names} required", who.role),
        None => format!("the API token stands for no user; sign in as a user with role {names}"),
    }))
}

/// Subject search.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchQuery {
    /// Part of a name (2+ characters), an e-mail address, a phone number or a channel identity.
    pub q: String,
}

/// `GET /api/v1/privacy/subjects?q=`: the contacts `q` names, with their details.
#[utoipa::path(get, path = "/api/v1/privacy/subjects", tag = "privacy", params(SearchQuery),
    responses((status = 200, body = Vec<ContactDetails>), (status = 400, body = ErrorBody), (status = 403, description = "The caller lacks the role (the API token counts as admin)", body = ErrorBody)))]
pub(crate) async fn search(
    State(state): State<AppState>,
    who: Principal,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Vec<ContactDetails>>, Error> {
    require(&who, &[Role::Dpo])?;
    let q = query(q)?;
    if q.q.trim().is_empty() {
        return Err(Error::bad_request("invalid_query", "q must not be empty"));
    }
    let mut out = Vec::new();
    for id in state.store.search_subjects(&q.q, 100).await? {
        out.push(state.store.contact_details(&id).await?);
    }
    Ok(Json(out))
}

/// `GET /api/v1/privacy/subjects/{id}`: everything stored about one contact.
#[utoipa::path(get, path = "/api/v1/privacy/subjects/{id}", tag = "privacy",
    params(("id" = String, Path, description = "Contact id")),
    responses((status = 200, body = SubjectData), (status = 403, description = "The caller lacks the role (the API token counts as admin)", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn subject(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<SubjectData>, Error> {
    require(&who, &[Role::Dpo])?;
    Ok(Json(state.store.subject_data(&id).await?))
}

/// `GET /api/v1/privacy/subjects/{id}/export`: the same as a JSON download, audited.
#[utoipa::path(get, path = "/api/v1/privacy/subjects/{id}/export", tag = "privacy",
    params(("id" = String, Path, description = "Contact id")),
    responses((status = 200, description = "Attachment `subject-<id>.json`", body = SubjectData), (status = 403, description = "The caller lacks the role (the API token counts as admin)", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn export_subject(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let actor = require(&who, &[Role::Dpo])?;
    let data = state.store.subject_data(&id).await?;
    state
        .store
        .audit_append(
            now_ms(),
            &[AuditChange::new(
                actor,
                AuditAction::Export,
                "contact",
                &id,
                "subject_access_export",
                None,
            )
            .about(&id)],
        )
        .await?;
    let body = serde_json::to_string_pretty(&data)
        .map_err(|e| Error::Internal(storage::Error::Corrupt(e.to_string())))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"subject-{id}.json\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Confirmation of an anonymization.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnonymizeRequest {
    /// Must repeat the contact id: anonymization cannot be undone.
    pub confirm: String,
}

/// `POST /api/v1/privacy/subjects/{id}/anonymize`: replaces every piece of the contact's
/// personal data in one audited, irreversible transaction.
#[utoipa::path(post, path = "/api/v1/privacy/subjects/{id}/anonymize", tag = "privacy",
    params(("id" = String, Path, description = "Contact id")), request_body = AnonymizeRequest,
    responses((status = 200, body = AnonymizeReport), (status = 400, body = ErrorBody), (status = 403, description = "The caller lacks the role (the API token counts as admin)", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn anonymize(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AnonymizeReport>, Error> {
    let actor = require(&who, &[Role::Dpo])?;
    let req: AnonymizeRequest = serde_json::from_slice(&body)
        .map_err(|e| Error::bad_request("invalid_json", e.to_string()))?;
    if req.confirm != id {
        return Err(Error::bad_request(
            "confirmation_mismatch",
            "`confirm` must repeat the contact id: anonymization cannot be undone",
        ));
    }
    Ok(Json(
        state.store.anonymize_contact(&id, &actor, now_ms()).await?,
    ))
}

/// What a user anonymization did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct UserAnonymizeReport {
    /// The user.
    pub user_id: String,
    /// Audit entries whose values were erased.
    pub audit_entries_redacted: u64,
}

/// `POST /api/v1/privacy/users/{id}/anonymize`: erases a user's name, e-mail and password on
/// explicit request (user data is otherwise kept); the user can no longer log in.
#[utoipa::path(post, path = "/api/v1/privacy/users/{id}/anonymize", tag = "privacy",
    params(("id" = String, Path, description = "User id")), request_body = AnonymizeRequest,
    responses((status = 200, body = UserAnonymizeReport), (status = 400, body = ErrorBody),
        (status = 403, description = "The caller lacks the role (the API token counts as admin)", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn anonymize_user(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<UserAnonymizeReport>, Error> {
    let actor = require(&who, &[Role::Dpo])?;
    let req: AnonymizeRequest = serde_json::from_slice(&body)
        .map_err(|e| Error::bad_request("invalid_json", e.to_string()))?;
    if req.confirm != id {
        return Err(Error::bad_request(
            "confirmation_mismatch",
            "`confirm` must repeat the user id: anonymization cannot be undone",
        ));
    }
    let audit_entries_redacted = state.store.anonymize_user(&id, &actor, now_ms()).await?;
    Ok(Json(UserAnonymizeReport {
        user_id: id,
        audit_entries_redacted,
    }))
}

/// Audit log filter.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// Only entries about this contact or user.
    pub subject_id: Option<String>,
    /// Only entries after this sequence number.
    pub after_seq: Option<i64>,
    /// At most this many (1–1000, default 100).
    pub limit: Option<i64>,
}

/// `GET /api/v1/privacy/audit`: audit entries in order.
#[utoipa::path(get, path = "/api/v1/privacy/audit", tag = "privacy", params(AuditParams),
    responses((status = 200, body = Vec<StoredEntry>), (status = 400, body = ErrorBody), (status = 403, description = "The caller lacks the role (the API token counts as admin)", body = ErrorBody)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    who: Principal,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Vec<StoredEntry>>, Error> {
    require(&who, &[Role::Dpo])?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::bad_request(
            "invalid_query",
            format!("limit must be between 1 and 1000, got {limit}"),
        ));
    }
    Ok(Json(
        state
            .store
            .audit_entries(&AuditQuery {
                subject_id: q.subject_id,
                after_seq: q.after_seq.unwrap_or(0),
                limit,
            })
            .await?,
    ))
}

/// `GET /api/v1/privacy/audit/verify`: checks the hash chain; names the first broken entry.
#[utoipa::path(get, path = "/api/v1/privacy/audit/verify", tag = "privacy",
    responses((status = 200, body = ChainReport), (status = 403, description = "The caller lacks the role (the API token counts as admin)", body = ErrorBody)))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<ChainReport>, Error> {
    require(&who, &[Role::Dpo])?;
    Ok(Json(state.store.verify_audit_chain().await?))
}

/// `POST /api/v1/privacy/retention/run`: runs the retention job now (role `dpo` or `admin`).
#[utoipa::path(post, path = "/api/v1/privacy/retention/run", tag = "privacy",
    responses((status = 200, body = RetentionReport), (status = 403, description = "The caller lacks the role (the API token counts as admin)", body = ErrorBody)))]
pub(crate) async fn run_retention(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<RetentionReport>, Error> {
    require(&who, &[Role::Dpo, Role::Admin])?;
    let job = RetentionJob::new(
        state.store.clone(),
        Arc::new(SystemClock),
        state.settings.retention.clone(),
    );
    Ok(Json(job.run_once(None).await?))
}

/// Import/export format.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormatQuery {
    /// `csv` or `json` (default: from `Content-Type` on import, `json` on export).
    pub format: Option<Format>,
}

/// One imported row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ImportedRow {
    /// Row number.
    pub row: u64,
    /// The new contact.
    pub contact_id: String,
}

/// What an import did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ImportReport {
    /// Rows imported.
    pub imported: Vec<ImportedRow>,
    /// Rows refused, with the reason.
    pub errors: Vec<RowError>,
}

/// `POST /api/v1/privacy/contacts/import?format=csv|json`: imports the valid rows (each audited)
/// and reports every invalid one. 200 when at least one row was imported or there were none to
/// import, 422 when every row was refused, 400 when the file cannot be read. Role `dpo` or
/// `admin`.
#[utoipa::path(post, path = "/api/v1/privacy/contacts/import", tag = "privacy", params(FormatQuery),
    request_body(content = String, description = "CSV (header: any of display_name, email, phone, identities, and attr:<key> per contact attribute) or a JSON array of ContactInput with an optional `attributes` object", content_type = "text/csv"),
    responses((status = 200, body = ImportReport), (status = 400, body = ErrorBody), (status = 403, description = "The caller lacks the role (the API token counts as admin)", body = ErrorBody), (status = 422, description = "No row could be imported", body = ImportReport)))]
pub(crate) async fn import_contacts(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    q: Result<Query<FormatQuery>, QueryRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<ImportReport>), Error> {
    let actor = require(&who, &[Role::Dpo, Role::Admin])?;
    let q = query(q)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = match q.format {
        Some(f) => f,
        None if content_type.starts_with("text/csv") => Format::Csv,
        None if content_type.starts_with("application/json") => Format::Json,
        None => {
            return Err(Error::bad_request(
                "unknown_format",
                "say ?format=csv or ?format=json, or send Content-Type text/csv or application/json",
            ));
        }
    };
    let parsed = match format {
        Format::Csv => transfer::parse_csv(&body),
        Format::Json => transfer::parse_json(&body),
    }
    .map_err(|e| Error::bad_request("invalid_file", e.to_string()))?;
    let mut report = ImportReport {
        imported: Vec::new(),
        errors: parsed.errors,
    };
    for (row, input, attributes) in parsed.valid {
        match state
            .store
            .create_contact(&input, &attributes, &actor, now_ms())
            .await
        {
            Ok(contact_id) => report.imported.push(ImportedRow { row, contact_id }),
            Err(storage::Error::Conflict(what)) => report.errors.push(RowError {
                row,
                field: "identities".to_owned(),
                message: format!("{what} already belongs to another contact"),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    report.errors.sort_by_key(|e| e.row);
    let status = if report.imported.is_empty() && !report.errors.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(report)))
}

/// `GET /api/v1/privacy/contacts/export?format=csv|json`: every contact with its details,
/// audited as one export. Role `dpo` or `admin`.
#[utoipa::path(get, path = "/api/v1/privacy/contacts/export", tag = "privacy", params(FormatQuery),
    responses((status = 200, description = "JSON array, or CSV with `?format=csv`", body = Vec<ContactDetails>), (status = 403, description = "The caller lacks the role (the API token counts as admin)", body = ErrorBody)))]
pub(crate) async fn export_contacts(
    State(state): State<AppState>,
    who: Principal,
    q: Result<Query<FormatQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let actor = require(&who, &[Role::Dpo, Role::Admin])?;
    let q = query(q)?;
    let contacts = state.store.all_contact_details().await?;
    state
        .store
        .audit_append(
            now_ms(),
            &[AuditChange::new(
                actor,
                AuditAction::Export,
                "contacts",
                "*",
                "contacts_export",
                Some(contacts.len().to_string()),
            )],
        )
        .await?;
    Ok(match q.format.unwrap_or(Format::Json) {
        Format::Csv => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            transfer::to_csv(&contacts),
        )
            .into_response(),
        Format::Json => Json(contacts).into_response(),
    })
}

/// `PATCH /api/v1/privacy/contacts/{id}`: sets a contact's name, e-mail or phone (an empty
/// string clears one) and adds identities; every changed attribute is audited as the signed-in
/// user (or `api` for the API token).
#[utoipa::path(patch, path = "/api/v1/privacy/contacts/{id}", tag = "privacy",
    params(("id" = String, Path, description = "Contact id")), request_body = ContactInput,
    responses((status = 200, body = ContactDetails), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "An identity belongs to another contact", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn update_contact(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ContactDetails>, Error> {
    let actor = actor_id(&who);
    let raw: ContactInput = serde_json::from_slice(&body)
        .map_err(|e| Error::bad_request("invalid_json", e.to_string()))?;
    // Validate like an import row, but keep "clear this field" (an empty string) apart from
    // "leave it" (absent).
    let mut errors = Vec::new();
    let clean = transfer::validate(1, raw.clone(), &mut errors);
    errors.retain(|e| e.field != "row");
    if let Some(e) = errors.first() {
        return Err(Error::Unprocessable {
            code: "invalid_contact",
            message: format!("{}: {}", e.field, e.message),
        });
    }
    let keep = |raw: &Option<String>, clean: Option<String>| {
        raw.as_ref().map(|_| clean.unwrap_or_default())
    };
    let input = ContactInput {
        display_name: keep(&raw.display_name, clean.display_name),
        email: keep(&raw.email, clean.email),
        phone: keep(&raw.phone, clean.phone),
        identities: clean.identities,
    };
    Ok(Json(
        state
            .store
            .update_contact(&id, &input, &actor, now_ms())
            .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::Via;

    fn principal(user_id: Option<&str>, role: Role) -> Principal {
        Principal {
            user_id: user_id.map(str::to_owned),
            role,
            display_name: "x".to_owned(),
            via: match user_id {
                Some(_) => Via::Session {
                    id_hash: "h".to_owned(),
                    csrf_token: "c".to_owned(),
                },
                None => Via::ApiToken,
            },
        }
    }

    #[test]
    fn the_principal_is_the_actor_and_its_role_decides() {
        let dpo = principal(Some("u-dpo"), Role::Dpo);
        assert_eq!(require(&dpo, &[Role::Dpo]).unwrap(), "u-dpo");
        let agent = principal(Some("u-agent"), Role::Agent);
        let err = require(&agent, &[Role::Dpo]).unwrap_err();
        assert!(
            err.to_string()
                .contains("u-agent` has role agent, dpo required")
        );
        let token = principal(None, Role::Admin);
        assert_eq!(
            require(&token, &[Role::Dpo, Role::Admin]).unwrap(),
            API_ACTOR
        );
        let err = require(&token, &[Role::Dpo]).unwrap_err();
        assert!(err.to_string().contains("stands for no user"), "{err}");
        assert_eq!(actor_id(&agent), "u-agent");
    }
}
