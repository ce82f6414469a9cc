//! Incident endpoints: list (filters, paging), show, and the operator's
//! ack / resolve / close, each recorded in the timeline and the audit log.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use fincorp_api::now_ms;
use fincorp_api::rest::{IncidentAction, IncidentDetail, IncidentList, IncidentState};
use fincorp_api::wire::Severity;
use serde::Deserialize;

use super::auth::{Identity, actor};
use super::{ApiError, AppState};
use crate::store::IncidentFilter;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    state: Option<String>,
    app: Option<String>,
    host: Option<String>,
    /// At least this severity.
    severity: Option<String>,
    /// Only incidents updated at or after this time (Unix ms).
    since_ms: Option<i64>,
    /// Only incidents opened before this time (Unix ms).
    until_ms: Option<i64>,
    /// The paging cursor: `next_before` of the previous page.
    before: Option<u64>,
    /// At most this many, newest first (1..=1000, default 100).
    limit: Option<u32>,
}

/// `GET /api/v1/incidents`
pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<IncidentList>, ApiError> {
    let Query(p) = params?;
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let filter = IncidentFilter {
        state: p
            .state
            .map(|s| s.parse::<IncidentState>())
            .transpose()
            .map_err(ApiError::BadRequest)?,
        app: p.app,
        host: p.host,
        severity: p
            .severity
            .map(|s| s.parse::<Severity>())
            .transpose()
            .map_err(ApiError::BadRequest)?,
        since_ms: p.since_ms,
        until_ms: p.until_ms,
        before: p.before,
        limit,
    };
    let engine = state.engine.clone();
    let incidents = tokio::task::spawn_blocking(move || engine.list_incidents(&filter)).await??;
    let next_before = (incidents.len() == limit as usize)
        .then(|| incidents.last().map(|i| i.seq))
        .flatten();
    Ok(Json(IncidentList {
        incidents,
        next_before,
    }))
}

/// `GET /api/v1/incidents/{id}`
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let engine = state.engine.clone();
    let lookup = id.clone();
    match tokio::task::spawn_blocking(move || engine.incident(&lookup)).await?? {
        Some(detail) => Ok(Json(detail)),
        None => Err(ApiError::NotFound(format!("no incident {id:?}"))),
    }
}

#[derive(Clone, Copy)]
enum Op {
    Ack,
    Resolve,
    Close,
}

async fn act(
    state: AppState,
    id: String,
    identity: Option<Extension<Identity>>,
    body: Result<Json<IncidentAction>, JsonRejection>,
    op: Op,
) -> Result<Json<IncidentDetail>, ApiError> {
    let Json(body) = body?;
    let by = actor(identity.as_deref(), body.by.as_deref(), "by")?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::BadRequest("reason: say why".into()));
    }
    let engine = state.engine.clone();
    let target = id.clone();
    // Runs that a resolution decided (a playbook `on: [resolved]`).
    let runs = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        match op {
            Op::Ack => engine
                .acknowledge(&target, &by, &body.reason, now)
                .map(|()| vec![]),
            Op::Resolve => engine.resolve_or_close(&target, false, &by, &body.reason, now),
            Op::Close => engine.resolve_or_close(&target, true, &by, &body.reason, now),
        }
    })
    .await??;
    for run_id in runs {
        state.automation.start(run_id);
    }
    show(State(state), Path(id)).await
}

/// `POST /api/v1/incidents/{id}/ack`
pub async fn ack(
    State(state): State<AppState>,
    Path(id): Path<String>,
    identity: Option<Extension<Identity>>,
    body: Result<Json<IncidentAction>, JsonRejection>,
) -> Result<Json<IncidentDetail>, ApiError> {
    act(state, id, identity, body, Op::Ack).await
}

/// `POST /api/v1/incidents/{id}/resolve`
pub async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    identity: Option<Extension<Identity>>,
    body: Result<Json<IncidentAction>, JsonRejection>,
) -> Result<Json<IncidentDetail>, ApiError> {
    act(state, id, identity, body, Op::Resolve).await
}

/// `POST /api/v1/incidents/{id}/close`
pub async fn close(
    State(state): State<AppState>,
    Path(id): Path<String>,
    identity: Option<Extension<Identity>>,
    body: Result<Json<IncidentAction>, JsonRejection>,
) -> Result<Json<IncidentDetail>, ApiError> {
    act(state, id, identity, body, Op::Close).await
}
