//! Collectors: host metrics ([`host`]), per-app process metrics ([`apps`])
//! and latency probes ([`probe`]). [`Sampler`] owns the one long-lived
//! `sysinfo::System` and produces a [`HostSample`] per tick.
//!
//! Sampling reads `/proc` and is blocking: callers run [`Sampler::sample`] on
//! a blocking thread (`spawn_blocking`), never on the async runtime.

pub mod apps;
pub mod host;
pub mod probe;

use std::time::{Duration, Instant};

use fincorp_api::UnixMs;
use fincorp_api::wire::{AppSample, HostSample};
use sysinfo::{Pid, System};
use thiserror::Error;

use crate::config::AppConfig;
use apps::ProcessTracker;

/// Why sampling cannot start.
#[derive(Debug, Error)]
pub enum CollectError {
    #[error("cannot read system information: {0}")]
    System(String),
}

/// Samples the host and every app, one tick at a time.
#[derive(Debug)]
pub struct Sampler {
    system: System,
    tracker: ProcessTracker,
    app_names: Vec<String>,
    discovery_interval: Duration,
    last_discovery: Option<Instant>,
}

impl Sampler {
    /// `discovery_interval` of zero scans the full process table every tick.
    pub fn new(apps: &[AppConfig], discovery_interval: Duration) -> Result<Self, CollectError> {
        let system = System::new().map_err(|e| CollectError::System(format!("{e:?}")))?;
        let own_pid = Pid::from_u32(std::process::id());
        Ok(Self {
            system,
            tracker: ProcessTracker::new(
                apps.iter().map(|a| a.selector.clone()).collect(),
                own_pid,
            ),
            app_names: apps.iter().map(|a| a.name.clone()).collect(),
            discovery_interval,
            last_discovery: None,
        })
    }

    /// One sampling pass at monotonic time `now`, stamped `at_ms`. Every
    /// configured app is in the result, in config order; an app without
    /// processes has zeros. Probes are left empty for the caller to fill.
    pub fn sample(&mut self, now: Instant, at_ms: UnixMs) -> HostSample {
        host::refresh(&mut self.system);
        let discover = self
            .last_discovery
            .is_none_or(|last| now.saturating_duration_since(last) >= self.discovery_interval);
        // Refresh first: a scan re-reads every process's CPU times, which
        // would leave the tracked PIDs a near-zero interval.
        self.tracker.refresh(&mut self.system);
        if discover {
            self.tracker.discover(&mut self.system);
            self.last_discovery = Some(now);
        }
        let host = host::stats(&self.system);
        let stats = self.tracker.stats(&self.system);
        HostSample {
            at_ms,
            cpu_pct: host.cpu_pct,
            mem_used_bytes: host.mem_used_bytes,
            mem_total_bytes: host.mem_total_bytes,
            apps: self
                .app_names
                .iter()
                .zip(stats)
                .map(|(name, s)| AppSample {
                    app: name.clone(),
                    processes: s.processes,
                    cpu_pct: s.cpu_pct,
                    rss_bytes: s.rss_bytes,
                    probe: None,
                })
                .collect(),
        }
    }

    /// The PIDs currently assigned to app number `app`.
    pub fn pids_of(&self, app: usize) -> Vec<u32> {
        self.tracker
            .pids_of(app)
            .into_iter()
            .map(Pid::as_u32)
            .collect()
    }
}

#[cfg(test)]
mod tests;
