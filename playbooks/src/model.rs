//! The playbook format: raw serde structs (stage one, also the source of the
//! JSON Schema) and the validated [`Playbook`] (stage two, built in
//! [`crate::load`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use fincorp_api::wire::Severity;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A validated playbook, ready to match, plan and run.
#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub name: String,
    pub description: String,
    /// The file it was loaded from, for messages.
    pub file: PathBuf,
    pub trigger: Trigger,
    /// Constants available to templates as `vars.NAME`.
    pub vars: Map<String, Value>,
    pub guardrails: Guardrails,
    pub steps: Vec<Step>,
    /// Run in order when the playbook aborts after a mutating step succeeded.
    pub rollback: Vec<Step>,
    /// The secrets its templates read (`secrets.NAME`), sorted; the
    /// correlator refuses to load a playbook whose secrets it lacks.
    pub secrets: Vec<String>,
}

impl Playbook {
    /// Whether any step (not counting rollback) changes something.
    pub fn mutates(&self) -> bool {
        self.steps.iter().any(|s| s.action().mutating())
    }
}

/// What starts a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Incident(IncidentTrigger),
    /// A cron schedule (six or seven fields, seconds first, UTC).
    Schedule {
        text: String,
        schedule: Box<cron::Schedule>,
    },
}

impl Trigger {
    pub fn incident(&self) -> Option<&IncidentTrigger> {
        match self {
            Trigger::Incident(t) => Some(t),
            Trigger::Schedule { .. } => None,
        }
    }
}

/// Which incidents a playbook reacts to. Empty lists match anything.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentTrigger {
    pub apps: Vec<String>,
    pub alerts: Vec<String>,
    pub sources: Vec<String>,
    pub min_severity: Severity,
    /// Which incident changes start a run.
    pub on: Vec<IncidentChange>,
}

/// An incident change a trigger can react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncidentChange {
    /// A matching alert opened the incident.
    Opened,
    /// A matching alert joined an open incident.
    AlertJoined,
    /// A matching alert reopened a resolved incident.
    Reopened,
    /// The incident resolved (its alerts went quiet, or an operator
    /// resolved it); the trigger is matched against the incident's alerts.
    Resolved,
}

impl IncidentChange {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentChange::Opened => "opened",
            IncidentChange::AlertJoined => "alert_joined",
            IncidentChange::Reopened => "reopened",
            IncidentChange::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "opened" => IncidentChange::Opened,
            "alert_joined" => IncidentChange::AlertJoined,
            "reopened" => IncidentChange::Reopened,
            "resolved" => IncidentChange::Resolved,
            _ => return None,
        })
    }
}

/// Limits that keep automation bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrails {
    /// Runs of this playbook, over all targets.
    pub per_playbook: Option<Budget>,
    /// Runs of this playbook on one target.
    pub per_target: Option<Budget>,
    /// Which runs exclude each other: any playbook acting on the same app
    /// (or host) waits for the one already acting.
    pub lock: LockScope,
    /// Most distinct hosts one run may act on.
    pub max_hosts: u32,
    /// Runs caused by runs (an incident that follows our own remediation on
    /// the same target) may nest this deep for the same playbook.
    pub max_depth: u32,
    /// When set, a run waits for an operator's approval before its first
    /// mutating step, and does nothing if none comes in time.
    pub approval_timeout_ms: Option<i64>,
    /// Plan every step, execute none.
    pub dry_run: bool,
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails {
            per_playbook: None,
            per_target: None,
            lock: LockScope::App,
            max_hosts: 1,
            max_depth: 1,
            approval_timeout_ms: None,
            dry_run: false,
        }
    }
}

/// At most `max` runs within any `per_ms` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max: u32,
    pub per_ms: i64,
}

/// What a run's lock covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockScope {
    App,
    Host,
    None,
}

/// One step: an action and its (unrendered) parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    /// The action's name; validated to exist in [`crate::actions::registry`].
    pub action: String,
    /// The `with` mapping as written; string values are templates.
    pub with: Map<String, Value>,
    /// A template expression; the step is skipped when it is false.
    pub when: Option<String>,
    pub retry: Retry,
    pub timeout_ms: Option<i64>,
    pub on_failure: OnFailure,
}

impl Step {
    pub fn action(&self) -> &'static dyn crate::actions::Action {
        crate::actions::lookup(&self.action).expect("validated at load time")
    }
}

/// How often and how patiently a failed step is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, at least 1.
    pub attempts: u32,
    pub backoff_ms: i64,
    pub max_backoff_ms: i64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 1,
            backoff_ms: 1_000,
            max_backoff_ms: 30_000,
        }
    }
}

/// What a failed step does to the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop; roll back if a mutating step succeeded.
    Abort,
    /// Go on with the next step.
    Continue,
    /// Go on at this step.
    Goto(String),
}

// ----- stage one: the YAML as written -----

/// A FINCORP playbook (one per file).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "FINCORP playbook")]
pub(crate) struct RawPlaybook {
    /// Format version; this build reads 1.
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub trigger: RawTrigger,
    /// Constants for templates (`vars.NAME`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub vars: Map<String, Value>,
    #[serde(default)]
    pub guardrails: RawGuardrails,
    pub steps: Vec<RawStep>,
    #[serde(default)]
    pub rollback: Vec<RawStep>,
}

/// Incident conditions, or a cron `schedule` (not both).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrigger {
    #[serde(default)]
    pub apps: Vec<String>,
    #[serde(default)]
    pub alerts: Vec<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    /// info, warning or critical (default warning).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub min_severity: Option<Severity>,
    /// opened, alert_joined, reopened, resolved (default opened and alert_joined).
    #[serde(default)]
    pub on: Option<Vec<String>>,
    /// Cron with seconds, UTC, e.g. "0 0 2 * * Sun".
    #[serde(default)]
    pub schedule: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGuardrails {
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
    /// app (default), host or none.
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub max_hosts: Option<u32>,
    #[serde(default)]
    pub max_depth: Option<u32>,
    #[serde(default)]
    pub approval: Option<RawApproval>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    #[serde(default)]
    pub per_playbook: Option<RawBudget>,
    #[serde(default)]
    pub per_target: Option<RawBudget>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudget {
    pub max: u32,
    /// A duration: 10m, 1h, 1d.
    #[schemars(with = "String")]
    pub per: fincorp_api::config::Duration,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApproval {
    pub required: bool,
    /// How long to wait; nothing is done when it passes (default 15m).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<fincorp_api::config::Duration>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    pub id: String,
    pub action: String,
    /// Parameters; strings are MiniJinja templates.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub with: Map<String, Value>,
    /// A MiniJinja expression; the step runs only when it is true.
    #[serde(default)]
    pub when: Option<String>,
    #[serde(default)]
    pub retry: Option<RawRetry>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<fincorp_api::config::Duration>,
    /// abort (default), continue, or goto:STEP_ID.
    #[serde(default)]
    pub on_failure: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    /// Attempts in all, 1 to 10.
    pub attempts: u32,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub backoff: Option<fincorp_api::config::Duration>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub max_backoff: Option<fincorp_api::config::Duration>,
}

/// The JSON Schema of the playbook format, for editors.
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(RawPlaybook)).expect("schemas serialise")
}
