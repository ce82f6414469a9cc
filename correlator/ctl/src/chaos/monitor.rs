//! Watches the burner (CPU used, quota, throttling) and the correlator (alert,
//! incident, reallocation, ticket, resolution) and reports each new fact once.

use std::collections::HashSet;
use std::time::Duration;

use fincorp_api::now_ms;
use fincorp_api::rest::{IncidentState, RunState};
use fincorp_api::wire::AlertStatus;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::cgroup::{ChaosCgroup, cpu_time_ns};
use super::{Event, SpikeOptions};
use crate::client::Client;

const POLL: Duration = Duration::from_millis(200);
const USAGE_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn watch(
    opts: SpikeOptions,
    cg: ChaosCgroup,
    pid: u32,
    start_ms: i64,
    tx: mpsc::Sender<(i64, Event)>,
    resolved: watch::Sender<bool>,
) {
    let client = opts
        .correlator
        .as_deref()
        .map(|url| Client::new(url).with_token(opts.token.clone()));
    let mut seen: HashSet<String> = HashSet::new();
    let mut last_usage = (
        tokio::time::Instant::now(),
        cpu_time_ns(pid).unwrap_or(0),
        cg.throttled_periods().unwrap_or(0),
    );
    let mut incident: Option<String> = None;
    let mut warned: HashSet<String> = HashSet::new();
    loop {
        tokio::time::sleep(POLL).await;
        if last_usage.0.elapsed() >= USAGE_EVERY {
            if let Some(ns) = cpu_time_ns(pid) {
                let now = tokio::time::Instant::now();
                let secs = now.duration_since(last_usage.0).as_secs_f64();
                let throttled = cg.throttled_periods().unwrap_or(0);
                let ev = Event::Usage {
                    cores: (ns.saturating_sub(last_usage.1)) as f64 / 1e9 / secs,
                    limit_cores: cg.read_limit().ok().and_then(|l| l.cores()),
                    throttled_periods: throttled.saturating_sub(last_usage.2),
                };
                last_usage = (now, ns, throttled);
                let _ = tx.send((now_ms(), ev)).await;
            }
        }
        let Some(client) = &client else { continue };
        let id = match &incident {
            Some(id) => id.clone(),
            None => match find_incident(client, &opts.app, start_ms).await {
                Ok(Some(id)) => {
                    incident = Some(id.clone());
                    id
                }
                Ok(None) => continue,
                Err(e) => {
                    let message = format!("{e:#}");
                    if warned.insert(message.clone()) {
                        let _ = tx.send((now_ms(), Event::Warning { message })).await;
                    }
                    continue;
                }
            },
        };
        let d = match client.incident(&id).await {
            Ok(d) => d,
            Err(e) => {
                let message = format!("{e:#}");
                if warned.insert(message.clone()) {
                    let _ = tx.send((now_ms(), Event::Warning { message })).await;
                }
                continue;
            }
        };
        let mut report = |key: String, at: i64, ev: Event| {
            if seen.insert(key) {
                Some((at, ev))
            } else {
                None
            }
        };
        let mut batch = Vec::new();
        // The spike's own alerts: this app's, first stored since the spike began.
        let own = |a: &&fincorp_api::rest::IncidentAlert| {
            a.app.as_deref() == Some(opts.app.as_str()) && a.received_at_ms >= start_ms
        };
        for a in d.alerts.iter().filter(own) {
            batch.extend(report(
                format!("fire:{}:{}", a.fingerprint, a.starts_at_ms),
                a.received_at_ms,
                Event::AlertFiring {
                    name: a.name.clone(),
                    value: a.value,
                    incident_id: id.clone(),
                },
            ));
        }
        if d.incident.opened_at_ms >= start_ms {
            batch.extend(report(
                format!("open:{id}"),
                d.incident.opened_at_ms,
                Event::IncidentOpened {
                    incident_id: id.clone(),
                },
            ));
        } else if let Some(joined_at) = d.alerts.iter().filter(own).map(|a| a.received_at_ms).min()
        {
            batch.extend(report(
                format!("open:{id}"),
                joined_at,
                Event::IncidentJoined {
                    incident_id: id.clone(),
                    opened_at_ms: d.incident.opened_at_ms,
                },
            ));
        }
        // Only what happened since the spike began: a reopened or joined
        // incident also carries the runs, tickets and alerts of before.
        let since = |at: Option<i64>| at.is_none_or(|at| at >= start_ms);
        for run in d.runs.iter().filter(|r| r.created_at_ms >= start_ms) {
            if matches!(
                run.state,
                RunState::Blocked
                    | RunState::Stopped
                    | RunState::Interrupted
                    | RunState::Rejected
                    | RunState::Expired
            ) {
                batch.extend(report(
                    format!("halted:{}", run.id),
                    run.finished_at_ms.unwrap_or(run.created_at_ms),
                    Event::RunHalted {
                        run_id: run.id.clone(),
                        playbook: run.playbook.clone(),
                        state: run.state.as_str().to_owned(),
                        reason: run.reason.clone().unwrap_or_default(),
                    },
                ));
            }
        }
        for run in &d.runs {
            for s in run.steps.iter().filter(|s| since(s.finished_at_ms)) {
                match (s.action.as_str(), s.state) {
                    ("reallocate", RunState::Succeeded) => {
                        let r = s.result.clone().unwrap_or(Value::Null);
                        let text =
                            |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
                        let at = r
                            .get("applied_at_ms")
                            .and_then(Value::as_i64)
                            .or(s.finished_at_ms)
                            .unwrap_or_else(now_ms);
                        // Read the quota back from the kernel, not from the report.
                        let kernel = cg
                            .read_limit()
                            .map(|l| l.to_string())
                            .unwrap_or_else(|e| format!("unreadable: {e:#}"));
                        batch.extend(report(
                            format!("realloc:{}:{}", run.id, s.id),
                            at,
                            Event::Reallocated {
                                incident_id: id.clone(),
                                before: text("before"),
                                after: text("after"),
                                after_cores: r.get("after_cores").and_then(Value::as_f64),
                                file: text("file"),
                                kernel_reads: kernel,
                            },
                        ));
                    }
                    ("servicenow.create", RunState::Succeeded) => {
                        // A ticket opened before the spike (for the incident
                        // the alert joined) is reused: the step says so.
                        let r = s.result.clone().unwrap_or(Value::Null);
                        if r.get("created") == Some(&Value::Bool(false)) {
                            let text = |k: &str| {
                                r.get(k).and_then(Value::as_str).unwrap_or("?").to_owned()
                            };
                            batch.extend(report(
                                format!("ticket:{}", text("sys_id")),
                                s.finished_at_ms.unwrap_or_else(now_ms),
                                Event::Ticket {
                                    system: "servicenow".into(),
                                    number: text("number"),
                                    sys_id: text("sys_id"),
                                    reused: true,
                                },
                            ));
                        }
                    }
                    (_, RunState::Failed) => {
                        batch.extend(report(
                            format!("failed:{}:{}", run.id, s.id),
                            s.finished_at_ms.unwrap_or_else(now_ms),
                            Event::StepFailed {
                                step: s.id.clone(),
                                action: s.action.clone(),
                                error: s.error.clone().unwrap_or_default(),
                            },
                        ));
                    }
                    _ => {}
                }
            }
        }
        for t in d.tickets.iter().filter(|t| t.created_at_ms >= start_ms) {
            batch.extend(report(
                format!("ticket:{}", t.sys_id),
                t.created_at_ms,
                Event::Ticket {
                    system: t.system.clone(),
                    number: t.number.clone(),
                    sys_id: t.sys_id.clone(),
                    reused: false,
                },
            ));
        }
        for a in d
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Resolved && since(a.ends_at_ms))
        {
            batch.extend(report(
                format!("resolved:{}:{}", a.fingerprint, a.starts_at_ms),
                a.ends_at_ms.unwrap_or_else(now_ms),
                Event::AlertResolved {
                    name: a.name.clone(),
                },
            ));
        }
        // The spike is over for this app but other alerts keep the incident
        // open: say which, once, rather than just waiting.
        let mine_resolved = d.alerts.iter().filter(own).count() > 0
            && d.alerts
                .iter()
                .filter(own)
                .all(|a| a.status == AlertStatus::Resolved);
        let others: Vec<String> = d
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing && !own(a))
            .map(|a| format!("{} on {}", a.name, a.app.as_deref().unwrap_or(&a.host)))
            .collect();
        if mine_resolved && !others.is_empty() && d.incident.state != IncidentState::Resolved {
            let message = format!(
                "incident {id} stays open while other alerts fire: {}",
                others.join(", ")
            );
            if warned.insert(message.clone()) {
                let _ = tx.send((now_ms(), Event::Warning { message })).await;
            }
        }
        if d.incident.state == IncidentState::Resolved {
            batch.extend(report(
                format!("incident-resolved:{id}"),
                d.incident.resolved_at_ms.unwrap_or_else(now_ms),
                Event::IncidentResolved {
                    incident_id: id.clone(),
                },
            ));
        }
        batch.sort_by_key(|(at, _)| *at);
        for item in batch {
            let done = matches!(item.1, Event::IncidentResolved { .. });
            let _ = tx.send(item).await;
            if done {
                let _ = resolved.send(true);
            }
        }
    }
}

/// The incident holding this spike's alert: one opened since the spike began
/// for the app, or an older one on its host that the app's alert (first
/// stored since the spike began) joined.
async fn find_incident(
    client: &Client,
    app: &str,
    start_ms: i64,
) -> anyhow::Result<Option<String>> {
    let list = client
        .incidents(&format!("app={app}&since_ms={start_ms}"))
        .await?;
    let mut candidates = list.incidents;
    candidates.sort_by_key(|i| i.opened_at_ms);
    if let Some(new) = candidates.iter().find(|i| i.opened_at_ms >= start_ms) {
        return Ok(Some(new.id.clone()));
    }
    for older in candidates {
        let d = client.incident(&older.id).await?;
        if d.alerts
            .iter()
            .any(|a| a.app.as_deref() == Some(app) && a.received_at_ms >= start_ms)
        {
            return Ok(Some(older.id));
        }
    }
    Ok(None)
}
