//! Ingest of generic events and Alertmanager webhooks. Each request is
//! parsed in full (a bad event refuses the whole request, naming it), then
//! committed before the answer.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use fincorp_api::now_ms;
use fincorp_api::wire::IngestAck;

use super::{ApiError, AppState};
use crate::core::Alert;
use crate::ingest::{alertmanager, events};

/// How long a request waits for room in a full ingest queue before 503.
pub(super) const QUEUE_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn store(
    state: &AppState,
    endpoint: &str,
    parsed: Result<Vec<Alert>, ApiError>,
) -> Result<Json<IngestAck>, ApiError> {
    let result = match parsed {
        Ok(alerts) => state
            .engine
            .submit(alerts, now_ms(), QUEUE_WAIT)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let code = result
        .as_ref()
        .map(|_| 200)
        .unwrap_or_else(|e| e.status().as_u16());
    state.engine.metrics.request(endpoint, code);
    let ingested = result?;
    for run in ingested.runs {
        state.automation.start(run);
    }
    Ok(Json(ingested.ack))
}

/// `POST /api/v1/ingest/events`
pub async fn events(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestAck>, ApiError> {
    let parsed = body
        .map_err(ApiError::from)
        .and_then(|b| Ok(events::parse(&b, now_ms())?));
    store(&state, "events", parsed).await
}

/// `POST /api/v1/ingest/alertmanager`
pub async fn alertmanager(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestAck>, ApiError> {
    let parsed = body
        .map_err(ApiError::from)
        .and_then(|b| Ok(alertmanager::parse(&b, &state.alertmanager, now_ms())?));
    store(&state, "alertmanager", parsed).await
}
