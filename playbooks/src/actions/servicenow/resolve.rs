//! `servicenow.resolve`: resolves the incident's ticket: state "6" with
//! `close_code` and `close_notes` (ServiceNow's resolution data policy
//! requires both). The ticket is the active one with the run's
//! correlation_id (or the one named by `sys_id`). When no active ticket has
//! the correlation_id there is nothing to resolve (never opened, or already
//! resolved by an earlier attempt whose answer was lost): the step succeeds
//! with `resolved: false`. Idempotent.

use serde_json::{Map, Value, json};

use super::super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
    required_text,
};
use super::{Target, client, failed, ticket_output};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "close_code",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "close_notes",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "sys_id",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "correlation_id",
        required: false,
        kind: ParamKind::String,
    },
];

pub struct Resolve;

impl Action for Resolve {
    fn name(&self) -> &'static str {
        "servicenow.resolve"
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
        env: &dyn Env,
        params: &Map<String, Value>,
        ctx: &StepContext,
    ) -> Result<Vec<Planned>, ActionError> {
        let code = required_text(params, "close_code")?;
        let notes = required_text(params, "close_notes")?;
        let client = client(env)?;
        Target::of(params, ctx).plan(client, |sys_id| client.plan_resolve(sys_id, &code, &notes))
    }

    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let code = required_text(params, "close_code")?;
            let notes = required_text(params, "close_notes")?;
            let client = client(env)?;
            let target = Target::of(params, ctx);
            let Some(sys_id) = target.resolve(client).await? else {
                return Ok(ActionOutput {
                    result: json!({
                        "resolved": false,
                        "reason": format!("no active ServiceNow incident with {}: nothing to resolve", target.describe()),
                    }),
                    ticket: None,
                });
            };
            let ticket = client
                .resolve(&sys_id, &code, &notes)
                .await
                .map_err(failed)?;
            Ok(ticket_output(
                ticket,
                json!({"resolved": true, "close_code": code}),
            ))
        })
    }
}
