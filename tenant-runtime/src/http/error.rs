//! The one HTTP error type: every failure becomes a status code and a JSON body
//! `{"error": {"code": "...", "message": "..."}}`. Internal errors are logged, never echoed.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::storage;

/// The JSON error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `outside_customer_care_window`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Errors returned by handlers.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    /// 422: well-formed but breaks a rule (e.g. a channel limit).
    #[error("{message}")]
    Unprocessable {
        /// Machine code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// 503: not ready.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or a database failure; details are logged only.
    #[error("internal error")]
    Internal(#[source] storage::Error),
}

impl ApiError {
    /// A 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthorized { code, .. } => (StatusCode::UNAUTHORIZED, code),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<storage::Error> for ApiError {
    fn from(e: storage::Error) -> Self {
        match e {
            storage::Error::NotFound { .. } => ApiError::NotFound(e.to_string()),
            storage::Error::Conflict(_) => ApiError::Conflict {
                code: "already_exists",
                message: e.to_string(),
            },
            other => ApiError::Internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = %e, source = ?std::error::Error::source(e), "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}
