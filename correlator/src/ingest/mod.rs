//! The ingest parsers: one per source, each a pure function from a request
//! body to normalised [`Alert`](crate::core::Alert)s.
//! They never panic on input; malformed input is an [`IngestError`] naming
//! the field at fault, which the API returns as 400.

use std::collections::BTreeMap;

use fincorp_api::UnixMs;
use thiserror::Error;

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

/// Lowercase hex of `bytes`, without per-character allocation.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The hex SHA-256 of `parts` joined by NUL, cut to `len` hex characters.
pub(crate) fn digest(parts: &[&str], len: usize) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            ctx.update(b"\0");
        }
        ctx.update(p.as_bytes());
    }
    let d = ctx.finish();
    to_hex(&d.as_ref()[..len.div_ceil(2).min(32)])[..len].to_owned()
}

/// A fingerprint from an alert's identity: source, host, app, name, labels.
pub(crate) fn fingerprint(
    source: &str,
    host: &str,
    app: Option<&str>,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [source, host, app.unwrap_or(""), name] {
        ctx.update(part.as_bytes());
        ctx.update(b"\0");
    }
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            ctx.update(b"\x01");
        }
        ctx.update(k.as_bytes());
        ctx.update(b"=");
        ctx.update(v.as_bytes());
    }
    to_hex(&ctx.finish().as_ref()[..16])
}

/// Checks a short identifier-like text field.
/// `field` names it, and is only called when there is an error to report.
pub(crate) fn check_text(
    field: impl Fn() -> String,
    value: &str,
    max: usize,
) -> Result<(), IngestError> {
    if value.trim().is_empty() {
        return Err(IngestError::field(field(), "must not be empty"));
    }
    if value.len() > max {
        return Err(IngestError::field(
            field(),
            format!("longer than {max} bytes"),
        ));
    }
    if value.bytes().any(|b| b < 0x20 || b == 0x7f)
        || (!value.is_ascii() && value.chars().any(char::is_control))
    {
        return Err(IngestError::field(
            field(),
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Parses an RFC 3339 time into Unix ms.
pub(crate) fn rfc3339_ms(field: impl Fn() -> String, text: &str) -> Result<UnixMs, IngestError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| IngestError::field(field(), format!("not an RFC 3339 time ({e}): {text:?}")))
}

#[cfg(test)]
mod fuzz;
