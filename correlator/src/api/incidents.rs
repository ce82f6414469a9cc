//! Incident endpoints.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use fincorp_api::rest::{IncidentDetail, IncidentList, IncidentState};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::store::IncidentFilter;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    state: Option<String>,
    app: Option<String>,
    host: Option<String>,
    /// Only incidents updated at or after this time (Unix ms).
    since_ms: Option<i64>,
    /// At most this many, newest first (1..=1000, default 100).
    limit: Option<u32>,
}

/// `GET /api/v1/incidents`
pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<IncidentList>, ApiError> {
    let Query(p) = params?;
    let filter = IncidentFilter {
        state: p
            .state
            .map(|s| s.parse::<IncidentState>())
            .transpose()
            .map_err(ApiError::BadRequest)?,
        app: p.app,
        host: p.host,
        since_ms: p.since_ms,
        limit: p.limit.unwrap_or(100),
    };
    let engine = state.engine.clone();
    let incidents = tokio::task::spawn_blocking(move || engine.list_incidents(&filter)).await??;
    Ok(Json(IncidentList { incidents }))
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
