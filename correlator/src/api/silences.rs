//! Silence endpoints: create, list, show, expire.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use fincorp_api::now_ms;
use fincorp_api::rest::{NewSilence, SilenceList, SilenceView};
use serde::Deserialize;

use super::auth::{Identity, actor};
use super::{ApiError, AppState};

/// `GET /api/v1/silences`
pub async fn list(State(state): State<AppState>) -> Result<Json<SilenceList>, ApiError> {
    let engine = state.engine.clone();
    let silences = tokio::task::spawn_blocking(move || engine.silences(now_ms())).await??;
    Ok(Json(SilenceList { silences }))
}

/// `GET /api/v1/silences/{id}`
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SilenceView>, ApiError> {
    let engine = state.engine.clone();
    let lookup = id.clone();
    match tokio::task::spawn_blocking(move || engine.silence(&lookup, now_ms())).await?? {
        Some(s) => Ok(Json(s)),
        None => Err(ApiError::NotFound(format!("no silence {id:?}"))),
    }
}

/// `POST /api/v1/silences`
pub async fn create(
    State(state): State<AppState>,
    identity: Option<Extension<Identity>>,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Result<(StatusCode, Json<SilenceView>), ApiError> {
    let Json(new) = body?;
    let by = actor(identity.as_deref(), new.created_by.as_deref(), "created_by")?;
    let engine = state.engine.clone();
    let view =
        tokio::task::spawn_blocking(move || engine.add_silence(&new, &by, now_ms())).await??;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireParams {
    #[serde(default)]
    by: Option<String>,
}

/// `DELETE /api/v1/silences/{id}?by=NAME`: expires it now (it stays listed).
pub async fn expire(
    State(state): State<AppState>,
    Path(id): Path<String>,
    identity: Option<Extension<Identity>>,
    params: Result<axum::extract::Query<ExpireParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SilenceView>, ApiError> {
    let axum::extract::Query(p) = params?;
    let by = actor(identity.as_deref(), p.by.as_deref(), "by")?;
    let engine = state.engine.clone();
    let view =
        tokio::task::spawn_blocking(move || engine.expire_silence(&id, &by, now_ms())).await??;
    Ok(Json(view))
}
