//! Collectors: host metrics ([`host`]), per-app process metrics ([`apps`])
//! and latency probes ([`probe`]). [`Sampler`] owns the one long-lived
//! `sysinfo::System` and produces a [`HostSample`] per tick.
//!
//! Sampling reads `/proc` and is blocking: callers run [`Sampler::sample`] on
//! a blocking thread (`spawn_blocking`), never on the async runtime.

pub mod apps;
pub mod host;
pub mod probe;
pub mod procfs;

use std::path::Path;
use std::time::{Duration, Instant};

use fincorp_api::UnixMs;
use fincorp_api::wire::{AppSample, HostSample};
use sysinfo::System;
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
    cores: f64,
}

impl Sampler {
    /// `discovery_interval` of zero rescans the process table every tick.
    pub fn new(
        apps: &[AppConfig],
        discovery_interval: Duration,
        cgroup_root: &Path,
    ) -> Result<Self, CollectError> {
        Self::with_proc(apps, discovery_interval, cgroup_root, Path::new("/proc"))
    }

    /// [`Sampler::new`] reading processes from another `/proc`.
    pub fn with_proc(
        apps: &[AppConfig],
        discovery_interval: Duration,
        cgroup_root: &Path,
        proc_root: &Path,
    ) -> Result<Self, CollectError> {
        let mut system = System::new().map_err(|e| CollectError::System(format!("{e:?}")))?;
        host::refresh(&mut system);
        let cores = system.cpus().len().max(1) as f64;
        Ok(Self {
            system,
            tracker: ProcessTracker::new(
                apps.iter().map(|a| a.selector.clone()).collect(),
                apps.iter().map(|a| a.cgroup.clone()).collect(),
                std::process::id(),
                proc_root,
                cgroup_root,
            ),
            app_names: apps.iter().map(|a| a.name.clone()).collect(),
            discovery_interval,
            last_discovery: None,
            cores,
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
        if discover {
            self.tracker.discover();
            self.last_discovery = Some(now);
        }
        let stats = self.tracker.sample(Instant::now());
        let host = host::stats(&self.system);
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
                    host_cpu_pct: Some(s.cpu_pct / self.cores),
                    throttling: s.throttling,
                })
                .collect(),
            cpu_per_core_pct: host.cpu_per_core_pct,
            mem_available_bytes: Some(host.mem_available_bytes),
            swap_used_bytes: Some(host.swap_used_bytes),
            swap_total_bytes: Some(host.swap_total_bytes),
            load: Some(host.load),
        }
    }

    /// The PIDs currently assigned to app number `app`.
    pub fn pids_of(&self, app: usize) -> Vec<u32> {
        self.tracker.pids_of(app)
    }

    /// Processes known to discovery.
    pub fn known_processes(&self) -> usize {
        self.tracker.known_processes()
    }
}

#[cfg(test)]
mod tests;
