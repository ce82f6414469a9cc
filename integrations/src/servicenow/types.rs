//! The ServiceNow client's configuration and the values it takes and returns.

use std::collections::BTreeMap;
use std::time::Duration;

use fincorp_api::config::Secret;
use serde::{Deserialize, Serialize};

use super::error::ServiceNowError;
use super::mapping::FieldMapping;
use crate::retry::RetryPolicy;

/// Where the instance is and who logs in. `Debug` never shows the password.
///
/// With basic auth (the default) `username`/`password` go on every request.
/// With OAuth ([`ServiceNowOptions::oauth`]) they are the resource owner's
/// credentials for the password grant, sent only to `/oauth_token.do`.
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

/// An OAuth application registered on the instance (System OAuth →
/// Application Registry). `Debug` never shows the secret.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub client_id: String,
    pub client_secret: Secret,
}

/// Everything about the client beyond where and who: auth mode, field
/// mapping, retries. `Default` is basic auth, no mapping, default retries,
/// so `ServiceNowClient::new(cfg)` keeps its meaning.
#[derive(Debug, Clone, Default)]
pub struct ServiceNowOptions {
    /// Log in with OAuth (password grant, then refresh grants) instead of
    /// sending basic auth on every request.
    pub oauth: Option<OAuthConfig>,
    /// Per-app default fields for new incidents; see
    /// [`ServiceNowClient::incident_for_app`](super::ServiceNowClient::incident_for_app).
    pub field_mapping: FieldMapping,
    pub retry: RetryPolicy,
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

impl NewIncident {
    /// Checks what can be checked without the instance: a correlation_id
    /// and a short_description, impact and urgency in "1".."3", field names
    /// that can be ServiceNow columns.
    pub fn validate(&self) -> Result<(), ServiceNowError> {
        require("correlation_id", &self.correlation_id)?;
        require("short_description", &self.short_description)?;
        for (field, value) in [("urgency", &self.urgency), ("impact", &self.impact)] {
            if let Some(v) = value.as_deref().filter(|v| !matches!(*v, "1" | "2" | "3")) {
                return Err(ServiceNowError::InvalidInput {
                    field,
                    reason: format!("must be \"1\", \"2\" or \"3\", not {v:?}"),
                });
            }
        }
        for name in self.extra.keys() {
            check_field_name(name)?;
        }
        Ok(())
    }
}

/// Refuses an empty (or blank) value.
pub(crate) fn require(field: &'static str, value: &str) -> Result<(), ServiceNowError> {
    if value.trim().is_empty() {
        return Err(ServiceNowError::InvalidInput {
            field,
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}

/// Whether a name can be a ServiceNow column: lowercase `[a-z0-9_]`,
/// starting with a letter (custom columns are `u_...`).
pub(crate) fn is_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub(crate) fn check_field_name(name: &str) -> Result<(), ServiceNowError> {
    if is_field_name(name) {
        Ok(())
    } else {
        Err(ServiceNowError::InvalidInput {
            field: "field name",
            reason: format!("{name:?} is not a ServiceNow field name (lowercase a-z, 0-9, _)"),
        })
    }
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
