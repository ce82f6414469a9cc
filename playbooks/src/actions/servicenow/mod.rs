//! `servicenow.create`: open (or find) the ServiceNow incident for this
//! incident. The correlation_id is our incident id (or the run's key for a
//! scheduled run), so a retried or repeated step finds the existing ticket
//! instead of opening a second one: idempotent.

use std::collections::BTreeMap;

use fincorp_integrations::servicenow::NewIncident;
use serde_json::{Map, Value, json};

use super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
    TicketRef, as_text,
};

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
];

pub struct Create;

/// The correlation id of a step's ticket: the incident, else the run.
fn correlation_id(ctx: &StepContext) -> String {
    ctx.incident_id
        .clone()
        .unwrap_or_else(|| ctx.run_id.clone())
}

/// The request `servicenow.create` makes, from rendered parameters.
pub fn new_incident(params: &Map<String, Value>, correlation_id: &str) -> NewIncident {
    let text = |k: &str| params.get(k).and_then(as_text).filter(|s| !s.is_empty());
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
        short_description: text("short_description").unwrap_or_default(),
        description: text("description"),
        urgency: text("urgency"),
        impact: text("impact"),
        work_notes: text("work_notes"),
        extra,
    }
}

fn request(
    env: &dyn Env,
    params: &Map<String, Value>,
    ctx: &StepContext,
) -> Result<NewIncident, ActionError> {
    let client = env.servicenow().ok_or_else(|| {
        ActionError::Unavailable("ServiceNow is not configured (integrations.servicenow)".into())
    })?;
    let mut request = new_incident(params, &correlation_id(ctx));
    // Per-app fields from the config (assignment group, CI, ...); what the
    // playbook sets explicitly wins.
    if let Some(app) = &ctx.app {
        request = client.incident_for_app(app, &request);
    }
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
        let client = env.servicenow().expect("checked by request()");
        Ok(client
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
            let client = env.servicenow().expect("checked by request()");
            let ensured = client
                .ensure_incident(&request)
                .await
                .map_err(|e| ActionError::Failed(format!("ServiceNow: {e}")))?;
            let t = ensured.ticket;
            Ok(ActionOutput {
                result: json!({
                    "sys_id": t.sys_id,
                    "number": t.number,
                    "state": t.state,
                    "created": ensured.created,
                    "correlation_id": request.correlation_id,
                }),
                ticket: Some(TicketRef {
                    system: "servicenow".into(),
                    sys_id: t.sys_id,
                    number: t.number,
                }),
            })
        })
    }
}
