//! The rollout against a scripted environment: six hosts whose agents
//! answer every script, and whose probe reads from a shared map the
//! scripts change (a bad patch takes a host's probe down; its rollback
//! brings it back).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fincorp_api::wire::{CommandAction, CommandDetail, CommandOutcome, CommandResult};
use serde_json::{Map, Value, json};

use super::*;
use crate::actions::testing::{FakeEnv, Metrics};
use crate::actions::{execute, plan as plan_step};

const APP: &str = "FINCORP-APP-TRANSPROC";

fn hosts() -> Vec<String> {
    (1..=6).map(|i| format!("tp-{i}")).collect()
}

fn params(extra: Value) -> Map<String, Value> {
    let mut p = json!({
        "app": APP,
        "hosts": hosts(),
        "serial": 2,
        "max_fail_percentage": 10,
        "min_healthy": 3,
        "drain": {"script": "lb-drain.sh", "args": ["{app}", "{host}"]},
        "patch": {"script": "apply-patch.sh", "args": ["{app}", "2026.11"], "timeout": "5m"},
        "restart": {"script": "restart-app.sh", "args": ["{app}"]},
        "rollback": {"script": "rollback-patch.sh", "args": ["{app}"]},
        "undrain": {"script": "lb-undrain.sh", "args": ["{app}", "{host}"]},
        "health": {"samples": 2, "timeout": "300ms", "poll": "10ms"},
        "silence_for": "30m",
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p.as_object().unwrap().clone()
}

fn ctx() -> StepContext {
    StepContext {
        run_id: "run-s4".into(),
        step_id: "patch".into(),
        incident_id: None,
        app: None,
        idempotency_key: "sched:2026-11-22T02:00:00.000Z:sunday:patch".into(),
        timeout: Duration::from_secs(60),
    }
}

fn ok(host: &str, id: &str, script: &str) -> CommandResult {
    CommandResult {
        command_id: id.into(),
        host: host.into(),
        outcome: CommandOutcome::Applied,
        message: "ok".into(),
        detail: Some(CommandDetail::Script {
            script: script.into(),
            exit_code: Some(0),
            timed_out: false,
            duration_ms: 5,
            stdout: format!("{script} done\n"),
            stderr: String::new(),
        }),
        finished_at_ms: 1,
    }
}

/// Six healthy hosts; `bad` hosts lose their probe when patched and get
/// it back when rolled back.
fn fleet(bad: &'static [&'static str]) -> FakeEnv {
    let metrics: Arc<Mutex<Metrics>> = Arc::default();
    let m = metrics.clone();
    let mut env = FakeEnv::new(move |host, id, action| {
        let CommandAction::RunScript { script, .. } = action else {
            panic!("{action:?}")
        };
        let probe = match script.as_str() {
            "apply-patch.sh" if bad.contains(&host) => Some(0.0),
            "rollback-patch.sh" => Some(1.0),
            _ => None,
        };
        if let Some(v) = probe {
            m.lock()
                .unwrap()
                .insert((host.into(), Some(APP.into()), "probe_up".into()), v);
        }
        Ok(ok(host, id, script))
    });
    env.metrics = metrics;
    for h in hosts() {
        env.set_metric(&h, Some(APP), "probe_up", 1.0);
    }
    env
}

/// (host, script) of every command sent, in order.
fn scripts(env: &FakeEnv) -> Vec<(String, String)> {
    env.sent
        .lock()
        .unwrap()
        .iter()
        .map(|(h, _, a)| match a {
            CommandAction::RunScript { script, .. } => (h.clone(), script.clone()),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn scripts_on(env: &FakeEnv, host: &str) -> Vec<String> {
    scripts(env)
        .into_iter()
        .filter(|(h, _)| h == host)
        .map(|(_, s)| s)
        .collect()
}

fn last_progress(env: &FakeEnv) -> Value {
    env.progress.lock().unwrap().last().cloned().unwrap()
}

fn host<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap()
}

const FULL: &[&str] = &[
    "lb-drain.sh",
    "apply-patch.sh",
    "restart-app.sh",
    "lb-undrain.sh",
];
const ROLLED_BACK: &[&str] = &[
    "lb-drain.sh",
    "apply-patch.sh",
    "restart-app.sh",
    "rollback-patch.sh",
    "restart-app.sh",
    "lb-undrain.sh",
];

#[tokio::test]
async fn one_failing_host_of_six_halts_the_rollout_and_its_batch_is_rolled_back() {
    let env = fleet(&["tp-4"]);
    let err = execute(&env, &RollingPatch, &params(json!({})), &ctx())
        .await
        .unwrap_err();
    let ActionError::Refused(msg) = &err else {
        panic!("{err}")
    };
    assert!(msg.contains("halted after batch 2 of 3"), "{msg}");
    assert!(
        msg.contains("1 of 6 hosts failed (16.7% > max_fail_percentage 10%)"),
        "{msg}"
    );
    assert!(
        msg.contains("tp-4 (health: probe_up == 1 did not hold"),
        "{msg}"
    );
    assert!(
        msg.contains("batch 2 rolled back: tp-3 healthy, tp-4 healthy"),
        "{msg}"
    );
    assert!(msg.contains("not started: tp-5, tp-6"), "{msg}");
    assert!(!err.retryable());

    // Batch 1 patched, batch 2 patched then rolled back as a whole (the
    // healthy tp-3 too), batch 3 never touched.
    for h in ["tp-1", "tp-2"] {
        assert_eq!(scripts_on(&env, h), FULL, "{h}");
    }
    for h in ["tp-3", "tp-4"] {
        assert_eq!(scripts_on(&env, h), ROLLED_BACK, "{h}");
    }
    for h in ["tp-5", "tp-6"] {
        assert!(scripts_on(&env, h).is_empty(), "{h}");
    }
    // Batch 2 started only after batch 1 was back in service.
    let order = scripts(&env);
    let undrain_1 = order
        .iter()
        .rposition(|(h, s)| h == "tp-2" && s == "lb-undrain.sh")
        .unwrap();
    let drain_3 = order
        .iter()
        .position(|(h, s)| h == "tp-3" && s == "lb-drain.sh")
        .unwrap();
    assert!(undrain_1 < drain_3, "{order:?}");
    // Command ids: the step's key, the host and the phase.
    let ids: Vec<String> = env
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id, _)| id.clone())
        .collect();
    assert!(
        ids.contains(&"sched:2026-11-22T02:00:00.000Z:sunday:patch:tp-4:rollback".to_owned()),
        "{ids:?}"
    );
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "every command id is used once");

    // A silence per patched host, created by the run and expired after its batch.
    let silences = env.silences.lock().unwrap().clone();
    let matchers: Vec<_> = silences.iter().map(|s| s.matchers.join(",")).collect();
    assert_eq!(
        matchers,
        ["host=tp-1", "host=tp-2", "host=tp-3", "host=tp-4"]
    );
    assert!(silences.iter().all(|s| s.expired), "{silences:?}");
    assert!(silences.iter().all(|s| s.created_by == "automation:run-s4"));
    assert!(
        silences
            .iter()
            .all(|s| s.duration == Duration::from_secs(1800))
    );

    // The report, as the run record shows it.
    let report = last_progress(&env);
    assert_eq!(report["state"], "halted");
    assert_eq!(report["failed"], 1);
    let states: Vec<_> = report["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["state"].clone())
        .collect();
    assert_eq!(
        states,
        [
            json!("succeeded"),
            json!("rolled_back"),
            json!("not_started")
        ]
    );
    assert_eq!(host(&report, "tp-1")["outcome"], "patched");
    assert_eq!(host(&report, "tp-3")["outcome"], "rolled_back");
    assert_eq!(host(&report, "tp-4")["outcome"], "rolled_back");
    assert_eq!(host(&report, "tp-4")["drained"], false);
    assert_eq!(host(&report, "tp-5")["outcome"], "not_started");
    let phases: Vec<_> = host(&report, "tp-4")["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}:{}", p["phase"].as_str().unwrap(), p["ok"]))
        .collect();
    assert_eq!(
        phases,
        [
            "drain:true",
            "patch:true",
            "restart:true",
            "health:false",
            "rollback:true",
            "rollback_restart:true",
            "rollback_health:true",
            "undrain:true"
        ]
    );
    assert!(
        env.progress.lock().unwrap().len() > 10,
        "progress is published as it goes"
    );
}

#[tokio::test]
async fn under_the_threshold_only_the_failed_host_is_rolled_back_and_the_rollout_goes_on() {
    let env = fleet(&["tp-4"]);
    let out = execute(
        &env,
        &RollingPatch,
        &params(json!({"max_fail_percentage": 20})),
        &ctx(),
    )
    .await
    .unwrap();
    let report = out.result;
    assert_eq!(report["state"], "succeeded");
    assert_eq!(report["failed"], 1);
    assert_eq!(scripts_on(&env, "tp-3"), FULL);
    assert_eq!(scripts_on(&env, "tp-4"), ROLLED_BACK);
    for h in ["tp-1", "tp-2", "tp-5", "tp-6"] {
        assert_eq!(scripts_on(&env, h), FULL, "{h}");
    }
    assert_eq!(report["batches"][1]["state"], "succeeded_with_failures");
    assert_eq!(host(&report, "tp-4")["outcome"], "rolled_back");
    assert_eq!(env.silences.lock().unwrap().len(), 6);
}

#[tokio::test]
async fn a_host_that_stays_unhealthy_after_rollback_stays_drained() {
    let metrics: Arc<Mutex<Metrics>> = Arc::default();
    let m = metrics.clone();
    let mut env = FakeEnv::new(move |host, id, action| {
        let CommandAction::RunScript { script, .. } = action else {
            panic!()
        };
        if script == "apply-patch.sh" && host == "tp-1" {
            m.lock()
                .unwrap()
                .insert((host.into(), Some(APP.into()), "probe_up".into()), 0.0);
        }
        Ok(ok(host, id, script))
    });
    env.metrics = metrics;
    for h in hosts() {
        env.set_metric(&h, Some(APP), "probe_up", 1.0);
    }
    let err = execute(&env, &RollingPatch, &params(json!({})), &ctx())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tp-1 STILL UNHEALTHY"), "{err}");
    let report = last_progress(&env);
    assert_eq!(host(&report, "tp-1")["outcome"], "rollback_failed");
    assert_eq!(
        host(&report, "tp-1")["drained"],
        true,
        "kept out of service"
    );
    assert!(!scripts_on(&env, "tp-1").contains(&"lb-undrain.sh".to_owned()));
    assert_eq!(host(&report, "tp-2")["drained"], false);
}

#[tokio::test]
async fn a_host_left_drained_does_not_count_as_healthy_for_the_next_batch() {
    let mut env = FakeEnv::new(|host, id, action| {
        let CommandAction::RunScript { script, .. } = action else {
            panic!()
        };
        let mut answer = ok(host, id, script);
        if script == "lb-undrain.sh" && host == "tp-1" {
            if let Some(CommandDetail::Script { exit_code, .. }) = &mut answer.detail {
                *exit_code = Some(1);
            }
        }
        Ok(answer)
    });
    env.metrics = Arc::default();
    for h in hosts() {
        env.set_metric(&h, Some(APP), "probe_up", 1.0);
    }
    let err = execute(
        &env,
        &RollingPatch,
        &params(json!({"min_healthy": 4})),
        &ctx(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ActionError::Refused(m) if m.contains("halted before batch 2 of 3") && m.contains("tp-1 (still drained)")),
        "{err}"
    );
    let report = last_progress(&env);
    assert_eq!(host(&report, "tp-1")["drained"], true);
    assert!(scripts_on(&env, "tp-3").is_empty());
}

#[tokio::test]
async fn too_few_healthy_hosts_outside_the_batch_halts_before_touching_it() {
    let env = fleet(&[]);
    env.set_metric("tp-5", Some(APP), "probe_up", 0.0);
    env.set_metric("tp-6", Some(APP), "probe_up", 0.0);
    let err = execute(&env, &RollingPatch, &params(json!({})), &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ActionError::Refused(m) if m.contains("halted before batch 1 of 3") && m.contains("only 2 of the other 4 hosts are healthy") && m.contains("tp-5 (probe_up 0)")),
        "{err}"
    );
    assert!(env.sent.lock().unwrap().is_empty());
    assert!(env.silences.lock().unwrap().is_empty());
    assert_eq!(last_progress(&env)["batches"][0]["state"], "not_started");
}

#[tokio::test]
async fn the_kill_switch_stops_the_rollout_before_its_next_batch() {
    let env = Arc::new(fleet(&[]));
    let watcher = {
        let env = env.clone();
        tokio::spawn(async move {
            while env.sent.lock().unwrap().len() < 6 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            env.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let err = execute(env.as_ref(), &RollingPatch, &params(json!({})), &ctx())
        .await
        .unwrap_err();
    watcher.await.unwrap();
    assert!(
        matches!(&err, ActionError::Refused(m) if m.contains("stopped by the kill switch before batch 2 of 3")),
        "{err}"
    );
    assert_eq!(
        scripts_on(&env, "tp-1"),
        FULL,
        "batch 1 is finished, not abandoned"
    );
    assert!(scripts_on(&env, "tp-3").is_empty());
    assert!(env.silences.lock().unwrap().iter().all(|s| s.expired));
}

#[test]
fn serial_as_a_count_or_a_percentage_and_bad_parameters() {
    let batches = |extra: Value| Rollout::parse(&params(extra)).map(|r| r.batches());
    assert_eq!(batches(json!({})).unwrap().len(), 3);
    assert_eq!(
        batches(json!({"serial": "50%", "min_healthy": 3}))
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        batches(json!({"serial": "10%", "min_healthy": 1}))
            .unwrap()
            .len(),
        6,
        "rounded down, at least 1"
    );
    assert_eq!(
        batches(json!({"serial": "4", "min_healthy": 2})).unwrap()[1],
        ["tp-5", "tp-6"]
    );
    for (extra, want) in [
        (json!({"serial": 0}), "`serial` must be a count"),
        (json!({"serial": "150%"}), "at most 100%"),
        (json!({"min_healthy": 5}), "cannot be kept"),
        (json!({"max_fail_percentage": 101}), "from 0 to 100"),
        (json!({"hosts": ["a", "b", "a"]}), "lists a twice"),
        (
            json!({"patch": {"url": "https://x"}}),
            "must run on the host",
        ),
        (json!({"patch": {"script": "../x.sh"}}), "not a path"),
        (
            json!({"drain": {"script": "d.sh", "colour": "red"}}),
            "unknown key `colour`",
        ),
        (json!({"drain": {"url": "ftp://lb"}}), "must be http(s)"),
        (
            json!({"health": {"checks": [{"metric": "disk", "op": "<", "value": 1}]}}),
            "`health.checks[0].metric`",
        ),
        (json!({"health": {"samples": 0}}), "`health.samples`"),
    ] {
        let err = Rollout::parse(&params(extra.clone())).unwrap_err();
        assert!(
            matches!(&err, ActionError::InvalidParams(m) if m.contains(want)),
            "{extra}: {err}"
        );
    }
}

#[test]
fn the_plan_shows_every_batch_silence_and_command_with_its_key() {
    let env = FakeEnv::new(|_, _, _| panic!("planning sends nothing"));
    let mut p = params(json!({}));
    p["drain"] = json!({"url": "https://lb.example/pools/{app}/members/{host}", "method": "PUT", "body": {"state": "drain", "batch": "{batch}"}});
    let planned = plan_step(&env, &RollingPatch, &p, &ctx()).unwrap();
    let notes = planned
        .iter()
        .filter(|p| matches!(p, Planned::Note { text } if text.starts_with("batch ")))
        .count();
    assert_eq!(notes, 3);
    let silences: Vec<_> = planned
        .iter()
        .filter_map(|p| match p {
            Planned::Silence {
                matchers,
                duration_ms,
                ..
            } => Some((matchers.join(","), *duration_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(silences.len(), 6);
    assert_eq!(silences[3], ("host=tp-4".into(), 1_800_000));
    let commands: Vec<_> = planned
        .iter()
        .filter_map(|p| match p {
            Planned::AgentCommand { host, command } => {
                Some((host.clone(), command["id"].as_str().unwrap().to_owned()))
            }
            _ => None,
        })
        .collect();
    // patch, restart, rollback, rollback restart, undrain per host.
    assert_eq!(commands.len(), 6 * 5);
    assert!(commands.contains(&(
        "tp-6".into(),
        "sched:2026-11-22T02:00:00.000Z:sunday:patch:tp-6:patch".into()
    )));
    let drains: Vec<_> = planned
        .iter()
        .filter_map(|p| match p {
            Planned::Http { request } => Some(request),
            _ => None,
        })
        .collect();
    assert_eq!(drains.len(), 6);
    assert_eq!(
        drains[2].url,
        format!("https://lb.example/pools/{APP}/members/tp-3")
    );
    assert_eq!(drains[2].method, "PUT");
    assert_eq!(
        drains[2].body,
        Some(json!({"state": "drain", "batch": "2"}))
    );
    assert_eq!(
        drains[2].header("Idempotency-Key"),
        Some("sched:2026-11-22T02:00:00.000Z:sunday:patch:tp-3:drain")
    );
    let waits = planned
        .iter()
        .filter(|p| matches!(p, Planned::Wait { .. }))
        .count();
    assert_eq!(waits, 6);
}
