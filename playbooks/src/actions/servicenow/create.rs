//! `servicenow.create`: open (or find) the ServiceNow incident for this
//! incident. The correlation_id is our incident id (or the run's id for a
//! scheduled run), so a retried or repeated step finds the existing ticket
//! instead of opening a second one: idempotent. When the ticket exists,
//! `work_notes` are appended to it.

use std::collections::BTreeMap;

use fincorp_integrations::servicenow::NewIncident;
use serde_json::{Map, Value, json};

use super::super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
};
use super::{client, correlation_id, failed, text, ticket_output};

const LEVELS: &[&str] = &["1", "2", "3"];

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "short_description",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "description",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "urgency",
        required: false,
        kind: ParamKind::OneOf(LEVELS),
    },
    ParamSpec {
        name: "impact",
        required: false,
        kind: ParamKind::OneOf(LEVELS),
    },
    ParamSpec {
        name: "work_notes",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "fields",
        required: false,
        kind: ParamKind::StringMap,
    },
    ParamSpec {
        name: "correlation_id",
        required: false,
        kind: ParamKind::String,
    },
];

pub struct Create;

/// The request `servicenow.create` makes, from rendered parameters.
pub fn new_incident(params: &Map<String, Value>, correlation_id: &str) -> NewIncident {
    let extra: BTreeMap<String, String> = params
        .get("fields")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    NewIncident {
        correlation_id: correlation_id.to_owned(),
        short_description: text(params, "short_description").unwrap_or_default(),
        description: text(params, "description"),
        urgency: text(params, "urgency"),
        impact: text(params, "impact"),
        work_notes: text(params, "work_notes"),
        extra,
    }
}

fn request(
    env: &dyn Env,
    params: &Map<String, Value>,
    ctx: &StepContext,
) -> Result<NewIncident, ActionError> {
    let client = client(env)?;
    let mut request = new_incident(params, &correlation_id(params, ctx));
    // Per-app fields from the config (assignment group, CI, ...); what the
    // playbook sets explicitly wins.
    if let Some(app) = &ctx.app {
        request = client.incident_for_app(app, &request);
    }
    request.validate().map_err(failed)?;
    Ok(request)
}

impl Action for Create {
    fn name(&self) -> &'static str {
        "servicenow.create"
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
        let request = request(env, params, ctx)?;
        Ok(client(env)?
            .plan_ensure(&request)
            .into_iter()
            .map(|request| Planned::Http { request })
            .collect())
    }

    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let request = request(env, params, ctx)?;
            let ensured = client(env)?
                .ensure_incident(&request)
                .await
                .map_err(failed)?;
            Ok(ticket_output(
                ensured.ticket,
                json!({"created": ensured.created}),
            ))
        })
    }
}
