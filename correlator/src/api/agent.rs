//! Agent endpoints: signed batch ingest, the command long poll, and command
//! results.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use fincorp_api::wire::{
    COMMAND_POLL_PATH, COMMAND_RESULT_PATH, CommandResult, INGEST_AGENT_PATH, IngestAck,
    PollRequest, PollResponse,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ApiError, AppState};

/// Longest a poll is held open, whatever the agent asks for.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

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
    let parsed = match body {
        Err(e) => Err(ApiError::from(e)),
        Ok(body) => match state.authenticate("POST", INGEST_AGENT_PATH, &headers, &body) {
            Err(e) => Err(e),
            Ok(_) => crate::ingest::agent::parse(&body)
                .map(|(batch, alerts)| {
                    let now = fincorp_api::now_ms();
                    state.samples.record(&batch.agent.host, &batch.samples, now);
                    state
                        .predict
                        .observe(&batch.agent.host, &batch.samples, now);
                    alerts
                })
                .map_err(ApiError::from),
        },
    };
    super::ingest::store(&state, "agent", parsed).await
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
