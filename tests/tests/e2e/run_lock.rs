//! Per-target locks shared by all playbooks: two playbooks triggered by the
//! same alert on the same app run one after the other, never interleaved, as
//! seen by the system they call. Two playbooks without locks interleave,
//! which shows the check can tell.

use std::time::Duration;

use fincorp_tests::{Recorder, Stack, StackConfig, post_json, runs, serial, wait_for};
use serde_json::{Value, json};

fn playbook(name: &str, app: &str, lock: &str, url: &str) -> String {
    format!(
        "version: 1
name: {name}
description: start, settle, finish
trigger:
  apps: [{app}]
  alerts: [queue_backlog]
guardrails:
  lock: {lock}
steps:
  - id: start
    action: notify
    with:
      url: {url}
      body: {{mark: \"start {name}\"}}
  - id: settle
    action: wait_for
    with:
      host: \"{{{{ incident.host }}}}\"
      metric: cpu
      op: \"<\"
      value: -1
      within: 2s
    on_failure: continue
  - id: finish
    action: notify
    with:
      url: {url}
      body: {{mark: \"end {name}\"}}
"
    )
}

fn marks(hook: &Recorder, suffix: &str) -> Vec<String> {
    hook.bodies()
        .iter()
        .filter_map(|b| b["mark"].as_str().map(str::to_owned))
        .filter(|m| m.ends_with(suffix))
        .collect()
}

#[test]
fn two_playbooks_on_the_same_app_serialise_on_its_lock() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let hook = Recorder::start();
    let pb = work.path().join("playbooks");
    std::fs::create_dir_all(&pb).unwrap();
    for (name, app, lock) in [
        ("drain-a-locked", "FINCORP-APP-CORE-LOCK", "app"),
        ("drain-b-locked", "FINCORP-APP-CORE-LOCK", "app"),
        ("drain-c-free", "FINCORP-APP-CRM-FREE", "none"),
        ("drain-d-free", "FINCORP-APP-CRM-FREE", "none"),
    ] {
        std::fs::write(
            pb.join(format!("{name}.yaml")),
            playbook(name, app, lock, &hook.url),
        )
        .unwrap();
    }
    let mut stack = Stack::start_without_agent(&StackConfig {
        resolve_after: "10m".into(),
        playbooks_dir: Some(pb),
        ..StackConfig::default()
    });
    let events = format!("{}/api/v1/ingest/events", stack.api);
    for app in ["FINCORP-APP-CORE-LOCK", "FINCORP-APP-CRM-FREE"] {
        let ev = json!({"events": [{"source": "hardware", "name": "queue_backlog", "host": "core-ny-01", "app": app, "severity": "warning"}]});
        assert_eq!(post_json(&events, &ev).0, 200);
    }
    let all: Vec<Value> = wait_for(
        &mut stack,
        Duration::from_secs(60),
        "all four runs to finish",
        |s| {
            let r = runs(s, "");
            (r.len() == 4 && r.iter().all(|r| r["state"] == "succeeded")).then_some(r)
        },
    );

    // Locked: one whole run, then the other.
    let locked = marks(&hook, "-locked");
    assert_eq!(locked.len(), 4, "{locked:?}");
    let first = locked[0].strip_prefix("start ").unwrap().to_owned();
    let second = if first == "drain-a-locked" {
        "drain-b-locked"
    } else {
        "drain-a-locked"
    };
    assert_eq!(
        locked,
        [
            format!("start {first}"),
            format!("end {first}"),
            format!("start {second}"),
            format!("end {second}")
        ],
        "the two runs on the locked app interleaved"
    );
    let window = |name: &str| {
        let r = all.iter().find(|r| r["playbook"] == name).unwrap();
        (
            r["started_at_ms"].as_i64().unwrap(),
            r["finished_at_ms"].as_i64().unwrap(),
        )
    };
    let (a, b) = (window(&first), window(second));
    assert!(
        b.0 >= a.1,
        "{second} started at {} before {first} finished at {}",
        b.0,
        a.1
    );

    // Unlocked: they ran at the same time.
    let free = marks(&hook, "-free");
    assert_eq!(free.len(), 4, "{free:?}");
    assert!(
        free[0].starts_with("start") && free[1].starts_with("start"),
        "without a lock the runs should overlap: {free:?}"
    );
    stack.assert_running();
}
