//! `servicenow.create`: open (or find) the ServiceNow incident for this
//! incident. The correlation_id is our incident id, so a retried or repeated
//! step finds the existing ticket instead of opening a second one.

use std::collections::BTreeMap;

use fincorp_integrations::servicenow::NewIncident;
use serde_json::{Map, Value, json};

use super::{
    ActionError, ActionOutput, Env, ParamKind, ParamSpec, StepContext, TicketRef, as_text,
};

const LEVELS: &[&str] = &["1", "2", "3"];

pub const CREATE_PARAMS: &[ParamSpec] = &[
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
];

/// The request `servicenow.create` makes, from rendered parameters.
pub fn new_incident(params: &Map<String, Value>, incident_id: &str) -> NewIncident {
    let text = |k: &str| params.get(k).and_then(as_text).filter(|s| !s.is_empty());
    NewIncident {
        correlation_id: incident_id.to_owned(),
        short_description: text("short_description").unwrap_or_default(),
        description: text("description"),
        urgency: text("urgency"),
        impact: text("impact"),
        work_notes: text("work_notes"),
        extra: BTreeMap::new(),
    }
}

pub(crate) async fn create<E: Env>(
    env: &E,
    params: &Map<String, Value>,
    ctx: &StepContext,
) -> Result<ActionOutput, ActionError> {
    let client = env.servicenow().ok_or_else(|| {
        ActionError::Unavailable("ServiceNow is not configured (integrations.servicenow)".into())
    })?;
    let mut request = new_incident(params, &ctx.incident_id);
    // Per-app fields from the config (assignment group, CI, ...); what the
    // playbook sets explicitly wins.
    if let Some(app) = &ctx.app {
        request = client.incident_for_app(app, &request);
    }
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
            "correlation_id": ctx.incident_id,
        }),
        ticket: Some(TicketRef {
            system: "servicenow".into(),
            sys_id: t.sys_id,
            number: t.number,
        }),
    })
}
