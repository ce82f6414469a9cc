//! Agent endpoints: signed batch ingest, the command long poll, and command
//! results.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use fincorp_api::now_ms;
use fincorp_api::wire::{
    AgentBatch, COMMAND_POLL_PATH, COMMAND_RESULT_PATH, CommandResult, INGEST_AGENT_PATH,
    IngestAck, PollRequest, PollResponse,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::engine::from_agent;

/// Longest a poll is held open, whatever the agent asks for.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);
const MAX_ID_LEN: usize = 128;

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// `POST /api/v1/ingest/agent`
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestAck>, ApiError> {
    let body = body?;
    state.authenticate("POST", INGEST_AGENT_PATH, &headers, &body)?;
    let batch: AgentBatch = parse(&body)?;
    let host = batch.agent.host.as_str();
    if host.is_empty() {
        return Err(ApiError::BadRequest("agent.host must not be empty".into()));
    }
    let mut alerts = Vec::with_capacity(batch.events.len());
    for (i, e) in batch.events.iter().enumerate() {
        if e.host != host {
            return Err(ApiError::BadRequest(format!(
                "events[{i}].host is {:?} but the batch comes from {host:?}; an agent reports only its own host",
                e.host
            )));
        }
        if e.id.is_empty()
            || e.id.len() > MAX_ID_LEN
            || e.fingerprint.is_empty()
            || e.fingerprint.len() > MAX_ID_LEN
        {
            return Err(ApiError::BadRequest(format!(
                "events[{i}]: id and fingerprint must be 1..={MAX_ID_LEN} characters"
            )));
        }
        if !e.value.is_finite() || !e.threshold.is_finite() {
            return Err(ApiError::BadRequest(format!(
                "events[{i}]: value and threshold must be finite numbers"
            )));
        }
        let payload = serde_json::to_string(e).expect("events serialise");
        alerts.push((from_agent(e), payload));
    }
    let engine = state.engine.clone();
    let now = now_ms();
    let ingested = tokio::task::spawn_blocking(move || engine.ingest(alerts, now)).await??;
    tracing::debug!(
        host,
        seq = batch.seq,
        accepted = ingested.ack.accepted,
        duplicates = ingested.ack.duplicates,
        "agent batch stored"
    );
    for run in ingested.runs {
        state.runner.start(run);
    }
    Ok(Json(ingested.ack))
}

/// `POST /api/v1/agent/commands/poll`
pub async fn poll(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PollResponse>, ApiError> {
    let body = body?;
    let key_id = state.authenticate("POST", COMMAND_POLL_PATH, &headers, &body)?;
    let req: PollRequest = parse(&body)?;
    if req.host.is_empty() {
        return Err(ApiError::BadRequest("host must not be empty".into()));
    }
    let wait = Duration::from_millis(req.wait_ms).min(MAX_POLL_WAIT);
    let mut shutdown = state.shutdown.clone();
    let commands = tokio::select! {
        commands = state.bus.poll(&req.host, &key_id, wait) => commands,
        _ = shutdown.wait_for(|stop| *stop) => vec![],
    };
    Ok(Json(PollResponse { commands }))
}

/// `POST /api/v1/agent/commands/result`
pub async fn result(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    state.authenticate("POST", COMMAND_RESULT_PATH, &headers, &body)?;
    let result: CommandResult = parse(&body)?;
    tracing::info!(command_id = %result.command_id, host = %result.host, outcome = ?result.outcome, message = %result.message, "command result");
    let delivered = state.bus.complete(result);
    Ok(Json(json!({ "delivered": delivered })))
}
