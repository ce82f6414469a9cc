//! The playbook format: raw serde structs (stage one) and the validated
//! [`Playbook`] (stage two, built in [`crate::load`]).

use std::path::PathBuf;

use fincorp_api::wire::Severity;
use serde::Deserialize;
use serde_json::Value;

use crate::actions::ActionKind;

/// A validated playbook, ready to match and run.
#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub name: String,
    pub description: String,
    /// The file it was loaded from, for messages.
    pub file: PathBuf,
    pub trigger: Trigger,
    pub steps: Vec<Step>,
}

/// Which incidents a playbook reacts to. Empty lists match anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub apps: Vec<String>,
    pub alerts: Vec<String>,
    pub min_severity: Severity,
}

/// One step: an action and its (unrendered) parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    pub action: ActionKind,
    /// The `with` mapping as written; string values are templates.
    pub with: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlaybook {
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub trigger: RawTrigger,
    pub steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrigger {
    #[serde(default)]
    pub apps: Vec<String>,
    #[serde(default)]
    pub alerts: Vec<String>,
    #[serde(default)]
    pub min_severity: Option<Severity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    pub id: String,
    pub action: String,
    #[serde(default)]
    pub with: serde_json::Map<String, Value>,
}
