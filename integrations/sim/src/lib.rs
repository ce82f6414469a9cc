//! Simulators of the external systems FINCORP talks to, for demos and tests.
//!
//! Each simulator lives in its own module, follows the vendor's documented
//! API, and documents which behaviours it simulates and which it does not.
//! Production crates never depend on this crate; `fincorp-integrations` uses
//! it only as a dev-dependency: [`servicenow`] (Table API, Event
//! Management, OAuth) and [`vsphere`] (vSphere Automation REST). [`apps`]
//! stands in for the bank's applications' health endpoints on a demo host.
#![forbid(unsafe_code)]

pub mod apps;
pub mod servicenow;
pub mod vsphere;
