//! `approval`: waits for an operator to approve (`fincorpctl runs approve`
//! or `POST /api/v1/runs/{id}/approve`). A rejection refuses the step; no
//! decision within `timeout` fails it, so by default nothing further is done.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
    as_duration_ms, required_text,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "prompt",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "timeout",
        required: false,
        kind: ParamKind::Duration,
    },
];

/// How long an approval waits by default.
pub const DEFAULT_TIMEOUT_MS: i64 = 15 * 60_000;

pub struct ApprovalAction;

fn timeout(params: &Map<String, Value>) -> Duration {
    Duration::from_millis(
        as_duration_ms(params.get("timeout"))
            .unwrap_or(DEFAULT_TIMEOUT_MS)
            .max(1) as u64,
    )
}

impl Action for ApprovalAction {
    fn name(&self) -> &'static str {
        "approval"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn mutating(&self) -> bool {
        false
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn plan(
        &self,
        _env: &dyn Env,
        params: &Map<String, Value>,
        _ctx: &StepContext,
    ) -> Result<Vec<Planned>, ActionError> {
        Ok(vec![Planned::Approval {
            prompt: required_text(params, "prompt")?,
            timeout_ms: timeout(params).as_millis() as i64,
        }])
    }

    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let prompt = required_text(params, "prompt")?;
            let t = timeout(params);
            match env
                .await_approval(&ctx.run_id, &ctx.step_id, &prompt, t)
                .await
                .map_err(ActionError::Failed)?
            {
                Some(d) if d.approved => Ok(ActionOutput {
                    result: json!({"approved": true, "by": d.by, "reason": d.reason}),
                    ticket: None,
                }),
                Some(d) => Err(ActionError::Refused(format!(
                    "rejected by {}: {}",
                    d.by, d.reason
                ))),
                None => Err(ActionError::Refused(format!(
                    "no decision within {}s; nothing further is done",
                    t.as_secs()
                ))),
            }
        })
    }
}
