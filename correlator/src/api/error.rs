//! HTTP errors: a small closed set mapped to statuses. 4xx carry the real
//! reason; 5xx carry a generic message and the detail goes to the log.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fincorp_api::rest::{ApiError as Body, ApiErrorBody};

use crate::engine::{OpError, SubmitError};
use crate::ingest::IngestError;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized(String),
    /// Authenticated, but the token's role does not allow this.
    Forbidden(String),
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    PayloadTooLarge(String),
    /// The ingest queue stayed full; retry after a second (503).
    Busy,
    /// Logged in full; the client sees a generic message.
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn parts(&self) -> (&'static str, String) {
        match self {
            ApiError::Unauthorized(m) => ("unauthorized", m.clone()),
            ApiError::Forbidden(m) => ("forbidden", m.clone()),
            ApiError::BadRequest(m) => ("bad_request", m.clone()),
            ApiError::NotFound(m) => ("not_found", m.clone()),
            ApiError::Conflict(m) => ("conflict", m.clone()),
            ApiError::PayloadTooLarge(m) => ("payload_too_large", m.clone()),
            ApiError::Busy => (
                "busy",
                "the correlator is busy; retry after a second".into(),
            ),
            ApiError::Internal(_) => ("internal", "internal error; see the correlator log".into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let status = self.status();
        let (code, message) = self.parts();
        let mut resp = (
            status,
            Json(Body {
                error: ApiErrorBody {
                    code: code.into(),
                    message,
                },
            }),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "request body is larger than {} bytes",
                super::MAX_BODY_BYTES
            ))
        } else {
            ApiError::BadRequest(r.body_text())
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "request body is larger than {} bytes",
                super::MAX_BODY_BYTES
            ))
        } else {
            ApiError::BadRequest(r.body_text())
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Busy => ApiError::Busy,
            SubmitError::Failed(m) => ApiError::Internal(m),
        }
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::NoIncident(_) | OpError::NoSilence(_) | OpError::NotFound(_) => {
                ApiError::NotFound(e.to_string())
            }
            OpError::Conflict(m) => ApiError::Conflict(m),
            OpError::Invalid(m) => ApiError::BadRequest(m),
            OpError::Store(s) => ApiError::Internal(s.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("background task failed: {e}"))
    }
}
