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
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
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
/// Computed for every event without one, so a short identity (the usual
/// case) is hashed from one stack buffer in one call.
pub(crate) fn fingerprint(
    source: &str,
    host: &str,
    app: Option<&str>,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> String {
    let identity = |f: &mut dyn FnMut(&[u8])| {
        for part in [source, host, app.unwrap_or(""), name] {
            f(part.as_bytes());
            f(b"\0");
        }
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                f(b"\x01");
            }
            f(k.as_bytes());
            f(b"=");
            f(v.as_bytes());
        }
    };
    let mut len = 0;
    identity(&mut |p| len += p.len());
    let mut buf = [0u8; 256];
    let d = if len <= buf.len() {
        let mut at = 0;
        identity(&mut |p| {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        });
        ring::digest::digest(&ring::digest::SHA256, &buf[..at])
    } else {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        identity(&mut |p| ctx.update(p));
        ctx.finish()
    };
    to_hex(&d.as_ref()[..16])
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Fingerprints are stored: an alert re-sent after an upgrade must get
    /// the same one, or it would open a second alert beside the first.
    #[test]
    fn fingerprints_and_digests_are_stable_across_versions() {
        let labels: BTreeMap<String, String> = [("slot", "A3"), ("bank", "2")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let print = |app| fingerprint("hardware", "web01", app, "dimm_ecc_error", &labels);
        assert_eq!(
            print(Some("FINCORP-APP-CORE")),
            "7e2424aa9c57d5b0a2f0cb8f0bebb606"
        );
        assert_eq!(print(None), "425faaf48ac78c5814214e4fee709f0b");
        assert_eq!(
            fingerprint("agent", "h", None, "n", &BTreeMap::new()),
            "c872428fea9d7127cd5b4f7a9e8c6387"
        );
        let long = "x".repeat(300);
        assert_eq!(
            fingerprint(&long, "h", None, "n", &labels),
            "771d5947b362ca445c3622364b524c83"
        );
        assert_eq!(
            digest(&["fp", "firing", "1700000000000"], 32),
            "104cc325a6d8949777841e0aa90a93ae"
        );
        assert_eq!(to_hex(&[0x00, 0x9f, 0xff]), "009fff");
    }
}
