//! The ingest parsers: one per source, each a pure function from a request
//! body to normalised [`Alert`]s, with the raw event kept for the record.
//! They never panic on input; malformed input is an [`IngestError`] naming
//! the field at fault, which the API returns as 400.

use std::collections::BTreeMap;

use fincorp_api::UnixMs;
use thiserror::Error;

use crate::core::Alert;

pub mod agent;
pub mod alertmanager;
pub mod events;

/// Most events accepted in one request.
pub const MAX_EVENTS_PER_REQUEST: usize = 5_000;

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IngestError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    #[error("too many events in one request: {0} (at most {MAX_EVENTS_PER_REQUEST})")]
    TooMany(usize),
}

impl IngestError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        IngestError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A parsed alert and the JSON of the event it came from.
pub type Parsed = (Alert, String);

/// The hex SHA-256 of `parts` joined by NUL, cut to `len` hex characters.
pub(crate) fn digest(parts: &[&str], len: usize) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            ctx.update(b"\0");
        }
        ctx.update(p.as_bytes());
    }
    let mut hex = hex::encode(ctx.finish().as_ref());
    hex.truncate(len);
    hex
}

/// A fingerprint from an alert's identity: source, host, app, name, labels.
pub(crate) fn fingerprint(
    source: &str,
    host: &str,
    app: Option<&str>,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    digest(
        &[source, host, app.unwrap_or(""), name, &labels.join("\u{1}")],
        32,
    )
}

/// Checks a short identifier-like text field.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), IngestError> {
    if value.trim().is_empty() {
        return Err(IngestError::field(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(IngestError::field(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(IngestError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Parses an RFC 3339 time into Unix ms.
pub(crate) fn rfc3339_ms(field: &str, text: &str) -> Result<UnixMs, IngestError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| IngestError::field(field, format!("not an RFC 3339 time ({e}): {text:?}")))
}

#[cfg(test)]
mod fuzz;
