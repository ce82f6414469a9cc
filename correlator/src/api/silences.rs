//! Silence endpoints: create, list, show, expire.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fincorp_api::now_ms;
use fincorp_api::rest::{NewSilence, SilenceList, SilenceView};
use serde::Deserialize;

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
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Result<(StatusCode, Json<SilenceView>), ApiError> {
    let Json(new) = body?;
    let by = match new.created_by.as_deref().map(str::trim) {
        Some(by) if !by.is_empty() && by.len() <= 128 => by.to_owned(),
        _ => {
            return Err(ApiError::BadRequest(
                "created_by: say who you are (1 to 128 characters)".into(),
            ));
        }
    };
    let engine = state.engine.clone();
    let view =
        tokio::task::spawn_blocking(move || engine.add_silence(&new, &by, now_ms())).await??;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireParams {
    by: String,
}

/// `DELETE /api/v1/silences/{id}?by=NAME`: expires it now (it stays listed).
pub async fn expire(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<axum::extract::Query<ExpireParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SilenceView>, ApiError> {
    let axum::extract::Query(p) = params?;
    if p.by.trim().is_empty() {
        return Err(ApiError::BadRequest("by: say who you are".into()));
    }
    let engine = state.engine.clone();
    let view =
        tokio::task::spawn_blocking(move || engine.expire_silence(&id, &p.by, now_ms())).await??;
    Ok(Json(view))
}
