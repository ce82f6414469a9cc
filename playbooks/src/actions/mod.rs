//! The built-in actions, one folder each, behind the [`Action`] trait:
//! parameters (checked at load time), whether the action mutates, whether a
//! repeat with the same idempotency key is harmless, a dry-run plan of the
//! exact requests, and execution through [`Env`], which the correlator
//! implements. Nothing here opens a socket itself except through `Env`.
//!
//! Adding an action: a folder with its `mod.rs` implementing [`Action`], and
//! one line in [`registry`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use fincorp_api::wire::{CommandAction, CommandResult};
use fincorp_integrations::plan::PlannedRequest;
use fincorp_integrations::servicenow::ServiceNowClient;
use fincorp_integrations::vsphere::VsphereClient;
use serde::Serialize;
use serde_json::{Map, Value};
use thiserror::Error;

pub mod approval;
pub mod exec;
pub mod failover;
pub mod notify;
pub mod reallocate;
pub mod rolling_patch;
pub mod servicenow;
pub mod vsphere;
pub mod wait_for;

/// A boxed future, so actions can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One built-in action.
pub trait Action: Send + Sync + 'static {
    /// The name used in playbooks.
    fn name(&self) -> &'static str;
    fn params(&self) -> &'static [ParamSpec];
    /// Changes something outside the correlator.
    fn mutating(&self) -> bool;
    /// Repeating it with the same idempotency key has no further effect, so
    /// a step interrupted by a crash may be run again.
    fn idempotent(&self) -> bool;
    /// Its effect can be undone by a later step (a rollback).
    fn reversible(&self) -> bool {
        true
    }
    /// What execution would do, without doing it. `Err(NotPlannable)` when
    /// the action cannot say exactly (a mutating one is then refused in
    /// dry-run mode).
    fn plan(
        &self,
        env: &dyn Env,
        params: &Map<String, Value>,
        ctx: &StepContext,
    ) -> Result<Vec<Planned>, ActionError>;
    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>>;
}

/// Every action a step may name.
pub fn registry() -> &'static [&'static dyn Action] {
    &[
        &reallocate::Reallocate,
        &servicenow::Create,
        &servicenow::Update,
        &servicenow::Resolve,
        &servicenow::Event,
        &rolling_patch::RollingPatch,
        &notify::Notify,
        &wait_for::WaitFor,
        &approval::ApprovalAction,
        &exec::Exec,
        &vsphere::Reallocate,
        &failover::Failover,
    ]
}

pub fn lookup(name: &str) -> Option<&'static dyn Action> {
    registry().iter().copied().find(|a| a.name() == name)
}

/// One request or wait a step would make.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Planned {
    /// An HTTP request, exactly as it would be sent (secrets redacted).
    Http { request: PlannedRequest },
    /// A command for the agent on `host`, as it would be signed and sent.
    AgentCommand { host: String, command: Value },
    /// Waiting for a condition.
    Wait { description: String },
    /// Waiting for an operator.
    Approval { prompt: String, timeout_ms: i64 },
    /// A maintenance silence created in the correlator (alerts matching
    /// every matcher stay out of incidents).
    Silence {
        matchers: Vec<String>,
        duration_ms: i64,
        comment: String,
    },
    /// Context for the requests that follow (a batch, a condition).
    Note { text: String },
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
    /// A duration such as `30s`.
    Duration,
    /// A list of strings.
    Strings,
    /// A mapping of strings to strings.
    StringMap,
    /// Any JSON value (templates inside strings are rendered).
    Any,
}

/// Checks `with` against the action's parameters: unknown keys, missing
/// required keys, and literal values of the wrong type. Template strings are
/// checked after rendering. Returns (key, message) pairs.
pub fn check_params(action: &dyn Action, with: &Map<String, Value>) -> Vec<(String, String)> {
    let specs = action.params();
    let mut problems = Vec::new();
    for key in with.keys() {
        if !specs.iter().any(|p| p.name == key) {
            let known: Vec<_> = specs.iter().map(|p| p.name).collect();
            problems.push((
                key.clone(),
                format!(
                    "unknown parameter `{key}` for action {} (expected one of: {})",
                    action.name(),
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
                    action.name()
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
    let name = spec.name;
    match spec.kind {
        ParamKind::Any => Ok(()),
        ParamKind::String => match value {
            Value::String(_) => Ok(()),
            other => Err(format!(
                "`{name}` must be a string, not {}",
                type_name(other)
            )),
        },
        ParamKind::Number => as_f64(value)
            .map(|_| ())
            .ok_or_else(|| format!("`{name}` must be a number, not {}", type_name(value))),
        ParamKind::Duration => match value {
            Value::String(s) => s
                .parse::<fincorp_api::config::Duration>()
                .map(|_| ())
                .map_err(|e| format!("`{name}`: {e}")),
            other => Err(format!(
                "`{name}` must be a duration such as \"30s\", not {}",
                type_name(other)
            )),
        },
        ParamKind::Strings => match value {
            Value::Array(items) if items.iter().all(Value::is_string) => Ok(()),
            other => Err(format!(
                "`{name}` must be a list of strings, not {}",
                type_name(other)
            )),
        },
        ParamKind::StringMap => match value {
            Value::Object(m) if m.values().all(Value::is_string) => Ok(()),
            other => Err(format!(
                "`{name}` must be a mapping of strings, not {}",
                type_name(other)
            )),
        },
        ParamKind::OneOf(allowed) => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(format!(
                        "`{name}` must be one of {allowed:?}, not {}",
                        type_name(other)
                    ));
                }
            };
            if allowed.contains(&text.as_str()) {
                Ok(())
            } else {
                Err(format!("`{name}` must be one of {allowed:?}, not {text:?}"))
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

/// A duration parameter in milliseconds.
pub(crate) fn as_duration_ms(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_str)
        .and_then(|s| s.parse::<fincorp_api::config::Duration>().ok())
        .map(|d| d.as_millis_i64())
}

/// A string parameter that must be present and non-empty.
/// Sends a webhook request; a transport error or a non-2xx answer fails
/// the step, naming `what` and quoting the start of the answer's body.
pub(crate) async fn send_checked(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<reqwest::StatusCode, ActionError> {
    let resp = req
        .send()
        .await
        .map_err(|e| ActionError::Failed(format!("{what}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        return Err(ActionError::Failed(format!("{what}: {status}: {text}")));
    }
    Ok(status)
}

pub(crate) fn required_text(params: &Map<String, Value>, key: &str) -> Result<String, ActionError> {
    params
        .get(key)
        .and_then(as_text)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ActionError::InvalidParams(format!("`{key}` must not be empty")))
}

/// An operator's decision on an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub approved: bool,
    pub by: String,
    pub reason: String,
}

/// What actions may do to the world. The correlator implements it.
pub trait Env: Send + Sync {
    /// Sends a command to the agent on `host` and waits for its result.
    /// `command_id` is the idempotency key: a resend with the same id is
    /// answered from the agent's journal instead of running again.
    fn agent_command<'a>(
        &'a self,
        host: &'a str,
        command_id: &'a str,
        action: CommandAction,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CommandResult, String>>;

    /// The ServiceNow client, when configured.
    fn servicenow(&self) -> Option<&ServiceNowClient>;

    /// The vCenter client, when configured (`integrations.vsphere`).
    fn vsphere(&self) -> Option<&VsphereClient>;

    /// The HTTP client for webhooks.
    fn http(&self) -> &reqwest::Client;

    /// The latest value of an agent metric for a host (and app), if known:
    /// app metrics `cpu`, `rss_mb`, `processes`, `latency_ms`, `probe_up`;
    /// host metrics (no app) `cpu`, `mem_used_pct`.
    fn metric(&self, host: &str, app: Option<&str>, metric: &str) -> Option<f64>;

    /// Waits for an operator to approve or reject step `step_id` of
    /// `run_id`, up to `timeout`. `Ok(None)` when nobody decided in time.
    fn await_approval<'a>(
        &'a self,
        run_id: &'a str,
        step_id: &'a str,
        prompt: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<Decision>, String>>;

    /// When the latest fresh sample of `host` was taken (Unix ms, the
    /// agent's clock), so a health check can wait for a sample taken after
    /// a change instead of trusting one from before it.
    fn sampled_at(&self, host: &str) -> Option<i64>;

    /// Creates a silence: alerts matching every matcher (`host=web01`,
    /// `app=~FINCORP-.*`) stay out of incidents for `duration`, or until
    /// expired. Audited as `created_by`. Returns the silence's id.
    fn create_silence<'a>(
        &'a self,
        matchers: Vec<String>,
        duration: Duration,
        created_by: &'a str,
        comment: &'a str,
    ) -> BoxFuture<'a, Result<String, String>>;

    /// Expires a silence now (audited as `by`).
    fn expire_silence<'a>(&'a self, id: &'a str, by: &'a str) -> BoxFuture<'a, Result<(), String>>;

    /// Records how far a long step has got: shown as the result of the
    /// running step `step_id` of `run_id` in the run record, and kept if
    /// the step fails. Best effort.
    fn progress<'a>(
        &'a self,
        run_id: &'a str,
        step_id: &'a str,
        progress: &'a Value,
    ) -> BoxFuture<'a, ()>;

    /// True once automation must stop (the kill switch): a long action
    /// halts at its next safe point instead of starting more work.
    fn stop_requested(&self) -> bool;
}

/// Identity and limits of the step being planned or executed.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub run_id: String,
    pub step_id: String,
    /// The incident of the run, if it has one (scheduled runs do not).
    pub incident_id: Option<String>,
    /// The app of the alert that triggered the run, if any.
    pub app: Option<String>,
    /// Unique per (incident or schedule slot, playbook, step); the same on
    /// every retry and after a restart.
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
    #[error("cannot be planned: {0}")]
    NotPlannable(String),
}

impl ActionError {
    /// Whether trying again may help (a refusal or bad input will not).
    pub fn retryable(&self) -> bool {
        matches!(self, ActionError::Failed(_) | ActionError::Unavailable(_))
    }
}

/// Checks rendered parameters before planning or executing.
pub fn check_rendered(action: &dyn Action, params: &Map<String, Value>) -> Result<(), ActionError> {
    for spec in action.params() {
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
    Ok(())
}

/// Runs one rendered step.
pub async fn execute(
    env: &dyn Env,
    action: &dyn Action,
    params: &Map<String, Value>,
    ctx: &StepContext,
) -> Result<ActionOutput, ActionError> {
    check_rendered(action, params)?;
    action.execute(env, params, ctx).await
}

/// Plans one rendered step.
pub fn plan(
    env: &dyn Env,
    action: &dyn Action,
    params: &Map<String, Value>,
    ctx: &StepContext,
) -> Result<Vec<Planned>, ActionError> {
    check_rendered(action, params)?;
    action.plan(env, params, ctx)
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    fn map(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn unknown_missing_and_mistyped_parameters_are_each_reported() {
        let problems = check_params(
            &reallocate::Reallocate,
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
            text.contains(r#"`resource` must be one of ["cpu", "memory"]"#),
            "{text}"
        );
        assert!(text.contains("`increase_pct` must be a number"), "{text}");
        assert_eq!(problems.len(), 4, "{text}");
    }

    #[test]
    fn templates_are_checked_after_rendering_not_before() {
        let problems = check_params(
            &reallocate::Reallocate,
            &map(
                r#"{"host":"{{ incident.host }}","app":"A","resource":"cpu","increase_pct":"{{ 10 * 2 }}"}"#,
            ),
        );
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn the_registry_names_are_unique_and_found() {
        for a in registry() {
            assert_eq!(lookup(a.name()).map(|x| x.name()), Some(a.name()));
        }
        let mut names: Vec<_> = registry().iter().map(|a| a.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), registry().len());
        assert!(lookup("rm -rf").is_none());
    }
}
