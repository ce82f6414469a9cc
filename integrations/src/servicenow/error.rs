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

    /// 401: the username or password is wrong, or the account is locked;
    /// with OAuth, the access token was refused even after a fresh one was
    /// obtained. Not retried otherwise.
    #[error("servicenow {method} {url}: authentication failed (HTTP 401): {message}")]
    Auth {
        method: String,
        url: String,
        message: String,
    },

    /// `/oauth_token.do` refused a grant (HTTP 400 or 401): wrong client id
    /// or secret, wrong user credentials, a revoked or expired refresh
    /// token. A refused refresh grant is followed by a password grant; this
    /// error means that failed too (`message` then says both).
    #[error("servicenow oauth {grant} grant at {url} refused (HTTP {status}): {message}")]
    OAuth {
        /// `password` or `refresh_token`.
        grant: &'static str,
        url: String,
        status: u16,
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
    /// The HTTP status, for `Http`, `Auth`, `OAuth` and `Hibernating`.
    pub fn status(&self) -> Option<u16> {
        match self {
            ServiceNowError::Http { status, .. }
            | ServiceNowError::OAuth { status, .. }
            | ServiceNowError::Hibernating { status, .. } => Some(*status),
            ServiceNowError::Auth { .. } => Some(401),
            _ => None,
        }
    }
}
