//! `servicenow.update`: appends `work_notes` to the incident's ticket and
//! sets its `state` ("1" New, "2" In Progress, "3" On Hold) and other
//! `fields`, in one PATCH. The ticket is the active one with the run's
//! correlation_id (or the one named by `sys_id`); with none, the step fails
//! (retryable: a `servicenow.create` of another run may be opening it).
//! Not idempotent: the Table API has no idempotency key for writes, so a
//! repeat appends the work note again.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
};
use super::{Target, client, failed, text, ticket_output};

/// States an update may set; resolving (6) is `servicenow.resolve`'s, with
/// the close code and notes ServiceNow requires.
const STATES: &[&str] = &["1", "2", "3"];

/// Fields an update may not set through `fields`.
const RESERVED: &[&str] = &[
    "sys_id",
    "number",
    "correlation_id",
    "active",
    "state",
    "work_notes",
    "close_code",
    "close_notes",
];

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "work_notes",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "state",
        required: false,
        kind: ParamKind::OneOf(STATES),
    },
    ParamSpec {
        name: "fields",
        required: false,
        kind: ParamKind::StringMap,
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

pub struct Update;

/// The fields the PATCH sets, from rendered parameters.
pub(crate) fn fields(params: &Map<String, Value>) -> Result<BTreeMap<String, String>, ActionError> {
    let mut fields = BTreeMap::new();
    if let Some(extra) = params.get("fields").and_then(Value::as_object) {
        for (k, v) in extra {
            let column = k.starts_with(|c: char| c.is_ascii_lowercase())
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !column {
                return Err(ActionError::InvalidParams(format!(
                    "`fields`: {k:?} is not a ServiceNow field name (lowercase a-z, 0-9, _)"
                )));
            }
            if RESERVED.contains(&k.as_str()) {
                return Err(ActionError::InvalidParams(format!(
                    "`fields` may not set {k} (use work_notes, state or servicenow.resolve)"
                )));
            }
            if let Some(v) = v.as_str() {
                fields.insert(k.clone(), v.to_owned());
            }
        }
    }
    if let Some(notes) = text(params, "work_notes") {
        fields.insert("work_notes".into(), notes);
    }
    if let Some(state) = text(params, "state") {
        fields.insert("state".into(), state);
    }
    if fields.is_empty() {
        return Err(ActionError::InvalidParams(
            "nothing to update: give work_notes, state or fields".into(),
        ));
    }
    Ok(fields)
}

impl Action for Update {
    fn name(&self) -> &'static str {
        "servicenow.update"
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

    fn plan(
        &self,
        env: &dyn Env,
        params: &Map<String, Value>,
        ctx: &StepContext,
    ) -> Result<Vec<Planned>, ActionError> {
        let fields = fields(params)?;
        let client = client(env)?;
        Target::of(params, ctx).plan(client, |sys_id| client.plan_update(sys_id, &fields))
    }

    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let fields = fields(params)?;
            let client = client(env)?;
            let target = Target::of(params, ctx);
            let Some(sys_id) = target.resolve(client).await? else {
                return Err(ActionError::Failed(format!(
                    "no active ServiceNow incident with {} (servicenow.create opens it)",
                    target.describe()
                )));
            };
            let ticket = client.update(&sys_id, &fields).await.map_err(failed)?;
            let updated: Vec<&String> = fields.keys().collect();
            Ok(ticket_output(ticket, json!({"updated": updated})))
        })
    }
}
