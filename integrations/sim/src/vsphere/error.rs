//! The simulator's error responses, shaped like the vSphere Automation
//! API's: `{"error_type": "...", "messages": [{"args": [], "default_message":
//! "...", "id": "..."}]}`, with the status vAPI maps each type to.
//!
//! The type → status map follows the vSphere Automation SDK's OpenAPI
//! generator (`build_error_map`): `NOT_FOUND`/`OPERATION_NOT_FOUND` 404,
//! `UNAUTHENTICATED` 401, `UNAUTHORIZED` 403, `SERVICE_UNAVAILABLE` 503,
//! `TIMED_OUT` 504, `INTERNAL_SERVER_ERROR` 500, everything else (including
//! `ALREADY_IN_DESIRED_STATE`, `NOT_ALLOWED_IN_CURRENT_STATE`,
//! `RESOURCE_BUSY`, `RESOURCE_INACCESSIBLE`) 400. Message ids are the
//! simulator's own, in vCenter's style.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VapiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub id: String,
    pub message: String,
    /// Seconds for a `Retry-After` header (503 only).
    pub retry_after_s: Option<u64>,
}

/// The HTTP status vAPI sends for an error type.
pub fn status_for(error_type: &str) -> StatusCode {
    match error_type {
        "NOT_FOUND" | "OPERATION_NOT_FOUND" => StatusCode::NOT_FOUND,
        "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED" => StatusCode::FORBIDDEN,
        "SERVICE_UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
        "TIMED_OUT" => StatusCode::GATEWAY_TIMEOUT,
        "INTERNAL_SERVER_ERROR" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl VapiError {
    pub fn new(
        error_type: &'static str,
        id: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status: status_for(error_type),
            error_type,
            id: id.into(),
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// 401: no session, an unknown or expired one, or bad credentials on
    /// login.
    pub fn unauthenticated() -> Self {
        Self::new(
            "UNAUTHENTICATED",
            "com.vmware.vapi.endpoint.method.authentication.required",
            "Authentication required.",
        )
    }

    pub fn vm_not_found(vm: &str) -> Self {
        Self::new(
            "NOT_FOUND",
            "com.vmware.api.vcenter.vm.not_found",
            format!("Virtual machine with identifier '{vm}' does not exist."),
        )
    }

    pub fn operation_not_found() -> Self {
        Self::new(
            "OPERATION_NOT_FOUND",
            "com.vmware.vapi.rest.httpNotFound",
            "Not found.",
        )
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(
            "INVALID_ARGUMENT",
            "com.vmware.api.vcenter.invalid_argument",
            message,
        )
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(
            "INVALID_REQUEST",
            "com.vmware.vapi.rest.badRequest",
            message,
        )
    }

    pub fn not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            "NOT_ALLOWED_IN_CURRENT_STATE",
            "com.vmware.api.vcenter.vm.not_allowed_in_current_state",
            message,
        )
    }

    pub fn already_in_desired_state(message: impl Into<String>) -> Self {
        Self::new(
            "ALREADY_IN_DESIRED_STATE",
            "com.vmware.api.vcenter.vm.power.already_in_desired_state",
            message,
        )
    }

    pub fn resource_busy(vm: &str) -> Self {
        Self::new(
            "RESOURCE_BUSY",
            "com.vmware.api.vcenter.vm.busy",
            format!("Another task is in progress on virtual machine '{vm}'."),
        )
    }

    pub fn host_not_responding(host: &str, vm: &str, name: &str) -> Self {
        Self::new(
            "RESOURCE_INACCESSIBLE",
            "com.vmware.api.vcenter.vm.host_not_responding",
            format!("Host '{host}' of virtual machine '{name}' ({vm}) is not responding."),
        )
    }

    pub fn unable_to_allocate(vm: &str, name: &str) -> Self {
        Self::new(
            "UNABLE_TO_ALLOCATE_RESOURCE",
            "com.vmware.api.vcenter.vm.power.insufficient_resources",
            format!(
                "Cannot power on virtual machine '{name}' ({vm}): insufficient resources in the cluster."
            ),
        )
    }

    /// An injected server error: 503 `SERVICE_UNAVAILABLE` (with
    /// `Retry-After`) or another 5xx as `INTERNAL_SERVER_ERROR`.
    pub fn injected(status: u16, retry_after_s: u64) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            Self {
                retry_after_s: Some(retry_after_s),
                ..Self::new(
                    "SERVICE_UNAVAILABLE",
                    "com.vmware.vapi.endpoint.service_unavailable",
                    "The service is unavailable (fault injected by fincorp-sim).",
                )
            }
        } else {
            Self {
                status,
                ..Self::new(
                    "INTERNAL_SERVER_ERROR",
                    "com.vmware.vapi.endpoint.internal_server_error",
                    "Internal server error (fault injected by fincorp-sim).",
                )
            }
        }
    }

    /// 429 from the reverse proxy in front of the API. vCenter documents no
    /// body for it; the simulator sends the vAPI shape.
    pub fn rate_limited(retry_after_s: u64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after_s: Some(retry_after_s),
            ..Self::new(
                "SERVICE_UNAVAILABLE",
                "com.vmware.vapi.endpoint.rate_limited",
                "Too many requests (fault injected by fincorp-sim).",
            )
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({
            "error_type": self.error_type,
            "messages": [{ "args": [], "default_message": self.message, "id": self.id }],
        })
    }
}

impl IntoResponse for VapiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_vapi_map() {
        assert_eq!(
            VapiError::unauthenticated().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            VapiError::vm_not_found("vm-1").status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(VapiError::not_allowed("x").status, StatusCode::BAD_REQUEST);
        assert_eq!(
            VapiError::already_in_desired_state("x").status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            VapiError::resource_busy("vm-1").status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            VapiError::injected(503, 2).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(VapiError::injected(502, 2).status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            VapiError::injected(502, 2).error_type,
            "INTERNAL_SERVER_ERROR"
        );
        assert_eq!(
            VapiError::unauthenticated().body(),
            json!({"error_type": "UNAUTHENTICATED", "messages": [{"args": [], "default_message": "Authentication required.", "id": "com.vmware.vapi.endpoint.method.authentication.required"}]})
        );
    }
}
