//! Generic events (`POST /api/v1/ingest/events`): hardware (BMC, IPMI,
//! Redfish), scripts, other monitors.
//!
//! ```json
//! {"events": [{"source": "hardware", "name": "dimm_ecc_error", "host": "web01",
//!              "severity": "warning", "status": "firing", "summary": "...",
//!              "labels": {"slot": "A3"}, "id": "optional", "starts_at": "RFC 3339, optional"}]}
//! ```
//!
//! `fingerprint` defaults to a hash of source, host, app, name and labels;
//! `id` defaults to a hash of fingerprint, status and `starts_at`, so a resend
//! of the same event is stored once. Without `id` or `starts_at`, every
//! delivery is a new event.

use std::collections::BTreeMap;

use fincorp_api::UnixMs;
use fincorp_api::wire::{AlertStatus, Severity};
use serde::{Deserialize, Serialize};

use super::{IngestError, MAX_EVENTS_PER_REQUEST, check_text, digest, rfc3339_ms};
use crate::core::Alert;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    events: Vec<Event>,
}

/// One generic event as posted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub source: String,
    pub name: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub severity: Severity,
    #[serde(default = "firing")]
    pub status: AlertStatus,
    #[serde(default)]
    pub summary: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

fn firing() -> AlertStatus {
    AlertStatus::Firing
}

/// Parses a body of generic events received at `now`.
pub fn parse(body: &[u8], now: UnixMs) -> Result<Vec<Alert>, IngestError> {
    // UTF-8 is checked once for the whole body, not string by string.
    let text =
        std::str::from_utf8(body).map_err(|e| IngestError::Json(format!("not UTF-8: {e}")))?;
    let body: Body = serde_json::from_str(text).map_err(|e| IngestError::Json(e.to_string()))?;
    if body.events.len() > MAX_EVENTS_PER_REQUEST {
        return Err(IngestError::TooMany(body.events.len()));
    }
    let mut alerts = Vec::with_capacity(body.events.len());
    for (i, e) in body.events.into_iter().enumerate() {
        alerts.push(normalise(i, e, now)?);
    }
    Ok(alerts)
}

fn normalise(i: usize, e: Event, now: UnixMs) -> Result<Alert, IngestError> {
    let at = |f: &str| format!("events[{i}].{f}");
    let Event {
        id,
        source,
        name,
        host,
        app,
        severity,
        status,
        summary,
        labels,
        fingerprint,
        starts_at,
        value,
    } = e;
    check_text(|| at("source"), &source, 64)?;
    check_text(|| at("name"), &name, 128)?;
    check_text(|| at("host"), &host, 253)?;
    if let Some(app) = &app {
        check_text(|| at("app"), app, 128)?;
    }
    if summary.len() > 4_096 {
        return Err(IngestError::field(at("summary"), "longer than 4096 bytes"));
    }
    if labels.len() > 64 {
        return Err(IngestError::field(at("labels"), "more than 64 labels"));
    }
    for (k, v) in &labels {
        check_text(|| at(&format!("labels.{k}")), k, 128)?;
        if v.len() > 1_024 {
            return Err(IngestError::field(
                at(&format!("labels.{k}")),
                "value longer than 1024 bytes",
            ));
        }
    }
    if let Some(v) = value.filter(|v| !v.is_finite()) {
        return Err(IngestError::field(
            at("value"),
            format!("must be a finite number, not {v}"),
        ));
    }
    let starts_at_ms = match &starts_at {
        Some(t) => Some(rfc3339_ms(|| at("starts_at"), t)?),
        None => None,
    };
    let fingerprint = match fingerprint {
        Some(fp) => {
            check_text(|| at("fingerprint"), &fp, 128)?;
            fp
        }
        None => super::fingerprint(&source, &host, app.as_deref(), &name, &labels),
    };
    let event_id = match (id, starts_at_ms) {
        (Some(id), _) => {
            check_text(|| at("id"), &id, 128)?;
            id
        }
        (None, Some(start)) => digest(&[&fingerprint, status.as_str(), &start.to_string()], 32),
        (None, None) => fincorp_api::signing::random_hex(16),
    };
    let summary = if summary.is_empty() {
        format!("{name} on {host}")
    } else {
        summary
    };
    Ok(Alert {
        event_id,
        source,
        fingerprint,
        status,
        name,
        host,
        app,
        severity,
        metric: String::new(),
        value: value.unwrap_or(0.0),
        threshold: 0.0,
        summary,
        labels,
        starts_at_ms: starts_at_ms.unwrap_or(now),
        at_ms: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hardware_event_is_normalised_with_stable_ids() {
        let body = br#"{"events":[{"source":"hardware","name":"dimm_ecc_error","host":"web01",
            "severity":"warning","labels":{"slot":"A3"},"starts_at":"2026-11-22T10:00:00Z"}]}"#;
        let a = parse(body, 5).unwrap();
        let b = parse(body, 9).unwrap();
        assert_eq!(a[0].event_id, b[0].event_id, "a resend is the same event");
        assert_eq!(a[0].fingerprint, b[0].fingerprint);
        assert_eq!(a[0].status, AlertStatus::Firing);
        assert_eq!(a[0].starts_at_ms, 1_795_341_600_000);
        assert_eq!(a[0].summary, "dimm_ecc_error on web01");
        let resolved = br#"{"events":[{"source":"hardware","name":"dimm_ecc_error","host":"web01",
            "severity":"warning","labels":{"slot":"A3"},"status":"resolved","starts_at":"2026-11-22T10:00:00Z"}]}"#;
        let r = parse(resolved, 10).unwrap();
        assert_eq!(r[0].fingerprint, a[0].fingerprint, "same alert");
        assert_ne!(r[0].event_id, a[0].event_id, "different event");
    }

    #[test]
    fn bad_fields_are_named() {
        let err = |body: &str| parse(body.as_bytes(), 0).unwrap_err().to_string();
        assert!(
            err(r#"{"events":[{"source":"","name":"n","host":"h","severity":"info"}]}"#)
                .starts_with("events[0].source: must not be empty")
        );
        assert!(
            err(r#"{"events":[{"source":"s","name":"n","host":"h","severity":"fatal"}]}"#)
                .contains("unknown variant `fatal`")
        );
        assert!(err(r#"{"events":[{"source":"s","name":"n","host":"h","severity":"info","starts_at":"yesterday"}]}"#)
            .starts_with("events[0].starts_at: not an RFC 3339 time"));
        assert!(err(r#"{"events":[{"source":"s","name":"n","host":"h","severity":"info","colour":"red"}]}"#).contains("unknown field `colour`"));
        assert!(err(r#"{"evnts":[]}"#).contains("unknown field `evnts`"));
    }
}
