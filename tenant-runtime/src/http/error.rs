//! The one HTTP error type: every handler and middleware returns [`Error`], and every failure
//! becomes a status code and a JSON body `{"error": {"code": "...", "message": "..."}}`.
//! Internal errors are logged, never echoed.
//!
//! Authentication's refusals (401, 403, 415, 429) are variants here too rather than a second
//! type beside this one, so there is one place that decides how a failure looks on the wire.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::storage;

/// The JSON error body.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable machine-readable code, e.g. `outside_customer_care_window`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorBody {
    /// A body with `code` and `message`.
    pub(crate) fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// Errors returned by handlers and middleware.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request is malformed.
    #[error("{message}")]
    BadRequest {
        /// Machine code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 401: missing or wrong credentials or signature.
    #[error("{message}")]
    Unauthorized {
        /// Machine code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 401: no valid session or token.
    #[error("sign in first (no valid session or bearer token)")]
    Unauthenticated,
    /// 401: the e-mail or the password is wrong (deliberately not saying which).
    #[error("wrong e-mail or password")]
    BadCredentials,
    /// 403: signed in, but the role or ownership does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 403: a state-changing request of a session without the right CSRF token.
    #[error("missing or wrong X-CSRF-Token header")]
    Csrf,
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 409: the resource is in a state that forbids the request.
    #[error("{message}")]
    Conflict {
        /// Machine code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 415: the body must be JSON.
    #[error("send the body as JSON with Content-Type: application/json")]
    NotJson,
    /// 422: well-formed but breaks a rule (e.g. a channel limit).
    #[error("{message}")]
    Unprocessable {
        /// Machine code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 429: too many failed logins.
    #[error("too many failed logins; try again in {retry_after_secs} seconds")]
    RateLimited {
        /// Seconds until the next attempt is allowed.
        retry_after_secs: u64,
    },
    /// 503: not ready.
    #[error("{0}")]
    Unavailable(String),
    /// 500: argon2 failed.
    #[error("failed to hash the password")]
    Hash,
    /// 500: a bug or a database failure; details are logged only.
    #[error("internal error")]
    Internal(#[source] storage::Error),
}

impl Error {
    /// A 400 with the given code.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &str) {
        match self {
            Error::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Error::Unauthorized { code, .. } => (StatusCode::UNAUTHORIZED, code),
            Error::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::BadCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::Csrf => (StatusCode::FORBIDDEN, "csrf_failed"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Error::NotJson => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Error::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Hash | Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<storage::Error> for Error {
    fn from(e: storage::Error) -> Self {
        match e {
            storage::Error::NotFound { .. } => Error::NotFound(e.to_string()),
            storage::Error::Conflict(_) => Error::Conflict {
                code: "already_exists",
                message: e.to_string(),
            },
            other => Error::Internal(other),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if let Error::Internal(e) = &self {
            tracing::error!(error = %e, source = ?std::error::Error::source(e), "request failed");
        }
        let mut response = (status, Json(ErrorBody::new(code, self.to_string()))).into_response();
        if let Error::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
