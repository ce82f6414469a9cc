//! `failover` against the in-process vSphere simulator, a scripted
//! [`FakeEnv`] playing the agents (the standby's probe comes up only once
//! the simulator has powered its VM on) and a local webhook receiver
//! playing the load balancer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fincorp_api::config::Secret;
use fincorp_api::wire::{CommandAction, CommandDetail, CommandOutcome, CommandResult};
use fincorp_integrations::retry::RetryPolicy;
use fincorp_integrations::vsphere::{VsphereClient, VsphereConfig};
use fincorp_sim::vsphere::{self as sim, Faults, Inventory, PowerState, RunningSim, SimState};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Failover;
use crate::actions::testing::FakeEnv;
use crate::actions::{ActionError, Planned, StepContext, execute, plan};

const USER: &str = "fincorp-automation@vsphere.local";
const PASSWORD: &str = "vc-test-password";
const APP: &str = "FINCORP-APP-CORE";
const PRIMARY: &str = "core-ny-01";
const STANDBY: &str = "core-ldn-01";

fn inventory(standby_on: bool) -> Inventory {
    let text = format!(
        r#"{{"vms": [
        {{"vm": "vm-1001", "name": "core-ny-01", "host": "esx-ny-01", "power_state": "POWERED_ON", "cpu_count": 8, "cores_per_socket": 4, "memory_mib": 32768}},
        {{"vm": "vm-2001", "name": "core-ldn-01", "host": "esx-ldn-01", "power_state": "{}", "cpu_count": 8, "cores_per_socket": 4, "memory_mib": 32768}}]}}"#,
        if standby_on {
            "POWERED_ON"
        } else {
            "POWERED_OFF"
        }
    );
    serde_json::from_str(&text).unwrap()
}

async fn vcenter(standby_on: bool) -> (RunningSim, VsphereClient) {
    let sim = sim::spawn(SimState::new(USER, PASSWORD, inventory(standby_on)))
        .await
        .unwrap();
    let client = VsphereClient::new(VsphereConfig {
        url: sim.url(),
        username: USER.into(),
        password: Secret::new(PASSWORD),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
    .with_retry(RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(1),
    });
    (sim, client)
}

/// What the webhook receiver got: (request head, JSON body).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on 127.0.0.1 answering `status`; its URL and what it
/// received. `on_request` runs before it answers.
async fn hook(status: u16, on_request: impl Fn() + Send + Sync + 'static) -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/gslb/core", listener.local_addr().unwrap());
    let got: Received = Arc::default();
    let kept = got.clone();
    let on_request = Arc::new(on_request);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (kept, on_request) = (kept.clone(), on_request.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len: usize = head
                        .to_ascii_lowercase()
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body =
                        serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
                    kept.lock().unwrap().push((head, body));
                    on_request();
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                    return;
                }
            });
        }
    });
    (url, got)
}

fn ctx() -> StepContext {
    StepContext {
        run_id: "run-7".into(),
        step_id: "failover".into(),
        incident_id: Some("fc-42".into()),
        app: Some(APP.into()),
        idempotency_key: "fc-42:core-failover-london:failover".into(),
        timeout: Duration::from_secs(30),
    }
}

fn params(switch_url: &str, extra: Value) -> Map<String, Value> {
    let mut p = json!({
        "app": APP,
        "primary_host": PRIMARY,
        "host": STANDBY,
        "standby_vm": "core-ldn-01",
        "confirming_alerts": "1",
        "probe_down_for": "300ms",
        "boot_timeout": "3s",
        "verify_within": "1s",
        "poll": "50ms",
        "switch_url": switch_url,
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            p.as_object_mut().unwrap().remove(k);
        } else {
            p[k] = v.clone();
        }
    }
    p.as_object().unwrap().clone()
}

fn env_with(vc: VsphereClient) -> Arc<FakeEnv> {
    let mut env = FakeEnv::new(|_, _, _| Err("no agent command expected".into()));
    env.vsphere = Some(vc);
    Arc::new(env)
}

/// Plays the standby's agent: its app's probe reads 1 once the simulator
/// has the standby VM powered on (the app boots with its VM).
fn standby_boots_with_its_vm(env: &Arc<FakeEnv>, sim: &RunningSim) -> tokio::task::JoinHandle<()> {
    let (env, state) = (env.clone(), sim.state.clone());
    tokio::spawn(async move {
        loop {
            if state
                .vm_named("core-ldn-01")
                .is_some_and(|v| v.power_state == PowerState::PoweredOn)
            {
                env.set_metric(STANDBY, Some(APP), "probe_up", 1.0);
                env.set_metric(STANDBY, Some(APP), "latency_ms", 3.5);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

fn sent(sim: &RunningSim) -> Vec<String> {
    sim.state
        .requests()
        .iter()
        .map(|r| {
            let q = r
                .query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            format!("{} {}{q} {}", r.method, r.path, r.status)
        })
        .collect()
}

fn phases(result: &Value) -> Vec<(String, String)> {
    result["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["phase"].as_str().unwrap().to_owned(),
                p["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_confirmed_outage_powers_on_the_standby_waits_for_its_probe_switches_and_verifies() {
    let (sim, vc) = vcenter(false).await;
    let env = env_with(vc);
    // The primary's agent still reports, with the probe down.
    env.set_metric(PRIMARY, Some(APP), "probe_up", 0.0);
    let (url, got) = hook(200, || {}).await;
    let booted = standby_boots_with_its_vm(&env, &sim);
    let p = params(&url, json!({}));

    let out = execute(env.as_ref(), &Failover, &p, &ctx()).await.unwrap();
    booted.await.unwrap();
    let r = &out.result;
    let ok = |name: &str| (name.to_owned(), "ok".to_owned());
    assert_eq!(
        phases(r),
        [
            ok("confirm_down"),
            ok("power_on"),
            ok("wait_probe"),
            ok("switch_traffic"),
            ok("verify")
        ]
    );
    // In order, each after the one before.
    let times: Vec<(i64, i64)> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["started_at_ms"].as_i64().unwrap(),
                p["finished_at_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    for w in times.windows(2) {
        assert!(w[0].0 <= w[0].1 && w[0].1 <= w[1].0, "{times:?}");
    }
    assert!(
        times[0].1 - times[0].0 >= 300,
        "the outage is confirmed over probe_down_for: {times:?}"
    );
    // Each phase was reported as it completed.
    let progress = env.progress.lock().unwrap().clone();
    let counts: Vec<usize> = progress
        .iter()
        .map(|p| p["phases"].as_array().unwrap().len())
        .collect();
    assert_eq!(counts, [1, 2, 3, 4, 5]);
    assert_eq!(progress[4]["log"], r["log"]);
    assert_eq!(r["vm_id"], "vm-2001");
    assert_eq!(r["power"], "done");
    assert_eq!(r["standby_host"], STANDBY);
    assert_eq!(r["switch"]["status"], 200);
    let log = r["log"].as_str().unwrap();
    assert_eq!(log.lines().count(), 5, "{log}");
    assert!(
        log.contains("power_on ok")
            && log.contains("core-ldn-01 (vm-2001) was POWERED_OFF; started"),
        "{log}"
    );

    // vCenter: one login, the lookup, the start, the read back.
    assert_eq!(
        sent(&sim),
        [
            "POST /api/session 201",
            "GET /api/vcenter/vm?names=core-ldn-01 200",
            "POST /api/vcenter/vm/vm-2001/power?action=start 204",
            "GET /api/vcenter/vm/vm-2001/power 200",
        ]
    );
    assert_eq!(
        sim.state.vm("vm-2001").unwrap().power_state,
        PowerState::PoweredOn
    );
    // The switch: once, keyed, with the default body naming both sides.
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let (head, body) = &got[0];
    assert!(head.starts_with("POST /gslb/core "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("idempotency-key: fc-42:core-failover-london:failover:switch"),
        "{head}"
    );
    assert_eq!(
        body,
        &json!({"app": APP, "from_host": PRIMARY, "to_host": STANDBY, "standby_vm": "core-ldn-01",
                "incident_id": "fc-42", "run_id": "run-7"})
    );
}

#[tokio::test]
async fn the_plan_shows_every_request_the_failover_sends() {
    let (sim, vc) = vcenter(false).await;
    let env = env_with(vc);
    let (url, got) = hook(200, || {}).await;
    let booted = standby_boots_with_its_vm(&env, &sim);
    let p = params(
        &url,
        json!({"switch_method": "PUT", "switch_body": {"pool": "core", "active": "london"},
               "switch_headers": {"X-Change": "CHG-1"}}),
    );
    let planned = plan(env.as_ref(), &Failover, &p, &ctx()).unwrap();
    assert!(sim.state.requests().is_empty(), "planning sends nothing");
    let http: Vec<_> = planned
        .iter()
        .filter_map(|p| match p {
            Planned::Http { request } => Some(request.clone()),
            _ => None,
        })
        .collect();
    let waits = planned
        .iter()
        .filter(|p| matches!(p, Planned::Wait { .. }))
        .count();
    assert_eq!(waits, 3, "confirm, boot, verify: {planned:#?}");
    let shown: Vec<_> = http
        .iter()
        .map(|r| format!("{} {}", r.method, r.url))
        .collect();
    assert_eq!(
        shown,
        [
            format!("POST {}/api/session", sim.url()),
            format!("GET {}/api/vcenter/vm?names=core-ldn-01", sim.url()),
            format!(
                "POST {}/api/vcenter/vm/{{id of core-ldn-01}}/power?action=start",
                sim.url()
            ),
            format!("PUT {url}"),
        ]
    );
    assert_eq!(http[0].header("Authorization"), Some("Basic <redacted>"));

    execute(env.as_ref(), &Failover, &p, &ctx()).await.unwrap();
    booted.await.unwrap();
    // What was sent is what was planned (the VM id filled in by the lookup).
    let recorded = sim.state.requests();
    for (planned, sent) in http[..3].iter().zip(&recorded) {
        let q = sent
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let url = format!("{}{}{q}", sim.url(), sent.path);
        assert_eq!(planned.url.replace("{id of core-ldn-01}", "vm-2001"), url);
        assert_eq!(planned.method, sent.method);
    }
    let got = got.lock().unwrap().clone();
    let (head, body) = &got[0];
    assert!(head.starts_with("PUT /gslb/core "), "{head}");
    assert!(
        head.contains("X-Change: CHG-1") || head.contains("x-change: CHG-1"),
        "{head}"
    );
    assert_eq!(Some(body), http[3].body.as_ref());
}

#[tokio::test]
async fn a_primary_whose_probe_answers_is_not_failed_over_and_nothing_is_sent() {
    let (sim, vc) = vcenter(false).await;
    let env = env_with(vc);
    let (url, got) = hook(200, || {}).await;
    // Down at first, then the primary answers again within the window.
    env.set_metric(PRIMARY, Some(APP), "probe_up", 0.0);
    let recovering = {
        let env = env.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(120)).await;
            env.set_metric(PRIMARY, Some(APP), "probe_up", 1.0);
        })
    };
    let err = execute(env.as_ref(), &Failover, &params(&url, json!({})), &ctx())
        .await
        .unwrap_err();
    recovering.await.unwrap();
    let ActionError::Refused(m) = &err else {
        panic!("{err}")
    };
    assert!(m.contains("the primary answers"), "{m}");
    assert!(m.contains("confirm_down refused"), "the phase log: {m}");
    assert!(!err.retryable());
    assert!(sim.state.requests().is_empty(), "{:?}", sent(&sim));
    assert!(got.lock().unwrap().is_empty());
}

#[tokio::test]
async fn without_a_confirming_alert_a_silent_probe_alone_does_not_fail_over() {
    let (sim, vc) = vcenter(false).await;
    let env = env_with(vc);
    let (url, got) = hook(200, || {}).await;
    let err = execute(
        env.as_ref(),
        &Failover,
        &params(&url, json!({"confirming_alerts": "0"})),
        &ctx(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ActionError::Refused(m) if m.contains("no confirming alert on core-ny-01")),
        "{err}"
    );
    assert!(sim.state.requests().is_empty());
    assert!(got.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_repeat_finds_the_standby_already_on_and_sends_the_same_switch_key() {
    let (sim, vc) = vcenter(false).await;
    let env = env_with(vc);
    let (url, got) = hook(200, || {}).await;
    let booted = standby_boots_with_its_vm(&env, &sim);
    let p = params(&url, json!({}));
    let first = execute(env.as_ref(), &Failover, &p, &ctx()).await.unwrap();
    booted.await.unwrap();
    let again = execute(env.as_ref(), &Failover, &p, &ctx()).await.unwrap();
    assert_eq!(first.result["power"], "done");
    assert_eq!(again.result["power"], "already_in_desired_state");
    assert!(
        again.result["log"]
            .as_str()
            .unwrap()
            .contains("ALREADY_IN_DESIRED_STATE"),
        "{}",
        again.result["log"]
    );
    let starts: Vec<u16> = sim
        .state
        .requests()
        .iter()
        .filter(|r| r.query.as_deref() == Some("action=start"))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        starts,
        [204, 400],
        "the second start is ALREADY_IN_DESIRED_STATE"
    );
    let keys: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(head, _)| {
            head.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("idempotency-key:"))
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
}

#[tokio::test]
async fn a_standby_that_cannot_power_on_stops_the_failover_before_any_switch() {
    let (sim, vc) = vcenter(false).await;
    sim.state.set_faults(Faults {
        fail_power_on: vec!["core-ldn-01".into()],
        ..Faults::default()
    });
    let env = env_with(vc);
    let (url, got) = hook(200, || {}).await;
    let err = execute(env.as_ref(), &Failover, &params(&url, json!({})), &ctx())
        .await
        .unwrap_err();
    let ActionError::Failed(m) = &err else {
        panic!("{err}")
    };
    assert!(m.contains("UNABLE_TO_ALLOCATE_RESOURCE"), "{m}");
    assert!(
        m.contains("confirm_down ok") && m.contains("power_on failed"),
        "{m}"
    );
    assert!(
        got.lock().unwrap().is_empty(),
        "no traffic moved to a dead VM"
    );
    assert_eq!(
        sim.state.vm("vm-2001").unwrap().power_state,
        PowerState::PoweredOff
    );
}

#[tokio::test]
async fn a_standby_whose_probe_never_comes_up_gets_no_traffic() {
    let (sim, vc) = vcenter(false).await;
    let env = env_with(vc);
    let (url, got) = hook(200, || {}).await;
    env.set_metric(STANDBY, Some(APP), "probe_up", 0.0);
    let err = execute(
        env.as_ref(),
        &Failover,
        &params(&url, json!({"boot_timeout": "400ms"})),
        &ctx(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ActionError::Failed(m) if m.contains("did not read 1 within 400ms (last: 0)") && m.contains("wait_probe failed")),
        "{err}"
    );
    assert!(err.retryable());
    assert!(got.lock().unwrap().is_empty());
    assert_eq!(
        sim.state.vm("vm-2001").unwrap().power_state,
        PowerState::PoweredOn,
        "the VM was started; only the traffic stays where it is"
    );
}

#[tokio::test]
async fn a_failed_switch_and_a_standby_that_falls_over_after_it_are_failures() {
    let (sim, vc) = vcenter(true).await;
    let env = env_with(vc);
    env.set_metric(STANDBY, Some(APP), "probe_up", 1.0);
    let (url, _) = hook(503, || {}).await;
    let err = execute(env.as_ref(), &Failover, &params(&url, json!({})), &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ActionError::Failed(m) if m.contains("503") && m.contains("switch_traffic failed")),
        "{err}"
    );

    // The load balancer takes the traffic, and the standby falls over.
    let falls = env.clone();
    let (url, got) = hook(200, move || {
        falls.set_metric(STANDBY, Some(APP), "probe_up", 0.0)
    })
    .await;
    let err = execute(
        env.as_ref(),
        &Failover,
        &params(&url, json!({"verify_within": "300ms"})),
        &ctx(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ActionError::Failed(m) if m.contains("after the switch") && m.contains("verify failed")),
        "{err}"
    );
    assert_eq!(got.lock().unwrap().len(), 1);
    drop(sim);
}

#[tokio::test]
async fn the_kill_switch_stops_the_failover_before_it_powers_on_or_moves_traffic() {
    use std::sync::atomic::Ordering;

    // On from the start: nothing reaches vCenter.
    let (sim, vc) = vcenter(false).await;
    let env = env_with(vc);
    env.stop.store(true, Ordering::SeqCst);
    let (url, got) = hook(200, || {}).await;
    let err = execute(env.as_ref(), &Failover, &params(&url, json!({})), &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ActionError::Refused(m) if m.contains("kill switch is on") && m.contains("confirm_down stopped")),
        "{err}"
    );
    assert!(sim.state.requests().is_empty(), "{:?}", sent(&sim));

    // Turned on while the standby boots: the VM is on, the traffic stays.
    let (sim, vc) = vcenter(false).await;
    let env = env_with(vc);
    let killer = {
        let (env, state) = (env.clone(), sim.state.clone());
        tokio::spawn(async move {
            while !state
                .vm_named("core-ldn-01")
                .is_some_and(|v| v.power_state == PowerState::PoweredOn)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            env.stop.store(true, Ordering::SeqCst);
        })
    };
    let err = execute(env.as_ref(), &Failover, &params(&url, json!({})), &ctx())
        .await
        .unwrap_err();
    killer.await.unwrap();
    let ActionError::Refused(m) = &err else {
        panic!("{err}")
    };
    assert!(
        m.contains("stopped before switch_traffic") && m.contains("wait_probe stopped"),
        "{m}"
    );
    assert!(m.contains("power_on ok"), "{m}");
    assert!(got.lock().unwrap().is_empty(), "no traffic moved");
    let last = env.progress.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last["phases"][2]["outcome"], "stopped", "{last:#}");
}

#[tokio::test]
async fn a_script_switch_runs_on_the_agent_keyed_by_the_step() {
    let (sim, vc) = vcenter(true).await;
    let mut env = FakeEnv::new(|host, id, action| {
        let CommandAction::RunScript { script, .. } = action else {
            panic!("{action:?}")
        };
        Ok(CommandResult {
            command_id: id.into(),
            host: host.into(),
            outcome: CommandOutcome::Applied,
            message: "ran".into(),
            detail: Some(CommandDetail::Script {
                script: script.clone(),
                exit_code: Some(0),
                timed_out: false,
                duration_ms: 40,
                stdout: "gslb: core -> london\n".into(),
                stderr: String::new(),
            }),
            finished_at_ms: 1,
        })
    });
    env.vsphere = Some(vc);
    env.set_metric(STANDBY, Some(APP), "probe_up", 1.0);
    let p = params(
        "",
        json!({"switch_url": null, "switch_script": "gslb-switch.sh", "switch_args": ["core", "london"],
               "switch_host": "mgmt-ny-01"}),
    );
    let planned = plan(&env, &Failover, &p, &ctx()).unwrap();
    assert!(
        planned.iter().any(|p| matches!(p, Planned::AgentCommand { host, command }
            if host == "mgmt-ny-01" && command["id"] == "fc-42:core-failover-london:failover:switch")),
        "{planned:#?}"
    );
    let out = execute(&env, &Failover, &p, &ctx()).await.unwrap();
    assert_eq!(out.result["switch"]["kind"], "script");
    let sent = env.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "mgmt-ny-01");
    assert_eq!(sent[0].1, "fc-42:core-failover-london:failover:switch");
    assert_eq!(
        sent[0].2,
        CommandAction::RunScript {
            script: "gslb-switch.sh".into(),
            args: vec!["core".into(), "london".into()],
            timeout_ms: Some(30_000),
        }
    );
    drop(sim);
}

#[tokio::test]
async fn bad_parameters_and_a_missing_vcenter_are_refused_before_anything_happens() {
    let (url, got) = hook(200, || {}).await;
    let env = FakeEnv::new(|_, _, _| panic!("nothing may be sent"));
    let err = execute(&env, &Failover, &params(&url, json!({})), &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ActionError::Unavailable(m) if m.contains("integrations.vsphere")),
        "{err}"
    );
    for (extra, why) in [
        (
            json!({"switch_script": "x.sh"}),
            "exactly one traffic switch",
        ),
        (json!({"switch_url": null}), "exactly one traffic switch"),
        (json!({"host": PRIMARY}), "needs another host"),
        (json!({"confirming_alerts": "-1"}), "whole number"),
        (json!({"switch_url": "ftp://lb"}), "must be http(s)"),
        (
            json!({"switch_url": null, "switch_script": "../sh"}),
            "not a path",
        ),
    ] {
        let err = execute(&env, &Failover, &params(&url, extra.clone()), &ctx())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::InvalidParams(m) if m.contains(why)),
            "{extra}: {err}"
        );
    }
    assert!(got.lock().unwrap().is_empty());
}

/// The shipped `core-failover-london` playbook's templates, rendered as a
/// run renders them.
mod shipped_playbook {
    use std::path::Path;

    use serde_json::{Value, json};

    use crate::template::{self, AlertCtx, Mode, RunContext, sample_context};

    fn playbook() -> crate::Playbook {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/etc/fincorp/playbooks/core-failover-london.yaml");
        crate::load_file(&file)
            .unwrap_or_else(|d| panic!("{d}"))
            .playbook
    }

    fn alert(source: &str, name: &str, host: &str, severity: &str, status: &str) -> AlertCtx {
        AlertCtx {
            name: name.into(),
            source: source.into(),
            host: host.into(),
            app: Some(super::APP.into()),
            severity: severity.into(),
            status: status.into(),
            metric: String::new(),
            value: 0.0,
            threshold: 0.0,
            summary: String::new(),
            fingerprint: format!("{source}-{name}-{host}-{status}"),
            starts_at: "2026-11-22T10:00:00.000Z".into(),
        }
    }

    fn context(alerts: Vec<AlertCtx>, steps: Value) -> RunContext {
        let pb = playbook();
        let mut ctx = sample_context(&pb.name, Some(super::APP));
        ctx.vars = pb.vars.clone();
        if let Some(i) = ctx.incident.as_mut() {
            i.host = super::PRIMARY.into();
        }
        ctx.alert = alerts.last().cloned();
        ctx.alerts = alerts;
        ctx.steps = serde_json::from_value(steps).unwrap();
        ctx
    }

    fn render(step: &str, rollback: bool, ctx: &RunContext) -> serde_json::Map<String, Value> {
        let pb = playbook();
        let steps = if rollback { &pb.rollback } else { &pb.steps };
        let s = steps.iter().find(|s| s.id == step).unwrap();
        template::render(&template::environment(), &s.with, ctx, Mode::Execute, &[])
            .unwrap_or_else(|e| panic!("{step}: {e}"))
    }

    #[test]
    fn only_firing_critical_hardware_alerts_on_the_primary_confirm_the_outage() {
        let p = super::PRIMARY;
        let cases = [
            (
                vec![alert("blackbox", "probe_down", p, "critical", "firing")],
                "0",
            ),
            (
                vec![
                    alert("blackbox", "probe_down", p, "critical", "firing"),
                    alert("hardware", "psu_failure", p, "critical", "firing"),
                ],
                "1",
            ),
            (
                vec![
                    alert("hardware", "psu_failure", p, "critical", "resolved"),
                    alert("hardware", "dimm_ecc", p, "warning", "firing"),
                    alert(
                        "hardware",
                        "psu_failure",
                        "core-ny-02",
                        "critical",
                        "firing",
                    ),
                    alert("agent", "probe_down", p, "critical", "firing"),
                ],
                "0",
            ),
            (
                vec![
                    alert("hardware", "psu_failure", p, "critical", "firing"),
                    alert("hardware", "fan_failure", p, "critical", "firing"),
                ],
                "2",
            ),
        ];
        for (alerts, want) in cases {
            let names: Vec<_> = alerts
                .iter()
                .map(|a| {
                    format!(
                        "{}/{}/{}/{}/{}",
                        a.source, a.name, a.host, a.severity, a.status
                    )
                })
                .collect();
            let with = render("failover", false, &context(alerts, json!({})));
            assert_eq!(with["confirming_alerts"], want, "{names:?}");
            assert_eq!(with["primary_host"], p);
            assert_eq!(with["host"], "core-ldn-01");
        }
    }

    #[test]
    fn the_rollback_note_says_how_far_the_run_got() {
        let hw = vec![alert(
            "hardware",
            "psu_failure",
            super::PRIMARY,
            "critical",
            "firing",
        )];
        let ticket =
            json!({"result": {"sys_id": "abc123", "number": "INC0010001"}, "state": "succeeded"});
        let note = |steps: Value| {
            render("not_done", true, &context(hw.clone(), steps))["work_notes"]
                .as_str()
                .unwrap()
                .to_owned()
        };

        let rejected = note(json!({"ticket": ticket,
            "approve": {"state": "failed", "error": "refused: rejected by bob: market open"}}));
        assert!(rejected.contains("did NOT complete"), "{rejected}");
        assert!(
            rejected.contains("Not approved: refused: rejected by bob: market open"),
            "{rejected}"
        );

        let failed = note(
            json!({"ticket": ticket, "approve": {"state": "succeeded", "result": {}},
            "failover": {"state": "failed", "error": "failed: failover stopped at wait_probe: ..."}}),
        );
        assert!(failed.contains("did NOT complete"), "{failed}");
        assert!(
            failed.contains("failover stopped at wait_probe"),
            "{failed}"
        );

        let logged = note(
            json!({"ticket": ticket, "approve": {"state": "succeeded", "result": {}},
            "failover": {"state": "succeeded", "result": {"log": "line one\nline two"}},
            "log": {"state": "failed", "error": "failed: ServiceNow: 503"}}),
        );
        assert!(logged.contains("but a later step failed"), "{logged}");
        assert!(logged.contains("line one\nline two"), "{logged}");
        assert!(!logged.contains("did NOT complete"), "{logged}");
        assert_eq!(
            render(
                "not_done",
                true,
                &context(hw.clone(), json!({"ticket": ticket}))
            )["sys_id"],
            "abc123"
        );
    }
}
