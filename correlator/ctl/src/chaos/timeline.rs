//! The spike's timeline: events as they happen (text or JSON lines) and the
//! summary with time to detect and time to remediate.

use std::io::Write;

use fincorp_api::wire::CpuLimit;
use serde::Serialize;
use tokio::sync::mpsc;

/// One fact in the spike's life.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        app: String,
        pid: u32,
        cgroup: String,
        cgroup_version: u8,
        quota_file: String,
        limit: String,
        seed: u64,
    },
    Load {
        load_pct: f64,
        demand_cores: f64,
    },
    /// CPU the burner got over the last second, its limit and throttled periods.
    Usage {
        cores: f64,
        limit_cores: Option<f64>,
        throttled_periods: u64,
    },
    AlertFiring {
        name: String,
        value: f64,
        incident_id: String,
    },
    IncidentOpened {
        incident_id: String,
    },
    /// The app's alert joined an incident already open on its host (another
    /// alert of the same group opened it before the spike).
    IncidentJoined {
        incident_id: String,
        opened_at_ms: i64,
    },
    Reallocated {
        incident_id: String,
        before: String,
        after: String,
        after_cores: Option<f64>,
        file: String,
        /// The quota as read from the cgroup when the reallocation was seen.
        kernel_reads: String,
    },
    /// A run for the spike's incident that a guardrail or an operator kept
    /// from running (blocked by a budget, rejected, expired, ...).
    RunHalted {
        run_id: String,
        playbook: String,
        state: String,
        reason: String,
    },
    StepFailed {
        step: String,
        action: String,
        error: String,
    },
    Ticket {
        system: String,
        number: String,
        sys_id: String,
        /// The incident already had this ticket; the run updated it.
        reused: bool,
    },
    SpikeEnded,
    AlertResolved {
        name: String,
    },
    IncidentResolved {
        incident_id: String,
    },
    Warning {
        message: String,
    },
}

/// Everything that happened, with Unix-ms times.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub start_ms: i64,
    pub threshold_pct: f64,
    pub initial: Option<CpuLimit>,
    pub final_limit: Option<CpuLimit>,
    pub events: Vec<(i64, Event)>,
}

/// In text mode, a usage line at most this often unless the limit changes.
const USAGE_TEXT_EVERY_MS: i64 = 4_500;

#[derive(Serialize)]
struct Line<'a> {
    t: f64,
    at_ms: i64,
    #[serde(flatten)]
    event: &'a Event,
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn text(e: &Event) -> String {
    match e {
        Event::Started {
            app,
            pid,
            cgroup,
            cgroup_version,
            limit,
            seed,
            ..
        } => {
            format!(
                "spike started: burner pid {pid} as {app} in cgroup v{cgroup_version} {cgroup}, limit {limit} (seed {seed})"
            )
        }
        Event::Load { load_pct, .. } => format!("load {load_pct:.0}% of one core"),
        Event::Usage {
            cores,
            limit_cores,
            throttled_periods,
        } => format!(
            "burner used {:.2} cores (limit {}){}",
            cores,
            limit_cores
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "none".into()),
            if *throttled_periods > 0 {
                format!(", throttled in {throttled_periods} periods")
            } else {
                String::new()
            }
        ),
        Event::AlertFiring { name, value, .. } => {
            format!("alert {name} firing (agent saw {value:.1})")
        }
        Event::IncidentOpened { incident_id } => format!("incident {incident_id} opened"),
        Event::IncidentJoined {
            incident_id,
            opened_at_ms,
        } => format!(
            "alert joined incident {incident_id}, open since {} (before the spike)",
            fincorp_api::format_ms(*opened_at_ms)
        ),
        Event::Reallocated {
            before,
            after,
            kernel_reads,
            ..
        } => {
            format!("reallocation applied: {before} -> {after}; kernel now reads {kernel_reads}")
        }
        Event::RunHalted {
            run_id,
            playbook,
            state,
            reason,
        } => format!("run {run_id} of {playbook} {state}: {reason}"),
        Event::StepFailed {
            step,
            action,
            error,
        } => format!("step {step} ({action}) FAILED: {error}"),
        Event::Ticket {
            system,
            number,
            reused,
            ..
        } => {
            if *reused {
                format!("{system} ticket {number} (already open for the incident; updated)")
            } else {
                format!("{system} ticket {number}")
            }
        }
        Event::SpikeEnded => "spike ended: burner stopped".into(),
        Event::AlertResolved { name } => format!("alert {name} resolved"),
        Event::IncidentResolved { incident_id } => format!("incident {incident_id} resolved"),
        Event::Warning { message } => format!("warning: {message}"),
    }
}

/// Prints events as they arrive and returns them all when the channel closes.
pub(super) async fn print(
    mut rx: mpsc::Receiver<(i64, Event)>,
    start_ms: i64,
    json: bool,
    initial: CpuLimit,
    threshold_pct: f64,
    mut out: Box<dyn Write + Send>,
) -> Timeline {
    let mut timeline = Timeline {
        start_ms,
        threshold_pct,
        initial: Some(initial),
        ..Default::default()
    };
    // People get a usage line every few seconds or when the limit changes;
    // JSON consumers get every one.
    let mut last_usage: Option<(i64, Option<f64>)> = None;
    while let Some((at_ms, event)) = rx.recv().await {
        let show = match (&event, last_usage) {
            (Event::Usage { limit_cores, .. }, Some((last_at, last_limit))) if !json => {
                at_ms - last_at >= USAGE_TEXT_EVERY_MS || *limit_cores != last_limit
            }
            _ => true,
        };
        if let (true, Event::Usage { limit_cores, .. }) = (show, &event) {
            last_usage = Some((at_ms, *limit_cores));
        }
        if show {
            let t = secs(at_ms - start_ms);
            let line = if json {
                serde_json::to_string(&Line {
                    t,
                    at_ms,
                    event: &event,
                })
                .expect("events serialise")
            } else {
                format!("{:>+8.2}s  {}", t, text(&event))
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        timeline.events.push((at_ms, event));
    }
    timeline
}

/// The figures the spike is judged by.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub event: &'static str,
    /// When the load first went above the threshold (seconds after start).
    pub threshold_crossed_at_s: Option<f64>,
    /// Incident opened (or joined by the app's alert) minus threshold crossed.
    pub time_to_detect_s: Option<f64>,
    /// Reallocation applied minus threshold crossed.
    pub time_to_remediate_s: Option<f64>,
    pub incident_id: Option<String>,
    pub ticket: Option<String>,
    pub reallocation: Option<String>,
    pub initial_limit: Option<String>,
    pub final_limit: Option<String>,
    /// Most CPU the burner got in one second before / after the reallocation.
    pub max_cores_before: Option<f64>,
    pub max_cores_after: Option<f64>,
    pub resolved: bool,
    /// Opened, reallocated, ticketed and resolved.
    pub complete: bool,
}

impl Timeline {
    fn first<T>(&self, f: impl Fn(&Event) -> Option<T>) -> Option<(i64, T)> {
        self.events
            .iter()
            .find_map(|(at, e)| f(e).map(|v| (*at, v)))
    }

    pub fn summary(&self) -> Summary {
        let crossed = self.first(|e| match e {
            Event::Load { load_pct, .. } if *load_pct > self.threshold_pct => Some(()),
            _ => None,
        });
        let opened = self.first(|e| match e {
            Event::IncidentOpened { incident_id } | Event::IncidentJoined { incident_id, .. } => {
                Some(incident_id.clone())
            }
            _ => None,
        });
        let realloc = self.first(|e| match e {
            Event::Reallocated { before, after, .. } => Some(format!("{before} -> {after}")),
            _ => None,
        });
        let ticket = self.first(|e| match e {
            Event::Ticket { number, .. } => Some(number.clone()),
            _ => None,
        });
        let resolved = self
            .first(|e| matches!(e, Event::IncidentResolved { .. }).then_some(()))
            .is_some();
        let since = |at: i64| crossed.map(|(c, _)| secs(at - c));
        let usage = |after: bool| {
            let cut = realloc.as_ref().map(|(at, _)| *at);
            self.events
                .iter()
                .filter_map(|(at, e)| match e {
                    Event::Usage { cores, .. } => Some((*at, *cores)),
                    _ => None,
                })
                .filter(|(at, _)| match cut {
                    Some(cut) => (*at > cut + 1_000) == after && (after || *at <= cut),
                    None => !after,
                })
                .map(|(_, c)| c)
                .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))))
        };
        Summary {
            event: "summary",
            threshold_crossed_at_s: crossed.map(|(at, _)| secs(at - self.start_ms)),
            time_to_detect_s: opened.as_ref().and_then(|(at, _)| since(*at)),
            time_to_remediate_s: realloc.as_ref().and_then(|(at, _)| since(*at)),
            incident_id: opened.as_ref().map(|(_, id)| id.clone()),
            ticket: ticket.as_ref().map(|(_, n)| n.clone()),
            reallocation: realloc.as_ref().map(|(_, r)| r.clone()),
            initial_limit: self.initial.map(|l| l.to_string()),
            final_limit: self.final_limit.map(|l| l.to_string()),
            max_cores_before: usage(false),
            max_cores_after: usage(true),
            resolved,
            complete: opened.is_some() && realloc.is_some() && ticket.is_some() && resolved,
        }
    }
}

impl Summary {
    pub fn render(&self) -> String {
        let s = |v: Option<f64>| {
            v.map(|v| format!("{v:.2}s"))
                .unwrap_or_else(|| "not observed".into())
        };
        let c = |v: Option<f64>| {
            v.map(|v| format!("{v:.2} cores"))
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "\nsummary\n  incident:          {}\n  time to detect:    {} (bar 2s, from the load crossing the threshold)\n  time to remediate: {} (bar 3s)\n  reallocation:      {}\n  ticket:            {}\n  burner CPU max:    {} before, {} after the reallocation\n  resolved:          {}\n  chain complete:    {}\n",
            self.incident_id.as_deref().unwrap_or("not observed"),
            s(self.time_to_detect_s),
            s(self.time_to_remediate_s),
            self.reallocation.as_deref().unwrap_or("not observed"),
            self.ticket.as_deref().unwrap_or("not observed"),
            c(self.max_cores_before),
            c(self.max_cores_after),
            if self.resolved { "yes" } else { "no" },
            if self.complete { "yes" } else { "NO" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_measured_from_the_threshold_crossing() {
        let ev = |at, e| (at, e);
        let t = Timeline {
            start_ms: 0,
            threshold_pct: 80.0,
            initial: None,
            final_limit: None,
            events: vec![
                ev(
                    0,
                    Event::Load {
                        load_pct: 50.0,
                        demand_cores: 0.5,
                    },
                ),
                ev(
                    5_000,
                    Event::Load {
                        load_pct: 79.0,
                        demand_cores: 0.79,
                    },
                ),
                ev(
                    10_000,
                    Event::Load {
                        load_pct: 88.0,
                        demand_cores: 0.88,
                    },
                ),
                ev(
                    11_500,
                    Event::IncidentOpened {
                        incident_id: "fc-1".into(),
                    },
                ),
                ev(
                    11_600,
                    Event::Reallocated {
                        incident_id: "fc-1".into(),
                        before: "a".into(),
                        after: "b".into(),
                        after_cores: Some(1.2),
                        file: "f".into(),
                        kernel_reads: "b".into(),
                    },
                ),
                ev(
                    11_800,
                    Event::Ticket {
                        system: "servicenow".into(),
                        number: "INC0010001".into(),
                        sys_id: "x".into(),
                        reused: false,
                    },
                ),
                ev(
                    9_000,
                    Event::Usage {
                        cores: 0.8,
                        limit_cores: Some(1.0),
                        throttled_periods: 0,
                    },
                ),
                ev(
                    13_000,
                    Event::Usage {
                        cores: 1.15,
                        limit_cores: Some(1.2),
                        throttled_periods: 3,
                    },
                ),
                ev(
                    20_000,
                    Event::IncidentResolved {
                        incident_id: "fc-1".into(),
                    },
                ),
            ],
        };
        let s = t.summary();
        assert_eq!(s.threshold_crossed_at_s, Some(10.0));
        assert_eq!(s.time_to_detect_s, Some(1.5));
        assert_eq!(s.time_to_remediate_s, Some(1.6));
        assert_eq!(
            (s.max_cores_before, s.max_cores_after),
            (Some(0.8), Some(1.15))
        );
        assert!(s.complete);
        assert!(s.render().contains("time to detect:    1.50s"));
    }

    #[test]
    fn joining_an_incident_open_before_the_spike_counts_as_detection() {
        let t = Timeline {
            start_ms: 0,
            threshold_pct: 80.0,
            events: vec![
                (
                    2_000,
                    Event::Load {
                        load_pct: 85.0,
                        demand_cores: 0.85,
                    },
                ),
                (
                    3_200,
                    Event::IncidentJoined {
                        incident_id: "fc-7".into(),
                        opened_at_ms: -60_000,
                    },
                ),
            ],
            ..Timeline::default()
        };
        let s = t.summary();
        assert_eq!(s.incident_id.as_deref(), Some("fc-7"));
        assert_eq!(s.time_to_detect_s, Some(1.2));
        assert!(!s.complete, "no reallocation, ticket or resolution yet");
        assert!(text(&t.events[1].1).contains("joined incident fc-7"));
    }
}
