//! Automation controls: status, the kill switch, breaker resets, the loaded
//! playbooks, dry-run plans against an incident, and reloading playbooks.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use fincorp_api::rest::{
    AutomationStatus, KillSwitchRequest, KillSwitchView, PlanRequest, PlanView, PlaybookView,
    ReloadView, ResetRequest, RunRequest, RunView,
};

use super::auth::{Identity, actor};
use super::{ApiError, AppState};
use crate::store::runs;

/// `GET /api/v1/automation`
pub async fn status(State(state): State<AppState>) -> Result<Json<AutomationStatus>, ApiError> {
    Ok(Json(state.automation.status().await?))
}

/// `GET /api/v1/automation/kill-switch`
pub async fn kill_switch(State(state): State<AppState>) -> Result<Json<KillSwitchView>, ApiError> {
    let engine = state.engine.clone();
    Ok(Json(
        tokio::task::spawn_blocking(move || engine.read(runs::kill_switch)).await??,
    ))
}

/// `POST /api/v1/automation/kill-switch` `{"on": true, "by": "...", "reason": "..."}`
pub async fn set_kill_switch(
    State(state): State<AppState>,
    identity: Option<Extension<Identity>>,
    body: Result<Json<KillSwitchRequest>, JsonRejection>,
) -> Result<Json<KillSwitchView>, ApiError> {
    let Json(req) = body?;
    let by = actor(identity.as_deref(), Some(&req.by), "by")?;
    Ok(Json(
        state
            .automation
            .set_kill_switch(req.on, &by, &req.reason)
            .await?,
    ))
}

/// `POST /api/v1/automation/breakers/{key}/reset`
pub async fn reset_breaker(
    State(state): State<AppState>,
    Path(key): Path<String>,
    identity: Option<Extension<Identity>>,
    body: Result<Json<ResetRequest>, JsonRejection>,
) -> Result<Json<AutomationStatus>, ApiError> {
    let Json(req) = body?;
    let by = actor(identity.as_deref(), Some(&req.by), "by")?;
    state
        .automation
        .reset_breaker(&key, &by, &req.reason)
        .await?;
    Ok(Json(state.automation.status().await?))
}

/// `GET /api/v1/playbooks`
pub async fn playbooks(State(state): State<AppState>) -> Json<Vec<PlaybookView>> {
    Json(state.automation.playbook_views())
}

/// `POST /api/v1/playbooks/{name}/plan` `{"incident_id": "..."}`: what a run
/// would do for that incident, executing nothing.
pub async fn plan(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<PlanRequest>, JsonRejection>,
) -> Result<Json<PlanView>, ApiError> {
    let Json(req) = body?;
    Ok(Json(state.automation.plan(&name, &req.incident_id).await?))
}

/// `POST /api/v1/playbooks/{name}/run` `{"incident_id": "...", "dry_run": false}`:
/// 202 with the run, which then meets every guardrail like any other.
pub async fn run(
    State(state): State<AppState>,
    Path(name): Path<String>,
    identity: Option<Extension<Identity>>,
    body: Result<Json<RunRequest>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<RunView>), ApiError> {
    let Json(req) = body?;
    let by = actor(identity.as_deref(), Some(&req.by), "by")?;
    let id = state
        .automation
        .run_manually(&name, &req.incident_id, req.dry_run, &by, &req.reason)
        .await?;
    let engine = state.engine.clone();
    let view = tokio::task::spawn_blocking(move || engine.read(|c| runs::view(c, &id)))
        .await??
        .ok_or_else(|| ApiError::Internal("the new run vanished".into()))?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(view)))
}

/// `POST /api/v1/playbooks/reload`: 400 with every problem when the new set
/// has errors (the loaded set stays).
pub async fn reload(State(state): State<AppState>) -> Result<Json<ReloadView>, ApiError> {
    let automation = state.automation.clone();
    match tokio::task::spawn_blocking(move || automation.reload()).await? {
        Ok(view) => Ok(Json(view)),
        Err(d) => Err(ApiError::BadRequest(format!(
            "playbooks not reloaded; the loaded ones stay:\n{d}"
        ))),
    }
}
