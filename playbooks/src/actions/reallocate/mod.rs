//! `reallocate`: raise an app's CPU allocation on a host by a percentage. The
//! correlator sends a signed command to that host's agent, which rewrites the
//! app's cgroup quota and reports the before and after values.

use fincorp_api::wire::{CommandAction, CommandDetail, CommandOutcome, Resource};
use serde_json::{Map, Value, json};

use super::{ActionError, ActionOutput, Env, ParamKind, ParamSpec, StepContext, as_f64, as_text};

pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "host",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "app",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "resource",
        required: true,
        kind: ParamKind::OneOf(&["cpu"]),
    },
    ParamSpec {
        name: "increase_pct",
        required: true,
        kind: ParamKind::Number,
    },
];

pub(crate) async fn execute<E: Env>(
    env: &E,
    params: &Map<String, Value>,
    ctx: &StepContext,
) -> Result<ActionOutput, ActionError> {
    let text = |k: &str| params.get(k).and_then(as_text).unwrap_or_default();
    let (host, app) = (text("host"), text("app"));
    let increase_pct = params
        .get("increase_pct")
        .and_then(as_f64)
        .unwrap_or(f64::NAN);
    if host.is_empty() || app.is_empty() {
        return Err(ActionError::InvalidParams(
            "`host` and `app` must not be empty".into(),
        ));
    }
    if !(increase_pct > 0.0 && increase_pct.is_finite()) {
        return Err(ActionError::InvalidParams(format!(
            "`increase_pct` must be above 0, not {increase_pct}"
        )));
    }
    let action = CommandAction::Reallocate {
        app: app.clone(),
        resource: Resource::Cpu,
        increase_pct,
    };
    let result = env
        .agent_command(&host, &ctx.idempotency_key, action, ctx.timeout)
        .await
        .map_err(ActionError::Failed)?;
    match result.outcome {
        CommandOutcome::Applied => {}
        CommandOutcome::Refused => {
            return Err(ActionError::Refused(format!(
                "agent on {host}: {}",
                result.message
            )));
        }
        CommandOutcome::Failed => {
            return Err(ActionError::Failed(format!(
                "agent on {host}: {}",
                result.message
            )));
        }
    }
    let Some(CommandDetail::Reallocate {
        app,
        cgroup,
        cgroup_version,
        file,
        before,
        after,
    }) = result.detail
    else {
        return Err(ActionError::Failed(format!(
            "agent on {host} applied the change but sent no before/after state"
        )));
    };
    Ok(ActionOutput {
        result: json!({
            "host": host,
            "app": app,
            "increase_pct": increase_pct,
            "cgroup": cgroup,
            "cgroup_version": cgroup_version,
            "file": file,
            "before": before.to_string(),
            "after": after.to_string(),
            "before_limit": before,
            "after_limit": after,
            "before_cores": before.cores(),
            "after_cores": after.cores(),
            "applied_at_ms": result.finished_at_ms,
            "message": result.message,
        }),
        ticket: None,
    })
}
