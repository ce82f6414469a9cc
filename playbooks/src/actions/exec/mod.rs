//! `exec`: runs a script from the agent's allowlist directory on a host,
//! with arguments and a timeout. The agent refuses anything else. Idempotent
//! by command id (the agent's journal), but its effect cannot be undone.

use std::time::Duration;

use fincorp_api::wire::{CommandAction, CommandDetail, CommandOutcome};
use serde_json::{Map, Value, json};

use super::reallocate::planned_command;
use super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
    as_duration_ms, required_text,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "host",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "script",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "args",
        required: false,
        kind: ParamKind::Strings,
    },
    ParamSpec {
        name: "timeout",
        required: false,
        kind: ParamKind::Duration,
    },
];

pub struct Exec;

fn command(params: &Map<String, Value>) -> Result<(String, CommandAction), ActionError> {
    let host = required_text(params, "host")?;
    let script = required_text(params, "script")?;
    if script.contains('/') || script.starts_with('.') {
        return Err(ActionError::InvalidParams(format!(
            "`script` is a file name in the agent's allowlist, not a path: {script:?}"
        )));
    }
    let args = params
        .get("args")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let timeout_ms = as_duration_ms(params.get("timeout")).map(|t| t.max(1) as u64);
    Ok((
        host,
        CommandAction::RunScript {
            script,
            args,
            timeout_ms,
        },
    ))
}

impl Action for Exec {
    fn name(&self) -> &'static str {
        "exec"
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

    fn reversible(&self) -> bool {
        false
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
            // The agent's own timeout applies inside; allow it to report back.
            let wait = ctx.timeout.max(Duration::from_secs(5));
            let result = env
                .agent_command(&host, &ctx.idempotency_key, action, wait)
                .await
                .map_err(ActionError::Failed)?;
            script_result(&host, result).map(|result| ActionOutput {
                result,
                ticket: None,
            })
        })
    }
}

/// What a script command's answer means: its exit, output and timing on
/// success (exit 0), else why it failed or was refused.
pub(crate) fn script_result(
    host: &str,
    result: fincorp_api::wire::CommandResult,
) -> Result<Value, ActionError> {
    match (result.outcome, result.detail) {
        (
            CommandOutcome::Applied,
            Some(CommandDetail::Script {
                script,
                exit_code,
                timed_out,
                duration_ms,
                stdout,
                stderr,
            }),
        ) => {
            if exit_code == Some(0) {
                Ok(
                    json!({"host": host, "script": script, "exit_code": exit_code, "timed_out": timed_out,
                          "duration_ms": duration_ms, "stdout": stdout, "stderr": stderr}),
                )
            } else {
                Err(ActionError::Failed(format!(
                    "{script} on {host} exited with {exit_code:?} (timed out: {timed_out}): {}",
                    stderr.trim()
                )))
            }
        }
        (CommandOutcome::Refused, _) => Err(ActionError::Refused(format!(
            "agent on {host}: {}",
            result.message
        ))),
        (_, _) => Err(ActionError::Failed(format!(
            "agent on {host}: {}",
            result.message
        ))),
    }
}
