//! The simulator's error responses, shaped like ServiceNow's:
//! `{"error":{"message":...,"detail":...},"status":"failure"}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One failed Table API call: the status and ServiceNow's message/detail pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `None` is sent as JSON `null`, as ServiceNow does for some errors.
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>, detail: Option<String>) -> Self {
        Self {
            status,
            message: message.into(),
            detail,
        }
    }

    /// 401 for missing or wrong basic-auth credentials.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "User Not Authenticated",
            Some("Required to provide Auth information".into()),
        )
    }

    /// 404 for a sys_id that does not exist.
    pub fn no_record() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "No Record found",
            Some("Record doesn't exist or ACL restricts the record retrieval".into()),
        )
    }

    /// 400 for a table the simulator does not serve.
    pub fn invalid_table(table: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid table {table}"),
            None,
        )
    }

    /// 400 for a body that is not a JSON object.
    pub fn bad_request_body(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            Some(detail.into()),
        )
    }

    /// 400 for a query parameter the simulator cannot use.
    pub fn bad_parameter(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Invalid query parameter",
            Some(detail.into()),
        )
    }

    /// 403 for a write that a data policy forbids; `labels` are the missing
    /// mandatory fields as ServiceNow names them.
    pub fn data_policy(labels: &[&str]) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Operation Failed",
            Some(format!(
                "Data Policy Exception: \n\tThe following fields are mandatory: {}",
                labels.join(", ")
            )),
        )
    }

    /// 403 for a write to a table that only allows reads.
    pub fn write_denied() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Operation Failed",
            Some("ACL Exception Insert Failed due to security constraints".into()),
        )
    }

    /// 413 for a request body over the simulator's limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request entity too large",
            Some(format!("the simulator accepts bodies up to {limit} bytes")),
        )
    }

    /// The JSON body ServiceNow sends with an error.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": { "message": self.message, "detail": self.detail },
            "status": "failure",
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("BASIC realm=\"Service-now\""),
            );
        }
        response
    }
}
