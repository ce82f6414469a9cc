//! Signed agent batches (`POST /api/v1/ingest/agent`). The signature is
//! checked by the handler before this parser sees the body.

use fincorp_api::wire::AgentBatch;

use super::{IngestError, MAX_EVENTS_PER_REQUEST, check_text};
use crate::core::Alert;

const MAX_ID_LEN: usize = 128;

/// Parses a batch. Every event must be about the sending agent's own host.
pub fn parse(body: &[u8]) -> Result<(AgentBatch, Vec<Alert>), IngestError> {
    let batch: AgentBatch =
        serde_json::from_slice(body).map_err(|e| IngestError::Json(e.to_string()))?;
    let host = batch.agent.host.as_str();
    check_text(|| "agent.host".into(), host, 253)?;
    if batch.events.len() > MAX_EVENTS_PER_REQUEST {
        return Err(IngestError::TooMany(batch.events.len()));
    }
    let mut out = Vec::with_capacity(batch.events.len());
    for (i, e) in batch.events.iter().enumerate() {
        let at = |f: &str| format!("events[{i}].{f}");
        if e.host != host {
            return Err(IngestError::field(
                at("host"),
                format!(
                    "is {:?} but the batch comes from {host:?}; an agent reports only its own host",
                    e.host
                ),
            ));
        }
        check_text(|| at("id"), &e.id, MAX_ID_LEN)?;
        check_text(|| at("fingerprint"), &e.fingerprint, MAX_ID_LEN)?;
        check_text(|| at("name"), &e.name, 128)?;
        if let Some(app) = &e.app {
            check_text(|| at("app"), app, 128)?;
        }
        if !e.value.is_finite() || !e.threshold.is_finite() {
            return Err(IngestError::field(
                at("value"),
                "value and threshold must be finite numbers",
            ));
        }
        let alert = Alert {
            event_id: e.id.clone(),
            source: "agent".into(),
            fingerprint: e.fingerprint.clone(),
            status: e.status,
            name: e.name.clone(),
            host: e.host.clone(),
            app: e.app.clone(),
            severity: e.severity,
            metric: e.metric.clone(),
            value: e.value,
            threshold: e.threshold,
            summary: e.summary.clone(),
            labels: e.labels.clone(),
            starts_at_ms: e.starts_at_ms,
            at_ms: e.at_ms,
        };
        out.push(alert);
    }
    Ok((batch, out))
}
