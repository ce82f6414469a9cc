//! The latest agent sample of each host, kept in memory for playbook
//! conditions (`wait_for`) and the dashboard. Not stored: a sample older
//! than [`STALE_MS`] is treated as unknown, never as a value.

use std::collections::HashMap;
use std::sync::RwLock;

use fincorp_api::UnixMs;
use fincorp_api::wire::HostSample;

/// A sample older than this is not used.
pub const STALE_MS: i64 = 15_000;

#[derive(Default)]
pub struct Samples {
    hosts: RwLock<HashMap<String, (UnixMs, HostSample)>>,
}

impl Samples {
    /// Keeps the newest of `samples` for `host`, received at `now`.
    pub fn record(&self, host: &str, samples: &[HostSample], now: UnixMs) {
        let Some(newest) = samples.iter().max_by_key(|s| s.at_ms) else {
            return;
        };
        let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
        match hosts.get(host) {
            Some((_, old)) if old.at_ms > newest.at_ms => {}
            _ => {
                hosts.insert(host.to_owned(), (now, newest.clone()));
            }
        }
    }

    /// A metric of a host (`app` = None: `cpu`, `mem_used_pct`) or of an app
    /// on it (`cpu`, `rss_mb`, `processes`, `latency_ms`, `probe_up`), if a
    /// fresh sample has it.
    pub fn metric(&self, host: &str, app: Option<&str>, metric: &str, now: UnixMs) -> Option<f64> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        let (received, s) = hosts.get(host)?;
        if now - received > STALE_MS {
            return None;
        }
        match app {
            None => match metric {
                "cpu" => Some(s.cpu_pct),
                "mem_used_pct" if s.mem_total_bytes > 0 => {
                    Some(s.mem_used_bytes as f64 * 100.0 / s.mem_total_bytes as f64)
                }
                _ => None,
            },
            Some(app) => {
                let a = s.apps.iter().find(|a| a.app == app)?;
                match metric {
                    "cpu" => Some(a.cpu_pct),
                    "rss_mb" => Some(a.rss_bytes as f64 / (1024.0 * 1024.0)),
                    "processes" => Some(f64::from(a.processes)),
                    "latency_ms" => a.probe.as_ref().and_then(|p| p.latency_ms),
                    "probe_up" => a.probe.as_ref().map(|p| if p.ok { 1.0 } else { 0.0 }),
                    _ => None,
                }
            }
        }
    }

    /// Hosts with their last sample time.
    pub fn hosts(&self) -> Vec<(String, UnixMs)> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = hosts.iter().map(|(h, (at, _))| (h.clone(), *at)).collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use fincorp_api::wire::AppSample;

    use super::*;

    fn sample(at_ms: UnixMs, cpu: f64) -> HostSample {
        HostSample {
            at_ms,
            cpu_pct: 10.0,
            mem_used_bytes: 1 << 30,
            mem_total_bytes: 4 << 30,
            apps: vec![AppSample {
                app: "FINCORP-APP-HFT".into(),
                processes: 2,
                cpu_pct: cpu,
                rss_bytes: 64 << 20,
                probe: None,
                host_cpu_pct: None,
                throttling: None,
            }],
            cpu_per_core_pct: vec![],
            mem_available_bytes: None,
            swap_used_bytes: None,
            swap_total_bytes: None,
            load: None,
        }
    }

    #[test]
    fn newest_fresh_sample_answers_and_stale_ones_do_not() {
        let s = Samples::default();
        s.record("h", &[sample(1_000, 50.0), sample(2_000, 95.0)], 2_000);
        assert_eq!(
            s.metric("h", Some("FINCORP-APP-HFT"), "cpu", 2_500),
            Some(95.0)
        );
        assert_eq!(
            s.metric("h", Some("FINCORP-APP-HFT"), "rss_mb", 2_500),
            Some(64.0)
        );
        assert_eq!(s.metric("h", None, "mem_used_pct", 2_500), Some(25.0));
        assert_eq!(s.metric("h", Some("FINCORP-APP-CRM"), "cpu", 2_500), None);
        assert_eq!(
            s.metric("h", Some("FINCORP-APP-HFT"), "latency_ms", 2_500),
            None
        );
        // An older batch arriving late does not replace the newer sample.
        s.record("h", &[sample(1_500, 10.0)], 3_000);
        assert_eq!(
            s.metric("h", Some("FINCORP-APP-HFT"), "cpu", 3_000),
            Some(95.0)
        );
        assert_eq!(
            s.metric("h", Some("FINCORP-APP-HFT"), "cpu", 2_000 + STALE_MS + 1),
            None
        );
    }
}
