//! Durable runs: the correlator is killed (SIGKILL) in the middle of a run,
//! between two mutating steps, and restarted. The run resumes at its first
//! step not yet completed; the step that was in flight is repeated only
//! because it is idempotent; nothing that completed runs again, as counted
//! at the target. A run killed inside a step that is NOT idempotent (a
//! webhook) is marked interrupted instead, and the webhook is not called
//! again.

use std::time::Duration;

use fincorp_tests::{
    MARK_SCRIPT, Recorder, Stack, StackConfig, count_lines, post_json, runs, scripts_dir, serial,
    two_changes_playbook, wait_for, write_script,
};
use serde_json::json;

const APP: &str = "FINCORP-APP-TRANSPROC-CRASH";

#[test]
fn a_run_killed_between_two_mutating_steps_resumes_without_repeating_a_step() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let scripts = scripts_dir(work.path());
    let marks = work.path().join("marks.log");
    let slow_hook = Recorder::start_delayed(Duration::from_secs(8));
    write_script(&scripts, "mark.sh", MARK_SCRIPT);
    let pb = work.path().join("playbooks");
    std::fs::create_dir_all(&pb).unwrap();
    std::fs::write(
        pb.join("two-changes.yaml"),
        two_changes_playbook("two-changes", APP, "config_drift", &marks, "8s"),
    )
    .unwrap();
    std::fs::write(
        pb.join("slow-webhook.yaml"),
        format!(
            "version: 1
name: slow-webhook
description: tells a slow receiver
trigger:
  apps: [{APP}]
  alerts: [receiver_check]
steps:
  - id: tell
    action: notify
    with:
      url: {url}
      body:
        incident: \"{{{{ incident.id }}}}\"
",
            url = slow_hook.url
        ),
    )
    .unwrap();
    let mut stack = Stack::start(&StackConfig {
        resolve_after: "10m".into(),
        playbooks_dir: Some(pb),
        scripts_dir: Some(scripts),
        ..StackConfig::default()
    });
    let host = stack.host.clone();
    let events = format!("{}/api/v1/ingest/events", stack.api);
    let ev = |name: &str| json!({"events": [{"source": "hardware", "name": name, "host": host, "app": APP, "severity": "critical"}]});

    // Kill in the middle: the first change is made, the second is not.
    assert_eq!(post_json(&events, &ev("config_drift")).0, 200);
    let run_id = wait_for(
        &mut stack,
        Duration::from_secs(30),
        "the run to reach its wait",
        |s| {
            let r = runs(s, "playbook=two-changes");
            let r = r.first()?;
            let steps = r["steps"].as_array()?;
            (steps.len() == 2 && steps[0]["state"] == "succeeded" && steps[1]["state"] == "running")
                .then(|| r["id"].as_str().unwrap().to_owned())
        },
    );
    stack.correlator.as_mut().unwrap().kill();
    assert_eq!(count_lines(&marks, "mark first"), 1);
    assert_eq!(count_lines(&marks, "mark second"), 0);
    stack.start_correlator();

    let run = wait_for(
        &mut stack,
        Duration::from_secs(60),
        "the resumed run to finish",
        |s| {
            let r = s.api_get(&format!("/api/v1/runs/{run_id}"));
            (r["state"] == "succeeded").then_some(r)
        },
    );
    let steps: Vec<(String, String)> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // `settle` was in flight: wait_for is idempotent, so it ran again (in the
    // same step record) and failed as configured (continue); `first` was not
    // repeated; `second` ran once.
    assert_eq!(
        steps,
        [
            ("first", "succeeded"),
            ("settle", "failed"),
            ("second", "succeeded")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .to_vec(),
        "{run}"
    );
    assert_eq!(
        count_lines(&marks, "mark first"),
        1,
        "the completed change ran twice"
    );
    assert_eq!(count_lines(&marks, "mark second"), 1);

    // Kill inside a step that is not idempotent: marked interrupted.
    assert_eq!(post_json(&events, &ev("receiver_check")).0, 200);
    let run_id = wait_for(
        &mut stack,
        Duration::from_secs(30),
        "the webhook to be called",
        |s| {
            (slow_hook.bodies().len() == 1).then(|| {
                runs(s, "playbook=slow-webhook")[0]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        },
    );
    stack.correlator.as_mut().unwrap().kill();
    stack.start_correlator();
    let run = wait_for(
        &mut stack,
        Duration::from_secs(30),
        "the run to be marked interrupted",
        |s| {
            let r = s.api_get(&format!("/api/v1/runs/{run_id}"));
            (r["state"] == "interrupted").then_some(r)
        },
    );
    assert_eq!(run["steps"][0]["state"], "interrupted", "{run}");
    assert!(
        run["reason"]
            .as_str()
            .unwrap()
            .contains("cannot safely be repeated"),
        "{run}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(slow_hook.bodies().len(), 1, "the webhook was called again");
    stack.assert_running();
}
