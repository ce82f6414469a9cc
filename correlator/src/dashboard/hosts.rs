//! `GET /api/v1/hosts` (viewer): every host whose agent has reported, with
//! its last-seen time, host figures and each app's health, from the latest
//! samples the correlator keeps in memory.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::api::AppState;
use crate::samples::{HostStatus, STALE_MS};

/// The answer of `GET /api/v1/hosts`.
#[derive(Debug, Serialize)]
pub struct HostList {
    /// Sorted by host name.
    pub hosts: Vec<HostStatus>,
    /// A host not heard from for this long is `stale`.
    pub stale_after_ms: i64,
}

/// `GET /api/v1/hosts`
pub async fn hosts(State(state): State<AppState>) -> Json<HostList> {
    Json(HostList {
        hosts: state.samples.statuses(fincorp_api::now_ms()),
        stale_after_ms: STALE_MS,
    })
}
