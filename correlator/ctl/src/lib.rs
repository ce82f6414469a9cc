//! `fincorpctl`, the operator CLI, as a library so tests can drive it:
//! [`client`] talks to the correlator's REST API, [`incidents`] prints them,
//! [`playbook`] validates and plans playbook files, [`runs`] and
//! [`automation`] print playbook runs and the guardrails, and [`chaos`]
//! rehearses the CPU spike scenario for real.
#![forbid(unsafe_code)]

pub mod automation;
pub mod chaos;
pub mod client;
pub mod incidents;
pub mod playbook;
pub mod runs;
