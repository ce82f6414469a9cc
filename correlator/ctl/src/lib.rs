//! `fincorpctl`, the operator CLI, as a library so tests can drive it:
//! [`client`] talks to the correlator's REST API, [`incidents`] prints them,
//! [`playbook`] validates playbook files, and [`chaos`] rehearses the CPU
//! spike scenario for real.
#![forbid(unsafe_code)]

pub mod chaos;
pub mod client;
pub mod incidents;
pub mod playbook;
