//! Playbook runs: list (filters), show, and an operator's approval or
//! rejection of a run that waits for one (audited).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use fincorp_api::rest::{DecisionRequest, RunList, RunState, RunView};
use serde::Deserialize;

use super::auth::{Identity, actor};
use super::{ApiError, AppState};
use crate::store::runs::{self, RunFilter};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    incident_id: Option<String>,
    playbook: Option<String>,
    state: Option<String>,
    /// At most this many, newest first (1..=1000, default 100).
    limit: Option<u32>,
}

/// `GET /api/v1/runs`
pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<RunList>, ApiError> {
    let Query(p) = params?;
    let filter = RunFilter {
        incident_id: p.incident_id,
        playbook: p.playbook,
        state: p
            .state
            .map(|s| s.parse::<RunState>())
            .transpose()
            .map_err(ApiError::BadRequest)?,
        limit: p.limit.unwrap_or(100).clamp(1, 1000),
    };
    let engine = state.engine.clone();
    let runs =
        tokio::task::spawn_blocking(move || engine.read(|c| runs::list(c, &filter))).await??;
    Ok(Json(RunList { runs }))
}

/// `GET /api/v1/runs/{id}`
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let engine = state.engine.clone();
    let key = id.clone();
    tokio::task::spawn_blocking(move || engine.read(|c| runs::view(c, &key)))
        .await??
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no run {id:?}")))
}

async fn decide(
    state: AppState,
    id: String,
    approve: bool,
    identity: Option<Extension<Identity>>,
    body: Result<Json<DecisionRequest>, JsonRejection>,
) -> Result<Json<RunView>, ApiError> {
    let Json(req) = body?;
    let by = actor(identity.as_deref(), Some(&req.by), "by")?;
    state
        .automation
        .decide(&id, approve, &by, &req.reason)
        .await?;
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || engine.read(|c| runs::view(c, &id)))
        .await??
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("the run vanished".into()))
}

/// `POST /api/v1/runs/{id}/approve`
pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    identity: Option<Extension<Identity>>,
    body: Result<Json<DecisionRequest>, JsonRejection>,
) -> Result<Json<RunView>, ApiError> {
    decide(state, id, true, identity, body).await
}

/// `POST /api/v1/runs/{id}/reject`
pub async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    identity: Option<Extension<Identity>>,
    body: Result<Json<DecisionRequest>, JsonRejection>,
) -> Result<Json<RunView>, ApiError> {
    decide(state, id, false, identity, body).await
}
