//! `reallocate`: raise an app's CPU or memory allocation on a host by a
//! percentage. The correlator sends a signed command to that host's agent,
//! which rewrites the app's cgroup (or unit) limit and reports the before and
//! after values. Idempotent: the command id is the step's idempotency key,
//! and the agent answers a repeat from its journal.

use std::time::Duration;

use fincorp_api::wire::{Command, CommandAction, CommandDetail, CommandOutcome, Resource};
use serde_json::{Map, Value, json};

use super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
    as_f64, required_text,
};

pub struct Reallocate;

const PARAMS: &[ParamSpec] = &[
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
        kind: ParamKind::OneOf(&["cpu", "memory"]),
    },
    ParamSpec {
        name: "increase_pct",
        required: true,
        kind: ParamKind::Number,
    },
];

/// The command a step sends, from its rendered parameters.
pub(crate) fn command(params: &Map<String, Value>) -> Result<(String, CommandAction), ActionError> {
    let host = required_text(params, "host")?;
    let app = required_text(params, "app")?;
    let increase_pct = params
        .get("increase_pct")
        .and_then(as_f64)
        .unwrap_or(f64::NAN);
    if !(increase_pct > 0.0 && increase_pct.is_finite()) {
        return Err(ActionError::InvalidParams(format!(
            "`increase_pct` must be above 0, not {increase_pct}"
        )));
    }
    let resource = match params.get("resource").and_then(Value::as_str) {
        Some("memory") => Resource::Memory,
        _ => Resource::Cpu,
    };
    Ok((
        host,
        CommandAction::Reallocate {
            app,
            resource,
            increase_pct,
        },
    ))
}

/// How a planned agent command is shown: the command as signed, with the
/// times it would carry left symbolic.
pub(crate) fn planned_command(
    host: String,
    id: &str,
    action: CommandAction,
    timeout: Duration,
) -> Planned {
    let cmd = Command {
        id: id.to_owned(),
        host: host.clone(),
        issued_at_ms: 0,
        expires_at_ms: 0,
        action,
    };
    let mut value = serde_json::to_value(cmd).expect("commands serialise");
    value["issued_at_ms"] = json!("<send time>");
    value["expires_at_ms"] = json!(format!("<send time + {}ms>", timeout.as_millis()));
    Planned::AgentCommand {
        host,
        command: value,
    }
}

impl Action for Reallocate {
    fn name(&self) -> &'static str {
        "reallocate"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn mutating(&self) -> bool {
        true
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn plan(
        &self,
        _env: &dyn Env,
        params: &Map<String, Value>,
        ctx: &StepContext,
    ) -> Result<Vec<Planned>, ActionError> {
        let (host, action) = command(params)?;
        Ok(vec![planned_command(
            host,
            &ctx.idempotency_key,
            action,
            ctx.timeout,
        )])
    }

    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let (host, action) = command(params)?;
            let increase_pct = match &action {
                CommandAction::Reallocate { increase_pct, .. } => *increase_pct,
                _ => unreachable!("built above"),
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
            let mut out = match result.detail {
                Some(CommandDetail::Reallocate {
                    app,
                    cgroup,
                    cgroup_version,
                    file,
                    before,
                    after,
                }) => json!({
                    "app": app, "cgroup": cgroup, "cgroup_version": cgroup_version, "file": file,
                    "before": before.to_string(), "after": after.to_string(),
                    "before_limit": before, "after_limit": after,
                    "before_cores": before.cores(), "after_cores": after.cores(),
                }),
                Some(CommandDetail::Limits {
                    app,
                    backend,
                    target,
                    before,
                    after,
                }) => json!({
                    "app": app, "backend": backend, "target": target,
                    "before": serde_json::to_string(&before).unwrap_or_default(),
                    "after": serde_json::to_string(&after).unwrap_or_default(),
                    "before_limit": before, "after_limit": after,
                }),
                _ => {
                    return Err(ActionError::Failed(format!(
                        "agent on {host} applied the change but sent no before/after state"
                    )));
                }
            };
            out["host"] = json!(host);
            out["increase_pct"] = json!(increase_pct);
            out["applied_at_ms"] = json!(result.finished_at_ms);
            out["message"] = json!(result.message);
            Ok(ActionOutput {
                result: out,
                ticket: None,
            })
        })
    }
}
