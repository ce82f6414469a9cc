//! S6: runaway automation is bounded and stoppable.
//!
//! A "restart" script (run by the real agent through `exec`) knocks its
//! service over again: it reports `svc_down` anew to the correlator, which
//! re-triggers the same playbook on the same incident. The loop must stop:
//! - at the causal depth limit (the new alert starts while our run changes
//!   that host/app, so the next run is one level deeper), or
//! - at the per-target budget,
//!
//! each time tripping a breaker that escalates by webhook and by a
//! ServiceNow ticket, and blocking further runs until an operator resets it.
//!
//! Then the kill switch stops a long multi-step run before its next step.

use std::path::Path;
use std::time::{Duration, Instant};

use fincorp_tests::{
    MARK_SCRIPT, Recorder, Stack, StackConfig, count_lines, post_json, runs, scripts_dir, serial,
    two_changes_playbook, wait_for, write_script,
};
use serde_json::{Value, json};

const DEPTH_APP: &str = "FINCORP-APP-CRM-S6";
const BUDGET_APP: &str = "FINCORP-APP-CORE-S6";
const LONG_APP: &str = "FINCORP-APP-INSURANCE-S6";

fn playbooks(dir: &Path, api: &str, marks: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let restart = |name: &str, app: &str, guardrails: &str| {
        format!(
            "version: 1
name: {name}
description: restart a service that keeps falling over
trigger:
  apps: [{app}]
  alerts: [svc_down]
guardrails:
{guardrails}
steps:
  - id: restart
    action: exec
    with:
      host: \"{{{{ incident.host }}}}\"
      script: restart.sh
      args: [\"{api}\", \"{{{{ incident.host }}}}\", \"{{{{ alert.app }}}}\", \"{marks}\"]
      timeout: 20s
",
            marks = marks.display()
        )
    };
    std::fs::write(
        dir.join("s6-depth.yaml"),
        restart(
            "s6-depth",
            DEPTH_APP,
            "  rate_limit:\n    per_target: {max: 10, per: 1h}\n  lock: app\n  max_depth: 2",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("s6-budget.yaml"),
        restart(
            "s6-budget",
            BUDGET_APP,
            "  rate_limit:\n    per_target: {max: 2, per: 1h}\n  lock: app\n  max_depth: 10",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("s6-long.yaml"),
        two_changes_playbook("s6-long", LONG_APP, "maintenance_due", marks, "60s"),
    )
    .unwrap();
}

fn event(host: &str, app: &str, name: &str) -> Value {
    json!({"events": [{"source": "hardware", "name": name, "host": host, "app": app, "severity": "critical"}]})
}

fn run_states(stack: &Stack, playbook: &str) -> Vec<(String, u64)> {
    let mut r: Vec<(String, u64)> = runs(stack, &format!("playbook={playbook}"))
        .iter()
        .map(|r| {
            (
                r["state"].as_str().unwrap_or_default().to_owned(),
                r["depth"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    r.reverse();
    r
}

fn breaker(stack: &Stack, key: &str) -> Option<Value> {
    stack.api_get("/api/v1/automation")["breakers"]
        .as_array()?
        .iter()
        .find(|b| b["key"] == key)
        .cloned()
}

#[test]
fn s6_a_self_retriggering_remediation_stops_at_depth_and_budget_and_the_kill_switch_stops_a_run() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let scripts = scripts_dir(work.path());
    let marks = work.path().join("marks.log");
    let hook = Recorder::start();
    // Placeholder API URL: the playbooks need the correlator's address,
    // which the stack picks; rewrite them once it is known.
    let pb_dir = work.path().join("playbooks");
    playbooks(&pb_dir, "http://127.0.0.1:1", &marks);
    let mut stack = Stack::start_without_agent(&StackConfig {
        resolve_after: "10m".into(),
        playbooks_dir: Some(pb_dir.clone()),
        correlator_extra: format!(
            "automation:\n  causal_window: 10m\n  escalation:\n    webhook: {}\n    servicenow: true\n",
            hook.url
        ),
        scripts_dir: Some(scripts.clone()),
        ..StackConfig::default()
    });
    playbooks(&pb_dir, &stack.api, &marks);
    let (status, body) = post_json(
        &format!("{}/api/v1/playbooks/reload", stack.api),
        &json!({}),
    );
    assert_eq!(status, 200, "{body}");
    // The "restart": records itself at the target, then the service falls
    // over again (a new svc_down episode for the same host and app).
    write_script(
        &scripts,
        "restart.sh",
        r#"#!/bin/sh
set -e
url="$1"; host="$2"; app="$3"; marks="$4"
echo "restart $app" >> "$marks"
ev='{"source":"hardware","name":"svc_down","host":"'"$host"'","app":"'"$app"'","severity":"critical"'
/usr/bin/curl -sf -o /dev/null -H 'content-type: application/json' \
  -d '{"events":['"$ev"',"status":"resolved"},'"$ev"',"status":"firing"}]}' "$url/api/v1/ingest/events"
"#,
    );
    write_script(&scripts, "mark.sh", MARK_SCRIPT);
    stack.start_agent();
    let host = stack.host.clone();
    let events = format!("{}/api/v1/ingest/events", stack.api);

    // --- causal depth ---
    assert_eq!(
        post_json(&events, &event(&host, DEPTH_APP, "svc_down")).0,
        200
    );
    let states = wait_for(
        &mut stack,
        Duration::from_secs(90),
        "the depth loop to be blocked",
        |s| {
            let r = run_states(s, "s6-depth");
            r.iter().any(|(st, _)| st == "blocked").then_some(r)
        },
    );
    assert_eq!(
        states,
        vec![
            ("succeeded".to_owned(), 0),
            ("succeeded".to_owned(), 1),
            ("succeeded".to_owned(), 2),
            ("blocked".to_owned(), 3),
        ],
        "three restarts (depth 0, 1, 2), then the fourth is blocked at depth 3 > max_depth 2"
    );
    let blocked = &runs(&stack, "playbook=s6-depth&state=blocked")[0];
    assert!(
        blocked["reason"]
            .as_str()
            .unwrap()
            .contains("causal chain depth 3 exceeds max_depth 2"),
        "{blocked}"
    );
    assert!(blocked["caused_by_run"].is_string(), "{blocked}");
    let key = format!("playbook:s6-depth@{host}/{DEPTH_APP}");
    let b = wait_for(
        &mut stack,
        Duration::from_secs(20),
        "the escalation to be recorded",
        |s| breaker(s, &key).filter(|b| b["escalation"]["servicenow"].is_object()),
    );
    assert_eq!(b["escalation"]["webhook"]["status"], 200, "{b}");
    let number = b["escalation"]["servicenow"]["number"]
        .as_str()
        .unwrap_or_else(|| panic!("{b}"))
        .to_owned();
    assert!(
        hook.bodies().iter().any(|h| h["breaker"] == key.as_str()),
        "{:?}",
        hook.bodies()
    );
    let tickets = stack.sn_get(&format!(
        "/api/now/table/incident?sysparm_query=number={number}"
    ));
    assert!(
        tickets["result"][0]["short_description"]
            .as_str()
            .unwrap_or_default()
            .contains(&key),
        "{tickets}"
    );
    // Exactly three restarts reached the target.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count_lines(&marks, &format!("restart {DEPTH_APP}")), 3);

    // While tripped, a fresh trigger is blocked by the breaker, not run.
    assert_eq!(post_json(&events, &json!({"events": [
        {"source": "hardware", "name": "svc_down", "host": host, "app": DEPTH_APP, "severity": "critical", "status": "resolved"},
        {"source": "hardware", "name": "svc_down", "host": host, "app": DEPTH_APP, "severity": "critical"}]})).0, 200);
    let r = wait_for(
        &mut stack,
        Duration::from_secs(20),
        "the next run to be refused",
        |s| {
            let r = runs(s, "playbook=s6-depth&state=blocked");
            (r.len() == 2).then(|| r[0].clone())
        },
    );
    assert!(r["reason"].as_str().unwrap().contains("is tripped"), "{r}");
    assert_eq!(count_lines(&marks, &format!("restart {DEPTH_APP}")), 3);
    // An operator resets it (audited).
    let enc = key
        .replace(':', "%3A")
        .replace('@', "%40")
        .replace('/', "%2F");
    let (status, body) = post_json(
        &format!("{}/api/v1/automation/breakers/{enc}/reset", stack.api),
        &json!({"by": "oncall-sre", "reason": "restart loop understood"}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(breaker(&stack, &key).is_none());
    let audit = stack.api_get("/api/v1/audit?limit=1000");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "automation.breaker.trip",
        "automation.breaker.escalated",
        "automation.breaker.reset",
        "action.exec",
        "run.blocked",
    ] {
        assert!(actions.contains(&a), "audit lacks {a}: {actions:?}");
    }

    // --- budget ---
    assert_eq!(
        post_json(&events, &event(&host, BUDGET_APP, "svc_down")).0,
        200
    );
    let states = wait_for(
        &mut stack,
        Duration::from_secs(90),
        "the budget loop to be blocked",
        |s| {
            let r = run_states(s, "s6-budget");
            r.iter().any(|(st, _)| st == "blocked").then_some(r)
        },
    );
    assert_eq!(
        states.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        ["succeeded", "succeeded", "blocked"],
        "{states:?}"
    );
    let blocked = &runs(&stack, "playbook=s6-budget&state=blocked")[0];
    assert!(
        blocked["reason"]
            .as_str()
            .unwrap()
            .contains("budget exhausted"),
        "{blocked}"
    );
    let key = format!("playbook:s6-budget@{host}/{BUDGET_APP}");
    wait_for(
        &mut stack,
        Duration::from_secs(20),
        "the budget breaker's escalation",
        |s| breaker(s, &key).filter(|b| b["escalation"]["webhook"]["status"] == 200),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count_lines(&marks, &format!("restart {BUDGET_APP}")), 2);

    // --- the kill switch stops a long run before its next step ---
    assert_eq!(
        post_json(&events, &event(&host, LONG_APP, "maintenance_due")).0,
        200
    );
    let run_id = wait_for(
        &mut stack,
        Duration::from_secs(30),
        "the long run to wait in its second step",
        |s| {
            let r = runs(s, "playbook=s6-long");
            let r = r.first()?;
            let steps = r["steps"].as_array()?;
            (steps.len() == 2 && steps[1]["state"] == "running")
                .then(|| r["id"].as_str().unwrap().to_owned())
        },
    );
    assert_eq!(count_lines(&marks, "mark first"), 1);
    let flipped = Instant::now();
    let (status, body) = post_json(
        &format!("{}/api/v1/automation/kill-switch", stack.api),
        &json!({"on": true, "by": "oncall-sre", "reason": "S6 drill"}),
    );
    assert_eq!(status, 200, "{body}");
    let run = wait_for(
        &mut stack,
        Duration::from_secs(10),
        "the run to stop",
        |s| {
            let r = s.api_get(&format!("/api/v1/runs/{run_id}"));
            (r["state"] == "stopped").then_some(r)
        },
    );
    assert!(
        flipped.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        flipped.elapsed()
    );
    assert!(
        run["reason"].as_str().unwrap().contains("kill switch"),
        "{run}"
    );
    assert_eq!(run["steps"][1]["state"], "stopped", "{run}");
    // The third step never runs, even well after.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count_lines(&marks, "mark second"), 0);
    // While on, new runs are refused (a new episode of the alert).
    let again = json!({"events": [
        {"source": "hardware", "name": "maintenance_due", "host": host, "app": LONG_APP, "severity": "critical", "status": "resolved"},
        {"source": "hardware", "name": "maintenance_due", "host": host, "app": LONG_APP, "severity": "critical"}]});
    assert_eq!(post_json(&events, &again).0, 200);
    let r = wait_for(
        &mut stack,
        Duration::from_secs(20),
        "a run refused by the kill switch",
        |s| runs(s, "playbook=s6-long&state=blocked").first().cloned(),
    );
    assert!(r["reason"].as_str().unwrap().contains("kill switch"), "{r}");
    let audit = stack.api_get("/api/v1/audit?limit=1000");
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "automation.kill_switch.on" && e["actor"] == "oncall-sre"),
        "{audit}"
    );
    stack.assert_running();
}
