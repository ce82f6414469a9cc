//! `servicenow.event`: sends one event to ServiceNow Event Management
//! (`POST /api/global/em/jsonv2`), e.g. to raise or clear an alert there
//! alongside (or instead of) a ticket. Its `message_key` defaults to the
//! run's correlation_id (the incident id), so the events of one incident
//! update one Event Management alert and severity `clear` closes it; a
//! repeat is de-duplicated there by that key: idempotent. Informational,
//! like `notify`, so not counted as mutating.

use fincorp_integrations::servicenow::{EmEvent, EventSeverity};
use serde_json::{Map, Value, json};

use super::super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
    required_text,
};
use super::{client, correlation_id, failed, text};

/// The `source` of our events unless the playbook says otherwise.
const SOURCE: &str = "FINCORP";

const SEVERITIES: &[&str] = &[
    "0", "1", "2", "3", "4", "5", "clear", "critical", "major", "minor", "warning", "ok",
];

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "node",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "severity",
        required: true,
        kind: ParamKind::OneOf(SEVERITIES),
    },
    ParamSpec {
        name: "type",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "resource",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "metric_name",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "description",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "message_key",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "source",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "event_class",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "additional_info",
        required: false,
        kind: ParamKind::Any,
    },
    ParamSpec {
        name: "correlation_id",
        required: false,
        kind: ParamKind::String,
    },
];

pub struct Event;

/// The event a step sends at `now_ms`, from rendered parameters. Our
/// incident and run ids are added to `additional_info`.
pub fn em_event(
    params: &Map<String, Value>,
    ctx: &StepContext,
    now_ms: i64,
) -> Result<EmEvent, ActionError> {
    let severity: EventSeverity = required_text(params, "severity")?
        .parse()
        .map_err(|e| ActionError::InvalidParams(format!("{e}")))?;
    let mut additional_info = match params.get("additional_info") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(ActionError::InvalidParams(format!(
                "`additional_info` must be a mapping, not {other}"
            )));
        }
    };
    if let Some(incident) = &ctx.incident_id {
        additional_info.insert("fincorp_incident".into(), json!(incident));
    }
    additional_info.insert("fincorp_run".into(), json!(ctx.run_id));
    let event = EmEvent {
        source: text(params, "source").unwrap_or_else(|| SOURCE.to_owned()),
        event_class: text(params, "event_class"),
        node: required_text(params, "node")?,
        event_type: text(params, "type").unwrap_or_default(),
        resource: text(params, "resource").unwrap_or_default(),
        metric_name: text(params, "metric_name").unwrap_or_default(),
        severity,
        description: text(params, "description").unwrap_or_default(),
        message_key: text(params, "message_key").unwrap_or_else(|| correlation_id(params, ctx)),
        additional_info,
        time_of_event: now_ms,
    };
    event.validate().map_err(failed)?;
    Ok(event)
}

impl Action for Event {
    fn name(&self) -> &'static str {
        "servicenow.event"
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

    fn reversible(&self) -> bool {
        false
    }

    fn plan(
        &self,
        env: &dyn Env,
        params: &Map<String, Value>,
        ctx: &StepContext,
    ) -> Result<Vec<Planned>, ActionError> {
        let event = em_event(params, ctx, 0)?;
        let mut request = client(env)?.plan_events(&[event]).map_err(failed)?;
        // The time is the send time, not known now.
        if let Some(records) = request
            .body
            .as_mut()
            .and_then(|b| b.get_mut("records"))
            .and_then(Value::as_array_mut)
        {
            for r in records {
                r["time_of_event"] = json!("<send time, UTC>");
            }
        }
        Ok(vec![Planned::Http { request }])
    }

    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let event = em_event(params, ctx, fincorp_api::now_ms())?;
            let accepted = client(env)?
                .send_events(std::slice::from_ref(&event))
                .await
                .map_err(failed)?;
            Ok(ActionOutput {
                result: json!({
                    "node": event.node,
                    "severity": event.severity.as_str(),
                    "message_key": event.message_key,
                    "inserted": accepted.inserted,
                    "message": accepted.message,
                }),
                ticket: None,
            })
        })
    }
}
