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

use super::{IngestError, MAX_EVENTS_PER_REQUEST, check_text, digest, fingerprint, rfc3339_ms};
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
    let body: Body = serde_json::from_slice(body).map_err(|e| IngestError::Json(e.to_string()))?;
    if body.events.len() > MAX_EVENTS_PER_REQUEST {
        return Err(IngestError::TooMany(body.events.len()));
    }
    body.events
        .into_iter()
        .enumerate()
        .map(|(i, e)| normalise(i, e, now))
        .collect()
}

fn normalise(i: usize, e: Event, now: UnixMs) -> Result<Alert, IngestError> {
    let at = |f: &str| format!("events[{i}].{f}");
    check_text(|| at("source"), &e.source, 64)?;
    check_text(|| at("name"), &e.name, 128)?;
    check_text(|| at("host"), &e.host, 253)?;
    if let Some(app) = &e.app {
        check_text(|| at("app"), app, 128)?;
    }
    if e.summary.len() > 4_096 {
        return Err(IngestError::field(at("summary"), "longer than 4096 bytes"));
    }
    if e.labels.len() > 64 {
        return Err(IngestError::field(at("labels"), "more than 64 labels"));
    }
    for (k, v) in &e.labels {
        check_text(|| at(&format!("labels.{k}")), k, 128)?;
        if v.len() > 1_024 {
            return Err(IngestError::field(
                at(&format!("labels.{k}")),
                "value longer than 1024 bytes",
            ));
        }
    }
    if let Some(v) = e.value.filter(|v| !v.is_finite()) {
        return Err(IngestError::field(
            at("value"),
            format!("must be a finite number, not {v}"),
        ));
    }
    let starts_at_ms = match &e.starts_at {
        Some(t) => Some(rfc3339_ms(|| at("starts_at"), t)?),
        None => None,
    };
    let fingerprint = match &e.fingerprint {
        Some(fp) => {
            check_text(|| at("fingerprint"), fp, 128)?;
            fp.clone()
        }
        None => fingerprint(&e.source, &e.host, e.app.as_deref(), &e.name, &e.labels),
    };
    let event_id = match (&e.id, starts_at_ms) {
        (Some(id), _) => {
            check_text(|| at("id"), id, 128)?;
            id.clone()
        }
        (None, Some(start)) => digest(&[&fingerprint, e.status.as_str(), &start.to_string()], 32),
        (None, None) => fincorp_api::signing::random_hex(16),
    };
    let summary = if e.summary.is_empty() {
        format!("{} on {}", e.name, e.host)
    } else {
        e.summary.clone()
    };
    Ok(Alert {
        event_id,
        source: e.source,
        fingerprint,
        status: e.status,
        name: e.name,
        host: e.host,
        app: e.app,
        severity: e.severity,
        metric: String::new(),
        value: e.value.unwrap_or(0.0),
        threshold: 0.0,
        summary,
        labels: e.labels,
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
