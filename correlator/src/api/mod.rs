//! The REST API under `/api/v1`, plus `/healthz` and `/metrics`.
//!
//! [`router`] builds the whole app from an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` and no socket. Agent endpoints verify the
//! HMAC signature before they parse anything; a rejected request stores
//! nothing.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use fincorp_api::signing::{RequestSignature, Verifier};

use crate::automation::Automation;
use crate::commands::CommandBus;
use crate::engine::Engine;
use crate::ingest::alertmanager::Mapping;
use crate::samples::Samples;

mod agent;
mod audit;
pub mod auth;
mod automation;
mod error;
mod incidents;
mod ingest;
mod runs;
mod silences;

pub use error::ApiError;

/// Largest accepted request body: 1 MiB. Larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Everything the handlers share, behind one `Arc`: axum clones the state
/// for the middleware and again for the handler of every request, and one
/// shared counter costs less than one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// Changes the state before it is shared (tests).
    #[cfg(test)]
    pub(crate) fn unshared_mut(&mut self) -> &mut Shared {
        Arc::get_mut(&mut self.0).expect("the state is not shared yet")
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub engine: Arc<Engine>,
    pub verifier: Arc<Verifier>,
    pub bus: Arc<CommandBus>,
    pub automation: Arc<Automation>,
    /// The latest agent samples per host.
    pub samples: Arc<Samples>,
    /// Predictive analytics: sees every agent sample.
    pub predict: Arc<crate::predict::Predict>,
    /// API bearer tokens (hashes); empty: the API is open (loopback only).
    pub tokens: Arc<Vec<auth::Token>>,
    pub alertmanager: Arc<Mapping>,
    /// Flips to true at shutdown so long polls return early.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    /// Checks a signed request; returns the key id it was signed with.
    fn authenticate(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<String, ApiError> {
        let sig =
            RequestSignature::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
                .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        self.verifier
            .verify_request(method, path, &sig, body, fincorp_api::now_ms())
            .map_err(|e| {
                tracing::warn!(key_id = %sig.key_id, path, reason = %e, "rejected signed request");
                ApiError::Unauthorized(e.to_string())
            })
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    state.predict.export_metrics();
    let openmetrics = state
        .engine
        .metrics
        .render(state.engine.queue_depth(), state.bus.waiting());
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = fincorp_api::exposition::negotiate(accept, openmetrics);
    ([(header::CONTENT_TYPE, content_type)], body)
}

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(fincorp_api::wire::INGEST_AGENT_PATH, post(agent::ingest))
        .route(fincorp_api::wire::COMMAND_POLL_PATH, post(agent::poll))
        .route(fincorp_api::wire::COMMAND_RESULT_PATH, post(agent::result))
        .route("/api/v1/ingest/events", post(ingest::events))
        .route("/api/v1/ingest/alertmanager", post(ingest::alertmanager))
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::show))
        .route("/api/v1/incidents/{id}/ack", post(incidents::ack))
        .route("/api/v1/incidents/{id}/resolve", post(incidents::resolve))
        .route("/api/v1/incidents/{id}/close", post(incidents::close))
        .route(
            "/api/v1/silences",
            get(silences::list).post(silences::create),
        )
        .route(
            "/api/v1/silences/{id}",
            get(silences::show).delete(silences::expire),
        )
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v1/runs/{id}", get(runs::show))
        .route("/api/v1/runs/{id}/approve", post(runs::approve))
        .route("/api/v1/runs/{id}/reject", post(runs::reject))
        .route("/api/v1/automation", get(automation::status))
        .route(
            "/api/v1/automation/kill-switch",
            get(automation::kill_switch).post(automation::set_kill_switch),
        )
        .route(
            "/api/v1/automation/breakers/{key}/reset",
            post(automation::reset_breaker),
        )
        .route("/api/v1/playbooks", get(automation::playbooks))
        .route("/api/v1/playbooks/reload", post(automation::reload))
        .route("/api/v1/playbooks/{name}/plan", post(automation::plan))
        .route("/api/v1/playbooks/{name}/run", post(automation::run))
        .route("/api/v1/hosts", get(crate::dashboard::hosts))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(crate::dashboard::routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[cfg(test)]
pub(crate) mod tests;
