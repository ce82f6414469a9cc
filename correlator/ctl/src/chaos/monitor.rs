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
            None => match client
                .incidents(&format!("app={}&since_ms={start_ms}", opts.app))
                .await
            {
                Ok(list) => {
                    let Some(first) = list
                        .incidents
                        .into_iter()
                        .filter(|i| i.opened_at_ms >= start_ms)
                        .min_by_key(|i| i.opened_at_ms)
                    else {
                        continue;
                    };
                    incident = Some(first.id.clone());
                    first.id
                }
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
        for a in d
            .alerts
            .iter()
            .filter(|a| a.app.as_deref() == Some(opts.app.as_str()))
        {
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
        batch.extend(report(
            format!("open:{id}"),
            d.incident.opened_at_ms,
            Event::IncidentOpened {
                incident_id: id.clone(),
            },
        ));
        for run in &d.runs {
            for s in &run.steps {
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
        for t in &d.tickets {
            batch.extend(report(
                format!("ticket:{}", t.sys_id),
                t.created_at_ms,
                Event::Ticket {
                    system: t.system.clone(),
                    number: t.number.clone(),
                    sys_id: t.sys_id.clone(),
                },
            ));
        }
        for a in d
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Resolved)
        {
            batch.extend(report(
                format!("resolved:{}:{}", a.fingerprint, a.starts_at_ms),
                a.ends_at_ms.unwrap_or_else(now_ms),
                Event::AlertResolved {
                    name: a.name.clone(),
                },
            ));
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
