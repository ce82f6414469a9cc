//! The vSphere Automation API handlers: sessions, VM list and details,
//! power, and CPU/memory updates with vSphere's documented rules.

use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::VapiError;
use super::gate::SessionId;
use super::inventory::{MAX_CPU_COUNT, MAX_MEMORY_MIB, PowerState, Vm};
use super::state::{SimState, Store};
use crate::servicenow::gate::basic_credentials;

type ApiResult<T> = Result<T, VapiError>;

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `POST /api/session` with basic auth → 201 and the session id as a JSON
/// string.
pub(crate) async fn create_session(State(state): State<SimState>, headers: HeaderMap) -> Response {
    match basic_credentials(&headers) {
        Some((user, password)) if state.authenticates(&user, &password) => {
            let id = state.create_session(&user);
            tracing::info!(%user, "vsphere session created");
            (StatusCode::CREATED, Json(Value::String(id))).into_response()
        }
        _ => VapiError::unauthenticated().into_response(),
    }
}

/// `DELETE /api/session` → 204.
pub(crate) async fn delete_session(
    State(state): State<SimState>,
    Extension(SessionId(id)): Extension<SessionId>,
) -> StatusCode {
    state.delete_session(&id);
    StatusCode::NO_CONTENT
}

/// `GET /api/session` → the session's user and times.
pub(crate) async fn get_session(
    State(state): State<SimState>,
    Extension(SessionId(id)): Extension<SessionId>,
) -> ApiResult<Json<Value>> {
    let store = state.lock();
    let session = store
        .sessions
        .get(&id)
        .ok_or_else(VapiError::unauthenticated)?;
    Ok(Json(json!({
        "user": session.user,
        "created_time": rfc3339(session.created),
        "last_accessed_time": rfc3339(session.last_used_wall),
    })))
}

fn summary(v: &Vm) -> Value {
    json!({
        "vm": v.vm,
        "name": v.name,
        "power_state": v.power_state.as_str(),
        "cpu_count": v.cpu_count,
        "memory_size_MiB": v.memory_mib,
    })
}

fn cpu_info(v: &Vm) -> Value {
    json!({
        "count": v.cpu_count,
        "cores_per_socket": v.cores_per_socket,
        "hot_add_enabled": v.cpu_hot_add_enabled,
        "hot_remove_enabled": v.cpu_hot_remove_enabled,
    })
}

/// `Memory.Info`: the increment and limit are only set while the VM runs
/// with hot-add enabled, as documented.
fn memory_info(v: &Vm) -> Value {
    let mut info = json!({
        "size_MiB": v.memory_mib,
        "hot_add_enabled": v.memory_hot_add_enabled,
    });
    if v.memory_hot_add_enabled && v.power_state == PowerState::PoweredOn {
        if let Some(step) = v.memory_hot_add_increment_mib {
            info["hot_add_increment_size_MiB"] = json!(step);
        }
        if let Some(limit) = v.memory_hot_add_limit_mib {
            info["hot_add_limit_MiB"] = json!(limit);
        }
    }
    info
}

fn vm_info(v: &Vm) -> Value {
    json!({
        "name": v.name,
        "power_state": v.power_state.as_str(),
        "guest_OS": v.guest_os,
        "hardware": {"version": "VMX_19", "upgrade_policy": "NEVER", "upgrade_status": "NONE"},
        "cpu": cpu_info(v),
        "memory": memory_info(v),
        "boot": {"type": "BIOS", "delay": 0, "retry": false, "retry_delay": 10000, "enter_setup_mode": false},
        "boot_devices": [],
        "disks": {},
        "nics": {},
        "cdroms": {},
        "floppies": {},
        "parallel_ports": {},
        "serial_ports": {},
        "sata_adapters": {},
        "scsi_adapters": {},
    })
}

/// The VM with this id, unless its host is failed.
fn accessible<'a>(store: &'a mut Store, vm: &str) -> ApiResult<&'a mut Vm> {
    let failed = store.faults.failed_hosts.clone();
    let v = store
        .vms
        .iter_mut()
        .find(|v| v.vm == vm)
        .ok_or_else(|| VapiError::vm_not_found(vm))?;
    if failed.contains(&v.host) {
        return Err(VapiError::host_not_responding(&v.host, &v.vm, &v.name));
    }
    Ok(v)
}

/// The list filters the simulator supports (`hosts` takes host names
/// here; vCenter takes host ids).
const FILTERS: &[&str] = &["vms", "names", "power_states", "hosts"];

/// `GET /api/vcenter/vm` with optional `vms`, `names`, `power_states`,
/// `hosts` filters (each repeatable; a VM must match every filter given).
pub(crate) async fn list_vms(
    State(state): State<SimState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    if let Some((key, _)) = pairs.iter().find(|(k, _)| !FILTERS.contains(&k.as_str())) {
        return Err(VapiError::invalid_argument(format!(
            "The filter '{key}' is not supported by the simulator (supported: {}).",
            FILTERS.join(", ")
        )));
    }
    let wanted = |key: &str| -> Vec<&str> {
        pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let power_states: Vec<PowerState> = wanted("power_states")
        .into_iter()
        .map(|s| {
            serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
                VapiError::invalid_argument(format!("'{s}' is not a valid power state."))
            })
        })
        .collect::<ApiResult<_>>()?;
    let (ids, names, hosts) = (wanted("vms"), wanted("names"), wanted("hosts"));
    let store = state.lock();
    let rows: Vec<Value> = store
        .vms
        .iter()
        .filter(|v| ids.is_empty() || ids.contains(&v.vm.as_str()))
        .filter(|v| names.is_empty() || names.contains(&v.name.as_str()))
        .filter(|v| hosts.is_empty() || hosts.contains(&v.host.as_str()))
        .filter(|v| power_states.is_empty() || power_states.contains(&v.power_state))
        .map(summary)
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// `GET /api/vcenter/vm/{vm}`.
pub(crate) async fn get_vm(
    State(state): State<SimState>,
    Path(vm): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut store = state.lock();
    Ok(Json(vm_info(accessible(&mut store, &vm)?)))
}

/// `GET /api/vcenter/vm/{vm}/power` → `{state}` (+ `clean_power_off` when
/// off).
pub(crate) async fn get_power(
    State(state): State<SimState>,
    Path(vm): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut store = state.lock();
    let v = accessible(&mut store, &vm)?;
    let mut info = json!({ "state": v.power_state.as_str() });
    if v.power_state == PowerState::PoweredOff {
        info["clean_power_off"] = json!(true);
    }
    Ok(Json(info))
}

/// `POST /api/vcenter/vm/{vm}/power?action=start|stop|reset|suspend` → 204.
pub(crate) async fn post_power(
    State(state): State<SimState>,
    Path(vm): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<StatusCode> {
    let action = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "action")
        .map(|(_, v)| v.into_owned());
    let action = match action.as_deref() {
        Some(a @ ("start" | "stop" | "reset" | "suspend")) => a.to_owned(),
        _ => return Err(VapiError::operation_not_found()),
    };
    let busy = state.take_busy();
    let mut store = state.lock();
    let fail_power_on = store.faults.fail_power_on.clone();
    let v = accessible(&mut store, &vm)?;
    if busy {
        return Err(VapiError::resource_busy(&v.vm));
    }
    use PowerState::{PoweredOff, PoweredOn, Suspended};
    let next = match (action.as_str(), v.power_state) {
        ("start", PoweredOn) => {
            return Err(VapiError::already_in_desired_state(
                "Virtual machine is already powered on.",
            ));
        }
        ("start", _) => {
            if fail_power_on.iter().any(|n| *n == v.name || *n == v.vm) {
                return Err(VapiError::unable_to_allocate(&v.vm, &v.name));
            }
            PoweredOn
        }
        ("stop", PoweredOff) => {
            return Err(VapiError::already_in_desired_state(
                "Virtual machine is already powered off.",
            ));
        }
        ("stop", _) => PoweredOff,
        ("reset", PoweredOn) => PoweredOn,
        ("suspend", Suspended) => {
            return Err(VapiError::already_in_desired_state(
                "Virtual machine is already suspended.",
            ));
        }
        ("suspend", PoweredOn) => Suspended,
        (op, state) => {
            return Err(VapiError::not_allowed(format!(
                "The operation '{op}' is not allowed in the current state ({}).",
                state.as_str()
            )));
        }
    };
    let before = v.power_state;
    v.power_state = next;
    tracing::info!(vm = %v.vm, name = %v.name, action = %action, from = before.as_str(), to = next.as_str(), "vsphere power operation");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/vcenter/vm/{vm}/hardware/cpu`.
pub(crate) async fn get_cpu(
    State(state): State<SimState>,
    Path(vm): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut store = state.lock();
    Ok(Json(cpu_info(accessible(&mut store, &vm)?)))
}

/// `GET /api/vcenter/vm/{vm}/hardware/memory`.
pub(crate) async fn get_memory(
    State(state): State<SimState>,
    Path(vm): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut store = state.lock();
    Ok(Json(memory_info(accessible(&mut store, &vm)?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CpuUpdate {
    count: Option<i64>,
    cores_per_socket: Option<i64>,
    hot_add_enabled: Option<bool>,
    hot_remove_enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryUpdate {
    #[serde(rename = "size_MiB")]
    size_mib: Option<i64>,
    hot_add_enabled: Option<bool>,
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| VapiError::invalid_request(format!("The request body is invalid: {e}")))
}

/// `PATCH /api/vcenter/vm/{vm}/hardware/cpu` → 204, with the rules of
/// `Cpu.UpdateSpec`: the count a multiple of cores per socket; while the
/// VM runs, more cores only with `hot_add_enabled`, fewer only with
/// `hot_remove_enabled`, and the hot-add/remove flags and cores per socket
/// fixed. A suspended VM cannot be changed.
pub(crate) async fn patch_cpu(
    State(state): State<SimState>,
    Path(vm): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let update: CpuUpdate = parse_body(&body)?;
    let busy = state.take_busy();
    let mut store = state.lock();
    let v = accessible(&mut store, &vm)?;
    if busy {
        return Err(VapiError::resource_busy(&v.vm));
    }
    let count = update.count.unwrap_or(i64::from(v.cpu_count));
    let per_socket = update
        .cores_per_socket
        .unwrap_or(i64::from(v.cores_per_socket));
    let count = u32::try_from(count)
        .ok()
        .filter(|c| (1..=MAX_CPU_COUNT).contains(c))
        .ok_or_else(|| {
            VapiError::invalid_argument(format!(
                "The number of CPU cores must be between 1 and {MAX_CPU_COUNT}, not {count}."
            ))
        })?;
    let per_socket = u32::try_from(per_socket)
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(|| {
            VapiError::invalid_argument(format!(
                "The number of cores per socket must be at least 1, not {per_socket}."
            ))
        })?;
    if count % per_socket != 0 {
        return Err(VapiError::invalid_argument(format!(
            "The number of CPU cores ({count}) must be a multiple of the number of cores per socket ({per_socket})."
        )));
    }
    let flags_change = update
        .hot_add_enabled
        .is_some_and(|f| f != v.cpu_hot_add_enabled)
        || update
            .hot_remove_enabled
            .is_some_and(|f| f != v.cpu_hot_remove_enabled);
    match v.power_state {
        PowerState::PoweredOff => {}
        PowerState::Suspended => {
            if count != v.cpu_count || per_socket != v.cores_per_socket || flags_change {
                return Err(VapiError::not_allowed(
                    "The CPU configuration of a suspended virtual machine cannot be changed.",
                ));
            }
        }
        PowerState::PoweredOn => {
            if flags_change || per_socket != v.cores_per_socket {
                return Err(VapiError::not_allowed(
                    "CPU hot-add/hot-remove settings and cores per socket may only be changed while the virtual machine is powered off.",
                ));
            }
            if count > v.cpu_count && !v.cpu_hot_add_enabled {
                return Err(VapiError::not_allowed(format!(
                    "CPU hot-add is not enabled on virtual machine '{}'; cannot go from {} to {count} cores while it is powered on.",
                    v.name, v.cpu_count
                )));
            }
            if count < v.cpu_count && !v.cpu_hot_remove_enabled {
                return Err(VapiError::not_allowed(format!(
                    "CPU hot-remove is not enabled on virtual machine '{}'; cannot go from {} to {count} cores while it is powered on.",
                    v.name, v.cpu_count
                )));
            }
        }
    }
    let before = v.cpu_count;
    v.cpu_count = count;
    v.cores_per_socket = per_socket;
    if let Some(f) = update.hot_add_enabled {
        v.cpu_hot_add_enabled = f;
    }
    if let Some(f) = update.hot_remove_enabled {
        v.cpu_hot_remove_enabled = f;
    }
    tracing::info!(vm = %v.vm, name = %v.name, before, after = count, "vsphere cpu updated");
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /api/vcenter/vm/{vm}/hardware/memory` → 204, with the rules of
/// `Memory.UpdateSpec`: a positive multiple of 4 MiB; while the VM runs,
/// only growth, only with `hot_add_enabled`, by at least
/// `hot_add_increment_size_MiB` to a multiple of it, up to
/// `hot_add_limit_MiB`, and `hot_add_enabled` fixed. A suspended VM cannot
/// be changed.
pub(crate) async fn patch_memory(
    State(state): State<SimState>,
    Path(vm): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let update: MemoryUpdate = parse_body(&body)?;
    let busy = state.take_busy();
    let mut store = state.lock();
    let v = accessible(&mut store, &vm)?;
    if busy {
        return Err(VapiError::resource_busy(&v.vm));
    }
    let size = update
        .size_mib
        .unwrap_or(i64::try_from(v.memory_mib).unwrap_or(i64::MAX));
    let size = u64::try_from(size)
        .ok()
        .filter(|s| (4..=MAX_MEMORY_MIB).contains(s) && s % 4 == 0)
        .ok_or_else(|| {
            VapiError::invalid_argument(format!(
                "The memory size must be a multiple of 4 MiB between 4 and {MAX_MEMORY_MIB} MiB, not {size}."
            ))
        })?;
    let flag_change = update
        .hot_add_enabled
        .is_some_and(|f| f != v.memory_hot_add_enabled);
    match v.power_state {
        PowerState::PoweredOff => {}
        PowerState::Suspended => {
            if size != v.memory_mib || flag_change {
                return Err(VapiError::not_allowed(
                    "The memory configuration of a suspended virtual machine cannot be changed.",
                ));
            }
        }
        PowerState::PoweredOn => {
            if flag_change {
                return Err(VapiError::not_allowed(
                    "Memory hot-add may only be enabled or disabled while the virtual machine is powered off.",
                ));
            }
            if size != v.memory_mib && !v.memory_hot_add_enabled {
                return Err(VapiError::not_allowed(format!(
                    "Memory hot-add is not enabled on virtual machine '{}'; cannot change its memory while it is powered on.",
                    v.name
                )));
            }
            if size < v.memory_mib {
                return Err(VapiError::not_allowed(format!(
                    "Memory cannot be removed from virtual machine '{}' while it is powered on.",
                    v.name
                )));
            }
            if size > v.memory_mib {
                let added = size - v.memory_mib;
                if let Some(step) = v
                    .memory_hot_add_increment_mib
                    .filter(|s| *s > 0 && (added < *s || size % *s != 0))
                {
                    return Err(VapiError::invalid_argument(format!(
                        "Memory must be hot-added in increments of {step} MiB, to a multiple of {step} MiB."
                    )));
                }
                if let Some(limit) = v.memory_hot_add_limit_mib.filter(|l| size > *l) {
                    return Err(VapiError::invalid_argument(format!(
                        "The memory size of a running virtual machine cannot exceed {limit} MiB."
                    )));
                }
            }
        }
    }
    let before = v.memory_mib;
    v.memory_mib = size;
    if let Some(f) = update.hot_add_enabled {
        v.memory_hot_add_enabled = f;
    }
    tracing::info!(vm = %v.vm, name = %v.name, before, after = size, "vsphere memory updated");
    Ok(StatusCode::NO_CONTENT)
}
