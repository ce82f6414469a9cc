//! `vsphere.reallocate`: more CPU cores or memory for a VM, through vCenter
//! (CPU/memory hot-add), as the `reallocate` action does for a cgroup.
//!
//! The VM is named as in vCenter. The new size is given one way: `to` (the
//! exact count or MiB), `add` (cores or MiB more), or `increase_pct`
//! (rounded up to what the VM accepts: a multiple of its cores per socket;
//! for memory, of its hot-add increment, else 4 MiB). The vSphere client
//! reads the VM and checks the hot-add rules (multiple of cores per socket,
//! hot-add enabled while running, no online decrease) before it sends the
//! `PATCH`; a refused change sends nothing.
//!
//! Not idempotent: a relative change repeated after a lost answer would add
//! twice, so a step interrupted mid-flight is not resumed into it. Not
//! reversible either: FINCORP never removes CPUs or memory from a running
//! VM, so a playbook using it needs an approval.

use fincorp_integrations::vsphere::{
    ErrorType, Resource, VmInfo, VsphereClient, VsphereError, validate_cpu_count,
    validate_memory_mib,
};
use serde_json::{Map, Value, json};

use super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
    as_f64, required_text,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "vm",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "resource",
        required: true,
        kind: ParamKind::OneOf(&["cpu", "memory"]),
    },
    ParamSpec {
        name: "to",
        required: false,
        kind: ParamKind::Number,
    },
    ParamSpec {
        name: "add",
        required: false,
        kind: ParamKind::Number,
    },
    ParamSpec {
        name: "increase_pct",
        required: false,
        kind: ParamKind::Number,
    },
    // The guest's host name as its agent reports it, and the app: only for
    // the guardrails (max_hosts, causal attribution of later alerts).
    ParamSpec {
        name: "host",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "app",
        required: false,
        kind: ParamKind::String,
    },
];

pub struct Reallocate;

/// The vCenter client, or why there is none.
pub(crate) fn client(env: &dyn Env) -> Result<&VsphereClient, ActionError> {
    env.vsphere().ok_or_else(|| {
        ActionError::Unavailable("vSphere is not configured (integrations.vsphere)".into())
    })
}

/// A vSphere failure as a step failure: what trying again cannot fix
/// (refused by the rules, no such VM, a request vCenter calls invalid) is a
/// refusal; the rest may pass on a retry.
pub(crate) fn action_error(e: VsphereError) -> ActionError {
    let permanent = match &e {
        VsphereError::Refused { .. }
        | VsphereError::VmNotFound { .. }
        | VsphereError::AmbiguousVm { .. }
        | VsphereError::InvalidInput { .. }
        | VsphereError::Config(_) => true,
        VsphereError::Api { error_type, .. } => matches!(
            error_type,
            ErrorType::InvalidArgument
                | ErrorType::NotFound
                | ErrorType::NotAllowedInCurrentState
                | ErrorType::Unauthorized
                | ErrorType::Unsupported
                | ErrorType::OperationNotFound
        ),
        _ => false,
    };
    if permanent {
        ActionError::Refused(e.to_string())
    } else {
        ActionError::Failed(e.to_string())
    }
}

/// How the new size is given.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    To(u64),
    Add(u64),
    IncreasePct(f64),
}

struct Request {
    vm: String,
    resource: Resource,
    change: Change,
}

fn whole(params: &Map<String, Value>, key: &str) -> Result<Option<u64>, ActionError> {
    let Some(v) = params.get(key) else {
        return Ok(None);
    };
    let n = as_f64(v).unwrap_or(f64::NAN);
    if !(n.is_finite() && n >= 1.0 && n.fract() == 0.0 && n <= u64::MAX as f64) {
        return Err(ActionError::InvalidParams(format!(
            "`{key}` must be a whole number above 0, not {v}"
        )));
    }
    Ok(Some(n as u64))
}

impl Request {
    fn parse(params: &Map<String, Value>) -> Result<Self, ActionError> {
        let vm = required_text(params, "vm")?;
        let resource = match params.get("resource").and_then(Value::as_str) {
            Some("memory") => Resource::Memory,
            _ => Resource::Cpu,
        };
        let to = whole(params, "to")?;
        let add = whole(params, "add")?;
        let pct = match params.get("increase_pct") {
            None => None,
            Some(v) => {
                let p = as_f64(v).unwrap_or(f64::NAN);
                if !(p > 0.0 && p.is_finite() && p <= 1000.0) {
                    return Err(ActionError::InvalidParams(format!(
                        "`increase_pct` must be above 0 and at most 1000, not {v}"
                    )));
                }
                Some(p)
            }
        };
        let change = match (to, add, pct) {
            (Some(n), None, None) => Change::To(n),
            (None, Some(n), None) => Change::Add(n),
            (None, None, Some(p)) => Change::IncreasePct(p),
            _ => {
                return Err(ActionError::InvalidParams(
                    "give exactly one of `to`, `add` and `increase_pct`".into(),
                ));
            }
        };
        if let Change::To(n) = change {
            let checked = match resource {
                Resource::Cpu => u32::try_from(n)
                    .map_err(|_| format!("{n} CPU cores is out of range"))
                    .and_then(validate_cpu_count),
                Resource::Memory => validate_memory_mib(n),
            };
            checked.map_err(|reason| ActionError::Refused(format!("`to`: {reason}")))?;
        }
        Ok(Request {
            vm,
            resource,
            change,
        })
    }

    /// The new size for a VM that reads back as `info`.
    fn target(&self, info: &VmInfo) -> u64 {
        let (current, step) = match self.resource {
            Resource::Cpu => (
                u64::from(info.cpu.count),
                u64::from(info.cpu.cores_per_socket.max(1)),
            ),
            Resource::Memory => (
                info.memory.size_mib,
                info.memory
                    .hot_add_increment_size_mib
                    .filter(|s| *s > 0)
                    .unwrap_or(4),
            ),
        };
        match self.change {
            Change::To(n) => n,
            Change::Add(n) => current.saturating_add(n),
            Change::IncreasePct(p) => {
                let wanted = (current as f64 * (1.0 + p / 100.0)).ceil() as u64;
                // Above the current size (p > 0), so the rounded one is too.
                wanted.max(current + 1).div_ceil(step).saturating_mul(step)
            }
        }
    }

    /// The new size as a plan shows it: exact for `to`, else how it will be
    /// derived from the VM's current size.
    fn planned_size(&self) -> Value {
        let (unit, step) = match self.resource {
            Resource::Cpu => ("cores", "a multiple of its cores per socket"),
            Resource::Memory => ("MiB", "a multiple of its hot-add increment (else of 4 MiB)"),
        };
        match self.change {
            Change::To(n) => json!(n),
            Change::Add(n) => json!(format!("<current {unit} + {n}>")),
            Change::IncreasePct(p) => {
                json!(format!("<current {unit} + {p}%, rounded up to {step}>"))
            }
        }
    }
}

impl Action for Reallocate {
    fn name(&self) -> &'static str {
        "vsphere.reallocate"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn mutating(&self) -> bool {
        true
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn reversible(&self) -> bool {
        false
    }

    fn plan(
        &self,
        env: &dyn Env,
        params: &Map<String, Value>,
        _ctx: &StepContext,
    ) -> Result<Vec<Planned>, ActionError> {
        let request = Request::parse(params)?;
        let vc = client(env)?;
        let mut plan = vec![Planned::Http {
            request: vc.plan_login(),
        }];
        plan.extend(
            vc.plan_hardware_named(&request.vm, request.resource, request.planned_size())
                .map_err(action_error)?
                .into_iter()
                .map(|request| Planned::Http { request }),
        );
        Ok(plan)
    }

    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        _ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let request = Request::parse(params)?;
            let vc = client(env)?;
            let found = vc.find_vm(&request.vm).await.map_err(action_error)?;
            let target = match request.change {
                Change::To(n) => n,
                _ => request.target(&vc.vm(&found.vm).await.map_err(action_error)?),
            };
            let change = match request.resource {
                Resource::Cpu => {
                    let count = u32::try_from(target).map_err(|_| {
                        ActionError::Refused(format!("{target} CPU cores is out of range"))
                    })?;
                    vc.set_cpu_count(&found.vm, count).await
                }
                Resource::Memory => vc.set_memory_mib(&found.vm, target).await,
            }
            .map_err(action_error)?;
            Ok(ActionOutput {
                result: json!({
                    "vm": request.vm,
                    "vm_id": change.vm,
                    "power_state": found.power_state,
                    "resource": change.resource,
                    "unit": match change.resource {
                        Resource::Cpu => "cores",
                        Resource::Memory => "MiB",
                    },
                    "before": change.before,
                    "after": change.after,
                    "applied": change.applied,
                }),
                ticket: None,
            })
        })
    }
}

#[cfg(test)]
mod tests;
