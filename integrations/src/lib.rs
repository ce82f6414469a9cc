//! Clients of the external systems FINCORP automates, one module per system:
//! [`servicenow`] (the Table API) today, vSphere Automation REST to come.
//!
//! Every client builds its HTTP client through
//! [`fincorp_api::http::client_builder`] (rustls with ring), retries with
//! backoff and honours `Retry-After`, and never logs credentials. The
//! simulators these clients are tested against live in `fincorp-sim`, a
//! dev-dependency only.
#![forbid(unsafe_code)]

pub mod servicenow;
