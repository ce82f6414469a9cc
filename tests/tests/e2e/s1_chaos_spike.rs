//! S1, the chaos CPU spike (SPEC §3): `fincorpctl chaos cpu-spike` burns CPU
//! as FINCORP-APP-HFT-TEST inside a real cgroup; the agent detects it, the
//! correlator opens an incident and runs the shipped HFT playbook, the agent
//! raises the cgroup quota by 20%, the kernel lets the burner use more CPU,
//! ServiceNow gets exactly one ticket, and the incident resolves after the
//! spike ends.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use fincorp_api::rest::{IncidentDetail, IncidentList, IncidentState, RunState};
use fincorp_tests::*;
use serde_json::Value;

const APP: &str = "FINCORP-APP-HFT-TEST";

/// The CPU the process got over `window`, in cores.
fn measure_cores(pid: u32, window: Duration) -> f64 {
    let (t0, c0) = (Instant::now(), cpu_time_ns(pid).expect("burner alive"));
    std::thread::sleep(window);
    let c1 = cpu_time_ns(pid).expect("burner alive");
    (c1 - c0) as f64 / 1e9 / t0.elapsed().as_secs_f64()
}

#[test]
fn s1_chaos_cpu_spike_is_detected_remediated_ticketed_and_resolved() {
    let _serial = serial();
    require_writable_cgroups(Path::new(CGROUP_ROOT));
    let cgroup = format!("fincorp-e2e-{}/{APP}", std::process::id());
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
        resolve_after: "2s".into(),
        ..StackConfig::default()
    });
    let quota_file = cgroup_dir(&cgroup).join(if cgroup_v1() {
        "cpu.cfs_quota_us"
    } else {
        "cpu.max"
    });

    // Load rises from 50% of one core by 5-15 points a second until it passes
    // 130%: beyond the initial 1-core quota, so the reallocation is what lets
    // the burner have more.
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
            "--step",
            "1s",
            "--until",
            "130",
            "--hold",
            "10s",
        ])
        .args([
            "--wait-resolve",
            "45s",
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

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut events: Vec<Value> = Vec::new();
    let mut burner_pid: Option<u32> = None;
    let mut quota_after_realloc: Option<String> = None;
    let mut cores_at_peak: Option<f64> = None;
    let mut peak_seen = false;
    loop {
        let line = match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                assert!(
                    Instant::now() < deadline,
                    "chaos did not finish in time; events: {events:#?}\n{}",
                    stack.logs()
                );
                stack.assert_running();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let ev: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("chaos printed non-JSON {line:?}: {e}"));
        match ev["event"].as_str().unwrap_or_default() {
            "started" => burner_pid = ev["pid"].as_u64().map(|p| p as u32),
            "reallocated" => {
                // Read the quota back from the kernel ourselves.
                quota_after_realloc = Some(
                    std::fs::read_to_string(&quota_file)
                        .unwrap()
                        .trim()
                        .to_owned(),
                );
            }
            "load" if ev["load_pct"].as_f64().unwrap() >= 130.0 && !peak_seen => {
                peak_seen = true;
                // The peak demands >= 1.3 cores. Measure what the kernel
                // gives: the best of five 1 s windows, so a burst of other
                // work on this 2-core machine does not hide the new quota.
                std::thread::sleep(Duration::from_millis(500));
                let pid = burner_pid.expect("started first");
                cores_at_peak = (0..5)
                    .map(|_| measure_cores(pid, Duration::from_secs(1)))
                    .reduce(f64::max);
            }
            _ => {}
        }
        events.push(ev);
    }
    let status = chaos.wait().unwrap();
    let stderr = std::io::read_to_string(chaos.stderr.take().unwrap()).unwrap_or_default();
    let summary = events.last().cloned().unwrap_or_default();
    let context = format!(
        "events: {events:#?}\nchaos stderr: {stderr}\n{}",
        stack.logs()
    );
    assert_eq!(summary["event"], "summary", "{context}");
    assert!(status.success(), "chaos exited with {status}; {context}");

    // 1. An incident was opened for the app, with the shipped playbook's run.
    let incident_id = summary["incident_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no incident; {context}"))
        .to_owned();
    let list: IncidentList =
        serde_json::from_value(stack.api_get(&format!("/api/v1/incidents?app={APP}"))).unwrap();
    assert_eq!(
        list.incidents.len(),
        1,
        "exactly one incident for the spike; {context}"
    );
    let detail: IncidentDetail =
        serde_json::from_value(stack.api_get(&format!("/api/v1/incidents/{incident_id}"))).unwrap();
    assert_eq!(detail.incident.app.as_deref(), Some(APP));
    assert!(
        detail
            .alerts
            .iter()
            .any(|a| a.name == "cpu_high" && a.app.as_deref() == Some(APP)),
        "{context}"
    );
    let run = detail
        .runs
        .iter()
        .find(|r| r.playbook == "hft-cpu-reallocation")
        .unwrap_or_else(|| panic!("no run; {context}"));
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    assert!(
        detail
            .timeline
            .iter()
            .any(|t| t.kind == "opened" && t.data["rule"] == "same-host"),
        "{context}"
    );

    // 2. The quota was raised by 20%, as read back from the cgroup file.
    let read_back =
        quota_after_realloc.unwrap_or_else(|| panic!("no reallocation seen; {context}"));
    let quota: u64 = read_back
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        quota, 120_000,
        "1 core (100000us/100000us) raised by 20%; {context}"
    );
    assert_eq!(
        std::fs::read_to_string(&quota_file)
            .unwrap()
            .split_whitespace()
            .next(),
        Some("120000")
    );

    // 3. The kernel then let the burner use more CPU than the old quota allowed.
    let cores = cores_at_peak.unwrap_or_else(|| panic!("peak never measured; {context}"));
    assert!(
        cores > 1.05,
        "at a demand of >= 1.3 cores the burner got {cores:.3} cores; the old quota capped it at 1.0, the new at 1.2; {context}"
    );

    // 4. Exactly one ServiceNow ticket, carrying the incident's correlation_id.
    let all = stack.sn_get("/api/now/table/incident");
    assert_eq!(
        all["result"].as_array().unwrap().len(),
        1,
        "exactly one ticket in ServiceNow: {all:#}"
    );
    let by_cid = stack.sn_get(&format!(
        "/api/now/table/incident?sysparm_query=correlation_id={incident_id}"
    ));
    let ticket = &by_cid["result"][0];
    assert_eq!(ticket["correlation_id"], incident_id.as_str());
    assert_eq!(detail.tickets.len(), 1);
    assert_eq!(ticket["number"], detail.tickets[0].number.as_str());
    assert_eq!(summary["ticket"], ticket["number"]);
    let notes = stack.sn_get(&format!(
        "/api/now/table/sys_journal_field?sysparm_query=element_id={}^element=work_notes",
        ticket["sys_id"].as_str().unwrap()
    ));
    let note = notes["result"][0]["value"].as_str().unwrap_or_default();
    assert!(
        note.contains("raised the CPU quota") && note.contains("120000"),
        "work notes: {notes:#}"
    );

    // 5. The incident resolved after the spike ended.
    let detail: IncidentDetail =
        serde_json::from_value(stack.api_get(&format!("/api/v1/incidents/{incident_id}"))).unwrap();
    assert_eq!(detail.incident.state, IncidentState::Resolved, "{context}");
    assert_eq!(summary["resolved"], true);

    // The figures for the record (visible with --nocapture).
    println!(
        "S1: time to detect {}s, time to remediate {}s, burner at peak {cores:.2} cores, ticket {}",
        summary["time_to_detect_s"], summary["time_to_remediate_s"], summary["ticket"]
    );
    drop(guard);
    drop(stack);
}
