//! vSphere Automation REST client (`/api`, vSphere 7.0 U2 and later):
//! finds VMs by name, powers them on and off, and changes their CPU count
//! and memory within the hot-add rules.
//!
//! | what | request | plan |
//! |---|---|---|
//! | log in | `POST /api/session` (basic auth) → 201 `"<session id>"` | [`VsphereClient::plan_login`] |
//! | log out | `DELETE /api/session` → 204 | |
//! | find a VM | `GET /api/vcenter/vm?names=NAME` → `[{vm, name, power_state, cpu_count, memory_size_MiB}]` | [`VsphereClient::plan_find_vm`] |
//! | VM details | `GET /api/vcenter/vm/{vm}` → `{name, power_state, cpu: {...}, memory: {...}, ...}` | [`VsphereClient::plan_vm`] |
//! | power state | `GET /api/vcenter/vm/{vm}/power` → `{state}` | |
//! | power | `POST /api/vcenter/vm/{vm}/power?action=start\|stop\|reset\|suspend` → 204 | [`VsphereClient::plan_power`] |
//! | CPU | `PATCH /api/vcenter/vm/{vm}/hardware/cpu {"count": N}` → 204 | [`VsphereClient::plan_set_cpu_count`] |
//! | memory | `PATCH /api/vcenter/vm/{vm}/hardware/memory {"size_MiB": M}` → 204 | [`VsphereClient::plan_set_memory_mib`] |
//!
//! Dry runs of actions that name a VM rather than its id use
//! [`VsphereClient::plan_power_named`] and
//! [`VsphereClient::plan_hardware_named`]: the lookup by name, then the
//! call with the id shown as `{id of NAME}`.
//!
//! Every call after login carries the `vmware-api-session-id` header. The
//! session is shared by a client's clones, created on first use, and
//! re-created once when vCenter answers 401 (an idle session expires).
//!
//! **Three faces per action.** Checks without IO ([`validate_cpu_count`],
//! [`validate_memory_mib`], [`check_cpu`], [`check_memory`]), plans of the
//! exact requests (session id and credentials redacted), and the calls,
//! which build each request from the same value as its plan. A CPU or
//! memory change reads the VM, applies the [`rules`] and only then sends the
//! PATCH: a refused change ([`VsphereError::Refused`]) sends nothing.
//!
//! **Errors.** vSphere's error body `{"error_type", "messages": [{"id",
//! "default_message", "args"}]}` becomes [`VsphereError::Api`] with a typed
//! [`ErrorType`]. `ALREADY_IN_DESIRED_STATE` on a power operation is
//! success. `SERVICE_UNAVAILABLE`, `RESOURCE_BUSY`, any 5xx and 429 are
//! retried (429/503 after `Retry-After`), transport errors too
//! ([`RetryPolicy`](crate::retry::RetryPolicy)).
//!
//! Not implemented: TLS settings beyond the system roots, VM lookup by
//! folder or datacenter, tasks, guest operations.

mod client;
mod error;
pub mod rules;
mod types;

#[cfg(test)]
mod tests;

pub use crate::plan::PlannedRequest;
pub use client::{SESSION_HEADER, VsphereClient, vm_id_placeholder};
pub use error::{ErrorType, VsphereError};
pub use rules::{check_cpu, check_memory, validate_cpu_count, validate_memory_mib};
pub use types::{
    CpuInfo, HardwareChange, MemoryInfo, PowerAction, PowerOutcome, PowerState, Resource, VmInfo,
    VmSummary, VsphereConfig,
};
