//! Clients of the external systems FINCORP automates, one module per system:
//! [`servicenow`] (Table API, Event Management, OAuth) and [`vsphere`]
//! (vSphere Automation REST: sessions, VM lookup, power, CPU/memory
//! hot-add).
//!
//! Every client builds its HTTP client through
//! [`fincorp_api::http::client_builder`] (rustls with ring), retries with
//! backoff and honours `Retry-After` ([`retry`]), never logs credentials, and
//! can show the exact requests an action would send ([`plan`]) without
//! sending them. The simulators these clients are tested against live in
//! `fincorp-sim`, a dev-dependency only.
#![forbid(unsafe_code)]

mod http;
pub mod plan;
pub mod retry;
pub mod servicenow;
pub mod vsphere;
