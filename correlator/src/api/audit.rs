//! `GET /api/v1/audit?after=SEQ&limit=N`: the audit log, oldest first, with
//! the chain's head hash. `fincorpctl audit verify` walks it page by page.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use fincorp_api::rest::AuditList;
use serde::Deserialize;

use super::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    after: Option<u64>,
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    let Query(p) = params?;
    let engine = state.engine.clone();
    let (entries, head) = tokio::task::spawn_blocking(move || {
        engine.audit(
            p.after.unwrap_or(0),
            p.limit.unwrap_or(1000).clamp(1, 10_000),
        )
    })
    .await??;
    Ok(Json(AuditList { entries, head }))
}
