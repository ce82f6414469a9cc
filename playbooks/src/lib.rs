//! FINCORP playbooks: the YAML format operators write, its validation (with
//! warnings for risky automation and a JSON Schema for editors), templates
//! and conditions, trigger matching, dry-run plans, and the built-in actions.
//!
//! Everything here is deterministic except action execution, whose IO goes
//! through the [`actions::Env`] trait: the correlator supplies the agent
//! command channel, ServiceNow, webhooks, metrics and approvals. Planning
//! and validation never touch the network.
#![forbid(unsafe_code)]

pub mod actions;
pub mod load;
pub mod model;
pub mod plan;
pub mod template;
pub mod trigger;

pub use load::{Loaded, load_dir, load_file};
pub use model::{
    Guardrails, IncidentChange, IncidentTrigger, LockScope, OnFailure, Playbook, Step, Trigger,
    json_schema,
};

#[cfg(test)]
mod golden;
