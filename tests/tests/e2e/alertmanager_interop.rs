//! Interop with a real Prometheus Alertmanager (the Debian package
//! `prometheus-alertmanager`): its webhook receiver points at the correlator.
//! Alerts posted to Alertmanager become incidents with host, app and
//! severity mapped from labels; their resolution resolves them. The
//! correlator's /metrics pass `promtool check metrics`.

use std::process::{Command, Stdio};
use std::time::Duration;

use fincorp_api::rest::{IncidentDetail, IncidentList, IncidentState};
use fincorp_api::wire::Severity;
use fincorp_tests::*;
use serde_json::json;

fn require(binary: &str, package: &str) -> std::path::PathBuf {
    let path = std::path::Path::new("/usr/bin").join(binary);
    assert!(
        path.is_file(),
        "{} is not installed: this test runs the real thing (apt-get install {package}; .ci/run installs it)",
        path.display()
    );
    path
}

fn alerts(starts: &str, end: Option<&str>) -> serde_json::Value {
    let mut list = json!([
        {"labels": {"alertname": "CoreProbeDown", "instance": "core-ny-01:9100", "app": "FINCORP-APP-CORE", "severity": "page"},
         "annotations": {"summary": "core banking probe failing"}, "startsAt": starts},
        {"labels": {"alertname": "DiskSmartFailing", "instance": "core-ny-01:9100", "severity": "warning"},
         "annotations": {"summary": "disk sdb predicts failure"}, "startsAt": starts},
        {"labels": {"alertname": "TransprocLatency", "host": "tp-ny-01", "app": "FINCORP-APP-TRANSPROC", "severity": "critical"},
         "annotations": {"summary": "p99 above 250ms"}, "startsAt": starts},
    ]);
    if let Some(end) = end {
        for a in list.as_array_mut().unwrap() {
            a["endsAt"] = json!(end);
        }
    }
    list
}

#[test]
fn alertmanager_webhooks_become_incidents_and_their_resolution_resolves_them() {
    let _serial = serial();
    let am_bin = require("prometheus-alertmanager", "prometheus-alertmanager");
    let promtool = require("promtool", "prometheus");
    let mut stack = Stack::start_without_agent(&StackConfig {
        agent_apps: String::new(),
        resolve_after: "1s".into(),
        ..StackConfig::default()
    });

    let am_port = free_port();
    let am = format!("http://127.0.0.1:{am_port}");
    let config = stack.dir().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:
  receiver: fincorp
  group_by: [alertname, instance]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: fincorp
    webhook_configs:
      - url: {}/api/v1/ingest/alertmanager
        send_resolved: true
",
            stack.api
        ),
    )
    .unwrap();
    let mut cmd = Command::new(am_bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            stack.dir().join("am-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null());
    let mut am_proc = Proc::spawn("prometheus-alertmanager", cmd, stack.dir());
    wait_http_ok(
        &format!("{am}/-/ready"),
        &mut am_proc,
        Duration::from_secs(30),
    );

    let started = fincorp_api::format_ms(fincorp_api::now_ms() - 60_000);
    let (status, body) = post_json(&format!("{am}/api/v2/alerts"), &alerts(&started, None));
    assert_eq!(status, 200, "Alertmanager refused the alerts: {body}");

    // Two hosts: core-ny-01 (two alerts, one incident) and tp-ny-01.
    let incidents = wait_for(
        &mut stack,
        Duration::from_secs(30),
        "two incidents from Alertmanager",
        |s| {
            let list: IncidentList =
                serde_json::from_value(s.api_get("/api/v1/incidents")).unwrap();
            let n: u32 = list.incidents.iter().map(|i| i.alert_count).sum();
            (list.incidents.len() == 2 && n == 3).then_some(list.incidents)
        },
    );
    let core = incidents
        .iter()
        .find(|i| i.host == "core-ny-01")
        .expect("the instance's port is stripped");
    assert_eq!(
        core.severity,
        Severity::Critical,
        "severity=page maps to critical"
    );
    let d: IncidentDetail =
        serde_json::from_value(stack.api_get(&format!("/api/v1/incidents/{}", core.id))).unwrap();
    assert!(d.alerts.iter().all(|a| a.source == "alertmanager"));
    assert!(
        d.alerts
            .iter()
            .any(|a| a.app.as_deref() == Some("FINCORP-APP-CORE") && a.name == "CoreProbeDown")
    );
    assert!(
        d.alerts
            .iter()
            .any(|a| a.app.is_none() && a.name == "DiskSmartFailing")
    );

    // Resolve them at Alertmanager: it notifies us with status resolved.
    let ended = fincorp_api::format_ms(fincorp_api::now_ms() - 1_000);
    let (status, body) = post_json(
        &format!("{am}/api/v2/alerts"),
        &alerts(&started, Some(&ended)),
    );
    assert_eq!(status, 200, "{body}");
    wait_for(
        &mut stack,
        Duration::from_secs(30),
        "both incidents resolved",
        |s| {
            let list: IncidentList =
                serde_json::from_value(s.api_get("/api/v1/incidents")).unwrap();
            list.incidents
                .iter()
                .all(|i| i.state == IncidentState::Resolved)
                .then_some(())
        },
    );

    // Metrics: ingest counted by source, and the exposition is valid.
    let metrics = get_text(&format!("{}/metrics", stack.api));
    assert!(
        metrics.contains("fincorp_correlator_ingest_events_total{source=\"alertmanager\"} 6"),
        "{metrics}"
    );
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(am_proc);
}

fn get_text(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = fincorp_api::http::client(Duration::from_secs(10));
        client.get(url).send().await.unwrap().text().await.unwrap()
    })
}
