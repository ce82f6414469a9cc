//! The ServiceNow client's configuration and the values it takes and returns.

use std::collections::BTreeMap;
use std::time::Duration;

use fincorp_api::config::Secret;
use serde::{Deserialize, Serialize};

/// Where the instance is and how to log in. `Debug` never shows the password.
#[derive(Debug, Clone)]
pub struct ServiceNowConfig {
    /// The instance's base URL, e.g. `https://fincorp.service-now.com`. A path
    /// prefix (behind a proxy) is kept.
    pub url: String,
    pub username: String,
    pub password: Secret,
    /// The limit for one HTTP request, connection included.
    pub timeout: Duration,
}

/// How failed requests are retried. 429 and 503 wait for `Retry-After`
/// (capped at `max_retry_after`); other 5xx and transport errors back off
/// exponentially with full jitter: a random wait in
/// `[0, min(max_delay, base_delay × 2^(attempt-1))]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// An incident to open unless an active one with the same `correlation_id`
/// exists. Every value is sent as a JSON string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIncident {
    /// Our idempotency key, e.g. the FINCORP incident id. Must not be empty.
    pub correlation_id: String,
    pub short_description: String,
    #[serde(default)]
    pub description: Option<String>,
    /// "1" (high) .. "3" (low).
    #[serde(default)]
    pub urgency: Option<String>,
    /// "1" (high) .. "3" (low).
    #[serde(default)]
    pub impact: Option<String>,
    /// Journal text: part of the creation, or appended to the existing ticket.
    #[serde(default)]
    pub work_notes: Option<String>,
    /// Further fields (`assignment_group`, `caller_id`, `category`, ...). The
    /// named fields above win over a same-named entry here.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// The result of [`ServiceNowClient::ensure_incident`](super::ServiceNowClient::ensure_incident).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ensured {
    pub ticket: Ticket,
    /// Whether this call opened the ticket (false: it already existed).
    pub created: bool,
}

/// The fields of an incident record FINCORP relies on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub sys_id: String,
    /// `INC0010001` and so on.
    pub number: String,
    /// "1" New, "2" In Progress, "3" On Hold, "6" Resolved, "7" Closed, "8" Canceled.
    pub state: String,
    pub active: bool,
    pub correlation_id: String,
    pub short_description: String,
}

/// One HTTP request as it would be sent, for dry-run plans. The
/// Authorization header's value is always `Basic <redacted>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
}
