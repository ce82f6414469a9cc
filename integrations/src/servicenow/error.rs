//! Why a ServiceNow call failed, with the request it was about.

use thiserror::Error;

/// A failed ServiceNow call. `method`/`url` name the request (the URL never
/// carries credentials); `message` is ServiceNow's own error message and
/// detail when the body had them.
#[derive(Debug, Error)]
pub enum ServiceNowError {
    /// A non-success status other than 401, after any retries.
    #[error("servicenow {method} {url}: HTTP {status}: {message}")]
    Http {
        method: String,
        url: String,
        status: u16,
        message: String,
    },

    /// 401: the username or password is wrong, or the account is locked.
    /// Never retried.
    #[error("servicenow {method} {url}: authentication failed (HTTP 401): {message}")]
    Auth {
        method: String,
        url: String,
        message: String,
    },

    /// The request did not complete: connection refused, TLS failure,
    /// timeout. A write may or may not have been applied.
    #[error("servicenow {method} {url}: request failed: {message}")]
    Transport {
        method: String,
        url: String,
        message: String,
    },

    /// A success status with an HTML (non-JSON) body: the developer instance
    /// is hibernating and must be woken from the developer portal.
    #[error(
        "servicenow {method} {url}: the instance answered HTTP {status} with {content_type:?} instead of JSON; \
         it is probably a hibernating developer instance (wake it from the developer portal)"
    )]
    Hibernating {
        method: String,
        url: String,
        status: u16,
        content_type: String,
    },

    /// A success response whose JSON is not what the Table API returns.
    #[error("servicenow {method} {url}: unexpected response: {message}")]
    Decode {
        method: String,
        url: String,
        message: String,
    },

    /// The client's configuration is unusable.
    #[error("servicenow config: {0}")]
    Config(String),

    /// An argument the client refuses before sending anything (an empty
    /// correlation_id would match unrelated tickets; an empty sys_id would
    /// address the whole table).
    #[error("servicenow: invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
}

impl ServiceNowError {
    /// The HTTP status, for `Http` and `Auth`.
    pub fn status(&self) -> Option<u16> {
        match self {
            ServiceNowError::Http { status, .. } => Some(*status),
            ServiceNowError::Auth { .. } => Some(401),
            _ => None,
        }
    }
}
