//! The latest agent sample of each host, kept in memory for playbook
//! conditions (`wait_for`) and the dashboard. Not stored: a sample older
//! than [`STALE_MS`] is treated as unknown, never as a value.

use std::collections::HashMap;
use std::sync::RwLock;

use fincorp_api::UnixMs;
use fincorp_api::wire::{AppSample, HostSample};
use serde::Serialize;

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

    /// When the latest fresh sample of `host` was taken (the agent's
    /// clock), so a health gate can wait for a sample newer than a change.
    pub fn sampled_at(&self, host: &str, now: UnixMs) -> Option<UnixMs> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        let (received, s) = hosts.get(host)?;
        (now - received <= STALE_MS).then_some(s.at_ms)
    }

    /// Hosts with their last sample time.
    pub fn hosts(&self) -> Vec<(String, UnixMs)> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = hosts.iter().map(|(h, (at, _))| (h.clone(), *at)).collect();
        out.sort();
        out
    }

    /// Every host with its latest sample and each app's health at `now`,
    /// sorted by host name: what the dashboard's host list shows.
    pub fn statuses(&self, now: UnixMs) -> Vec<HostStatus> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<HostStatus> = hosts
            .iter()
            .map(|(host, (received, s))| HostStatus::of(host, *received, s, now))
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }
}

/// One host as its agent last reported it (`GET /api/v1/hosts`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostStatus {
    pub host: String,
    /// When the correlator last received a sample from the host's agent.
    pub last_seen_ms: UnixMs,
    /// When the agent took that sample (the agent's clock).
    pub sampled_at_ms: UnixMs,
    /// Nothing received for longer than [`STALE_MS`]: the agent (or the
    /// host) may be down, and the figures below are old.
    pub stale: bool,
    /// Host CPU busy, percent of all cores.
    pub cpu_pct: f64,
    pub mem_used_pct: Option<f64>,
    /// The 1-minute load average.
    pub load1: Option<f64>,
    pub apps: Vec<AppStatus>,
}

/// How an app looked in its host's latest sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppStatus {
    pub app: String,
    pub health: AppHealth,
    /// Why it is not `up`, in words.
    pub detail: Option<String>,
    pub processes: u32,
    /// Percent of one core (can exceed 100).
    pub cpu_pct: f64,
    pub rss_bytes: u64,
    /// The latency probe's last answer, when the app has a probe.
    pub probe_ok: Option<bool>,
    pub latency_ms: Option<f64>,
}

/// An app's health as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppHealth {
    /// Processes running and the probe (if any) answering.
    Up,
    /// No process matches, or the probe fails.
    Down,
    /// The host's sample is stale: nothing is known.
    Unknown,
}

impl HostStatus {
    fn of(host: &str, received: UnixMs, s: &HostSample, now: UnixMs) -> HostStatus {
        let stale = now - received > STALE_MS;
        HostStatus {
            host: host.to_owned(),
            last_seen_ms: received,
            sampled_at_ms: s.at_ms,
            stale,
            cpu_pct: s.cpu_pct,
            mem_used_pct: (s.mem_total_bytes > 0)
                .then(|| s.mem_used_bytes as f64 * 100.0 / s.mem_total_bytes as f64),
            load1: s.load.map(|l| l.one),
            apps: s.apps.iter().map(|a| AppStatus::of(a, stale)).collect(),
        }
    }
}

impl AppStatus {
    fn of(a: &AppSample, stale: bool) -> AppStatus {
        let (health, detail) = if stale {
            (
                AppHealth::Unknown,
                Some("no recent sample from the agent".to_owned()),
            )
        } else if a.processes == 0 {
            (
                AppHealth::Down,
                Some("no process matches its selector".to_owned()),
            )
        } else {
            match &a.probe {
                Some(p) if !p.ok => (
                    AppHealth::Down,
                    Some(match (&p.error, p.status) {
                        (Some(e), _) => format!("probe failed: {e}"),
                        (None, Some(status)) => format!("probe failed: HTTP {status}"),
                        (None, None) => "probe failed".to_owned(),
                    }),
                ),
                _ => (AppHealth::Up, None),
            }
        };
        AppStatus {
            app: a.app.clone(),
            health,
            detail,
            processes: a.processes,
            cpu_pct: a.cpu_pct,
            rss_bytes: a.rss_bytes,
            probe_ok: a.probe.as_ref().map(|p| p.ok),
            latency_ms: a.probe.as_ref().and_then(|p| p.latency_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use fincorp_api::wire::ProbeSample;

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

    #[test]
    fn sampled_at_is_the_agents_sample_time_while_fresh() {
        let s = Samples::default();
        assert_eq!(s.sampled_at("h", 1_000), None);
        // Taken at 900 on the agent's clock, received at 1_000.
        s.record("h", &[sample(900, 50.0)], 1_000);
        assert_eq!(s.sampled_at("h", 1_500), Some(900));
        s.record("h", &[sample(1_900, 50.0)], 2_000);
        assert_eq!(s.sampled_at("h", 2_500), Some(1_900));
        assert_eq!(s.sampled_at("h", 2_000 + STALE_MS + 1), None);
        assert_eq!(s.sampled_at("other", 2_500), None);
    }

    #[test]
    fn statuses_give_each_app_a_health_and_go_unknown_when_stale() {
        let s = Samples::default();
        let mut busy = sample(1_000, 95.0);
        busy.apps.push(AppSample {
            app: "FINCORP-APP-CORE".into(),
            processes: 1,
            cpu_pct: 3.0,
            rss_bytes: 1 << 20,
            probe: Some(ProbeSample {
                ok: false,
                latency_ms: None,
                status: None,
                error: Some("connection refused".into()),
            }),
            host_cpu_pct: None,
            throttling: None,
        });
        busy.apps.push(AppSample {
            app: "FINCORP-APP-CRM".into(),
            processes: 0,
            cpu_pct: 0.0,
            rss_bytes: 0,
            probe: None,
            host_cpu_pct: None,
            throttling: None,
        });
        s.record("web02", &[busy], 1_000);
        s.record("web01", &[sample(1_000, 5.0)], 1_000);

        let now = 2_000;
        let hosts = s.statuses(now);
        assert_eq!(
            hosts.iter().map(|h| h.host.as_str()).collect::<Vec<_>>(),
            ["web01", "web02"]
        );
        let web02 = &hosts[1];
        assert!(!web02.stale);
        assert_eq!(web02.last_seen_ms, 1_000);
        assert_eq!(web02.mem_used_pct, Some(25.0));
        let health: Vec<_> = web02
            .apps
            .iter()
            .map(|a| (a.app.as_str(), a.health, a.detail.as_deref()))
            .collect();
        assert_eq!(
            health,
            [
                ("FINCORP-APP-HFT", AppHealth::Up, None),
                (
                    "FINCORP-APP-CORE",
                    AppHealth::Down,
                    Some("probe failed: connection refused")
                ),
                (
                    "FINCORP-APP-CRM",
                    AppHealth::Down,
                    Some("no process matches its selector")
                ),
            ]
        );
        assert_eq!(web02.apps[1].probe_ok, Some(false));

        let later = s.statuses(1_000 + STALE_MS + 1);
        assert!(later.iter().all(|h| h.stale));
        assert!(
            later
                .iter()
                .flat_map(|h| &h.apps)
                .all(|a| a.health == AppHealth::Unknown)
        );
        let json = serde_json::to_value(&later[1]).unwrap();
        assert_eq!(json["apps"][0]["health"], "unknown");
    }
}
