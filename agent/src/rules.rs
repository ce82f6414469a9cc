//! Local threshold rules: the `when` grammar and the pure state machine that
//! turns a stream of samples into firing/resolved [`AlertEvent`]s, with `for`
//! durations, hysteresis (`clear`) and severities.
//!
//! The engine does no IO and reads no clock: time is each sample's `at_ms`,
//! so tests drive it with a fake clock.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration as StdDuration;

use fincorp_api::UnixMs;
use fincorp_api::signing::random_hex;
use fincorp_api::wire::{AlertEvent, AlertStatus, AppSample, CpuThrottling, HostSample, Severity};
use serde::{Deserialize, Serialize};

use crate::config::AppConfig;

/// Whether a rule watches one app or the whole host; they allow different metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    App,
    Host,
}

/// What a rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// App: % of one core summed over its processes. Host: % of all cores.
    Cpu,
    /// App: % of all the host's cores.
    HostCpu,
    /// App: resident memory of its processes, MiB.
    RssMb,
    /// App: number of matched processes.
    Processes,
    /// App: 1 when it has at least one process, else 0.
    Up,
    /// App: % of CFS periods in the last interval in which its cgroup was throttled.
    ThrottledPct,
    /// App: time its cgroup was throttled during the last interval, ms.
    ThrottledMs,
    /// App: the probe's latency; absent while the probe fails.
    LatencyMs,
    /// App: 1 when the probe succeeds, 0 when it fails.
    ProbeUp,
    /// Host: the busiest core, % of that core.
    CpuCoreMax,
    /// Host: used memory, % of total.
    MemUsedPct,
    /// Host: `MemAvailable`, MiB.
    MemAvailableMb,
    /// Host: used swap, % of total (0 without swap).
    SwapUsedPct,
    Load1,
    Load5,
    Load15,
}

const APP_METRICS: &[Metric] = &[
    Metric::Cpu,
    Metric::HostCpu,
    Metric::RssMb,
    Metric::Processes,
    Metric::Up,
    Metric::ThrottledPct,
    Metric::ThrottledMs,
    Metric::LatencyMs,
    Metric::ProbeUp,
];
const HOST_METRICS: &[Metric] = &[
    Metric::Cpu,
    Metric::CpuCoreMax,
    Metric::MemUsedPct,
    Metric::MemAvailableMb,
    Metric::SwapUsedPct,
    Metric::Load1,
    Metric::Load5,
    Metric::Load15,
];

const MIB: f64 = 1024.0 * 1024.0;

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::HostCpu => "host_cpu",
            Metric::RssMb => "rss_mb",
            Metric::Processes => "processes",
            Metric::Up => "up",
            Metric::ThrottledPct => "throttled_pct",
            Metric::ThrottledMs => "throttled_ms",
            Metric::LatencyMs => "latency_ms",
            Metric::ProbeUp => "probe_up",
            Metric::CpuCoreMax => "cpu_core_max",
            Metric::MemUsedPct => "mem_used_pct",
            Metric::MemAvailableMb => "mem_available_mb",
            Metric::SwapUsedPct => "swap_used_pct",
            Metric::Load1 => "load1",
            Metric::Load5 => "load5",
            Metric::Load15 => "load15",
        }
    }

    /// The metrics a rule in `scope` may use.
    pub fn allowed(scope: Scope) -> &'static [Metric] {
        match scope {
            Scope::App => APP_METRICS,
            Scope::Host => HOST_METRICS,
        }
    }

    /// Whether a sample of this metric is an average over the interval since
    /// the previous sample (CPU, throttling) rather than a reading at the
    /// sample's time. A true averaged sample means the condition held from
    /// the interval's start, and `for` counts from there.
    pub fn averaged(self) -> bool {
        matches!(
            self,
            Metric::Cpu
                | Metric::HostCpu
                | Metric::CpuCoreMax
                | Metric::ThrottledPct
                | Metric::ThrottledMs
        )
    }

    /// Metrics that only exist for apps with a probe.
    pub fn needs_probe(self) -> bool {
        matches!(self, Metric::LatencyMs | Metric::ProbeUp)
    }

    fn of_app(self, app: &AppSample, throttle: Option<ThrottleDelta>) -> Option<f64> {
        let value = match self {
            Metric::Cpu => app.cpu_pct,
            Metric::HostCpu => app.host_cpu_pct?,
            Metric::RssMb => app.rss_bytes as f64 / MIB,
            Metric::Processes => f64::from(app.processes),
            Metric::Up => f64::from(u8::from(app.processes > 0)),
            Metric::ThrottledPct => throttle?.pct,
            Metric::ThrottledMs => throttle?.ms,
            Metric::LatencyMs => app.probe.as_ref().filter(|p| p.ok)?.latency_ms?,
            Metric::ProbeUp => f64::from(u8::from(app.probe.as_ref()?.ok)),
            _ => return None,
        };
        value.is_finite().then_some(value)
    }

    fn of_host(self, host: &HostSample) -> Option<f64> {
        let value = match self {
            Metric::Cpu => host.cpu_pct,
            Metric::CpuCoreMax => host.cpu_per_core_pct.iter().copied().reduce(f64::max)?,
            Metric::MemUsedPct if host.mem_total_bytes > 0 => {
                host.mem_used_bytes as f64 * 100.0 / host.mem_total_bytes as f64
            }
            Metric::MemAvailableMb => host.mem_available_bytes? as f64 / MIB,
            Metric::SwapUsedPct => match (host.swap_used_bytes?, host.swap_total_bytes?) {
                (_, 0) => 0.0,
                (used, total) => used as f64 * 100.0 / total as f64,
            },
            Metric::Load1 => host.load?.one,
            Metric::Load5 => host.load?.five,
            Metric::Load15 => host.load?.fifteen,
            _ => return None,
        };
        value.is_finite().then_some(value)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Throttling over one sampling interval.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ThrottleDelta {
    pct: f64,
    ms: f64,
}

impl ThrottleDelta {
    fn between(prev: CpuThrottling, now: CpuThrottling) -> Option<Self> {
        let periods = now.nr_periods.checked_sub(prev.nr_periods)?;
        let throttled = now.nr_throttled.checked_sub(prev.nr_throttled)?;
        let us = now.throttled_us.checked_sub(prev.throttled_us)?;
        Some(Self {
            pct: if periods == 0 {
                0.0
            } else {
                throttled as f64 * 100.0 / periods as f64
            },
            ms: us as f64 / 1_000.0,
        })
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }
}

/// A parsed `when`: `<metric> <op> <number>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    pub metric: Metric,
    pub op: Op,
    pub threshold: f64,
}

impl Condition {
    /// Parses `cpu > 80`; the message of an error says what was expected.
    pub fn parse(text: &str, scope: Scope) -> Result<Self, String> {
        let grammar = || {
            format!(
                "expected `<metric> <op> <number>` with op one of >, >=, <, <=, e.g. `cpu > 80`; got {text:?}"
            )
        };
        let s = text.trim();
        let name_len = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let (name, rest) = s.split_at(name_len);
        if name.is_empty() {
            return Err(grammar());
        }
        let rest = rest.trim_start();
        let (op, rest) = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)]
            .into_iter()
            .find_map(|(sym, op)| rest.strip_prefix(sym).map(|r| (op, r)))
            .ok_or_else(grammar)?;
        let threshold: f64 = rest.trim().parse().map_err(|_| grammar())?;
        if !threshold.is_finite() {
            return Err(grammar());
        }
        let allowed = Metric::allowed(scope);
        let metric = allowed
            .iter()
            .copied()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = allowed.iter().map(|m| m.name()).collect();
                let whose = match scope {
                    Scope::App => "app",
                    Scope::Host => "host",
                };
                format!(
                    "unknown metric `{name}`; {whose} rules can use {}",
                    names.join(", ")
                )
            })?;
        Ok(Self {
            metric,
            op,
            threshold,
        })
    }

    pub fn holds(&self, value: f64) -> bool {
        self.op.holds(value, self.threshold)
    }

    /// A `clear` threshold must sit on the resolved side of the firing one,
    /// or the alert could never resolve (or would flap).
    pub fn check_clear(&self, clear: f64) -> Result<(), String> {
        let ok = clear.is_finite()
            && match self.op {
                Op::Gt | Op::Ge => clear <= self.threshold,
                Op::Lt | Op::Le => clear >= self.threshold,
            };
        if ok {
            return Ok(());
        }
        let side = match self.op {
            Op::Gt | Op::Ge => "at most",
            Op::Lt | Op::Le => "at least",
        };
        Err(format!(
            "`clear` must be {side} the threshold {} of `{self}`: the alert resolves once `{} {} clear` no longer holds",
            self.threshold,
            self.metric,
            self.op.symbol()
        ))
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.metric, self.op.symbol(), self.threshold)
    }
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub condition: Condition,
    /// Hysteresis: once firing, the alert resolves only when the condition
    /// no longer holds against this threshold (`None`: the firing threshold).
    pub clear: Option<f64>,
    /// How long the condition must hold before the alert fires.
    pub for_: StdDuration,
    pub severity: Severity,
}

/// Where one (subject, rule) pair is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Inactive,
    /// The condition has held since `since`, not yet for long enough.
    Pending {
        since: UnixMs,
    },
    Firing {
        since: UnixMs,
    },
}

#[derive(Debug)]
struct Slot {
    /// `None` for host rules.
    app: Option<String>,
    rule: Rule,
    fingerprint: String,
    state: State,
}

/// A firing alert as persisted across agent restarts, so an alert that was
/// firing when the agent stopped resolves (with its original start) instead
/// of being forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiringAlert {
    pub fingerprint: String,
    pub since: UnixMs,
}

/// A currently firing alert, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveAlert<'a> {
    pub app: Option<&'a str>,
    pub rule: &'a str,
    pub severity: Severity,
}

/// Evaluates every rule of every app and the host rules against each sample.
#[derive(Debug)]
pub struct RuleEngine {
    host: String,
    slots: Vec<Slot>,
    /// The previous sample's time: where the current averaging interval began.
    /// `None` until the first (priming) sample.
    last_at: Option<UnixMs>,
    /// Each app's throttling counters in the previous sample.
    last_throttle: HashMap<String, CpuThrottling>,
}

impl RuleEngine {
    pub fn new(host: &str, apps: &[AppConfig], host_rules: &[Rule]) -> Self {
        let app_slots = apps.iter().flat_map(|app| {
            app.rules.iter().map(|rule| Slot {
                app: Some(app.name.clone()),
                fingerprint: fingerprint(host, Some(&app.name), &rule.name),
                rule: rule.clone(),
                state: State::Inactive,
            })
        });
        let host_slots = host_rules.iter().map(|rule| Slot {
            app: None,
            fingerprint: fingerprint(host, None, &rule.name),
            rule: rule.clone(),
            state: State::Inactive,
        });
        Self {
            host: host.to_owned(),
            slots: app_slots.chain(host_slots).collect(),
            last_at: None,
            last_throttle: HashMap::new(),
        }
    }

    /// Feeds one sample (its `at_ms` is "now") and returns the transitions.
    ///
    /// The very first sample is skipped: CPU% needs two readings, so the
    /// first one's values are meaningless.
    pub fn observe(&mut self, sample: &HostSample) -> Vec<AlertEvent> {
        let now = sample.at_ms;
        let mut throttle: HashMap<&str, ThrottleDelta> = HashMap::new();
        for app in &sample.apps {
            match app.throttling {
                Some(t) => {
                    if let Some(prev) = self.last_throttle.insert(app.app.clone(), t) {
                        if let Some(d) = ThrottleDelta::between(prev, t) {
                            throttle.insert(&app.app, d);
                        }
                    }
                }
                None => {
                    self.last_throttle.remove(&app.app);
                }
            }
        }
        let Some(interval_start) = self.last_at.replace(now) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        for slot in &mut self.slots {
            let metric = slot.rule.condition.metric;
            let value = match &slot.app {
                Some(name) => sample
                    .apps
                    .iter()
                    .find(|a| &a.app == name)
                    .and_then(|a| metric.of_app(a, throttle.get(a.app.as_str()).copied())),
                None => metric.of_host(sample),
            };
            // An absent metric (a failing probe's latency) keeps the state.
            let Some(value) = value else { continue };
            let holds = match slot.state {
                // Hysteresis: a firing alert stays until the clear threshold is crossed.
                State::Firing { .. } => slot.rule.condition.op.holds(
                    value,
                    slot.rule.clear.unwrap_or(slot.rule.condition.threshold),
                ),
                _ => slot.rule.condition.holds(value),
            };
            let for_ms = i64::try_from(slot.rule.for_.as_millis()).unwrap_or(i64::MAX);
            let next = match (slot.state, holds) {
                (State::Inactive, true) => State::Pending {
                    since: if metric.averaged() {
                        interval_start.min(now)
                    } else {
                        now
                    },
                },
                (State::Pending { since }, true) => State::Pending { since },
                (State::Firing { since }, true) => State::Firing { since },
                (State::Firing { since }, false) => {
                    events.push(event(
                        &self.host,
                        slot,
                        AlertStatus::Resolved,
                        value,
                        since,
                        now,
                    ));
                    State::Inactive
                }
                (_, false) => State::Inactive,
            };
            slot.state = match next {
                State::Pending { since } if now.saturating_sub(since) >= for_ms => {
                    events.push(event(
                        &self.host,
                        slot,
                        AlertStatus::Firing,
                        value,
                        since,
                        now,
                    ));
                    State::Firing { since }
                }
                other => other,
            };
        }
        events
    }

    /// Alerts currently firing, as (app, rule) names; for logs and tests.
    pub fn firing(&self) -> Vec<(Option<&str>, &str)> {
        self.active().map(|a| (a.app, a.rule)).collect()
    }

    /// Alerts currently firing, with their severity.
    pub fn active(&self) -> impl Iterator<Item = ActiveAlert<'_>> {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, State::Firing { .. }))
            .map(|s| ActiveAlert {
                app: s.app.as_deref(),
                rule: &s.rule.name,
                severity: s.rule.severity,
            })
    }

    /// What must survive a restart: the firing alerts.
    pub fn firing_state(&self) -> Vec<FiringAlert> {
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                State::Firing { since } => Some(FiringAlert {
                    fingerprint: s.fingerprint.clone(),
                    since,
                }),
                _ => None,
            })
            .collect()
    }

    /// Marks the persisted alerts as firing again (those whose rule still
    /// exists); returns how many were restored.
    pub fn restore(&mut self, firing: &[FiringAlert]) -> usize {
        let mut restored = 0;
        for f in firing {
            if let Some(slot) = self
                .slots
                .iter_mut()
                .find(|s| s.fingerprint == f.fingerprint)
            {
                slot.state = State::Firing { since: f.since };
                restored += 1;
            }
        }
        restored
    }

    /// After a config reload: carries over the state of every rule that is
    /// unchanged (same host, app, name and definition) from `old`. The
    /// averaging interval and throttling counters carry over too.
    pub fn carry_over(&mut self, old: &RuleEngine) {
        for slot in &mut self.slots {
            if let Some(prev) = old
                .slots
                .iter()
                .find(|o| o.fingerprint == slot.fingerprint && o.rule == slot.rule)
            {
                slot.state = prev.state;
            }
        }
        self.last_at = old.last_at;
        self.last_throttle = old.last_throttle.clone();
    }

    /// Resolved events for alerts that are firing now but whose rule is not
    /// in `new` (removed or changed by a reload), so no alert is left open.
    pub fn resolve_dropped(&self, new: &RuleEngine, now: UnixMs) -> Vec<AlertEvent> {
        self.slots
            .iter()
            .filter_map(|slot| match slot.state {
                State::Firing { since }
                    if !new
                        .slots
                        .iter()
                        .any(|n| n.fingerprint == slot.fingerprint && n.rule == slot.rule) =>
                {
                    let mut e = event(&self.host, slot, AlertStatus::Resolved, f64::NAN, since, now);
                    e.value = slot.rule.condition.threshold;
                    e.summary = format!(
                        "{} {} resolved on host {}: the rule was changed or removed by a config reload",
                        slot.app.as_deref().unwrap_or("host"),
                        slot.rule.name,
                        self.host
                    );
                    Some(e)
                }
                _ => None,
            })
            .collect()
    }
}

fn event(
    host: &str,
    slot: &Slot,
    status: AlertStatus,
    value: f64,
    since: UnixMs,
    now: UnixMs,
) -> AlertEvent {
    let c = &slot.rule.condition;
    let subject = slot.app.as_deref().unwrap_or("host");
    let summary = match status {
        AlertStatus::Firing => format!(
            "{subject} {} {value:.1} {} {} for {} on host {host}",
            c.metric,
            c.op.symbol(),
            c.threshold,
            fincorp_api::config::Duration(slot.rule.for_),
        ),
        AlertStatus::Resolved => format!(
            "{subject} {} {value:.1} no longer {} {} on host {host} (resolved)",
            c.metric,
            c.op.symbol(),
            slot.rule.clear.unwrap_or(c.threshold),
        ),
    };
    AlertEvent {
        id: random_hex(16),
        fingerprint: slot.fingerprint.clone(),
        status,
        name: slot.rule.name.clone(),
        host: host.to_owned(),
        app: slot.app.clone(),
        severity: slot.rule.severity,
        metric: c.metric.name().to_owned(),
        value,
        threshold: c.threshold,
        starts_at_ms: since,
        at_ms: now,
        summary,
        labels: Default::default(),
    }
}

/// Stable per (host, app, rule): hex of the first 16 bytes of
/// SHA-256(host \0 app \0 rule); host rules use an empty app.
pub fn fingerprint(host: &str, app: Option<&str>, rule: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(host.as_bytes());
    ctx.update(b"\0");
    ctx.update(app.unwrap_or("").as_bytes());
    ctx.update(b"\0");
    ctx.update(rule.as_bytes());
    let digest = ctx.finish();
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Selector;
    use fincorp_api::wire::{CpuThrottling, LoadAverage, ProbeSample};

    fn rule(name: &str, when: &str, for_secs: u64, scope: Scope) -> Rule {
        Rule {
            name: name.into(),
            condition: Condition::parse(when, scope).unwrap(),
            clear: None,
            for_: StdDuration::from_secs(for_secs),
            severity: Severity::Critical,
        }
    }

    fn app(name: &str, rules: Vec<Rule>) -> AppConfig {
        AppConfig {
            name: name.into(),
            selector: Selector::Exe("x".into()),
            cgroup: None,
            probe: None,
            rules,
        }
    }

    fn sample(at_ms: UnixMs, cpu: f64) -> HostSample {
        HostSample {
            at_ms,
            cpu_pct: 10.0,
            mem_used_bytes: 50,
            mem_total_bytes: 100,
            apps: vec![AppSample {
                app: "APP".into(),
                processes: 1,
                cpu_pct: cpu,
                rss_bytes: 0,
                probe: None,
                host_cpu_pct: Some(cpu / 2.0),
                throttling: None,
            }],
            cpu_per_core_pct: vec![5.0, 15.0],
            mem_available_bytes: Some(40 * 1024 * 1024),
            swap_used_bytes: Some(0),
            swap_total_bytes: Some(0),
            load: Some(LoadAverage {
                one: 0.5,
                five: 0.25,
                fifteen: 0.125,
            }),
        }
    }

    fn engine(for_secs: u64) -> RuleEngine {
        let apps = [app(
            "APP",
            vec![rule("cpu_high", "cpu > 80", for_secs, Scope::App)],
        )];
        let mut e = RuleEngine::new("web01", &apps, &[]);
        assert!(
            e.observe(&sample(0, 99.0)).is_empty(),
            "the first tick is skipped"
        );
        e
    }

    #[test]
    fn the_grammar_accepts_all_operators_and_explains_errors() {
        let c = Condition::parse("  rss_mb>=6144 ", Scope::App).unwrap();
        assert_eq!(
            (c.metric, c.op, c.threshold),
            (Metric::RssMb, Op::Ge, 6144.0)
        );
        assert_eq!(
            Condition::parse("cpu <= 1.5", Scope::Host).unwrap().op,
            Op::Le
        );
        assert_eq!(
            Condition::parse("probe_up < 1", Scope::App).unwrap().op,
            Op::Lt
        );
        for bad in [
            "",
            "cpu",
            "cpu >",
            "cpu = 5",
            "> 5",
            "cpu > 5 6",
            "cpu > NaN",
            "cpu > inf",
        ] {
            let err = Condition::parse(bad, Scope::App).unwrap_err();
            assert!(
                err.starts_with("expected `<metric> <op> <number>`"),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(
            Condition::parse("mem_used_pct > 5", Scope::App).unwrap_err(),
            "unknown metric `mem_used_pct`; app rules can use cpu, host_cpu, rss_mb, processes, up, throttled_pct, throttled_ms, latency_ms, probe_up"
        );
    }

    #[test]
    fn a_cpu_rule_fires_once_the_average_held_for_its_duration() {
        let mut e = engine(1);
        // CPU at 1_000 is the average over [0, 1_000]: above 80 for 1 s already.
        let events = e.observe(&sample(1_000, 92.4));
        assert_eq!(events.len(), 1, "{events:?}");
        let ev = &events[0];
        assert_eq!(ev.status, AlertStatus::Firing);
        assert_eq!((ev.starts_at_ms, ev.at_ms), (0, 1_000));
        assert_eq!((ev.value, ev.threshold), (92.4, 80.0));
        assert_eq!(
            (ev.name.as_str(), ev.app.as_deref(), ev.metric.as_str()),
            ("cpu_high", Some("APP"), "cpu")
        );
        assert_eq!(ev.severity, Severity::Critical);
        assert_eq!(ev.summary, "APP cpu 92.4 > 80 for 1s on host web01");
        assert_eq!(ev.id.len(), 32);
        // Still firing: no repeat.
        assert!(e.observe(&sample(2_000, 95.0)).is_empty());
        assert_eq!(e.firing(), [(Some("APP"), "cpu_high")]);
    }

    #[test]
    fn a_cpu_rule_needs_the_whole_duration_of_averages() {
        let mut e = engine(2);
        assert!(
            e.observe(&sample(1_000, 92.0)).is_empty(),
            "1 s of average so far"
        );
        let events = e.observe(&sample(2_000, 93.0));
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].starts_at_ms, events[0].at_ms), (0, 2_000));
    }

    #[test]
    fn a_gauge_rule_counts_from_the_first_reading_not_from_the_interval() {
        let apps = [app(
            "APP",
            vec![rule("memory_high", "rss_mb > 100", 1, Scope::App)],
        )];
        let mut e = RuleEngine::new("web01", &apps, &[]);
        let with_rss = |at_ms, mib: u64| {
            let mut s = sample(at_ms, 0.0);
            s.apps[0].rss_bytes = mib * 1024 * 1024;
            s
        };
        assert!(e.observe(&with_rss(0, 500)).is_empty(), "priming");
        assert!(
            e.observe(&with_rss(1_000, 500)).is_empty(),
            "one reading is an instant, not 1 s"
        );
        let events = e.observe(&with_rss(2_000, 500));
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].starts_at_ms, events[0].at_ms), (1_000, 2_000));
    }

    #[test]
    fn a_pending_rule_that_recovers_never_fires() {
        let mut e = engine(5);
        assert!(
            e.observe(&sample(1_000, 90.0)).is_empty(),
            "pending since 0"
        );
        assert!(e.observe(&sample(4_000, 90.0)).is_empty(), "only 4s so far");
        assert!(
            e.observe(&sample(5_000, 10.0)).is_empty(),
            "recovered before 5s"
        );
        assert!(
            e.observe(&sample(6_000, 90.0)).is_empty(),
            "pending restarts at 5s, the start of this average"
        );
        assert!(e.observe(&sample(9_000, 90.0)).is_empty());
        let events = e.observe(&sample(10_000, 90.0));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].starts_at_ms, 5_000);
    }

    #[test]
    fn a_zero_duration_fires_on_the_first_true_sample_and_resolves_on_the_first_false() {
        let mut e = engine(0);
        let fired = e.observe(&sample(1_000, 81.0));
        assert_eq!(fired.len(), 1);
        let resolved = e.observe(&sample(2_000, 0.0));
        assert_eq!(resolved.len(), 1);
        let r = &resolved[0];
        assert_eq!(r.status, AlertStatus::Resolved);
        assert_eq!((r.starts_at_ms, r.at_ms, r.value), (0, 2_000, 0.0));
        assert_eq!(r.fingerprint, fired[0].fingerprint);
        assert_ne!(r.id, fired[0].id, "ids are per event");
        assert!(e.firing().is_empty());
        assert!(e.observe(&sample(3_000, 0.0)).is_empty());
    }

    #[test]
    fn the_first_tick_is_skipped_even_when_the_condition_holds() {
        let apps = [app(
            "APP",
            vec![rule("cpu_high", "cpu > 80", 0, Scope::App)],
        )];
        let mut e = RuleEngine::new("web01", &apps, &[]);
        assert!(e.observe(&sample(0, 100.0)).is_empty());
        assert_eq!(e.observe(&sample(1_000, 100.0)).len(), 1);
    }

    #[test]
    fn an_app_with_no_processes_has_cpu_zero_and_resolves() {
        let mut e = engine(0);
        assert_eq!(e.observe(&sample(1_000, 99.0)).len(), 1);
        let mut gone = sample(2_000, 0.0);
        gone.apps[0].processes = 0;
        let events = e.observe(&gone);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].status, AlertStatus::Resolved);
    }

    #[test]
    fn absent_latency_keeps_the_state_and_probe_up_tracks_failures() {
        let apps = [app(
            "APP",
            vec![
                rule("slow", "latency_ms > 100", 0, Scope::App),
                rule("down", "probe_up < 1", 0, Scope::App),
            ],
        )];
        let mut e = RuleEngine::new("h", &apps, &[]);
        let with_probe = |at, probe: ProbeSample| {
            let mut s = sample(at, 0.0);
            s.apps[0].probe = Some(probe);
            s
        };
        let ok = |ms| ProbeSample {
            ok: true,
            latency_ms: Some(ms),
            status: Some(200),
            error: None,
        };
        let failed = ProbeSample {
            ok: false,
            latency_ms: None,
            status: None,
            error: Some("refused".into()),
        };
        e.observe(&with_probe(0, ok(1.0)));
        let ev = e.observe(&with_probe(1_000, ok(250.0)));
        assert_eq!(
            ev.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["slow"]
        );
        // The probe fails: latency is absent so `slow` stays firing; `down` fires.
        let ev = e.observe(&with_probe(2_000, failed));
        assert_eq!(
            ev.iter()
                .map(|e| (e.name.as_str(), e.status))
                .collect::<Vec<_>>(),
            [("down", AlertStatus::Firing)]
        );
        assert_eq!(e.firing().len(), 2);
        // No probe result at all (not yet run): both keep their state.
        assert!(e.observe(&sample(3_000, 0.0)).is_empty());
        let ev = e.observe(&with_probe(4_000, ok(5.0)));
        let mut got: Vec<_> = ev.iter().map(|e| (e.name.as_str(), e.status)).collect();
        got.sort_by_key(|(n, _)| *n);
        assert_eq!(
            got,
            [
                ("down", AlertStatus::Resolved),
                ("slow", AlertStatus::Resolved)
            ]
        );
    }

    #[test]
    fn host_rules_use_host_metrics() {
        let host_rules = [rule(
            "host_memory_high",
            "mem_used_pct > 95",
            0,
            Scope::Host,
        )];
        let mut e = RuleEngine::new("db01", &[], &host_rules);
        let mut s = sample(0, 0.0);
        e.observe(&s);
        s.at_ms = 1_000;
        s.mem_used_bytes = 96;
        let ev = e.observe(&s);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].app, None);
        assert_eq!(ev[0].value, 96.0);
        assert_eq!(
            ev[0].summary,
            "host mem_used_pct 96.0 > 95 for 0s on host db01"
        );
        assert_eq!(
            ev[0].fingerprint,
            fingerprint("db01", None, "host_memory_high")
        );
    }

    #[test]
    fn fingerprints_are_stable_and_distinguish_host_app_and_rule() {
        let f = fingerprint("web01", Some("FINCORP-APP-HFT"), "cpu_high");
        // SHA-256("web01\0FINCORP-APP-HFT\0cpu_high"), first 16 bytes: a
        // regression anchor so the value never changes across releases.
        assert_eq!(f, "a1bc313ee58060d0020033286261fa2c");
        assert_ne!(f, fingerprint("web02", Some("FINCORP-APP-HFT"), "cpu_high"));
        assert_ne!(f, fingerprint("web01", Some("FINCORP-APP-CRM"), "cpu_high"));
        assert_ne!(
            f,
            fingerprint("web01", Some("FINCORP-APP-HFT"), "latency_high")
        );
        // The separator matters: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            fingerprint("h", Some("ab"), "c"),
            fingerprint("h", Some("a"), "bc")
        );
        assert_eq!(fingerprint("h", None, "r"), fingerprint("h", Some(""), "r"));
    }

    #[test]
    fn hysteresis_resolves_only_below_the_clear_threshold() {
        let mut r = rule("cpu_high", "cpu > 80", 0, Scope::App);
        r.clear = Some(70.0);
        let mut e = RuleEngine::new("web01", &[app("APP", vec![r])], &[]);
        e.observe(&sample(0, 0.0));
        assert_eq!(e.observe(&sample(1_000, 85.0)).len(), 1, "fires above 80");
        assert!(
            e.observe(&sample(2_000, 75.0)).is_empty(),
            "75 is not below the clear threshold"
        );
        assert!(e.observe(&sample(3_000, 70.5)).is_empty());
        let resolved = e.observe(&sample(4_000, 69.0));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(
            resolved[0].summary,
            "APP cpu 69.0 no longer > 70 on host web01 (resolved)"
        );
        // Once resolved, firing needs the firing threshold again.
        assert!(e.observe(&sample(5_000, 79.0)).is_empty());
        assert_eq!(e.observe(&sample(6_000, 81.0)).len(), 1);
    }

    #[test]
    fn clear_must_be_on_the_resolved_side() {
        let gt = Condition::parse("cpu > 80", Scope::App).unwrap();
        assert!(gt.check_clear(70.0).is_ok() && gt.check_clear(80.0).is_ok());
        assert!(gt.check_clear(90.0).is_err());
        let lt = Condition::parse("probe_up < 1", Scope::App).unwrap();
        assert!(lt.check_clear(1.0).is_ok());
        assert!(lt.check_clear(0.5).is_err());
        assert!(gt.check_clear(f64::NAN).is_err());
    }

    #[test]
    fn throttling_is_a_per_interval_rate_from_cumulative_counters() {
        let apps = [app(
            "APP",
            vec![
                rule("throttled", "throttled_pct > 50", 0, Scope::App),
                rule("throttled_long", "throttled_ms >= 200", 0, Scope::App),
            ],
        )];
        let mut e = RuleEngine::new("h", &apps, &[]);
        let with = |at, periods, throttled, us| {
            let mut s = sample(at, 0.0);
            s.apps[0].throttling = Some(CpuThrottling {
                nr_periods: periods,
                nr_throttled: throttled,
                throttled_us: us,
            });
            s
        };
        // Large cumulative counters from before: only deltas matter.
        assert!(e.observe(&with(0, 10_000, 9_000, 50_000_000)).is_empty());
        assert!(
            e.observe(&with(1_000, 10_010, 9_002, 50_010_000))
                .is_empty(),
            "20%, 10 ms"
        );
        let ev = e.observe(&with(2_000, 10_020, 9_010, 50_310_000));
        let mut names: Vec<_> = ev.iter().map(|e| (e.name.as_str(), e.value)).collect();
        names.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(names, [("throttled", 80.0), ("throttled_long", 300.0)]);
        // No cgroup counters (app without cgroup): the state is kept.
        assert!(e.observe(&sample(3_000, 0.0)).is_empty());
    }

    #[test]
    fn host_rules_cover_cores_memory_swap_and_load() {
        let rules = [
            rule("core", "cpu_core_max > 10", 0, Scope::Host),
            rule("avail", "mem_available_mb < 50", 0, Scope::Host),
            rule("swap", "swap_used_pct > 1", 0, Scope::Host),
            rule("load", "load1 >= 0.5", 0, Scope::Host),
            rule("load15", "load15 > 1", 0, Scope::Host),
        ];
        let mut e = RuleEngine::new("h", &[], &rules);
        e.observe(&sample(0, 0.0));
        let ev = e.observe(&sample(1_000, 0.0));
        let mut got: Vec<_> = ev.iter().map(|e| (e.name.as_str(), e.value)).collect();
        got.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(got, [("avail", 40.0), ("core", 15.0), ("load", 0.5)]);
        // No swap at all is 0% used, not an error.
        assert!(!e.firing().iter().any(|(_, r)| *r == "swap"));
    }

    #[test]
    fn app_metrics_up_and_host_cpu() {
        let apps = [app(
            "APP",
            vec![
                rule("down", "up < 1", 0, Scope::App),
                rule("hog", "host_cpu > 40", 0, Scope::App),
            ],
        )];
        let mut e = RuleEngine::new("h", &apps, &[]);
        e.observe(&sample(0, 0.0));
        let ev = e.observe(&sample(1_000, 90.0));
        assert_eq!(
            ev.iter()
                .map(|e| (e.name.as_str(), e.value))
                .collect::<Vec<_>>(),
            [("hog", 45.0)]
        );
        let mut gone = sample(2_000, 0.0);
        gone.apps[0].processes = 0;
        let ev = e.observe(&gone);
        let mut got: Vec<_> = ev.iter().map(|e| (e.name.as_str(), e.status)).collect();
        got.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(
            got,
            [
                ("down", AlertStatus::Firing),
                ("hog", AlertStatus::Resolved)
            ]
        );
    }

    #[test]
    fn a_restored_alert_resolves_with_its_original_start_after_a_restart() {
        let mut before = engine(0);
        let fired = before.observe(&sample(1_000, 95.0));
        let saved = before.firing_state();
        assert_eq!(
            saved,
            [FiringAlert {
                fingerprint: fired[0].fingerprint.clone(),
                since: 0
            }]
        );
        // A new process: restored, then the condition is gone.
        let apps = [app(
            "APP",
            vec![rule("cpu_high", "cpu > 80", 0, Scope::App)],
        )];
        let mut after = RuleEngine::new("web01", &apps, &[]);
        assert_eq!(after.restore(&saved), 1);
        assert_eq!(
            after.restore(&[FiringAlert {
                fingerprint: "unknown".into(),
                since: 1
            }]),
            0
        );
        assert!(after.observe(&sample(50_000, 5.0)).is_empty(), "priming");
        let ev = after.observe(&sample(51_000, 5.0));
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].status, ev[0].starts_at_ms),
            (AlertStatus::Resolved, 0)
        );
        assert_eq!(ev[0].fingerprint, fired[0].fingerprint);
    }

    #[test]
    fn a_reload_keeps_unchanged_rules_and_resolves_removed_ones() {
        let mut old = RuleEngine::new(
            "web01",
            &[app(
                "APP",
                vec![
                    rule("cpu_high", "cpu > 80", 0, Scope::App),
                    rule("cpu_low", "cpu > 50", 0, Scope::App),
                ],
            )],
            &[],
        );
        old.observe(&sample(0, 0.0));
        assert_eq!(old.observe(&sample(1_000, 90.0)).len(), 2);
        // cpu_high unchanged, cpu_low changed to 60.
        let mut new = RuleEngine::new(
            "web01",
            &[app(
                "APP",
                vec![
                    rule("cpu_high", "cpu > 80", 0, Scope::App),
                    rule("cpu_low", "cpu > 60", 0, Scope::App),
                ],
            )],
            &[],
        );
        new.carry_over(&old);
        let dropped = old.resolve_dropped(&new, 1_500);
        assert_eq!(dropped.len(), 1);
        assert_eq!(
            (dropped[0].name.as_str(), dropped[0].status),
            ("cpu_low", AlertStatus::Resolved)
        );
        assert!(dropped[0].value.is_finite());
        assert_eq!(new.firing(), [(Some("APP"), "cpu_high")]);
        // No priming after a reload; the changed rule starts fresh and fires anew.
        let ev = new.observe(&sample(2_000, 90.0));
        assert_eq!(
            ev.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["cpu_low"]
        );
    }
}
