//! The contract shared by every FINCORP binary: what crosses the wire between
//! agent and correlator ([`wire`]), how it is signed ([`signing`]), the REST
//! API's JSON shapes ([`rest`]), and the config primitives every YAML file uses
//! ([`yaml`], [`config`]), plus the log setup every binary uses ([`logging`]).
//!
//! This crate does no IO of its own beyond reading config and secret files, so
//! the agent can depend on it without linking the correlator's web or database
//! stack.
#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod exposition;
pub mod http;
pub mod logging;
pub mod rest;
pub mod signing;
pub mod wire;
pub mod yaml;

/// Milliseconds since the Unix epoch, the one timestamp unit on the wire.
pub type UnixMs = i64;

/// The current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> UnixMs {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Formats a Unix-ms timestamp as RFC 3339 with milliseconds, for humans.
pub fn format_ms(ms: UnixMs) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
