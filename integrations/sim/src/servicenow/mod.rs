//! A ServiceNow simulator: an in-memory instance that answers the calls
//! FINCORP makes (Table API, Event Management, OAuth) the way ServiceNow
//! documents them, plus fault injection for client tests.
//!
//! # Simulated
//!
//! - **Authentication** for one configured user on every `/api/*` request:
//!   basic auth, or `Authorization: Bearer <access token>` from
//!   `/oauth_token.do`. Missing or wrong credentials, or an unknown, revoked
//!   or expired token → 401
//!   `{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}`
//!   with `WWW-Authenticate: BASIC realm="Service-now"`.
//! - **OAuth** (`POST /oauth_token.do`, once an application is registered
//!   with [`SimState::enable_oauth`] or `--oauth-client-id`), following
//!   "OAuth API request parameters": `application/x-www-form-urlencoded`
//!   with `grant_type=password` (`username`, `password`) or
//!   `grant_type=refresh_token` (`refresh_token`), and `client_id` +
//!   `client_secret` → 200 `{"access_token", "refresh_token", "scope":
//!   "useraccount", "token_type": "Bearer", "expires_in"}`. A password grant
//!   issues a new access and refresh token; a refresh grant a new access
//!   token and the same refresh token. Lifetimes are configurable
//!   ([`OAuthApp`]; ServiceNow's defaults are 1,800 s and 100 days). A wrong
//!   client, wrong user credentials, or an unknown/expired refresh token →
//!   401 `{"error_description":"access_denied","error":"server_error"}`, as
//!   instances answer. A missing or unsupported `grant_type`, or a body that
//!   is not form-encoded → 400 in RFC 6749's `{"error",
//!   "error_description"}` shape (ServiceNow documents no shape for these).
//! - **Event Management** `POST /api/global/em/jsonv2` with `{"records":
//!   [...]}`, following "Pushing events to the instance using web service
//!   API": each record is stored in `em_event` with every value as text
//!   (an object sent as `additional_info` is stored as its JSON text), plus
//!   `sys_id`, `state` "Ready", `sys_created_on`, `sys_created_by`. The
//!   answer is 200 `{"result": {"Default Bulk Endpoint": "N events were
//!   inserted"}}`, what instances send (ServiceNow's page shows no response;
//!   this shape is the one observed by integrations such as Kibana's ITOM
//!   connector). A body without a `records` array, or a record that is not
//!   an object → 400 "Exception while reading request".
//! - **Tables** `incident` (read/write), `sys_journal_field` and `em_event`
//!   (read-only; writes → 403 ACL exception). Any other table → 400
//!   `Invalid table <name>`.
//! - `POST /api/now/table/incident` → 201 `{"result": record}` plus a
//!   `Location` header. The record has a 32-hex `sys_id`, a sequential
//!   `number` from `INC0010001`, `state` "1", `active` "true", `impact` and
//!   `urgency` "3" unless given, `opened_at`/`sys_created_on`/`sys_updated_on`
//!   as `YYYY-MM-DD HH:MM:SS` UTC, `sys_created_by`/`sys_updated_by`,
//!   `sys_mod_count`, and every field sent. All values are strings: numbers
//!   and booleans in the body are stored as their text, `null` as "".
//! - `priority` is derived from impact × urgency by ServiceNow's default
//!   lookup (1/1 → 1 … 3/3 → 5) on every write.
//! - `GET /api/now/table/{table}` with `sysparm_query` (see [`query`]:
//!   `^`, `^^`, `=`, `!=`, `LIKE`, `NOT LIKE`, `STARTSWITH`, `ENDSWITH`,
//!   `ISEMPTY`, `ISNOTEMPTY`, `ORDERBY`, `ORDERBYDESC`), `sysparm_limit`,
//!   `sysparm_offset`, `sysparm_fields`, `sysparm_display_value` → 200
//!   `{"result": [...]}` with `X-Total-Count`.
//! - `GET /api/now/table/{table}/{sys_id}` → 200, or 404
//!   `{"error":{"message":"No Record found","detail":"Record doesn't exist or ACL restricts the record retrieval"},"status":"failure"}`.
//! - `PATCH` and `PUT /api/now/table/incident/{sys_id}` update the fields
//!   given (both are partial updates in the Table API).
//! - **Journal fields** `work_notes` and `comments`: a non-empty write
//!   appends an entry (author, time, text) to `sys_journal_field`; reading an
//!   incident returns "" for them unless `sysparm_display_value=true|all`,
//!   which returns the entries newest first as
//!   `"2026-11-22 10:00:00 - fincorp-operator (Work notes)\n<text>\n\n"`.
//!   `GET /api/now/table/sys_journal_field?sysparm_query=element_id=<sys_id>^element=work_notes`
//!   returns the rows (`sys_id`, `name`, `element_id`, `element`, `value`,
//!   `sys_created_on`, `sys_created_by`).
//! - **Display values** for the choice fields `state`, `impact`, `urgency`
//!   and `priority` ("Resolved", "1 - High", "1 - Critical", ...).
//! - **Resolution**: state "6" (Resolved) or "7" (Closed) without both
//!   `close_code` and `close_notes` → 403 "Operation Failed" with a
//!   "Data Policy Exception" detail naming the missing fields, and nothing is
//!   written. State 6/7 sets `active` "false" and `resolved_at` (7 also
//!   `closed_at`); 8 (Canceled) sets `active` "false"; any other state
//!   reopens and clears both timestamps.
//! - Malformed JSON, or a body that is not an object → 400 "Exception while
//!   reading request". Bodies over 2 MiB → 413.
//!
//! # Not simulated
//!
//! Other OAuth grants (client credentials, authorization code), token
//! revocation endpoints, Event Management processing (rules, alerts,
//! de-duplication; events stay "Ready"), ACLs and roles (e.g.
//! `evt_mgmt_integration`), other tables, DELETE,
//! `/api/now/v1|v2/` paths, reference fields and `sysparm_exclude_reference_link`
//! (accepted, no effect), dot-walking, `^OR`/`^NQ` and comparison operators
//! in queries (refused with 400 where ServiceNow would silently ignore
//! them), case-insensitive `=` (here `=` is exact; `LIKE`, `STARTSWITH`,
//! `ENDSWITH` ignore case), user display names in journal entries (the user
//! name is shown), business rules beyond those above, pagination `Link`
//! headers, and real rate limiting. Writes to `sys_*` fields, `number`,
//! `active`, `priority` and `opened_at` are ignored (the instance computes
//! them); so are field names that are not lowercase `[a-z0-9_]`. Rows come
//! back in insertion order unless `ORDERBY` says otherwise.
//!
//! # Simulator endpoints (not ServiceNow)
//!
//! - `GET /sim/health` → `{"status":"ok","incidents":N}`, no auth.
//! - `GET /sim/em/events` → `{"result": [events]}`, the stored `em_event`
//!   records, no auth ([`SimState::events`] in-process).
//! - `GET /sim/faults` shows, and `POST /sim/faults` replaces, the pending
//!   [`Faults`], no auth. Example:
//!   `{"rate_limit_next": 2, "retry_after_s": 1, "fail_next_5xx": 1, "fail_status": 503, "hibernate": true, "delay_ms": 0, "path_prefix": "/oauth_token.do"}`.
//!   Order of effects per request: hibernation (200 HTML, before auth, on
//!   every vendor path including `/oauth_token.do`), then authentication
//!   (not on `/oauth_token.do`), then one pending 429, else one pending 5xx
//!   (503 carries `Retry-After`), both only for paths starting with
//!   `path_prefix` if set, else the request is served; finally the response
//!   is delayed by `delay_ms` (for `delay_next` responses, or all; only for
//!   `delay_method` requests if set), after the request was applied, so a
//!   client that times out has lost the answer to a write that happened.
//!   Unknown keys → 400.
//! - In-process only: [`SimState::revoke_access_tokens`],
//!   [`SimState::revoke_refresh_tokens`] and [`SimState::set_password`]
//!   make tokens or credentials stop working, as an administrator could.

mod em;
pub mod error;
pub(crate) mod gate;
mod oauth;
pub mod query;
pub mod state;
mod table;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;

pub use error::ApiError;
pub use query::{EncodedQuery, QueryError};
pub use state::{Faults, OAuthApp, Record, RecordedRequest, SimState};

/// The simulator's HTTP routes: the Table API, Event Management, the OAuth
/// token endpoint and `/sim/*`.
pub fn router(state: SimState) -> Router {
    let vendor = Router::new()
        .route(
            "/api/now/table/{table}",
            get(table::list).post(table::create),
        )
        .route(
            "/api/now/table/{table}/{sys_id}",
            get(table::read).patch(table::update).put(table::update),
        )
        .route("/api/global/em/jsonv2", post(em::insert))
        .route(gate::TOKEN_PATH, post(oauth::token))
        .route_layer(from_fn_with_state(state.clone(), gate::gate));
    Router::new()
        .merge(vendor)
        .route("/sim/health", get(health))
        .route("/sim/em/events", get(sim_events))
        .route("/sim/faults", get(get_faults).post(set_faults))
        .fallback(not_found)
        .with_state(state)
}

/// Serves the simulator on `listener` until `shutdown` completes, then
/// finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: SimState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A simulator running in this process, for tests. Stops when dropped.
#[derive(Debug)]
pub struct RunningSim {
    pub addr: SocketAddr,
    pub state: SimState,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSim {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the simulator on 127.0.0.1 on a free port, in this runtime.
pub async fn spawn(state: SimState) -> std::io::Result<RunningSim> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = router(state.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "servicenow simulator stopped");
        }
    });
    Ok(RunningSim { addr, state, task })
}

async fn health(State(state): State<SimState>) -> Json<serde_json::Value> {
    let incidents = state.lock().incidents.len();
    Json(json!({ "status": "ok", "incidents": incidents }))
}

async fn sim_events(State(state): State<SimState>) -> Json<serde_json::Value> {
    Json(json!({ "result": state.events() }))
}

async fn get_faults(State(state): State<SimState>) -> Json<Faults> {
    Json(state.faults())
}

async fn set_faults(State(state): State<SimState>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return ApiError::bad_request_body(format!("invalid faults: {e}")).into_response();
        }
    };
    if !(500..=599).contains(&faults.fail_status) {
        return ApiError::bad_request_body(format!(
            "fail_status must be 500..=599, got {}",
            faults.fail_status
        ))
        .into_response();
    }
    tracing::info!(?faults, "servicenow simulator faults set");
    state.set_faults(faults.clone());
    Json(faults).into_response()
}

async fn not_found() -> Response {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "Requested URI does not represent any resource",
        None,
    )
    .into_response()
}
