//! A vSphere Automation REST simulator (`/api`, vSphere 7.0 U2 and later):
//! an in-memory vCenter with an inventory of VMs, answering the calls
//! FINCORP makes the way the vSphere Automation API documents them, plus
//! fault injection for client tests.
//!
//! # Simulated
//!
//! - **Sessions.** `POST /api/session` with basic auth for the one
//!   configured user → 201 and the session id as a JSON string; wrong or
//!   missing credentials → 401 `UNAUTHENTICATED`. Every other `/api/*` call
//!   needs `vmware-api-session-id: <id>`; missing, unknown or expired → 401
//!   `{"error_type":"UNAUTHENTICATED","messages":[{"args":[],"default_message":"Authentication required.","id":"com.vmware.vapi.endpoint.method.authentication.required"}]}`.
//!   A session expires after it has been idle for the configured time (30
//!   minutes by default, like vCenter's; [`SimState::set_session_idle_timeout`],
//!   `--session-idle-timeout`). `GET /api/session` → `{user, created_time,
//!   last_accessed_time}`; `DELETE /api/session` → 204.
//! - **VMs.** `GET /api/vcenter/vm` → `[{vm, name, power_state, cpu_count,
//!   memory_size_MiB}]`, filtered by `vms`, `names`, `power_states`,
//!   `hosts` (each repeatable; `hosts` takes host names here, where vCenter
//!   takes host ids; any other filter → 400 `INVALID_ARGUMENT`, where
//!   vCenter supports more). `GET /api/vcenter/vm/{vm}` → `{name,
//!   power_state, guest_OS, hardware, cpu: {count, cores_per_socket,
//!   hot_add_enabled, hot_remove_enabled}, memory: {size_MiB,
//!   hot_add_enabled, hot_add_increment_size_MiB, hot_add_limit_MiB}, boot,
//!   and empty device maps}`; the memory increment and limit are only set
//!   while the VM runs with hot-add enabled, as documented. Unknown id → 404
//!   `NOT_FOUND`.
//! - **Power.** `GET .../power` → `{state}` (+ `clean_power_off` when off).
//!   `POST .../power?action=start|stop|reset|suspend` → 204. `start` on a
//!   running VM, `stop` on an off one, `suspend` on a suspended one → 400
//!   `ALREADY_IN_DESIRED_STATE`; `reset`/`suspend` of a VM that is not on →
//!   400 `NOT_ALLOWED_IN_CURRENT_STATE`; `start` resumes a suspended VM;
//!   `stop` powers off a suspended one; a missing or unknown action → 404
//!   `OPERATION_NOT_FOUND`.
//! - **Hardware.** `GET`/`PATCH .../hardware/cpu` (`{count,
//!   cores_per_socket, hot_add_enabled, hot_remove_enabled}`) and
//!   `.../hardware/memory` (`{size_MiB, hot_add_enabled}`) → 204, following
//!   `Cpu.UpdateSpec`/`Memory.UpdateSpec`: the count a multiple of cores per
//!   socket (else 400 `INVALID_ARGUMENT`); while the VM runs, more cores only
//!   with CPU hot-add, fewer only with CPU hot-remove, memory only up, only
//!   with memory hot-add, by at least the increment to a multiple of it, up
//!   to the limit; hot-add flags and cores per socket fixed (else 400
//!   `NOT_ALLOWED_IN_CURRENT_STATE`, or `INVALID_ARGUMENT` for the increment
//!   and limit); memory a multiple of 4 MiB. A suspended VM cannot be
//!   changed (the simulator's choice: vCenter refuses to reconfigure a
//!   suspended VM). A body that is not the spec's JSON (unknown fields
//!   included) → 400 `INVALID_REQUEST`.
//! - **Errors** have vAPI's shape and status map (see [`error`]).
//!
//! # Not simulated
//!
//! Basic auth on calls other than login, SAML tokens, the `/rest` API,
//! tasks and events, folders, datacenters, clusters and resource pools,
//! VM creation and deletion, guest operations and VMware Tools, devices,
//! privileges (`UNAUTHORIZED`), the 4,000-VM list limit, and real time for
//! power operations (they complete at once).
//!
//! # Simulator endpoints (not vSphere)
//!
//! - `GET /sim/health` → `{"status":"ok","vms":N,"sessions":N}`, no auth.
//! - `GET /sim/vms` → the inventory with its current state, no auth.
//! - `GET /sim/faults` shows, and `POST /sim/faults` replaces, the pending
//!   [`Faults`], no auth. Example:
//!   `{"rate_limit_next": 1, "retry_after_s": 1, "fail_next_5xx": 2, "fail_status": 503, "busy_next": 1, "failed_hosts": ["esx-ny-01"], "fail_power_on": ["core-standby-london"], "delay_ms": 0, "path_prefix": "/api/vcenter"}`.
//!   Order per request: one pending 429 (`Retry-After`), else one pending
//!   5xx (503 `SERVICE_UNAVAILABLE` with `Retry-After`, other statuses
//!   `INTERNAL_SERVER_ERROR`), both before the session check and only for
//!   paths starting with `path_prefix` if set; then the session check; then
//!   the handler, where a per-VM call on a VM of a failed host → 400
//!   `RESOURCE_INACCESSIBLE` ("Host ... is not responding"), a power or
//!   hardware change consumes one `busy_next` → 400 `RESOURCE_BUSY`, and a
//!   `start` of a VM named (or id'd) in `fail_power_on` → 400
//!   `UNABLE_TO_ALLOCATE_RESOURCE`; finally the response is delayed by
//!   `delay_ms` (for `delay_next` responses, or all), after the request was
//!   applied. Unknown keys → 400.
//! - In-process only: [`SimState::expire_sessions`] ends every session.

mod api;
pub mod error;
mod gate;
pub mod inventory;
pub mod state;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

pub use error::VapiError;
pub use inventory::{Inventory, PowerState, Vm};
pub use state::{DEFAULT_SESSION_IDLE_TIMEOUT, Faults, RecordedRequest, SimState};

/// The simulator's HTTP routes: the vSphere Automation API and `/sim/*`.
pub fn router(state: SimState) -> Router {
    let vendor = Router::new()
        .route(
            "/api/session",
            get(api::get_session)
                .post(api::create_session)
                .delete(api::delete_session),
        )
        .route("/api/vcenter/vm", get(api::list_vms))
        .route("/api/vcenter/vm/{vm}", get(api::get_vm))
        .route(
            "/api/vcenter/vm/{vm}/power",
            get(api::get_power).post(api::post_power),
        )
        .route(
            "/api/vcenter/vm/{vm}/hardware/cpu",
            get(api::get_cpu).patch(api::patch_cpu),
        )
        .route(
            "/api/vcenter/vm/{vm}/hardware/memory",
            get(api::get_memory).patch(api::patch_memory),
        )
        .route_layer(from_fn_with_state(state.clone(), gate::gate));
    Router::new()
        .merge(vendor)
        .route("/sim/health", get(health))
        .route("/sim/vms", get(sim_vms))
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
            tracing::error!(error = %e, "vsphere simulator stopped");
        }
    });
    Ok(RunningSim { addr, state, task })
}

async fn health(State(state): State<SimState>) -> Json<serde_json::Value> {
    let vms = state.vms().len();
    let sessions = state.live_sessions();
    Json(json!({ "status": "ok", "vms": vms, "sessions": sessions }))
}

async fn sim_vms(State(state): State<SimState>) -> Json<Inventory> {
    Json(Inventory { vms: state.vms() })
}

async fn get_faults(State(state): State<SimState>) -> Json<Faults> {
    Json(state.faults())
}

async fn set_faults(State(state): State<SimState>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return VapiError::invalid_request(format!("invalid faults: {e}")).into_response();
        }
    };
    if !(500..=599).contains(&faults.fail_status) {
        return VapiError::invalid_argument(format!(
            "fail_status must be 500..=599, got {}",
            faults.fail_status
        ))
        .into_response();
    }
    tracing::info!(?faults, "vsphere simulator faults set");
    state.set_faults(faults.clone());
    Json(faults).into_response()
}

async fn not_found() -> Response {
    VapiError::operation_not_found().into_response()
}
