//! The ServiceNow actions against the in-process simulator: what they send
//! is what they plan, tickets are found by correlation_id, and concurrent
//! runs for one incident open one ticket.

use std::sync::Arc;
use std::time::Duration;

use fincorp_api::config::Secret;
use fincorp_integrations::servicenow::{RetryPolicy, ServiceNowClient, ServiceNowConfig};
use fincorp_sim::servicenow::{self as sim, Faults, RecordedRequest, RunningSim, SimState};
use serde_json::{Map, Value, json};

use super::*;
use crate::actions::testing::FakeEnv;
use crate::actions::{Action, execute, plan};

const USER: &str = "fincorp-operator";
const PASSWORD: &str = "sim-password";

async fn start() -> (RunningSim, FakeEnv) {
    let sim = sim::spawn(SimState::new(USER, PASSWORD)).await.unwrap();
    let client = ServiceNowClient::new(ServiceNowConfig {
        url: sim.url(),
        username: USER.into(),
        password: Secret::new(PASSWORD),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
    .with_retry(RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(3),
    });
    let mut env = FakeEnv::new(|_, _, _| Err("no agents here".into()));
    env.servicenow = Some(client);
    (sim, env)
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn ctx(incident: &str, step: &str) -> StepContext {
    StepContext {
        run_id: format!("run-{step}"),
        step_id: step.into(),
        incident_id: Some(incident.into()),
        app: Some("FINCORP-APP-HFT".into()),
        idempotency_key: format!("{incident}:p:{step}"),
        timeout: Duration::from_secs(10),
    }
}

async fn open(env: &FakeEnv, incident: &str) -> Value {
    let p = params(json!({"short_description": "HFT CPU", "urgency": "2"}));
    execute(env, &Create, &p, &ctx(incident, "open"))
        .await
        .unwrap()
        .result
}

/// The full URL the simulator saw.
fn url(sim: &RunningSim, r: &RecordedRequest) -> String {
    match &r.query {
        Some(q) => format!("{}{}?{q}", sim.url(), r.path),
        None => format!("{}{}", sim.url(), r.path),
    }
}

/// Asserts that a plan is what was sent, the found sys_id filled in.
fn assert_sent_as_planned(
    sim: &RunningSim,
    planned: &[Planned],
    sent: &[RecordedRequest],
    sys_id: &str,
) {
    assert_eq!(
        planned.len(),
        sent.len(),
        "planned {planned:#?}\nsent {sent:#?}"
    );
    for (p, s) in planned.iter().zip(sent) {
        let Planned::Http { request } = p else {
            panic!("{p:?}")
        };
        assert_eq!(request.method, s.method);
        assert_eq!(request.url.replace(FOUND_SYS_ID, sys_id), url(sim, s));
        assert_eq!(request.body, s.body);
        assert_eq!(request.header("Authorization"), Some("Basic <redacted>"));
    }
}

#[tokio::test]
async fn update_appends_a_work_note_and_sets_the_state_as_planned() {
    let (sim, env) = start().await;
    let opened = open(&env, "fc-7").await;
    let sys_id = opened["sys_id"].as_str().unwrap().to_owned();
    sim.state.clear_requests();

    let p = params(json!({
        "work_notes": "hardware alert dimm_ecc joined the incident",
        "state": "2",
        "fields": {"assignment_group": "HFT SRE"},
    }));
    let c = ctx("fc-7", "note");
    let planned = plan(&env, &Update, &p, &c).unwrap();
    let out = execute(&env, &Update, &p, &c).await.unwrap();
    assert_sent_as_planned(&sim, &planned, &sim.state.requests(), &sys_id);
    assert_eq!(out.result["sys_id"], sys_id.as_str());
    assert_eq!(out.result["state"], "2");
    assert_eq!(
        out.result["updated"],
        json!(["assignment_group", "state", "work_notes"])
    );
    assert_eq!(
        out.ticket.unwrap().number,
        opened["number"].as_str().unwrap()
    );

    let record = sim
        .state
        .incidents()
        .into_iter()
        .find(|r| r["sys_id"] == sys_id)
        .unwrap();
    assert_eq!(record["state"], "2");
    assert_eq!(record["assignment_group"], "HFT SRE");
    let notes: Vec<String> = sim
        .state
        .journal()
        .iter()
        .filter(|j| j["element_id"] == sys_id && j["element"] == "work_notes")
        .map(|j| j["value"].clone())
        .collect();
    assert_eq!(notes, ["hardware alert dimm_ecc joined the incident"]);

    // A second update appends, it does not replace.
    let p2 = params(json!({"work_notes": "CPU back under 70%"}));
    execute(&env, &Update, &p2, &ctx("fc-7", "note2"))
        .await
        .unwrap();
    let count = sim
        .state
        .journal()
        .iter()
        .filter(|j| j["element_id"] == sys_id)
        .count();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn update_without_an_open_ticket_fails_retryably_and_patches_nothing() {
    let (sim, env) = start().await;
    let p = params(json!({"work_notes": "x"}));
    let err = execute(&env, &Update, &p, &ctx("fc-none", "note"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ActionError::Failed(m) if m.contains("no active ServiceNow incident with correlation_id fc-none")),
        "{err}"
    );
    assert!(err.retryable(), "a create in another run may be opening it");
    assert!(sim.state.requests().iter().all(|r| r.method == "GET"));
}

#[tokio::test]
async fn update_refuses_bad_input_before_sending_anything() {
    let (sim, env) = start().await;
    for (p, want) in [
        (json!({}), "nothing to update"),
        (json!({"fields": {"state": "6"}}), "may not set state"),
        (json!({"state": "6"}), "must be one of"),
        (
            json!({"fields": {"Bad Name": "x"}}),
            "not a ServiceNow field name",
        ),
    ] {
        let p = params(p);
        let err = execute(&env, &Update, &p, &ctx("fc-1", "u"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::InvalidParams(m) if m.contains(want)),
            "{p:?}: {err}"
        );
    }
    assert!(sim.state.requests().is_empty());
}

#[tokio::test]
async fn resolve_sets_state_6_with_close_code_once_and_is_idempotent() {
    let (sim, env) = start().await;
    let opened = open(&env, "fc-9").await;
    let sys_id = opened["sys_id"].as_str().unwrap().to_owned();
    sim.state.clear_requests();

    let p = params(
        json!({"close_code": "Solved (Permanently)", "close_notes": "alerts quiet for 5m; CPU quota raised 20%"}),
    );
    let c = ctx("fc-9", "resolve");
    let planned = plan(&env, &Resolve, &p, &c).unwrap();
    let out = execute(&env, &Resolve, &p, &c).await.unwrap();
    assert_sent_as_planned(&sim, &planned, &sim.state.requests(), &sys_id);
    assert_eq!(out.result["resolved"], true);
    assert_eq!(out.result["state"], "6");
    assert_eq!(out.result["active"], false);
    let record = sim
        .state
        .incidents()
        .into_iter()
        .find(|r| r["sys_id"] == sys_id)
        .unwrap();
    assert_eq!(record["state"], "6");
    assert_eq!(record["close_code"], "Solved (Permanently)");
    assert_eq!(record["active"], "false");

    // Again (a retry after a lost answer): nothing left to resolve, no PATCH.
    sim.state.clear_requests();
    let again = execute(&env, &Resolve, &p, &c).await.unwrap();
    assert_eq!(again.result["resolved"], false);
    assert!(again.ticket.is_none());
    assert_eq!(
        sim.state
            .requests()
            .iter()
            .map(|r| r.method.as_str())
            .collect::<Vec<_>>(),
        ["GET"]
    );
}

#[tokio::test]
async fn a_named_sys_id_skips_the_lookup() {
    let (sim, env) = start().await;
    let opened = open(&env, "fc-3").await;
    let sys_id = opened["sys_id"].as_str().unwrap();
    sim.state.clear_requests();
    let p = params(
        json!({"sys_id": sys_id, "close_code": "Solved", "close_notes": "done", "correlation_id": "ignored"}),
    );
    let planned = plan(&env, &Resolve, &p, &ctx("other", "r")).unwrap();
    assert_eq!(planned.len(), 1);
    execute(&env, &Resolve, &p, &ctx("other", "r"))
        .await
        .unwrap();
    assert_sent_as_planned(&sim, &planned, &sim.state.requests(), sys_id);
}

#[tokio::test]
async fn an_event_goes_to_event_management_keyed_by_the_incident() {
    let (sim, env) = start().await;
    let p = params(json!({
        "node": "hft-ny-01", "severity": "critical", "type": "CPU",
        "resource": "FINCORP-APP-HFT", "metric_name": "cpu_pct",
        "description": "CPU 97%", "additional_info": {"cpu_pct": 97.2},
    }));
    let c = ctx("fc-5", "event");
    let planned = plan(&env, &Event, &p, &c).unwrap();
    let out = execute(&env, &Event, &p, &c).await.unwrap();
    assert_eq!(out.result["inserted"], 1);
    assert_eq!(out.result["message_key"], "fc-5");
    let sent = sim.state.requests();
    assert_eq!(sent.len(), 1);
    let Planned::Http { request } = &planned[0] else {
        panic!()
    };
    assert_eq!(request.url, url(&sim, &sent[0]));
    let mut body = sent[0].body.clone().unwrap();
    assert_eq!(
        request.body.as_ref().unwrap()["records"][0]["time_of_event"],
        "<send time, UTC>"
    );
    let record = &mut body["records"][0];
    assert!(
        record["time_of_event"].as_str().unwrap().len() == 19,
        "{record}"
    );
    record["time_of_event"] = json!("<send time, UTC>");
    assert_eq!(Some(&body), request.body.as_ref());
    let info: Value =
        serde_json::from_str(body["records"][0]["additional_info"].as_str().unwrap()).unwrap();
    assert_eq!(
        info,
        json!({"cpu_pct": 97.2, "fincorp_incident": "fc-5", "fincorp_run": "run-event"})
    );
    let events = sim.state.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["severity"], "1");
    assert_eq!(events[0]["node"], "hft-ny-01");
    assert!(!Event.mutating());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_for_one_incident_open_one_ticket_and_all_update_it() {
    let (sim, env) = start().await;
    // Slow answers, so unserialised creates would all miss each other.
    sim.state.set_faults(Faults {
        delay_ms: 30,
        ..Faults::default()
    });
    let env = Arc::new(env);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            let p = params(json!({"short_description": format!("trigger {i}")}));
            execute(env.as_ref(), &Create, &p, &ctx("fc-race", &format!("t{i}")))
                .await
                .unwrap()
                .result
        }));
    }
    let mut created = 0;
    let mut sys_ids = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        created += usize::from(r["created"] == true);
        sys_ids.push(r["sys_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1);
    sys_ids.dedup();
    assert_eq!(sys_ids.len(), 1);
    let with_key = sim
        .state
        .incidents()
        .into_iter()
        .filter(|r| r["correlation_id"] == "fc-race")
        .count();
    assert_eq!(with_key, 1);
    // Updates after that find the same ticket.
    let p = params(json!({"work_notes": "update"}));
    let out = execute(env.as_ref(), &Update, &p, &ctx("fc-race", "u"))
        .await
        .unwrap();
    assert_eq!(out.result["sys_id"], sys_ids[0].as_str());
}

#[tokio::test]
async fn a_hibernating_instance_or_429s_surface_through_the_actions() {
    let (sim, env) = start().await;
    open(&env, "fc-h").await;
    // Two 429s with Retry-After: 1 are waited out.
    sim.state.set_faults(Faults {
        rate_limit_next: 2,
        retry_after_s: 1,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let p = params(json!({"work_notes": "after the rate limit"}));
    execute(&env, &Update, &p, &ctx("fc-h", "u")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1900));
    // A hibernating instance answers 200 with HTML: an error, not a success.
    sim.state.set_faults(Faults {
        hibernate: true,
        ..Faults::default()
    });
    let err = execute(&env, &Update, &p, &ctx("fc-h", "u2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ActionError::Failed(m) if m.contains("hibernating")),
        "{err}"
    );
}

#[test]
fn without_servicenow_the_actions_are_unavailable_in_plans_too() {
    let env = FakeEnv::new(|_, _, _| Err("unused".into()));
    let c = ctx("fc-1", "s");
    for (action, p) in [
        (&Update as &dyn Action, json!({"work_notes": "x"})),
        (&Resolve, json!({"close_code": "a", "close_notes": "b"})),
        (&Event, json!({"node": "n", "severity": "ok"})),
    ] {
        let err = plan(&env, action, &params(p), &c).unwrap_err();
        assert!(
            matches!(err, ActionError::Unavailable(_)),
            "{}: {err}",
            action.name()
        );
    }
}
