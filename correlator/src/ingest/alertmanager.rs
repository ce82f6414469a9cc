//! Prometheus Alertmanager's webhook payload, version "4", as Alertmanager
//! sends it (`POST /api/v1/ingest/alertmanager`): point a webhook receiver
//! at us, with `send_resolved: true`.
//!
//! Host, app and severity come from labels named in the config. The event id
//! is a hash of Alertmanager's fingerprint, the status and the start (and end)
//! time, so Alertmanager's repeated notifications of the same alert are stored
//! once.

use std::collections::BTreeMap;

use fincorp_api::UnixMs;
use fincorp_api::wire::{AlertStatus, Severity};
use serde::Deserialize;

use super::{IngestError, MAX_EVENTS_PER_REQUEST, check_text, digest, fingerprint, rfc3339_ms};
use crate::core::Alert;

/// How Alertmanager labels map onto our alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Labels tried in order for the host; `instance`'s `:port` is removed.
    pub host_labels: Vec<String>,
    /// Labels tried in order for the app.
    pub app_labels: Vec<String>,
    pub severity_label: String,
    /// Other severity values mapped onto ours, e.g. `page: critical`.
    pub severity_map: BTreeMap<String, Severity>,
    pub default_severity: Severity,
    /// Host used when no host label is present.
    pub default_host: String,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            host_labels: vec!["host".into(), "instance".into(), "nodename".into()],
            app_labels: vec!["app".into(), "application".into(), "service".into()],
            severity_label: "severity".into(),
            severity_map: BTreeMap::from([
                ("page".into(), Severity::Critical),
                ("error".into(), Severity::Critical),
                ("none".into(), Severity::Info),
            ]),
            default_severity: Severity::Warning,
            default_host: "unknown".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Webhook {
    version: String,
    #[serde(default)]
    receiver: String,
    alerts: Vec<AmAlert>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default)]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// Parses a webhook body received at `now`.
pub fn parse(body: &[u8], mapping: &Mapping, now: UnixMs) -> Result<Vec<Alert>, IngestError> {
    let hook: Webhook =
        serde_json::from_slice(body).map_err(|e| IngestError::Json(e.to_string()))?;
    if hook.version != "4" {
        return Err(IngestError::field(
            "version",
            format!(
                "is {:?}; this endpoint reads webhook version \"4\"",
                hook.version
            ),
        ));
    }
    if hook.alerts.len() > MAX_EVENTS_PER_REQUEST {
        return Err(IngestError::TooMany(hook.alerts.len()));
    }
    hook.alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| normalise(i, a, &hook.receiver, mapping, now))
        .collect()
}

fn first_label<'a>(
    labels: &'a BTreeMap<String, String>,
    names: &'a [String],
) -> Option<(&'a str, &'a str)> {
    names.iter().find_map(|n| {
        labels
            .get(n)
            .filter(|v| !v.is_empty())
            .map(|v| (n.as_str(), v.as_str()))
    })
}

fn normalise(
    i: usize,
    a: AmAlert,
    receiver: &str,
    m: &Mapping,
    now: UnixMs,
) -> Result<Alert, IngestError> {
    let at = |f: &str| format!("alerts[{i}].{f}");
    let status = match a.status.as_str() {
        "firing" => AlertStatus::Firing,
        "resolved" => AlertStatus::Resolved,
        other => {
            return Err(IngestError::field(
                at("status"),
                format!("{other:?} is neither \"firing\" nor \"resolved\""),
            ));
        }
    };
    let name = a.labels.get("alertname").cloned().unwrap_or_default();
    check_text(|| at("labels.alertname"), &name, 128)?;
    let host = match first_label(&a.labels, &m.host_labels) {
        // `instance` is usually host:port.
        Some(("instance", v)) => strip_port(v).to_owned(),
        Some((_, v)) => v.to_owned(),
        None => m.default_host.clone(),
    };
    check_text(|| at("labels.<host>"), &host, 253)?;
    let app = first_label(&a.labels, &m.app_labels).map(|(_, v)| v.to_owned());
    let severity = match a.labels.get(&m.severity_label) {
        None => m.default_severity,
        Some(v) => v
            .parse::<Severity>()
            .ok()
            .or_else(|| m.severity_map.get(v).copied())
            .unwrap_or(m.default_severity),
    };
    let starts_at_ms = rfc3339_ms(|| at("startsAt"), &a.starts_at)?;
    // Alertmanager sends 0001-01-01T00:00:00Z for "no end".
    let ends_at_ms = match a.ends_at.as_deref() {
        Some(t) if !t.starts_with("0001-") => Some(rfc3339_ms(|| at("endsAt"), t)?),
        _ => None,
    };
    let fingerprint = match &a.fingerprint {
        Some(fp) if !fp.is_empty() => {
            check_text(|| at("fingerprint"), fp, 128)?;
            format!("am:{fp}")
        }
        _ => format!(
            "am:{}",
            fingerprint("alertmanager", &host, app.as_deref(), &name, &a.labels)
        ),
    };
    let end = if status == AlertStatus::Resolved {
        ends_at_ms.map(|e| e.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    let event_id = digest(
        &[
            &fingerprint,
            status.as_str(),
            &starts_at_ms.to_string(),
            &end,
        ],
        32,
    );
    let summary = a
        .annotations
        .get("summary")
        .or_else(|| a.annotations.get("description"))
        .cloned()
        .unwrap_or_else(|| format!("{name} on {host}"));
    let mut labels = a.labels.clone();
    if !receiver.is_empty() {
        labels
            .entry("am_receiver".into())
            .or_insert_with(|| receiver.to_owned());
    }
    Ok(Alert {
        event_id,
        source: "alertmanager".into(),
        fingerprint,
        status,
        name,
        host,
        app,
        severity,
        metric: String::new(),
        value: 0.0,
        threshold: 0.0,
        summary,
        labels,
        starts_at_ms,
        at_ms: if status == AlertStatus::Resolved {
            ends_at_ms.unwrap_or(now)
        } else {
            now
        },
    })
}

/// `host:9100` → `host`; `[::1]:9100` → `::1`; anything else unchanged.
fn strip_port(instance: &str) -> &str {
    if let Some(rest) = instance.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| h).unwrap_or(instance);
    }
    match instance.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => instance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOK: &str = r#"{
      "version": "4", "groupKey": "{}:{alertname=\"HighLatency\"}", "truncatedAlerts": 0,
      "status": "firing", "receiver": "fincorp", "groupLabels": {}, "commonLabels": {},
      "commonAnnotations": {}, "externalURL": "http://am:9093",
      "alerts": [{
        "status": "firing",
        "labels": {"alertname": "HighLatency", "instance": "core-db01:9100", "app": "FINCORP-APP-CORE", "severity": "page"},
        "annotations": {"summary": "p99 latency above 500ms"},
        "startsAt": "2026-11-22T10:00:00.123Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prom:9090/graph", "fingerprint": "c4ff5e7d1e3a0f11"
      }]}"#;

    #[test]
    fn labels_map_onto_host_app_and_severity() {
        let a = &parse(HOOK.as_bytes(), &Mapping::default(), 0).unwrap()[0];
        assert_eq!(
            (a.host.as_str(), a.app.as_deref(), a.severity),
            ("core-db01", Some("FINCORP-APP-CORE"), Severity::Critical)
        );
        assert_eq!(
            (a.name.as_str(), a.summary.as_str()),
            ("HighLatency", "p99 latency above 500ms")
        );
        assert_eq!(a.fingerprint, "am:c4ff5e7d1e3a0f11");
        assert_eq!(a.starts_at_ms, 1_795_341_600_123);
        assert_eq!(a.labels["am_receiver"], "fincorp");
    }

    #[test]
    fn a_repeated_notification_is_the_same_event_and_its_resolution_is_another() {
        let m = Mapping::default();
        let first = &parse(HOOK.as_bytes(), &m, 1).unwrap()[0];
        let again = &parse(HOOK.as_bytes(), &m, 60_000).unwrap()[0];
        assert_eq!(first.event_id, again.event_id);
        let resolved = HOOK
            .replace(r#""status": "firing","#, r#""status": "resolved","#)
            .replace("0001-01-01T00:00:00Z", "2026-11-22T10:05:00Z");
        let r = &parse(resolved.as_bytes(), &m, 70_000).unwrap()[0];
        assert_eq!(r.status, AlertStatus::Resolved);
        assert_eq!(r.fingerprint, first.fingerprint);
        assert_ne!(r.event_id, first.event_id);
        assert_eq!(r.at_ms, 1_795_341_900_000, "resolved at endsAt");
    }

    #[test]
    fn other_versions_and_statuses_are_refused() {
        let m = Mapping::default();
        let v3 = HOOK.replace(r#""version": "4""#, r#""version": "3""#);
        assert!(
            parse(v3.as_bytes(), &m, 0)
                .unwrap_err()
                .to_string()
                .starts_with("version: is \"3\"")
        );
        let weird = HOOK.replace(
            r#""status": "firing",
        "labels""#,
            r#""status": "pending",
        "labels""#,
        );
        assert!(
            parse(weird.as_bytes(), &m, 0)
                .unwrap_err()
                .to_string()
                .starts_with("alerts[0].status")
        );
    }

    #[test]
    fn ports_are_stripped_from_instances_only() {
        assert_eq!(strip_port("db01:9100"), "db01");
        assert_eq!(strip_port("[::1]:9100"), "::1");
        assert_eq!(strip_port("db01"), "db01");
        assert_eq!(strip_port("fe80::1"), "fe80::1");
    }
}
