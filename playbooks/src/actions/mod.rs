//! The built-in actions, one folder each. An action declares its parameters
//! (checked at load time) and executes through [`Env`], which the correlator
//! implements; nothing here opens a socket itself.

use std::future::Future;
use std::time::Duration;

use fincorp_api::wire::{CommandAction, CommandResult};
use fincorp_integrations::servicenow::ServiceNowClient;
use serde_json::{Map, Value};
use thiserror::Error;

pub mod reallocate;
pub mod servicenow;

/// Every action a step may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Reallocate,
    ServiceNowCreate,
}

impl ActionKind {
    pub const ALL: [ActionKind; 2] = [ActionKind::Reallocate, ActionKind::ServiceNowCreate];

    /// The name used in playbooks.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Reallocate => "reallocate",
            ActionKind::ServiceNowCreate => "servicenow.create",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn params(self) -> &'static [ParamSpec] {
        match self {
            ActionKind::Reallocate => reallocate::PARAMS,
            ActionKind::ServiceNowCreate => servicenow::CREATE_PARAMS,
        }
    }

    /// Whether the action changes something outside the correlator.
    pub fn is_mutating(self) -> bool {
        match self {
            ActionKind::Reallocate | ActionKind::ServiceNowCreate => true,
        }
    }
}

/// One parameter of an action.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub required: bool,
    pub kind: ParamKind,
}

/// The type a parameter must have once rendered.
#[derive(Debug, Clone, Copy)]
pub enum ParamKind {
    String,
    /// A number, or a string that parses as one (for templated values).
    Number,
    /// One of these strings (numbers are compared by their decimal text).
    OneOf(&'static [&'static str]),
}

/// Checks `with` against the action's parameters: unknown keys, missing
/// required keys, and literal values of the wrong type. Template strings are
/// checked after rendering. Returns (key, message) pairs.
pub fn check_params(kind: ActionKind, with: &Map<String, Value>) -> Vec<(String, String)> {
    let specs = kind.params();
    let mut problems = Vec::new();
    for key in with.keys() {
        if !specs.iter().any(|p| p.name == key) {
            let known: Vec<_> = specs.iter().map(|p| p.name).collect();
            problems.push((
                key.clone(),
                format!(
                    "unknown parameter `{key}` for action {} (expected one of: {})",
                    kind.name(),
                    known.join(", ")
                ),
            ));
        }
    }
    for spec in specs {
        match with.get(spec.name) {
            None if spec.required => problems.push((
                String::new(),
                format!(
                    "missing required parameter `{}` for action {}",
                    spec.name,
                    kind.name()
                ),
            )),
            None => {}
            Some(Value::String(s)) if crate::template::is_template(s) => {}
            Some(value) => {
                if let Err(msg) = check_value(spec, value) {
                    problems.push((spec.name.to_owned(), msg));
                }
            }
        }
    }
    problems
}

/// Checks one rendered or literal value against its spec.
pub fn check_value(spec: &ParamSpec, value: &Value) -> Result<(), String> {
    match spec.kind {
        ParamKind::String => match value {
            Value::String(_) => Ok(()),
            other => Err(format!(
                "`{}` must be a string, not {}",
                spec.name,
                type_name(other)
            )),
        },
        ParamKind::Number => as_f64(value)
            .map(|_| ())
            .ok_or_else(|| format!("`{}` must be a number, not {}", spec.name, type_name(value))),
        ParamKind::OneOf(allowed) => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(format!(
                        "`{}` must be one of {allowed:?}, not {}",
                        spec.name,
                        type_name(other)
                    ));
                }
            };
            if allowed.contains(&text.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "`{}` must be one of {allowed:?}, not {text:?}",
                    spec.name
                ))
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A number, or a string holding one.
pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A string parameter, with numbers given as their text.
pub(crate) fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What actions may do to the world. The correlator implements it.
pub trait Env: Send + Sync {
    /// Sends a command to the agent on `host` and waits for its result.
    /// `command_id` is the idempotency key: a resend with the same id is
    /// answered from the agent's record instead of running again.
    fn agent_command(
        &self,
        host: &str,
        command_id: &str,
        action: CommandAction,
        timeout: Duration,
    ) -> impl Future<Output = Result<CommandResult, String>> + Send;

    /// The ServiceNow client, when configured.
    fn servicenow(&self) -> Option<&ServiceNowClient>;
}

/// Identity and limits of the step being executed.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub incident_id: String,
    /// The app of the alert that triggered the run, if any.
    pub app: Option<String>,
    /// Unique per (incident, playbook, step); see [`Env::agent_command`].
    pub idempotency_key: String,
    pub timeout: Duration,
}

/// A finished step: its result (visible to later steps as
/// `steps.<id>.result`) and any ticket it created or found.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionOutput {
    pub result: Value,
    pub ticket: Option<TicketRef>,
}

/// A ticket in an external system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRef {
    pub system: String,
    pub sys_id: String,
    pub number: String,
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ActionError {
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("failed: {0}")]
    Failed(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Runs one rendered step.
pub async fn execute<E: Env>(
    env: &E,
    kind: ActionKind,
    params: &Map<String, Value>,
    ctx: &StepContext,
) -> Result<ActionOutput, ActionError> {
    for spec in kind.params() {
        match params.get(spec.name) {
            Some(v) => check_value(spec, v).map_err(ActionError::InvalidParams)?,
            None if spec.required => {
                return Err(ActionError::InvalidParams(format!(
                    "missing `{}`",
                    spec.name
                )));
            }
            None => {}
        }
    }
    match kind {
        ActionKind::Reallocate => reallocate::execute(env, params, ctx).await,
        ActionKind::ServiceNowCreate => servicenow::create(env, params, ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn unknown_missing_and_mistyped_parameters_are_each_reported() {
        let problems = check_params(
            ActionKind::Reallocate,
            &map(r#"{"app":"A","resource":"disk","increase_pct":"lots","colour":"red"}"#),
        );
        let text = problems
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("unknown parameter `colour`"), "{text}");
        assert!(text.contains("missing required parameter `host`"), "{text}");
        assert!(
            text.contains(r#"`resource` must be one of ["cpu"]"#),
            "{text}"
        );
        assert!(text.contains("`increase_pct` must be a number"), "{text}");
        assert_eq!(problems.len(), 4, "{text}");
    }

    #[test]
    fn templates_are_checked_after_rendering_not_before() {
        let problems = check_params(
            ActionKind::Reallocate,
            &map(
                r#"{"host":"{{ incident.host }}","app":"A","resource":"cpu","increase_pct":"{{ 10 * 2 }}"}"#,
            ),
        );
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn action_names_round_trip() {
        for k in ActionKind::ALL {
            assert_eq!(ActionKind::parse(k.name()), Some(k));
        }
        assert_eq!(ActionKind::parse("rm -rf"), None);
    }
}
