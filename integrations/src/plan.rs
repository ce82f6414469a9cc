//! Dry-run plans: one HTTP request exactly as a client would send it, with
//! every credential redacted, so `fincorpctl playbook plan` can show what an
//! action would do without doing it.

use serde::{Deserialize, Serialize};

/// What a plan shows instead of a basic-auth credential.
pub const REDACTED_BASIC: &str = "Basic <redacted>";
/// What a plan shows instead of an OAuth access token.
pub const REDACTED_BEARER: &str = "Bearer <redacted>";
/// What a plan shows instead of a session id or any other secret value.
pub const REDACTED: &str = "<redacted>";

/// One HTTP request as it would be sent. Header values that carry
/// credentials (`Authorization`, `vmware-api-session-id`) are always
/// redacted; everything else (method, full URL with query, other headers,
/// JSON body) is byte-for-byte what the client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
}

impl PlannedRequest {
    /// The value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
