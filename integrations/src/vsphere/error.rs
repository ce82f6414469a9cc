//! Why a vSphere call failed: vSphere's own error type when it sent one,
//! with the request it was about; or a refusal before anything was sent.

use std::fmt;

use thiserror::Error;

/// The `error_type` of a vSphere Automation API error body
/// (`{"error_type": "...", "messages": [{"id", "default_message", "args"}]}`),
/// the standard vAPI errors (`com.vmware.vapi.std.errors`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorType {
    AlreadyExists,
    /// The operation had no effect: e.g. starting a running VM.
    AlreadyInDesiredState,
    Canceled,
    ConcurrentChange,
    Error,
    FeatureInUse,
    InternalServerError,
    InvalidArgument,
    InvalidElementConfiguration,
    InvalidElementType,
    InvalidRequest,
    /// E.g. an illegal hot-add on a powered-on VM.
    NotAllowedInCurrentState,
    NotFound,
    OperationNotFound,
    /// Another operation on the resource is under way; retried.
    ResourceBusy,
    ResourceInUse,
    /// E.g. the VM's host is not responding, or its storage is unreachable.
    ResourceInaccessible,
    /// vCenter (or a service behind it) cannot serve now; retried.
    ServiceUnavailable,
    TimedOut,
    UnableToAllocateResource,
    /// No session, or it expired.
    Unauthenticated,
    /// The user lacks a privilege.
    Unauthorized,
    UnexpectedInput,
    Unsupported,
    UnverifiedPeer,
    /// A type this client does not know, as sent.
    Other(String),
}

impl ErrorType {
    /// Reads an `error_type` value.
    pub fn parse(text: &str) -> Self {
        match text {
            "ALREADY_EXISTS" => ErrorType::AlreadyExists,
            "ALREADY_IN_DESIRED_STATE" => ErrorType::AlreadyInDesiredState,
            "CANCELED" => ErrorType::Canceled,
            "CONCURRENT_CHANGE" => ErrorType::ConcurrentChange,
            "ERROR" => ErrorType::Error,
            "FEATURE_IN_USE" => ErrorType::FeatureInUse,
            "INTERNAL_SERVER_ERROR" => ErrorType::InternalServerError,
            "INVALID_ARGUMENT" => ErrorType::InvalidArgument,
            "INVALID_ELEMENT_CONFIGURATION" => ErrorType::InvalidElementConfiguration,
            "INVALID_ELEMENT_TYPE" => ErrorType::InvalidElementType,
            "INVALID_REQUEST" => ErrorType::InvalidRequest,
            "NOT_ALLOWED_IN_CURRENT_STATE" => ErrorType::NotAllowedInCurrentState,
            "NOT_FOUND" => ErrorType::NotFound,
            "OPERATION_NOT_FOUND" => ErrorType::OperationNotFound,
            "RESOURCE_BUSY" => ErrorType::ResourceBusy,
            "RESOURCE_IN_USE" => ErrorType::ResourceInUse,
            "RESOURCE_INACCESSIBLE" => ErrorType::ResourceInaccessible,
            "SERVICE_UNAVAILABLE" => ErrorType::ServiceUnavailable,
            "TIMED_OUT" => ErrorType::TimedOut,
            "UNABLE_TO_ALLOCATE_RESOURCE" => ErrorType::UnableToAllocateResource,
            "UNAUTHENTICATED" => ErrorType::Unauthenticated,
            "UNAUTHORIZED" => ErrorType::Unauthorized,
            "UNEXPECTED_INPUT" => ErrorType::UnexpectedInput,
            "UNSUPPORTED" => ErrorType::Unsupported,
            "UNVERIFIED_PEER" => ErrorType::UnverifiedPeer,
            other => ErrorType::Other(other.to_owned()),
        }
    }

    /// The `error_type` text.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorType::AlreadyExists => "ALREADY_EXISTS",
            ErrorType::AlreadyInDesiredState => "ALREADY_IN_DESIRED_STATE",
            ErrorType::Canceled => "CANCELED",
            ErrorType::ConcurrentChange => "CONCURRENT_CHANGE",
            ErrorType::Error => "ERROR",
            ErrorType::FeatureInUse => "FEATURE_IN_USE",
            ErrorType::InternalServerError => "INTERNAL_SERVER_ERROR",
            ErrorType::InvalidArgument => "INVALID_ARGUMENT",
            ErrorType::InvalidElementConfiguration => "INVALID_ELEMENT_CONFIGURATION",
            ErrorType::InvalidElementType => "INVALID_ELEMENT_TYPE",
            ErrorType::InvalidRequest => "INVALID_REQUEST",
            ErrorType::NotAllowedInCurrentState => "NOT_ALLOWED_IN_CURRENT_STATE",
            ErrorType::NotFound => "NOT_FOUND",
            ErrorType::OperationNotFound => "OPERATION_NOT_FOUND",
            ErrorType::ResourceBusy => "RESOURCE_BUSY",
            ErrorType::ResourceInUse => "RESOURCE_IN_USE",
            ErrorType::ResourceInaccessible => "RESOURCE_INACCESSIBLE",
            ErrorType::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorType::TimedOut => "TIMED_OUT",
            ErrorType::UnableToAllocateResource => "UNABLE_TO_ALLOCATE_RESOURCE",
            ErrorType::Unauthenticated => "UNAUTHENTICATED",
            ErrorType::Unauthorized => "UNAUTHORIZED",
            ErrorType::UnexpectedInput => "UNEXPECTED_INPUT",
            ErrorType::Unsupported => "UNSUPPORTED",
            ErrorType::UnverifiedPeer => "UNVERIFIED_PEER",
            ErrorType::Other(text) => text,
        }
    }

    /// Whether waiting and trying again can help: the service is
    /// unavailable or the resource busy with another operation.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ErrorType::ServiceUnavailable | ErrorType::ResourceBusy
        )
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed vSphere call. `method`/`url` name the request (never a
/// credential or session id).
#[derive(Debug, Error)]
pub enum VsphereError {
    /// vSphere answered with an error body, after any retries.
    #[error("vsphere {method} {url}: HTTP {status} {error_type}: {message}")]
    Api {
        method: String,
        url: String,
        status: u16,
        error_type: ErrorType,
        /// The messages' `default_message`s.
        message: String,
    },

    /// A failure status without a vSphere error body (a proxy's 429 or
    /// 502, say), after any retries.
    #[error("vsphere {method} {url}: HTTP {status}: {message}")]
    Http {
        method: String,
        url: String,
        status: u16,
        message: String,
    },

    /// `POST /api/session` refused the username or password.
    #[error("vsphere login at {url} refused (HTTP {status}): {message}")]
    Login {
        url: String,
        status: u16,
        message: String,
    },

    /// No VM has this name.
    #[error("vsphere: no VM is named {name:?}")]
    VmNotFound { name: String },

    /// More than one VM has this name (names are unique per folder, not per
    /// vCenter).
    #[error("vsphere: {} VMs are named {name:?}: {}; address the VM by its id instead", vms.len(), vms.join(", "))]
    AmbiguousVm { name: String, vms: Vec<String> },

    /// A change the vSphere hot-add rules (or FINCORP's stricter ones)
    /// forbid, refused before any request was sent.
    #[error("vsphere: {what} on {vm} refused before sending: {reason}")]
    Refused {
        vm: String,
        /// E.g. `cpu count 4 → 6`.
        what: String,
        reason: String,
    },

    /// The request did not complete: connection refused, TLS failure,
    /// timeout. A write may or may not have been applied.
    #[error("vsphere {method} {url}: request failed: {message}")]
    Transport {
        method: String,
        url: String,
        message: String,
    },

    /// A success response that is not what the API returns.
    #[error("vsphere {method} {url}: unexpected response: {message}")]
    Decode {
        method: String,
        url: String,
        message: String,
    },

    /// The client's configuration is unusable.
    #[error("vsphere config: {0}")]
    Config(String),

    /// An argument refused before sending anything.
    #[error("vsphere: invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
}

impl VsphereError {
    /// vSphere's error type, for `Api`.
    pub fn error_type(&self) -> Option<&ErrorType> {
        match self {
            VsphereError::Api { error_type, .. } => Some(error_type),
            _ => None,
        }
    }

    /// The HTTP status, for `Api`, `Http` and `Login`.
    pub fn status(&self) -> Option<u16> {
        match self {
            VsphereError::Api { status, .. }
            | VsphereError::Http { status, .. }
            | VsphereError::Login { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_round_trip_and_unknown_ones_are_kept() {
        for text in [
            "ALREADY_IN_DESIRED_STATE",
            "NOT_ALLOWED_IN_CURRENT_STATE",
            "NOT_FOUND",
            "RESOURCE_BUSY",
            "RESOURCE_INACCESSIBLE",
            "SERVICE_UNAVAILABLE",
            "UNAUTHENTICATED",
            "UNAUTHORIZED",
            "INVALID_ARGUMENT",
            "UNABLE_TO_ALLOCATE_RESOURCE",
        ] {
            assert_eq!(ErrorType::parse(text).as_str(), text);
            assert!(
                !matches!(ErrorType::parse(text), ErrorType::Other(_)),
                "{text}"
            );
        }
        assert_eq!(
            ErrorType::parse("SOMETHING_NEW"),
            ErrorType::Other("SOMETHING_NEW".into())
        );
        assert!(ErrorType::ResourceBusy.is_transient());
        assert!(ErrorType::ServiceUnavailable.is_transient());
        assert!(!ErrorType::NotAllowedInCurrentState.is_transient());
    }

    #[test]
    fn an_ambiguous_name_lists_every_match() {
        let err = VsphereError::AmbiguousVm {
            name: "app".into(),
            vms: vec!["vm-1 (POWERED_ON)".into(), "vm-2 (POWERED_OFF)".into()],
        };
        assert_eq!(
            err.to_string(),
            "vsphere: 2 VMs are named \"app\": vm-1 (POWERED_ON), vm-2 (POWERED_OFF); address the VM by its id instead"
        );
    }
}
