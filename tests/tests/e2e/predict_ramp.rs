//! Predictive analytics end to end (issue 8, "must show" 3): a slow chaos
//! CPU ramp on FINCORP-APP-TRANSPROC-TEST, burnt for real in a cgroup, is
//! forecast by the correlator's predictor from the agent's 1 s samples. The
//! `predicted_cpu_breach` alert opens an incident, with its explanation
//! (window, slope, predicted breach time, score) in the timeline, and the
//! shipped proactive playbook raises the app's CPU quota, all before the
//! agent's `cpu_high` threshold alert even starts; `cpu_high` then joins
//! the same incident and the prediction resolves as fulfilled.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use fincorp_api::rest::{IncidentAlert, IncidentDetail, IncidentList, RunState};
use fincorp_api::wire::{AlertStatus, Severity};
use fincorp_tests::*;
use serde_json::Value;

const APP: &str = "FINCORP-APP-TRANSPROC-TEST";
const PLAYBOOK: &str = "transproc-cpu-prediction";

/// The correlator's `/metrics` as text.
fn metrics(api: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = fincorp_api::http::client(Duration::from_secs(10))
            .get(format!("{api}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert!(
            resp.status().is_success(),
            "GET /metrics: {}",
            resp.status()
        );
        resp.text().await.unwrap()
    })
}

/// A sample (no labels) of the text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn incident(stack: &Stack, id: &str) -> IncidentDetail {
    serde_json::from_value(stack.api_get(&format!("/api/v1/incidents/{id}"))).unwrap()
}

/// The app's incidents, oldest first.
fn incidents(stack: &Stack) -> Vec<IncidentDetail> {
    let list: IncidentList =
        serde_json::from_value(stack.api_get(&format!("/api/v1/incidents?app={APP}"))).unwrap();
    let mut all: Vec<_> = list
        .incidents
        .iter()
        .map(|i| incident(stack, &i.id))
        .collect();
    all.sort_by_key(|d| d.incident.seq);
    all
}

/// The incident's episodes of alert `name`, oldest first.
fn episodes<'a>(d: &'a IncidentDetail, name: &str) -> Vec<&'a IncidentAlert> {
    let mut v: Vec<_> = d.alerts.iter().filter(|a| a.name == name).collect();
    v.sort_by_key(|a| a.starts_at_ms);
    v
}

#[test]
fn predict_ramp_is_forecast_into_an_incident_and_acted_on_before_the_cpu_threshold_fires() {
    let _serial = serial();
    require_writable_cgroups(Path::new(CGROUP_ROOT));
    let cgroup = format!("fincorp-e2e-{}/{APP}", std::process::id());

    // Only the shipped proactive playbook, so every run is its.
    let playbooks = tempfile::tempdir().unwrap();
    let file = format!("{PLAYBOOK}.yaml");
    std::fs::copy(
        repo_root()
            .join("packaging/etc/fincorp/playbooks")
            .join(&file),
        playbooks.path().join(&file),
    )
    .expect("the shipped proactive playbook");

    let mut stack = Stack::start(&StackConfig {
        agent_apps: format!(
            "  - name: {APP}
    select:
      cmdline: 'chaos burn --app {APP}( |$)'
    cgroup: {cgroup}
    rules:
      - name: cpu_high
        when: cpu > 80
        for: 1s
        severity: critical
"
        ),
        // Long enough that the incident stays open between the prediction
        // resolving (the breach happened) and cpu_high joining it.
        resolve_after: "60s".into(),
        playbooks_dir: Some(playbooks.path().to_path_buf()),
        // A short warm-up: the noise reference may end 30 s before the
        // window and needs 20 samples (the defaults, 2 min and 60, suit
        // production). No anomaly model, so only the forecast speaks.
        correlator_extra: "predict:
  forecast:
    reference_gap: 30s
    min_reference_points: 20
  anomaly:
    enabled: false
"
        .into(),
        ..StackConfig::default()
    });
    let quota_file = cgroup_dir(&cgroup).join(if cgroup_v1() {
        "cpu.cfs_quota_us"
    } else {
        "cpu.max"
    });

    // Warm-up: the predictor sees the app idle (no process yet) for 40 s
    // of samples, every one of them (the agent's batches carry them all).
    let warm = wait_for(
        &mut stack,
        Duration::from_secs(120),
        "40 samples in the predictor",
        |s| {
            let text = metrics(&s.api);
            let n = metric(&text, "fincorp_correlator_predict_samples_total")?;
            let series = metric(&text, "fincorp_correlator_predict_series")?;
            (n >= 40.0 && series >= 1.0).then_some(n)
        },
    );

    // The ramp: from 10% of one core, a random 5-15 points every 15 s (an
    // average 0.67 point/s, the chaos simulator's shape slowed down) to 95%.
    let chaos = Command::new(bin("fincorpctl"))
        .args([
            "--url",
            &stack.api,
            "chaos",
            "cpu-spike",
            "--app",
            APP,
            "--cgroup",
            &cgroup,
        ])
        .args([
            "--quota-cores",
            "1",
            "--start",
            "10",
            "--step",
            "15s",
            "--until",
            "95",
            "--hold",
            "15s",
        ])
        .args([
            "--wait-resolve",
            "1s",
            "--seed",
            "20261122",
            "--json",
            "--keep-cgroup",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fincorpctl");
    let mut guard = ChaosGuard {
        chaos: Some(chaos),
        cgroup: cgroup_dir(&cgroup),
    };
    let chaos = guard.chaos.as_mut().unwrap();
    let lines = line_reader(chaos.stdout.take().unwrap());

    // Follow the chaos timeline until cpu_high has joined an incident of
    // the app and the prediction has resolved.
    let deadline = Instant::now() + Duration::from_secs(420);
    let mut events: Vec<Value> = Vec::new();
    let mut last_poll = Instant::now();
    let mut quota_at_realloc: Option<String> = None;
    let mut chaos_ended = false;
    let done = loop {
        match lines.recv_timeout(Duration::from_millis(250)) {
            Ok(line) => {
                let ev: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("chaos printed non-JSON {line:?}: {e}"));
                if ev["event"] == "reallocated" && quota_at_realloc.is_none() {
                    quota_at_realloc = std::fs::read_to_string(&quota_file)
                        .ok()
                        .map(|q| q.trim().to_owned());
                }
                events.push(ev);
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => chaos_ended = true,
        }
        stack.assert_running();
        if last_poll.elapsed() >= Duration::from_secs(1) || chaos_ended {
            last_poll = Instant::now();
            let all = incidents(&stack);
            let threshold_seen = all.iter().any(|d| !episodes(d, "cpu_high").is_empty());
            let prediction_settled = all.iter().any(|d| {
                let p = episodes(d, "predicted_cpu_breach");
                !p.is_empty() && p.iter().all(|a| a.status == AlertStatus::Resolved)
            });
            if threshold_seen && prediction_settled {
                break all;
            }
            if chaos_ended {
                break all;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no cpu_high and settled prediction in time; chaos events: {events:#?}\n{}",
            stack.logs()
        );
    };
    drop(guard);
    let context = format!(
        "incidents: {done:#?}\nchaos events: {events:#?}\n{}",
        stack.logs()
    );

    // 1. One incident holds both: the forecast and, later, the threshold alert.
    assert_eq!(done.len(), 1, "one incident for the ramp; {context}");
    let d = &done[0];
    let predictions = episodes(d, "predicted_cpu_breach");
    let predicted = *predictions
        .first()
        .unwrap_or_else(|| panic!("no predicted_cpu_breach; {context}"));
    let threshold = *episodes(d, "cpu_high")
        .first()
        .unwrap_or_else(|| panic!("no cpu_high; {context}"));
    assert_eq!(
        (predicted.source.as_str(), predicted.severity),
        ("predict", Severity::Warning),
        "{context}"
    );
    assert_eq!(predicted.app.as_deref(), Some(APP));
    assert_eq!(threshold.source, "agent");

    // 2. The order, by the correlator's and the agent's own clocks (one machine):
    //    the prediction was stored and the incident opened before the
    //    agent's CPU even crossed 80 (cpu_high's episode start), let alone
    //    before cpu_high fired.
    let started_ms = events
        .iter()
        .find(|e| e["event"] == "started")
        .and_then(|e| e["at_ms"].as_i64())
        .unwrap_or_else(|| panic!("no started event; {context}"));
    assert!(
        predicted.starts_at_ms > started_ms,
        "the prediction is about the ramp, not the idle warm-up; {context}"
    );
    assert!(
        d.incident.opened_at_ms <= predicted.received_at_ms
            && predicted.received_at_ms < threshold.starts_at_ms,
        "opened {} / prediction stored {} / cpu over 80 from {}; {context}",
        d.incident.opened_at_ms,
        predicted.received_at_ms,
        threshold.starts_at_ms
    );
    let lead_s = (threshold.starts_at_ms - predicted.received_at_ms) as f64 / 1000.0;
    assert!(
        lead_s >= 10.0,
        "a useful warning: {lead_s:.1} s before the CPU crossed 80; {context}"
    );
    assert_eq!(
        d.incident.title,
        format!("predicted_cpu_breach on {APP} ({})", stack.host),
        "the forecast opened it; {context}"
    );

    // 3. The timeline shows the prediction with its explanation, before
    //    cpu_high joined.
    let joined: Vec<_> = d
        .timeline
        .iter()
        .filter(|t| t.kind == "alert_joined")
        .collect();
    let first = joined
        .first()
        .unwrap_or_else(|| panic!("no alert_joined; {context}"));
    assert!(
        first
            .message
            .starts_with("predicted_cpu_breach firing [predict]")
            && first.message.contains("is predicted to cross 80 in")
            && first.message.contains("rising"),
        "{}",
        first.message
    );
    let labels = &first.data["labels"];
    for key in [
        "window_s",
        "slope_per_s",
        "r2",
        "predicted_breach_at",
        "lead_s",
        "score",
    ] {
        assert!(labels[key].is_string(), "{key} in {:#}", first.data);
    }
    let slope: f64 = labels["slope_per_s"].as_str().unwrap().parse().unwrap();
    let window_s: f64 = labels["window_s"].as_str().unwrap().parse().unwrap();
    assert!(
        (0.1..5.0).contains(&slope) && window_s >= 30.0,
        "a rising trend over a real window: {:#}",
        first.data
    );
    let cpu_joined = joined
        .iter()
        .find(|t| t.message.starts_with("cpu_high firing"))
        .unwrap_or_else(|| panic!("cpu_high never joined; {context}"));
    assert!(cpu_joined.at_ms > first.at_ms, "{context}");

    // 4. The breach fulfilled the prediction: it resolved when CPU crossed 80.
    let last = predictions[predictions.len() - 1];
    assert_eq!(last.status, AlertStatus::Resolved, "{context}");
    let resolved_at = last.ends_at_ms.unwrap_or_default();
    assert!(
        resolved_at >= threshold.starts_at_ms - 5_000,
        "resolved at the breach ({resolved_at}), not before it ({}); {context}",
        threshold.starts_at_ms
    );

    // 5. The proactive playbook ran on the forecast and raised the quota by
    //    20% before the threshold was crossed.
    let run = d
        .runs
        .iter()
        .find(|r| r.playbook == PLAYBOOK)
        .unwrap_or_else(|| panic!("no {PLAYBOOK} run; {context}"));
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}\n{context}");
    let reallocated_at = events
        .iter()
        .find(|e| e["event"] == "reallocated")
        .and_then(|e| e["at_ms"].as_i64())
        .unwrap_or_else(|| panic!("the quota change was never seen; {context}"));
    assert!(
        reallocated_at < threshold.starts_at_ms,
        "reallocated at {reallocated_at}, CPU over 80 from {}; {context}",
        threshold.starts_at_ms
    );
    let quota: u64 = quota_at_realloc
        .unwrap_or_else(|| panic!("quota unread; {context}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(quota, 120_000, "1 core raised by 20%; {context}");
    let tickets = stack.sn_get(&format!(
        "/api/now/table/incident?sysparm_query=correlation_id={}",
        d.incident.id
    ));
    assert_eq!(
        tickets["result"].as_array().map(Vec::len),
        Some(1),
        "{tickets:#}"
    );

    // 6. The predictor's own metrics.
    let text = metrics(&stack.api);
    assert!(
        metric(
            &text,
            "fincorp_correlator_predict_signals_total{kind=\"predicted\",status=\"firing\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        metric(&text, "fincorp_correlator_predict_samples_total").is_some_and(|n| n > warm),
        "{text}"
    );

    // The figures for the record (visible with --nocapture).
    println!(
        "predict_ramp: predicted_cpu_breach stored {lead_s:.1} s before the CPU crossed 80 and {:.1} s before \
         cpu_high joined the incident; quota raised {:.1} s before the crossing; window {window_s} s, \
         slope {slope}/s, lead estimated at raise {} s, predicted breach at {}, crossed at {}",
        (cpu_joined.at_ms - predicted.received_at_ms) as f64 / 1000.0,
        (threshold.starts_at_ms - reallocated_at) as f64 / 1000.0,
        labels["lead_s"].as_str().unwrap_or_default(),
        labels["predicted_breach_at"].as_str().unwrap_or_default(),
        fincorp_api::format_ms(threshold.starts_at_ms),
    );
    drop(stack);
}
