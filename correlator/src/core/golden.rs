//! Golden-file tests of the correlation core: a recorded stream of alerts,
//! ticks and operator actions in `test_data/correlation/NAME.yaml`, the
//! effects and their reasons rendered one per line in `NAME.golden`. Run with
//! `UPDATE_EXPECT=1` to rewrite the golden files after a deliberate change,
//! then review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use fincorp_api::config::Duration;
use fincorp_api::wire::{AlertStatus, Severity};
use fincorp_api::yaml::Document;
use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    config: CaseConfig,
    stream: Vec<Step>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseConfig {
    window: Option<Duration>,
    max_window: Option<Duration>,
    resolve_after: Option<Duration>,
    reopen_window: Option<Duration>,
    flapping: Option<(usize, Duration)>,
    /// (rule name, group_by keys), first match wins.
    #[serde(default)]
    rules: Vec<(String, Vec<String>)>,
    /// An inventory file, relative to the case file.
    topology: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    at: Duration,
    fire: Option<CaseAlert>,
    resolve: Option<CaseAlert>,
    #[serde(default)]
    tick: bool,
    silence: Option<CaseSilence>,
    expire_silence: Option<String>,
    resolve_incident: Option<String>,
    close_incident: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseAlert {
    name: String,
    host: String,
    app: Option<String>,
    #[serde(default = "agent")]
    source: String,
    #[serde(default = "warning")]
    severity: Severity,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn agent() -> String {
    "agent".into()
}

fn warning() -> Severity {
    Severity::Warning
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSilence {
    id: String,
    matchers: Vec<String>,
    #[serde(rename = "for")]
    lasts: Option<Duration>,
    schedule: Option<String>,
}

fn to_alert(a: &CaseAlert, status: AlertStatus, at_ms: i64, n: usize) -> Alert {
    let fingerprint =
        crate::ingest::fingerprint(&a.source, &a.host, a.app.as_deref(), &a.name, &a.labels);
    Alert {
        event_id: format!("e{n}"),
        source: a.source.clone(),
        fingerprint,
        status,
        name: a.name.clone(),
        host: a.host.clone(),
        app: a.app.clone(),
        severity: a.severity,
        metric: String::new(),
        value: 0.0,
        threshold: 0.0,
        summary: String::new(),
        labels: a.labels.clone(),
        starts_at_ms: at_ms,
        at_ms,
    }
}

fn secs(ms: i64) -> String {
    format!("{:>8.3}s", ms as f64 / 1000.0)
}

fn reason(r: &Reason) -> String {
    format!(
        "[{} {} window {}s] {}",
        r.rule,
        r.key,
        r.window_ms / 1000,
        r.detail
    )
}

fn short(fp: &str) -> &str {
    &fp[..fp.len().min(8)]
}

fn render(at: i64, e: &Effect) -> String {
    let t = secs(at);
    let inc = |id: &Option<String>| id.clone().unwrap_or_else(|| "(silenced)".into());
    match e {
        Effect::IncidentOpened {
            incident_id,
            key,
            severity,
            title,
            ..
        } => {
            format!("{t} OPEN      {incident_id} key={key} severity={severity} \"{title}\"")
        }
        Effect::AlertAttached {
            incident_id,
            alert,
            reason: r,
        } => format!(
            "{t} ATTACH    {incident_id} <- {}@{}{} [{}] {}",
            alert.name,
            alert.host,
            alert
                .app
                .as_deref()
                .map(|a| format!("/{a}"))
                .unwrap_or_default(),
            alert.source,
            reason(r)
        ),
        Effect::AlertRefreshed { incident_id, alert } => {
            format!("{t} REFRESH   {} {}", inc(incident_id), alert.name)
        }
        Effect::AlertResolved {
            incident_id,
            fingerprint,
            ..
        } => {
            format!("{t} ALERT-OK  {} {}", inc(incident_id), short(fingerprint))
        }
        Effect::AlertSilenced { alert, silence_id } => {
            format!(
                "{t} SILENCED  {}@{} by {silence_id}",
                alert.name, alert.host
            )
        }
        Effect::SeverityRaised {
            incident_id,
            severity,
            ..
        } => format!("{t} SEVERITY  {incident_id} -> {severity}"),
        Effect::RootCause {
            incident_id,
            app,
            reason: r,
            ..
        } => format!("{t} ROOT      {incident_id} = {app} {}", reason(r)),
        Effect::IncidentResolved {
            incident_id,
            quiet_ms,
            ..
        } => match quiet_ms {
            Some(q) => format!("{t} RESOLVED  {incident_id} (quiet {}s)", q / 1000),
            None => format!("{t} RESOLVED  {incident_id} (by an operator)"),
        },
        Effect::IncidentReopened {
            incident_id,
            reason: r,
            ..
        } => format!("{t} REOPEN    {incident_id} {}", reason(r)),
        Effect::IncidentClosed {
            incident_id, auto, ..
        } => {
            format!(
                "{t} CLOSED    {incident_id}{}",
                if *auto {
                    " (after close_after)"
                } else {
                    " (by an operator)"
                }
            )
        }
        Effect::AlertFlapping {
            incident_id,
            name,
            transitions,
            ..
        } => {
            format!(
                "{t} FLAPPING  {} {name} ({transitions} changes)",
                inc(incident_id)
            )
        }
        Effect::AlertSettled {
            incident_id,
            fingerprint,
            ..
        } => format!("{t} SETTLED   {} {}", inc(incident_id), short(fingerprint)),
        Effect::Ignored { why, .. } => format!("{t} IGNORED   {why}"),
    }
}

/// Runs a case file and returns the rendered effects.
fn run(name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data/correlation");
    let path = dir.join(format!("{name}.yaml"));
    let doc = Document::read(&path).unwrap_or_else(|d| panic!("{d}"));
    let case: Case = doc.parse().unwrap_or_else(|d| panic!("{d}"));
    let c = case.config;
    let d = Config::with_defaults();
    let ms = |v: Option<Duration>, default: i64| v.map(Duration::as_millis_i64).unwrap_or(default);
    let cfg = Config {
        window_ms: ms(c.window, d.window_ms),
        max_window_ms: ms(c.max_window, d.max_window_ms),
        resolve_after_ms: ms(c.resolve_after, d.resolve_after_ms),
        reopen_window_ms: ms(c.reopen_window, d.reopen_window_ms),
        close_after_ms: d.close_after_ms,
        flap_transitions: c.flapping.map(|f| f.0).unwrap_or(d.flap_transitions),
        flap_window_ms: c
            .flapping
            .map(|f| f.1.as_millis_i64())
            .unwrap_or(d.flap_window_ms),
        rules: if c.rules.is_empty() {
            d.rules
        } else {
            c.rules
                .iter()
                .map(|(name, keys)| GroupRule {
                    name: name.clone(),
                    filter: AlertFilter::default(),
                    group_by: keys.iter().map(|k| KeyPart::parse(k).unwrap()).collect(),
                })
                .collect()
        },
        topology: c
            .topology
            .map(|t| crate::config::topology(&dir.join(t)).unwrap_or_else(|d| panic!("{d}")))
            .unwrap_or_default(),
    };
    let mut state = State::new(cfg, "fc", 1);
    let mut out = Vec::new();
    for (n, step) in case.stream.iter().enumerate() {
        let now = step.at.as_millis_i64();
        let mut effects = Vec::new();
        if let Some(a) = &step.fire {
            effects.extend(state.ingest(to_alert(a, AlertStatus::Firing, now, n), now));
        }
        if let Some(a) = &step.resolve {
            effects.extend(state.ingest(to_alert(a, AlertStatus::Resolved, now, n), now));
        }
        if let Some(s) = &step.silence {
            let matchers = s
                .matchers
                .iter()
                .map(|m| Matcher::parse(m).unwrap())
                .collect();
            let window = match (&s.schedule, s.lasts) {
                (Some(sched), Some(d)) => SilenceWindow::Recurring {
                    schedule: Box::new(cron::Schedule::from_str(sched).unwrap()),
                    duration_ms: d.as_millis_i64(),
                    until_ms: None,
                },
                (None, Some(d)) => SilenceWindow::Once {
                    starts_at_ms: now,
                    ends_at_ms: now + d.as_millis_i64(),
                },
                _ => panic!("a silence needs `for` (and optionally `schedule`)"),
            };
            state.add_silence(Silence {
                id: s.id.clone(),
                matchers,
                window,
                expired_at_ms: None,
            });
            out.push(format!(
                "{} SILENCE+  {} {}",
                secs(now),
                s.id,
                s.matchers.join(",")
            ));
        }
        if let Some(id) = &step.expire_silence {
            assert!(state.expire_silence(id, now), "no silence {id}");
            out.push(format!("{} SILENCE-  {id}", secs(now)));
        }
        if let Some(id) = &step.resolve_incident {
            effects.extend(state.resolve(id, now).unwrap_or_else(|e| panic!("{e}")));
        }
        if let Some(id) = &step.close_incident {
            effects.extend(state.close(id, now).unwrap_or_else(|e| panic!("{e}")));
        }
        if step.tick {
            effects.extend(state.tick(now));
        }
        out.extend(effects.iter().map(|e| render(now, e)));
    }
    out.join("\n") + "\n"
}

fn check(name: &str) {
    let actual = run(name);
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("test_data/correlation/{name}.golden"));
    expect_test::expect_file![golden].assert_eq(&actual);
}

macro_rules! golden {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*
    };
}

golden!(
    s2_cross_source,
    topology_root_cause_first,
    topology_symptom_first,
    flapping,
    reopen,
    silence,
    sliding_window,
    operator_resolve,
    group_by_site,
);
