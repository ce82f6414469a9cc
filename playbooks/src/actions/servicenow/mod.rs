//! The ServiceNow actions, one file each, all acting on the ticket of the
//! run's incident, found by `correlation_id` (our incident id; the run id
//! for a scheduled run; or an explicit `correlation_id`):
//!
//! | action | does | requests |
//! |---|---|---|
//! | `servicenow.create` | opens the ticket, or finds the open one (and appends `work_notes` to it) | lookup GET, then POST (or PATCH) |
//! | `servicenow.update` | appends `work_notes`, sets `state` (1, 2, 3) and other fields | lookup GET, then PATCH |
//! | `servicenow.resolve` | state "6" with `close_code` and `close_notes` | lookup GET, then PATCH |
//! | `servicenow.event` | one Event Management event | POST `/api/global/em/jsonv2` |
//!
//! `update` and `resolve` may name the ticket by `sys_id` instead (e.g.
//! `{{ steps.ticket.result.sys_id }}`); then there is no lookup. A plan
//! shows the sys_id the lookup will find as `<sys_id found by the lookup>`.

use fincorp_integrations::plan::PlannedRequest;
use fincorp_integrations::servicenow::{ServiceNowClient, ServiceNowError, Ticket};
use serde_json::{Map, Value, json};

use super::{ActionError, ActionOutput, Env, Planned, StepContext, TicketRef, as_text};

mod create;
mod event;
mod resolve;
mod update;

#[cfg(test)]
mod tests;

pub use create::{Create, new_incident};
pub use event::{Event, em_event};
pub use resolve::Resolve;
pub use update::Update;

/// What a plan shows in place of the sys_id its lookup will find.
pub const FOUND_SYS_ID: &str = "<sys_id found by the lookup>";
/// A stand-in sys_id that survives URL encoding, replaced by [`FOUND_SYS_ID`].
const PLAN_SYS_ID: &str = "fincorp-plan-sys-id";

/// The ServiceNow client, or why there is none.
fn client(env: &dyn Env) -> Result<&ServiceNowClient, ActionError> {
    env.servicenow().ok_or_else(|| {
        ActionError::Unavailable("ServiceNow is not configured (integrations.servicenow)".into())
    })
}

/// A text parameter, if given and not blank.
fn text(params: &Map<String, Value>, key: &str) -> Option<String> {
    params
        .get(key)
        .and_then(as_text)
        .filter(|s| !s.trim().is_empty())
}

/// The correlation id of a step's ticket: `correlation_id` when given, else
/// the incident, else the run.
fn correlation_id(params: &Map<String, Value>, ctx: &StepContext) -> String {
    text(params, "correlation_id")
        .or_else(|| ctx.incident_id.clone())
        .unwrap_or_else(|| ctx.run_id.clone())
}

/// A client error as a step error: bad input is not retried, the rest may be.
fn failed(e: ServiceNowError) -> ActionError {
    match e {
        ServiceNowError::InvalidInput { .. } => ActionError::InvalidParams(e.to_string()),
        ServiceNowError::Config(_) => ActionError::Unavailable(e.to_string()),
        e => ActionError::Failed(e.to_string()),
    }
}

/// Which ticket a step acts on.
enum Target {
    /// Named by the playbook.
    SysId(String),
    /// The active ticket with this correlation id.
    Lookup(String),
}

impl Target {
    fn of(params: &Map<String, Value>, ctx: &StepContext) -> Self {
        match text(params, "sys_id") {
            Some(sys_id) => Target::SysId(sys_id),
            None => Target::Lookup(correlation_id(params, ctx)),
        }
    }

    /// The plan: the lookup (if any), then the request `patch` builds for
    /// the ticket's sys_id.
    fn plan(
        &self,
        client: &ServiceNowClient,
        patch: impl Fn(&str) -> Result<PlannedRequest, ServiceNowError>,
    ) -> Result<Vec<Planned>, ActionError> {
        Ok(match self {
            Target::SysId(sys_id) => vec![Planned::Http {
                request: patch(sys_id).map_err(failed)?,
            }],
            Target::Lookup(cid) => {
                let lookup = client.plan_find_active(cid).map_err(failed)?;
                let mut then = patch(PLAN_SYS_ID).map_err(failed)?;
                then.url = then.url.replace(PLAN_SYS_ID, FOUND_SYS_ID);
                vec![
                    Planned::Http { request: lookup },
                    Planned::Http { request: then },
                ]
            }
        })
    }

    /// The sys_id to act on; `None` when no active ticket has the
    /// correlation id.
    async fn resolve(&self, client: &ServiceNowClient) -> Result<Option<String>, ActionError> {
        match self {
            Target::SysId(sys_id) => Ok(Some(sys_id.clone())),
            Target::Lookup(cid) => Ok(client
                .find_active(cid)
                .await
                .map_err(failed)?
                .map(|t| t.sys_id)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::SysId(sys_id) => format!("sys_id {sys_id}"),
            Target::Lookup(cid) => format!("correlation_id {cid}"),
        }
    }
}

/// A step's output for a ticket it acted on.
fn ticket_output(ticket: Ticket, extra: Value) -> ActionOutput {
    let mut result = json!({
        "sys_id": ticket.sys_id,
        "number": ticket.number,
        "state": ticket.state,
        "active": ticket.active,
        "correlation_id": ticket.correlation_id,
    });
    if let (Some(r), Value::Object(extra)) = (result.as_object_mut(), extra) {
        r.extend(extra);
    }
    ActionOutput {
        result,
        ticket: Some(TicketRef {
            system: "servicenow".into(),
            sys_id: ticket.sys_id,
            number: ticket.number,
        }),
    }
}
