//! Automation end to end inside the crate: alerts ingested through the API
//! start real runs on the tokio runtime; webhooks go to a recording server on
//! 127.0.0.1, so every test counts what reached the target.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, Uri};
use fincorp_api::config::Secret;
use fincorp_api::now_ms;
use fincorp_api::rest::RunState;
use fincorp_api::wire::{
    Command, CommandAction, CommandDetail, CommandOutcome, CommandResult, HostSample,
};
use fincorp_playbooks::Playbook;
use fincorp_playbooks::model::Budget;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::tests::{Fixture, fixture_in, fixture_with, json_req, send};
use crate::store::runs::{self, Mutation, NewRun, Phase, StepEnd, StepStart};

/// How long a test waits for something that should happen within
/// milliseconds: generous, for a loaded machine.
const DEADLINE: Duration = Duration::from_secs(20);

// ----- a recording webhook target -----

/// One request the recorder received.
#[derive(Debug, Clone)]
struct Hit {
    at_ms: i64,
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct Recorded {
    hits: Mutex<Vec<Hit>>,
    /// Statuses to answer, in order, before answering 200 again.
    script: Mutex<VecDeque<u16>>,
}

/// A webhook target on 127.0.0.1 that records every request.
struct Recorder {
    url: String,
    recorded: Arc<Recorded>,
}

impl Recorder {
    async fn start() -> Recorder {
        let recorded = Arc::new(Recorded::default());
        let app = axum::Router::new()
            .fallback(record)
            .with_state(recorded.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { url, recorded }
    }

    /// The next requests get these statuses (then 200 again).
    fn answer(&self, statuses: &[u16]) {
        self.recorded
            .script
            .lock()
            .unwrap()
            .extend(statuses.iter().copied());
    }

    fn hits(&self) -> Vec<Hit> {
        self.recorded.hits.lock().unwrap().clone()
    }

    fn hits_at(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    fn paths(&self) -> Vec<String> {
        self.hits().into_iter().map(|h| h.path).collect()
    }
}

async fn record(
    State(r): State<Arc<Recorded>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let hit = Hit {
        at_ms: now_ms(),
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    r.hits.lock().unwrap().push(hit);
    let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

// ----- playbooks -----

/// A playbook triggered by alerts of `app` (opened or joined), from YAML
/// written to `dir`. `URL` in `steps` is replaced by `url`.
fn playbook(
    dir: &Path,
    name: &str,
    app: &str,
    guardrails: &str,
    steps: &str,
    url: &str,
) -> Playbook {
    let yaml = playbook_yaml(name, app, guardrails, steps, url);
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    fincorp_playbooks::load_file(&path)
        .unwrap_or_else(|d| panic!("{name} does not load:\n{d}"))
        .playbook
}

fn playbook_yaml(name: &str, app: &str, guardrails: &str, steps: &str, url: &str) -> String {
    format!(
        "version: 1\nname: {name}\ndescription: a test playbook\ntrigger:\n  apps: [{app}]\n  on: [opened, alert_joined]\nguardrails: {guardrails}\nsteps:\n{}",
        steps.replace("URL", url)
    )
}

/// One notify step POSTing the run id and host to `URL/<path>`.
fn notify(id: &str, path: &str) -> String {
    format!(
        "  - id: {id}\n    action: notify\n    with:\n      url: \"URL/{path}\"\n      body: {{run: \"{{{{ run.id }}}}\", host: \"{{{{ incident.host }}}}\"}}\n"
    )
}

/// A `wait_for` on the app's CPU of the incident's host.
fn wait_cpu_below(id: &str, app: &str, value: i32, within: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    action: wait_for\n    with:\n      host: \"{{{{ incident.host }}}}\"\n      app: {app}\n      metric: cpu\n      op: \"<\"\n      value: {value}\n      within: {within}\n      poll: 50ms\n{extra}"
    )
}

fn settings_escalating_to(url: &str) -> crate::config::Automation {
    crate::config::Automation {
        escalation_webhook: Some(format!("{url}/escalate")),
        ..crate::config::Automation::default()
    }
}

// ----- the API -----

async fn get(state: &AppState, path: &str) -> Value {
    let (status, body) = send(state, Request::get(path).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

async fn post(state: &AppState, path: &str, body: Value) -> (StatusCode, Value) {
    send(state, json_req("POST", path, body)).await
}

fn event(host: &str, app: &str, status: &str) -> Value {
    json!({"source": "hardware", "name": "svc_down", "host": host, "app": app,
           "severity": "critical", "status": status})
}

/// An alert fires on `host`/`app` (opening an incident, or joining one).
async fn ingest(state: &AppState, host: &str, app: &str) {
    let (status, ack) = post(
        state,
        "/api/v1/ingest/events",
        json!({"events": [event(host, app, "firing")]}),
    )
    .await;
    assert_eq!(
        (status, &ack),
        (StatusCode::OK, &json!({"accepted": 1, "duplicates": 0}))
    );
}

/// A new episode of the alert on its open incident: resolved, then firing.
async fn retrigger(state: &AppState, host: &str, app: &str) {
    let (status, ack) = post(
        state,
        "/api/v1/ingest/events",
        json!({"events": [event(host, app, "resolved"), event(host, app, "firing")]}),
    )
    .await;
    assert_eq!(
        (status, &ack),
        (StatusCode::OK, &json!({"accepted": 2, "duplicates": 0}))
    );
}

/// The runs of a playbook, oldest first.
async fn runs_of(state: &AppState, playbook: &str) -> Vec<Value> {
    let mut runs = get(state, &format!("/api/v1/runs?playbook={playbook}")).await["runs"]
        .as_array()
        .unwrap()
        .clone();
    runs.sort_by_key(|r| {
        (
            r["created_at_ms"].as_i64().unwrap(),
            r["ordinal"].as_u64().unwrap(),
        )
    });
    runs
}

async fn run_view(state: &AppState, id: &str) -> Value {
    get(state, &format!("/api/v1/runs/{id}")).await
}

fn is_final(run: &Value) -> bool {
    !matches!(
        run["state"].as_str(),
        Some("pending" | "running" | "awaiting_approval")
    )
}

/// Polls `probe` until it returns `Ok`, up to [`DEADLINE`]; the panic
/// shows the last thing seen.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match probe().await {
            Ok(t) => return t,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {DEADLINE:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits until the playbook has exactly `n` runs, all finished; oldest first.
async fn settled(state: &AppState, playbook: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} finished runs of {playbook}"), async || {
        let runs = runs_of(state, playbook).await;
        assert!(runs.len() <= n, "more runs than expected: {runs:#?}");
        if runs.len() == n && runs.iter().all(is_final) {
            Ok(runs)
        } else {
            Err(format!("{runs:#?}"))
        }
    })
    .await
}

/// Waits until the run is in `want`.
async fn run_in(state: &AppState, id: &str, want: &str) -> Value {
    eventually(&format!("run {id} to be {want}"), async || {
        let run = run_view(state, id).await;
        if run["state"] == want {
            Ok(run)
        } else {
            assert!(
                !is_final(&run),
                "run {id} finished {} instead of {want}: {run:#}",
                run["state"]
            );
            Err(format!("{run:#}"))
        }
    })
    .await
}

fn state_of(run: &Value) -> &str {
    run["state"].as_str().unwrap()
}

fn reason_of(run: &Value) -> &str {
    run["reason"].as_str().unwrap_or_default()
}

fn id_of(run: &Value) -> String {
    run["id"].as_str().unwrap().to_owned()
}

/// The steps of a run view as (id, state).
fn steps_of(run: &Value) -> Vec<(String, String)> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// Audit entries as (action, actor, target).
async fn audit(state: &AppState) -> Vec<(String, String, String)> {
    get(state, "/api/v1/audit?limit=10000").await["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn breaker(state: &AppState, key: &str) -> Option<Value> {
    get(state, "/api/v1/automation").await["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["key"] == key)
        .cloned()
}

/// The id of the incident open on `host`.
async fn incident_on(state: &AppState, host: &str) -> String {
    get(state, "/api/v1/incidents?limit=1000").await["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["host"] == host)
        .unwrap_or_else(|| panic!("no incident on {host}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A fresh agent sample: `app` on `host` uses `cpu` percent.
fn sample(state: &AppState, host: &str, app: &str, cpu: f64) {
    let s: HostSample = serde_json::from_value(json!({
        "at_ms": now_ms(), "cpu_pct": cpu, "mem_used_bytes": 1, "mem_total_bytes": 2,
        "apps": [{"app": app, "processes": 1, "cpu_pct": cpu, "rss_bytes": 1}]
    }))
    .unwrap();
    state.samples.record(host, &[s], now_ms());
}

fn pb_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ----- 1. the kill switch -----

#[tokio::test(flavor = "multi_thread")]
async fn the_kill_switch_blocks_new_runs_stops_a_running_one_before_its_next_step_and_is_audited() {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let steps = format!(
        "{}{}",
        wait_cpu_below("settle", "A", 50, "30s", ""),
        notify("tell", "ks")
    );
    let pb = playbook(dir.path(), "ks", "A", "{}", &steps, &hook.url);
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    let s = &f.state;

    // Who flips it must be named.
    let (status, body) = post(
        s,
        "/api/v1/automation/kill-switch",
        json!({"on": true, "reason": "anonymous"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(get(s, "/api/v1/automation/kill-switch").await["on"], false);

    let (status, body) = post(
        s,
        "/api/v1/automation/kill-switch",
        json!({"on": true, "by": "alice", "reason": "drill"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = get(s, "/api/v1/automation/kill-switch").await;
    assert_eq!(
        (&view["on"], &view["changed_by"], &view["reason"]),
        (&json!(true), &json!("alice"), &json!("drill")),
        "{view}"
    );
    assert_eq!(
        get(s, "/api/v1/automation").await["kill_switch"]["on"],
        true
    );
    assert!(
        audit(s).await.contains(&(
            "automation.kill_switch.on".into(),
            "alice".into(),
            "automation".into()
        )),
        "{:?}",
        audit(s).await
    );

    // A run triggered while it is on is blocked before any step.
    ingest(s, "h1", "A").await;
    let blocked = &settled(s, "ks", 1).await[0];
    assert_eq!(state_of(blocked), "blocked", "{blocked:#}");
    assert!(reason_of(blocked).contains("kill switch"), "{blocked:#}");
    assert!(steps_of(blocked).is_empty(), "{blocked:#}");

    // Off: the next run starts, and waits in its first step (no sample for h2).
    let (status, body) = post(
        s,
        "/api/v1/automation/kill-switch",
        json!({"on": false, "by": "alice", "reason": "drill over"}),
    )
    .await;
    assert_eq!((status, &body["on"]), (StatusCode::OK, &json!(false)));
    ingest(s, "h2", "A").await;
    let id = eventually("the run to wait in its first step", async || {
        let runs = runs_of(s, "ks").await;
        match runs.get(1) {
            Some(r) if steps_of(r) == pairs(&[("settle", "running")]) => Ok(id_of(r)),
            other => Err(format!("{other:#?}")),
        }
    })
    .await;

    // On again: the wait (30 s) is cut short, the notify never happens.
    let flipped = Instant::now();
    let (status, _) = post(
        s,
        "/api/v1/automation/kill-switch",
        json!({"on": true, "by": "bob", "reason": "runaway"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let stopped = run_in(s, &id, "stopped").await;
    assert!(
        flipped.elapsed() < Duration::from_secs(10),
        "stopped only after {:?}",
        flipped.elapsed()
    );
    assert!(reason_of(&stopped).contains("kill switch"), "{stopped:#}");
    assert_eq!(steps_of(&stopped), pairs(&[("settle", "stopped")]));
    assert!(hook.hits().is_empty(), "{:?}", hook.paths());

    // Off again: the next run proceeds to the end.
    let (status, _) = post(
        s,
        "/api/v1/automation/kill-switch",
        json!({"on": false, "by": "bob", "reason": "understood"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    sample(s, "h3", "A", 10.0);
    ingest(s, "h3", "A").await;
    let runs = settled(s, "ks", 3).await;
    assert_eq!(state_of(&runs[2]), "succeeded", "{:#}", runs[2]);
    let hits = hook.hits_at("/ks");
    assert_eq!(hits.len(), 1, "{:?}", hook.paths());
    assert_eq!(hits[0].body["run"], runs[2]["id"]);
    let actions: Vec<_> = audit(s).await.into_iter().map(|a| (a.0, a.1)).collect();
    for want in [
        ("automation.kill_switch.on", "alice"),
        ("automation.kill_switch.off", "alice"),
        ("automation.kill_switch.on", "bob"),
        ("automation.kill_switch.off", "bob"),
        ("run.blocked", "playbook:ks"),
        ("run.stopped", "playbook:ks"),
    ] {
        assert!(
            actions.contains(&(want.0.into(), want.1.into())),
            "audit lacks {want:?}: {actions:?}"
        );
    }
}

// ----- 2. budgets and breakers -----

/// The playbook `budget` on h1/A, allowed 2 runs an hour with escalation to
/// the recorder, triggered three times within the hour: the finished runs.
async fn budget_exhausted() -> (Recorder, tempfile::TempDir, Fixture, Vec<Value>) {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let pb = playbook(
        dir.path(),
        "budget",
        "A",
        "{rate_limit: {per_target: {max: 2, per: 1h}}}",
        &notify("tell", "budget"),
        &hook.url,
    );
    let f = fixture_with(vec![pb], settings_escalating_to(&hook.url));
    let s = &f.state;
    ingest(s, "h1", "A").await;
    settled(s, "budget", 1).await;
    retrigger(s, "h1", "A").await;
    settled(s, "budget", 2).await;
    retrigger(s, "h1", "A").await;
    let runs = settled(s, "budget", 3).await;
    (hook, dir, f, runs)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_target_budget_blocks_the_third_run_trips_a_breaker_that_escalates_and_holds_until_reset()
 {
    let (hook, _dir, f, runs) = budget_exhausted().await;
    let s = &f.state;
    let key = "playbook:budget@h1/A";
    let states: Vec<_> = runs.iter().map(state_of).collect();
    assert_eq!(states, ["succeeded", "succeeded", "blocked"], "{runs:#?}");
    assert!(
        runs.iter()
            .all(|r| r["incident_id"] == runs[0]["incident_id"]),
        "one incident, re-triggered: {runs:#?}"
    );
    assert_eq!(
        runs.iter()
            .map(|r| r["ordinal"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        reason_of(&runs[2])
            .contains("budget exhausted: 2 runs of budget on h1/A in the last 1h (max 2)"),
        "{:#}",
        runs[2]
    );
    assert_eq!(hook.hits_at("/budget").len(), 2);

    // The breaker is tripped and escalated by webhook (recorded on it).
    let b = eventually("the breaker's escalation", async || {
        match breaker(s, key).await {
            Some(b) if b["escalation"]["webhook"]["status"] == 200 => Ok(b),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(b["run_id"], runs[2]["id"], "{b}");
    let escalations = hook.hits_at("/escalate");
    assert_eq!(escalations.len(), 1, "{:?}", hook.paths());
    let e = &escalations[0].body;
    assert_eq!(
        (&e["event"], &e["breaker"], &e["run_id"], &e["playbook"]),
        (
            &json!("fincorp.automation.breaker_tripped"),
            &json!(key),
            &runs[2]["id"],
            &json!("budget")
        ),
        "{e}"
    );
    assert!(
        e["reason"].as_str().unwrap().contains("budget exhausted"),
        "{e}"
    );

    // Even once the window has passed (simulated: the admissions are moved
    // two hours back), the tripped breaker holds.
    s.engine
        .write(|tx| {
            tx.execute(
                "UPDATE runs SET admitted_at_ms = admitted_at_ms - 7200000 WHERE playbook = 'budget'",
                [],
            )?;
            Ok(())
        })
        .unwrap();
    retrigger(s, "h1", "A").await;
    let runs = settled(s, "budget", 4).await;
    assert_eq!(state_of(&runs[3]), "blocked", "{:#}", runs[3]);
    assert!(
        reason_of(&runs[3]).contains(&format!("breaker {key} is tripped")),
        "{:#}",
        runs[3]
    );
    assert_eq!(hook.hits_at("/budget").len(), 2);
    assert_eq!(
        hook.hits_at("/escalate").len(),
        1,
        "a tripped breaker escalates once"
    );

    // Reset: a name is required, an unknown key is 404, then it is reset (audited).
    let url = "/api/v1/automation/breakers/playbook%3Abudget%40h1%2FA/reset";
    let (status, body) = post(s, url, json!({"reason": "who?"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = post(
        s,
        "/api/v1/automation/breakers/playbook%3Anope/reset",
        json!({"by": "carol", "reason": "typo"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = post(s, url, json!({"by": "carol", "reason": "loop understood"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["breakers"].as_array().unwrap().is_empty(), "{body}");
    assert!(breaker(s, key).await.is_none());
    let audit = audit(s).await;
    for want in [
        ("automation.breaker.trip", "automation", key),
        ("automation.breaker.escalated", "automation", key),
        ("automation.breaker.reset", "carol", key),
    ] {
        assert!(
            audit.contains(&(want.0.into(), want.1.into(), want.2.into())),
            "audit lacks {want:?}: {audit:?}"
        );
    }

    // After the reset the next run is admitted and acts.
    retrigger(s, "h1", "A").await;
    let runs = settled(s, "budget", 5).await;
    assert_eq!(state_of(&runs[4]), "succeeded", "{:#}", runs[4]);
    assert_eq!(hook.hits_at("/budget").len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn resetting_a_breaker_while_its_window_is_full_gives_the_budget_a_fresh_start() {
    let (hook, _dir, f, runs) = budget_exhausted().await;
    let s = &f.state;
    let key = "playbook:budget@h1/A";
    assert_eq!(state_of(&runs[2]), "blocked", "{:#}", runs[2]);
    eventually("the breaker", async || {
        breaker(s, key)
            .await
            .map(|_| ())
            .ok_or_else(|| "not tripped".to_owned())
    })
    .await;

    // Reset within the hour: the two earlier runs no longer count.
    let url = "/api/v1/automation/breakers/playbook%3Abudget%40h1%2FA/reset";
    let (status, body) = post(s, url, json!({"by": "carol", "reason": "loop fixed"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    retrigger(s, "h1", "A").await;
    settled(s, "budget", 4).await;
    retrigger(s, "h1", "A").await;
    let runs = settled(s, "budget", 5).await;
    assert_eq!(
        (state_of(&runs[3]), state_of(&runs[4])),
        ("succeeded", "succeeded"),
        "{runs:#?}"
    );
    assert_eq!(hook.hits_at("/budget").len(), 4);

    // The fresh budget is a budget still: the third run since the reset is
    // blocked and says from when it counts.
    retrigger(s, "h1", "A").await;
    let runs = settled(s, "budget", 6).await;
    assert_eq!(state_of(&runs[5]), "blocked", "{:#}", runs[5]);
    assert!(
        reason_of(&runs[5])
            .contains("budget exhausted: 2 runs of budget on h1/A since its breaker was reset at"),
        "{:#}",
        runs[5]
    );
    assert_eq!(hook.hits_at("/budget").len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_budget_counts_runs_of_all_playbooks_and_trips_the_fleet_breaker() {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let a = playbook(
        dir.path(),
        "fleet-a",
        "A",
        "{}",
        &notify("tell", "fleet-a"),
        &hook.url,
    );
    let b = playbook(
        dir.path(),
        "fleet-b",
        "B",
        "{}",
        &notify("tell", "fleet-b"),
        &hook.url,
    );
    let settings = crate::config::Automation {
        fleet_budget: Some(Budget {
            max: 1,
            per_ms: 3_600_000,
        }),
        ..settings_escalating_to(&hook.url)
    };
    let f = fixture_with(vec![a, b], settings);
    let s = &f.state;

    ingest(s, "h1", "A").await;
    assert_eq!(state_of(&settled(s, "fleet-a", 1).await[0]), "succeeded");
    // Another playbook, another host and app: still over the fleet budget.
    ingest(s, "h2", "B").await;
    let blocked = &settled(s, "fleet-b", 1).await[0];
    assert_eq!(state_of(blocked), "blocked", "{blocked:#}");
    assert!(
        reason_of(blocked)
            .contains("budget exhausted: 1 runs of all playbooks in the last 1h (max 1)"),
        "{blocked:#}"
    );
    let fleet = eventually("the fleet breaker's escalation", async || {
        match breaker(s, "fleet").await {
            Some(b) if b["escalation"]["webhook"]["status"] == 200 => Ok(b),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(fleet["run_id"], blocked["id"]);
    assert!(
        hook.hits_at("/escalate")
            .iter()
            .any(|h| h.body["breaker"] == "fleet"),
        "{:?}",
        hook.paths()
    );
    // The fleet breaker now holds every playbook.
    ingest(s, "h3", "A").await;
    let runs = settled(s, "fleet-a", 2).await;
    assert_eq!(state_of(&runs[1]), "blocked", "{:#}", runs[1]);
    assert!(
        reason_of(&runs[1]).contains("breaker fleet is tripped"),
        "{:#}",
        runs[1]
    );
    assert_eq!(hook.paths().iter().filter(|p| *p != "/escalate").count(), 1);
}

// ----- 3. causal depth -----

/// Records that `run_id` (of `playbook`, at `depth`) changed h1/A from a
/// few seconds ago until now.
fn mutated_h1(state: &AppState, run_id: &str, playbook: &str, depth: u32) {
    let now = now_ms();
    state
        .engine
        .write(|tx| {
            runs::record_mutation(
                tx,
                &Mutation {
                    run_id,
                    playbook,
                    step_id: "restart",
                    host: "h1",
                    app: Some("A"),
                    depth,
                    started_at_ms: now - 3_000,
                    finished_at_ms: now,
                },
            )
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_caused_by_our_own_change_deepens_the_chain_and_is_blocked_beyond_max_depth() {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let pb = playbook(
        dir.path(),
        "depth",
        "A",
        "{max_depth: 1}",
        &notify("tell", "depth"),
        &hook.url,
    );
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    let s = &f.state;

    // One of our runs (depth 0) changed h1/A just before the alert started.
    mutated_h1(s, "run-parent0", "depth", 0);
    ingest(s, "h1", "A").await;
    let first = &settled(s, "depth", 1).await[0];
    assert_eq!(state_of(first), "succeeded", "{first:#}");
    assert_eq!(
        (&first["depth"], &first["caused_by_run"]),
        (&json!(1), &json!("run-parent0")),
        "{first:#}"
    );
    let incident = first["incident_id"].as_str().unwrap().to_owned();
    let detail = get(s, &format!("/api/v1/incidents/{incident}")).await;
    assert!(
        detail["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["kind"] == "run_started" && t["data"]["caused_by_run"] == "run-parent0"),
        "{detail:#}"
    );

    // Another host's alert is not attributed to that change.
    ingest(s, "h2", "A").await;
    let runs = settled(s, "depth", 2).await;
    assert_eq!(
        (
            state_of(&runs[1]),
            &runs[1]["depth"],
            &runs[1]["caused_by_run"]
        ),
        ("succeeded", &json!(0), &Value::Null),
        "{:#}",
        runs[1]
    );

    // A change by a run at depth 1, then the alert again: depth 2 > 1.
    mutated_h1(s, "run-parent1", "depth", 1);
    retrigger(s, "h1", "A").await;
    let runs = settled(s, "depth", 3).await;
    let blocked = runs
        .iter()
        .find(|r| r["ordinal"] == 2)
        .expect("the second run of the h1 incident");
    assert_eq!(state_of(blocked), "blocked", "{blocked:#}");
    assert!(
        reason_of(blocked).contains("causal chain depth 2 exceeds max_depth 1"),
        "{blocked:#}"
    );
    assert_eq!(
        (&blocked["depth"], &blocked["caused_by_run"]),
        (&json!(2), &json!("run-parent1")),
        "the chain is recorded on a blocked run too"
    );
    assert!(steps_of(blocked).is_empty());
    let b = eventually("the depth breaker", async || {
        breaker(s, "playbook:depth@h1/A")
            .await
            .ok_or_else(|| "none".to_owned())
    })
    .await;
    assert_eq!(b["run_id"], blocked["id"]);
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("causal chain depth 2"),
        "{b}"
    );
    assert!(
        breaker(s, "playbook:depth@h2/A").await.is_none(),
        "only the target's breaker trips"
    );
    assert_eq!(hook.hits_at("/depth").len(), 2);
}

// ----- 4. approvals -----

const APPROVAL_STEPS: &str = r#"  - id: tell
    action: notify
    with:
      url: "URL/approval"
      body: {run: "{{ run.id }}"}
  - id: ticket
    action: servicenow.create
    with:
      short_description: "svc_down on {{ incident.host }}"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_run_needing_approval_waits_before_its_first_mutating_step_and_is_rejected_expired_or_approved()
 {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let decided = playbook(
        dir.path(),
        "approve-me",
        "A",
        "{approval: {required: true, timeout: 1m}, rate_limit: {per_target: {max: 5, per: 1h}}}",
        APPROVAL_STEPS,
        &hook.url,
    );
    let expiring = playbook(
        dir.path(),
        "expire-me",
        "B",
        "{approval: {required: true, timeout: 2s}, rate_limit: {per_target: {max: 5, per: 1h}}}",
        APPROVAL_STEPS,
        &hook.url,
    );
    let f = fixture_with(
        vec![decided, expiring],
        crate::config::Automation::default(),
    );
    let s = &f.state;

    // The notify (not mutating) runs; the ticket (mutating) waits.
    ingest(s, "h1", "A").await;
    let id = id_of(&runs_of(s, "approve-me").await[0]);
    let waiting = run_in(s, &id, "awaiting_approval").await;
    let approval = &waiting["approval"];
    assert_eq!(approval["step_id"], "guardrail:approval", "{waiting:#}");
    assert!(
        approval["prompt"]
            .as_str()
            .unwrap()
            .contains("ticket (servicenow.create)"),
        "{approval}"
    );
    assert_eq!(
        approval["expires_at_ms"].as_i64().unwrap() - approval["requested_at_ms"].as_i64().unwrap(),
        60_000
    );
    assert_eq!(steps_of(&waiting), pairs(&[("tell", "succeeded")]));
    assert_eq!(hook.hits_at("/approval").len(), 1);

    // A decision names who decides; an unknown run is 404.
    let (status, body) = post(s, &format!("/api/v1/runs/{id}/reject"), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = post(
        s,
        "/api/v1/runs/run-nope/approve",
        json!({"by": "bob", "reason": "?"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Rejected: nothing more happens.
    let (status, body) = post(
        s,
        &format!("/api/v1/runs/{id}/reject"),
        json!({"by": "bob", "reason": "not during trading"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rejected = run_in(s, &id, "rejected").await;
    assert!(
        reason_of(&rejected).contains("rejected by bob: not during trading"),
        "{rejected:#}"
    );
    assert_eq!(steps_of(&rejected), pairs(&[("tell", "succeeded")]));
    assert!(
        audit(s)
            .await
            .contains(&("run.reject".into(), "bob".into(), id.clone())),
        "{:?}",
        audit(s).await
    );
    // It waits for nothing now.
    let (status, body) = post(
        s,
        &format!("/api/v1/runs/{id}/approve"),
        json!({"by": "bob", "reason": "changed my mind"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Not decided in time: expired, nothing executed after.
    ingest(s, "h3", "B").await;
    let id3 = id_of(&runs_of(s, "expire-me").await[0]);
    let waiting = run_in(s, &id3, "awaiting_approval").await;
    let expires = waiting["approval"]["expires_at_ms"].as_i64().unwrap();
    let expired = run_in(s, &id3, "expired").await;
    assert!(
        expired["finished_at_ms"].as_i64().unwrap() >= expires,
        "expired before its deadline: {expired:#}"
    );
    assert!(
        reason_of(&expired).contains("nobody approved within 2s"),
        "{expired:#}"
    );
    assert_eq!(steps_of(&expired), pairs(&[("tell", "succeeded")]));
    let (status, body) = post(
        s,
        &format!("/api/v1/runs/{id3}/approve"),
        json!({"by": "bob", "reason": "late"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Approved: the mutating step is attempted (ServiceNow is not
    // configured here, so it fails as unavailable).
    ingest(s, "h2", "A").await;
    let id2 = id_of(&runs_of(s, "approve-me").await[1]);
    run_in(s, &id2, "awaiting_approval").await;
    let (status, body) = post(
        s,
        &format!("/api/v1/runs/{id2}/approve"),
        json!({"by": "carol", "reason": "go"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done = run_in(s, &id2, "failed").await;
    assert_eq!(
        steps_of(&done),
        pairs(&[("tell", "succeeded"), ("ticket", "failed")])
    );
    let error = done["steps"][1]["error"].as_str().unwrap();
    assert!(error.contains("unavailable"), "{done:#}");
    assert!(
        audit(s)
            .await
            .contains(&("run.approve".into(), "carol".into(), id2.clone())),
        "{:?}",
        audit(s).await
    );
    // A finished run waits for nothing.
    let (status, _) = post(
        s,
        &format!("/api/v1/runs/{id2}/approve"),
        json!({"by": "carol", "reason": "again"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(hook.hits_at("/approval").len(), 3);
}

// ----- 5. step semantics -----

#[tokio::test(flavor = "multi_thread")]
async fn a_step_whose_when_is_false_is_recorded_as_skipped_and_the_run_goes_on() {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let steps = format!(
        "{}    when: \"alert.severity == 'info'\"\n{}{}    when: \"alert.severity == 'critical'\"\n",
        notify("never", "never"),
        notify("after", "after"),
        notify("also", "also"),
    );
    let pb = playbook(dir.path(), "when", "A", "{}", &steps, &hook.url);
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    ingest(&f.state, "h1", "A").await;
    let run = &settled(&f.state, "when", 1).await[0];
    assert_eq!(state_of(run), "succeeded", "{run:#}");
    assert_eq!(
        steps_of(run),
        pairs(&[
            ("never", "skipped"),
            ("after", "succeeded"),
            ("also", "succeeded")
        ])
    );
    assert_eq!(hook.paths(), ["/after", "/also"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_step_succeeds_on_its_third_attempt_with_one_idempotency_key() {
    let hook = Recorder::start().await;
    hook.answer(&[500, 500]);
    let dir = pb_dir();
    let steps = format!(
        "{}    retry: {{attempts: 3, backoff: 100ms}}\n",
        notify("flaky", "flaky")
    );
    let pb = playbook(dir.path(), "retry", "A", "{}", &steps, &hook.url);
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    ingest(&f.state, "h1", "A").await;
    let run = &settled(&f.state, "retry", 1).await[0];
    assert_eq!(state_of(run), "succeeded", "{run:#}");
    let step = &run["steps"][0];
    assert_eq!(
        (&step["state"], &step["attempts"]),
        (&json!("succeeded"), &json!(3)),
        "{step:#}"
    );
    let hits = hook.hits_at("/flaky");
    assert_eq!(hits.len(), 3);
    let keys: Vec<_> = hits
        .iter()
        .map(|h| h.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert!(keys.iter().all(|k| k == &keys[0]), "{keys:?}");
    assert!(keys[0].ends_with(":retry:flaky"), "{keys:?}");
    // Backoff with jitter: at least half of 100 ms, then of 200 ms.
    assert!(hits[1].at_ms - hits[0].at_ms >= 49, "{hits:?}");
    assert!(hits[2].at_ms - hits[1].at_ms >= 99, "{hits:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_aborts_the_run_by_default_after_its_attempts() {
    let hook = Recorder::start().await;
    hook.answer(&[500, 503]);
    let dir = pb_dir();
    let steps = format!(
        "{}    retry: {{attempts: 2, backoff: 50ms}}\n{}",
        notify("broken", "broken"),
        notify("next", "next")
    );
    let pb = playbook(dir.path(), "abort", "A", "{}", &steps, &hook.url);
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    ingest(&f.state, "h1", "A").await;
    let run = &settled(&f.state, "abort", 1).await[0];
    assert_eq!(state_of(run), "failed", "{run:#}");
    assert!(reason_of(run).contains("step broken failed"), "{run:#}");
    assert_eq!(steps_of(run), pairs(&[("broken", "failed")]));
    assert_eq!(run["steps"][0]["attempts"], 2);
    assert!(
        run["steps"][0]["error"].as_str().unwrap().contains("503"),
        "{run:#}"
    );
    assert_eq!(hook.paths(), ["/broken", "/broken"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_failure_continue_goes_on_and_goto_jumps_over_steps() {
    let hook = Recorder::start().await;
    // The first two requests fail: steps a and b.
    hook.answer(&[500, 500]);
    let dir = pb_dir();
    let steps = format!(
        "{}    on_failure: continue\n{}    on_failure: goto:d\n{}{}",
        notify("a", "a"),
        notify("b", "b"),
        notify("c", "c"),
        "  - id: d\n    action: notify\n    with:\n      url: \"URL/d\"\n      body: {a: \"{{ steps.a.state }}\", b: \"{{ steps.b.state }}\"}\n",
    );
    let pb = playbook(dir.path(), "routes", "A", "{}", &steps, &hook.url);
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    ingest(&f.state, "h1", "A").await;
    let run = &settled(&f.state, "routes", 1).await[0];
    assert_eq!(state_of(run), "succeeded", "{run:#}");
    assert_eq!(
        steps_of(run),
        pairs(&[("a", "failed"), ("b", "failed"), ("d", "succeeded")]),
        "c is jumped over"
    );
    assert_eq!(hook.paths(), ["/a", "/b", "/d"]);
    assert_eq!(
        hook.hits_at("/d")[0].body,
        json!({"a": "failed", "b": "failed"})
    );
}

const SECRET: &str = "s3cr3t-t0ken-42";

/// A fixture whose correlator holds the secret `hook_token`.
fn fixture_with_secret(playbooks: Vec<Playbook>) -> Fixture {
    fixture_in(
        tempfile::tempdir().unwrap(),
        playbooks,
        crate::config::Automation::default(),
        [("hook_token".to_owned(), Secret::new(SECRET))].into(),
    )
}

/// Fails when [`SECRET`] is in the run's view, its incident, the audit log,
/// or anywhere in the database files (WAL included).
async fn assert_secret_not_stored(f: &Fixture, run: &Value) {
    let s = &f.state;
    let incident = run["incident_id"].as_str().unwrap();
    for view in [
        run_view(s, run["id"].as_str().unwrap()).await.to_string(),
        get(s, &format!("/api/v1/incidents/{incident}"))
            .await
            .to_string(),
        get(s, "/api/v1/audit?limit=10000").await.to_string(),
    ] {
        assert!(!view.contains(SECRET), "the secret leaked: {view}");
    }
    for entry in std::fs::read_dir(f._dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "the secret is stored in {}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn templates_read_earlier_results_and_secrets_reach_the_target_but_are_stored_redacted() {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let steps = r#"  - id: a
    action: notify
    with:
      url: "URL/a"
      headers: {Authorization: "Bearer {{ secrets.hook_token }}"}
      body: {host: "{{ incident.host }}", app: "{{ alert.app }}"}
  - id: b
    action: notify
    with:
      url: "URL/b"
      body: {previous: "{{ steps.a.result.status }}", to: "{{ steps.a.result.url }}"}
"#;
    let pb = playbook(dir.path(), "tmpl", "A", "{}", steps, &hook.url);
    let f = fixture_with_secret(vec![pb]);
    let s = &f.state;
    ingest(s, "h1", "A").await;
    let run = &settled(s, "tmpl", 1).await[0];
    assert_eq!(state_of(run), "succeeded", "{run:#}");

    // The target got the real values.
    let a = &hook.hits_at("/a")[0];
    assert_eq!(a.headers["authorization"], format!("Bearer {SECRET}"));
    assert_eq!(a.body, json!({"host": "h1", "app": "A"}));
    let b = &hook.hits_at("/b")[0];
    assert_eq!(
        b.body,
        json!({"previous": "200", "to": format!("{}/a", hook.url)})
    );

    // What is stored shows the result read and the secret redacted.
    assert_eq!(run["steps"][0]["result"]["status"], 200);
    assert_eq!(
        run["steps"][0]["params"]["headers"]["Authorization"], "Bearer <secret:hook_token>",
        "{run:#}"
    );
    assert_eq!(run["steps"][1]["params"]["body"]["previous"], "200");
    assert_secret_not_stored(&f, run).await;
}

/// Regression: notify echoes its URL in its result and in its errors, so a
/// webhook with its token in the path (as Slack's are) was stored in clear.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_in_a_webhook_url_is_not_stored_in_the_step_result_or_error() {
    let hook = Recorder::start().await;
    // The second call fails.
    hook.answer(&[200, 500]);
    let dir = pb_dir();
    let steps = r#"  - id: ok
    action: notify
    with:
      url: "URL/hook/{{ secrets.hook_token }}"
  - id: fails
    action: notify
    with:
      url: "URL/hook/{{ secrets.hook_token }}"
"#;
    let pb = playbook(dir.path(), "slack", "A", "{}", steps, &hook.url);
    let f = fixture_with_secret(vec![pb]);
    ingest(&f.state, "h1", "A").await;
    let run = &settled(&f.state, "slack", 1).await[0];
    assert_eq!(hook.hits_at(&format!("/hook/{SECRET}")).len(), 2);
    assert_eq!(state_of(run), "failed", "{run:#}");
    assert_eq!(
        steps_of(run),
        pairs(&[("ok", "succeeded"), ("fails", "failed")])
    );
    let redacted = format!("{}/hook/<secret:hook_token>", hook.url);
    assert_eq!(run["steps"][0]["params"]["url"], redacted.as_str());
    assert_eq!(
        run["steps"][0]["result"]["url"],
        redacted.as_str(),
        "{run:#}"
    );
    assert!(
        run["steps"][1]["error"]
            .as_str()
            .unwrap()
            .contains(&redacted),
        "{run:#}"
    );
    assert_secret_not_stored(&f, run).await;
}

// ----- 6. dry runs -----

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_plans_every_step_with_its_exact_request_and_sends_nothing() {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let steps = format!(
        "{}{}",
        notify("tell", "dry"),
        wait_cpu_below("settle", "A", 50, "30s", "")
    );
    let dry = playbook(dir.path(), "dry", "A", "{dry_run: true}", &steps, &hook.url);
    // A mutating step that cannot say what it would do refuses the dry run.
    let refused = playbook(
        dir.path(),
        "dry-sn",
        "A",
        "{dry_run: true}",
        APPROVAL_STEPS,
        &hook.url,
    );
    let f = fixture_with(vec![dry, refused], crate::config::Automation::default());
    let s = &f.state;
    ingest(s, "h1", "A").await;

    let run = &settled(s, "dry", 1).await[0];
    assert_eq!(state_of(run), "planned", "{run:#}");
    assert_eq!(run["dry_run"], true);
    assert_eq!(
        steps_of(run),
        pairs(&[("tell", "planned"), ("settle", "planned")])
    );
    let planned = &run["steps"][0]["result"][0];
    assert_eq!(planned["kind"], "http", "{run:#}");
    let request = &planned["request"];
    assert_eq!(
        (&request["method"], &request["url"]),
        (&json!("POST"), &json!(format!("{}/dry", hook.url))),
        "{request}"
    );
    assert_eq!(
        request["body"],
        json!({"run": run["id"], "host": "h1"}),
        "{request}"
    );
    let wait = &run["steps"][1]["result"][0];
    assert_eq!(wait["kind"], "wait", "{run:#}");
    assert!(
        wait["description"]
            .as_str()
            .unwrap()
            .contains("cpu of A on h1 < 50"),
        "{wait}"
    );

    let run = &settled(s, "dry-sn", 1).await[0];
    assert_eq!(state_of(run), "failed", "{run:#}");
    assert!(reason_of(run).contains("dry run refused"), "{run:#}");
    assert_eq!(
        steps_of(run),
        pairs(&[("tell", "planned"), ("ticket", "failed")])
    );

    // Nothing was sent; a dry run does not count against budgets.
    assert!(hook.hits().is_empty(), "{:?}", hook.paths());
    let used = s
        .engine
        .read(|c| runs::admitted_since(c, 0, None, None))
        .unwrap();
    assert_eq!(used, 0);
    let incident = run["incident_id"].as_str().unwrap();
    assert_eq!(
        get(s, &format!("/api/v1/incidents/{incident}")).await["state"],
        "open"
    );
}

// ----- 7. durable runs across a restart -----

/// Records a run as admitted (what a crashed process leaves behind).
fn crashed_run(
    state: &AppState,
    id: &str,
    playbook: &str,
    incident: &str,
    host: &str,
    admitted: bool,
) -> runs::RunRow {
    state
        .engine
        .write(|tx| {
            let now = now_ms();
            runs::insert(
                tx,
                &NewRun {
                    id: id.into(),
                    playbook,
                    incident_id: Some(incident),
                    scope: incident.into(),
                    trigger: "incident:opened".into(),
                    alert: None,
                    target_host: Some(host),
                    target_app: Some("A"),
                    dry_run: false,
                },
                now,
            )?
            .expect("a new run");
            let row = runs::get(tx, id)?.unwrap();
            if admitted {
                runs::admit(tx, &row, 0, None, now)?;
            }
            Ok(runs::get(tx, id)?.unwrap())
        })
        .unwrap()
}

/// Records step `index` of a run as started (one attempt made).
fn step_in_flight(state: &AppState, run_id: &str, index: usize, step_id: &str, action: &str) {
    state
        .engine
        .write(|tx| {
            runs::step_started(
                tx,
                run_id,
                &StepStart {
                    seq: index as u32,
                    phase: Phase::Main,
                    step_index: index,
                    step_id,
                    action,
                    mutating: false,
                    params: &json!({"recorded": "before the crash"}),
                },
                now_ms(),
            )?;
            runs::step_attempt(tx, run_id, index as u32, 1)
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_runs_resume_at_their_first_unfinished_step_and_an_in_flight_notify_is_not_repeated()
 {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let url = &hook.url;
    let notify_then = playbook(
        dir.path(),
        "resume-notify",
        "Z",
        "{}",
        &format!(
            "{}{}",
            notify("ping", "ping"),
            notify("after", "after-ping")
        ),
        url,
    );
    let wait_then = playbook(
        dir.path(),
        "resume-wait",
        "Z",
        "{}",
        &format!(
            "{}{}",
            wait_cpu_below("settle", "A", 50, "10s", ""),
            notify("tell", "tell")
        ),
        url,
    );
    let second = "  - id: second\n    action: notify\n    with:\n      url: \"URL/second\"\n      body: {first: \"{{ steps.first.result.status }}\"}\n";
    let half_done = playbook(
        dir.path(),
        "resume-next",
        "Z",
        "{}",
        &format!("{}{second}", notify("first", "first")),
        url,
    );
    let pending = playbook(
        dir.path(),
        "resume-pending",
        "Z",
        "{}",
        &notify("only", "pending"),
        url,
    );
    let playbooks = vec![notify_then, wait_then, half_done, pending];

    // The first process: incidents, and runs as a crash leaves them.
    let f = fixture_with(vec![], crate::config::Automation::default());
    for host in ["h1", "h2", "h3", "h4"] {
        ingest(&f.state, host, "A").await;
    }
    let mut incidents = Vec::new();
    for host in ["h1", "h2", "h3", "h4"] {
        incidents.push(incident_on(&f.state, host).await);
    }
    // A notify in flight (not idempotent).
    crashed_run(
        &f.state,
        "run-r1",
        "resume-notify",
        &incidents[0],
        "h1",
        true,
    );
    step_in_flight(&f.state, "run-r1", 0, "ping", "notify");
    // A wait_for in flight (idempotent).
    crashed_run(&f.state, "run-r2", "resume-wait", &incidents[1], "h2", true);
    step_in_flight(&f.state, "run-r2", 0, "settle", "wait_for");
    // A notify finished, the next step not started.
    let r3 = crashed_run(&f.state, "run-r3", "resume-next", &incidents[2], "h3", true);
    step_in_flight(&f.state, "run-r3", 0, "first", "notify");
    f.state
        .engine
        .write(|tx| {
            runs::step_finished(
                tx,
                &r3,
                &StepEnd {
                    seq: 0,
                    step_id: "first",
                    action: "notify",
                    state: RunState::Succeeded,
                    result: Some(&json!({"status": 200, "url": "before the crash"})),
                    error: None,
                    next: (Phase::Main, 1),
                    mutated: false,
                },
                now_ms(),
            )
        })
        .unwrap();
    // Decided but not yet admitted.
    crashed_run(
        &f.state,
        "run-r4",
        "resume-pending",
        &incidents[3],
        "h4",
        false,
    );

    // The process dies; a new one opens the same database.
    let Fixture {
        _dir: db_dir,
        state,
    } = f;
    drop(state);
    let f = fixture_in(
        db_dir,
        playbooks,
        crate::config::Automation::default(),
        Default::default(),
    );
    let s = &f.state;
    sample(s, "h2", "A", 10.0);
    assert_eq!(s.automation.resume().await.unwrap(), 4);

    let r1 = run_in(s, "run-r1", "interrupted").await;
    assert!(
        reason_of(&r1).contains("step ping (notify) was in flight"),
        "{r1:#}"
    );
    assert_eq!(steps_of(&r1), pairs(&[("ping", "interrupted")]));
    assert!(
        r1["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not idempotent"),
        "{r1:#}"
    );

    let r2 = run_in(s, "run-r2", "succeeded").await;
    assert_eq!(
        steps_of(&r2),
        pairs(&[("settle", "succeeded"), ("tell", "succeeded")]),
        "the wait is repeated in its own row, not added"
    );
    assert_eq!(r2["steps"][0]["attempts"], 2, "{r2:#}");
    assert_eq!(r2["steps"][0]["result"]["met"], true, "{r2:#}");

    let r3 = run_in(s, "run-r3", "succeeded").await;
    assert_eq!(
        steps_of(&r3),
        pairs(&[("first", "succeeded"), ("second", "succeeded")])
    );
    let r4 = run_in(s, "run-r4", "succeeded").await;
    assert_eq!(steps_of(&r4), pairs(&[("only", "succeeded")]));

    // Exactly what had not happened before the crash reached the target.
    let mut paths = hook.paths();
    paths.sort();
    assert_eq!(paths, ["/pending", "/second", "/tell"]);
    assert_eq!(
        hook.hits_at("/second")[0].body,
        json!({"first": "200"}),
        "the finished step's stored result is read after the restart"
    );
    assert!(
        audit(s).await.contains(&(
            "run.interrupted".into(),
            "playbook:resume-notify".into(),
            "run-r1".into()
        )),
        "{:?}",
        audit(s).await
    );
}

// ----- 8. locks -----

/// Two playbooks on one app, each a notify then a wait of `hold`.
fn two_holding_playbooks(dir: &Path, url: &str, lock: &str, hold: &str) -> Vec<Playbook> {
    ["one", "two"]
        .iter()
        .map(|n| {
            let steps = format!(
                "{}{}",
                notify("hello", &format!("hello-{n}")),
                // Never met (cpu < 0): fails after `hold`, and the run goes on.
                wait_cpu_below("hold", "A", 0, hold, "    on_failure: continue\n")
            );
            playbook(dir, &format!("lock-{n}"), "A", lock, &steps, url)
        })
        .collect()
}

/// Each run's [start, finish]: its notify's arrival and its end.
fn intervals(hook: &Recorder, one: &Value, two: &Value) -> [(i64, i64); 2] {
    [("one", one), ("two", two)].map(|(n, run)| {
        let hits = hook.hits_at(&format!("/hello-{n}"));
        assert_eq!(hits.len(), 1, "{:?}", hook.paths());
        assert_eq!(hits[0].body["run"], run["id"]);
        let started = run["started_at_ms"].as_i64().unwrap();
        assert!(started <= hits[0].at_ms);
        (started, run["finished_at_ms"].as_i64().unwrap())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn two_playbooks_triggered_by_one_alert_on_one_app_take_turns_on_its_lock() {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let pbs = two_holding_playbooks(dir.path(), &hook.url, "{lock: app}", "1s");
    let f = fixture_with(pbs, crate::config::Automation::default());
    let s = &f.state;
    ingest(s, "h1", "A").await;
    let one = settled(s, "lock-one", 1).await.remove(0);
    let two = settled(s, "lock-two", 1).await.remove(0);
    for run in [&one, &two] {
        assert_eq!(state_of(run), "succeeded", "{run:#}");
        assert_eq!(run["incident_id"], one["incident_id"]);
    }
    let [a, b] = intervals(&hook, &one, &two);
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    assert!(
        first.1 - first.0 >= 1_000,
        "each run holds for the 1s wait: {first:?}"
    );
    assert!(
        first.1 <= second.0,
        "the runs overlap: {first:?} and {second:?}"
    );
    // The second run's notify arrived after the first run ended.
    let later = if a.0 <= b.0 {
        "/hello-two"
    } else {
        "/hello-one"
    };
    assert!(hook.hits_at(later)[0].at_ms >= first.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_lock_two_playbooks_on_one_app_run_at_once() {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let pbs = two_holding_playbooks(dir.path(), &hook.url, "{lock: none}", "2s");
    let f = fixture_with(pbs, crate::config::Automation::default());
    let s = &f.state;
    ingest(s, "h1", "A").await;
    let one = settled(s, "lock-one", 1).await.remove(0);
    let two = settled(s, "lock-two", 1).await.remove(0);
    let [a, b] = intervals(&hook, &one, &two);
    assert!(
        a.0.max(b.0) < a.1.min(b.1),
        "without a lock the runs overlap: {a:?} and {b:?}"
    );
}

// ----- 9. reloading playbooks -----

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_reload_keeps_the_loaded_playbooks_and_a_valid_one_adds_a_playbook_that_triggers()
{
    let hook = Recorder::start().await;
    let f = fixture_with(vec![], crate::config::Automation::default());
    let s = &f.state;
    let dir = f._dir.path().join("playbooks");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, app: &str| {
        std::fs::write(
            dir.join(format!("{name}.yaml")),
            playbook_yaml(name, app, "{}", &notify("tell", name), &hook.url),
        )
        .unwrap();
    };
    write("first", "A");
    let (status, body) = post(s, "/api/v1/playbooks/reload", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["playbooks"], json!(["first"]));

    let names = async || -> Vec<String> {
        get(s, "/api/v1/playbooks")
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    std::fs::write(
        dir.join("second.yaml"),
        playbook_yaml("second", "B", "{}", &notify("tell", "second"), &hook.url)
            .replace("action: notify", "action: reboot_everything"),
    )
    .unwrap();
    let (status, body) = post(s, "/api/v1/playbooks/reload", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("second.yaml") && message.contains("unknown action"),
        "{message}"
    );
    assert_eq!(names().await, ["first"]);
    // The broken file did not load: its alert starts nothing.
    ingest(s, "h1", "B").await;
    assert!(runs_of(s, "second").await.is_empty());

    write("second", "B");
    let (status, body) = post(s, "/api/v1/playbooks/reload", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["playbooks"], json!(["first", "second"]));
    assert_eq!(names().await, ["first", "second"]);
    ingest(s, "h2", "B").await;
    let run = &settled(s, "second", 1).await[0];
    assert_eq!(state_of(run), "succeeded", "{run:#}");
    assert_eq!(hook.paths(), ["/second"]);
}

// ----- 10. plans -----

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_against_an_incident_shows_the_rendered_request_and_executes_nothing() {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let steps = r#"  - id: tell
    action: notify
    with:
      url: "URL/plan"
      body: {host: "{{ incident.host }}", alert: "{{ alert.name }}"}
  - id: then
    action: notify
    with:
      url: "URL/then"
      body: {previous: "{{ steps.tell.result.status }}"}
"#;
    // Triggered by another app: only the plan looks at this incident.
    let pb = playbook(dir.path(), "planme", "OTHER", "{}", steps, &hook.url);
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    let s = &f.state;
    ingest(s, "h1", "A").await;
    let incident = incident_on(s, "h1").await;

    let (status, plan) = post(
        s,
        "/api/v1/playbooks/planme/plan",
        json!({"incident_id": incident}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let text = plan["text"].as_str().unwrap();
    for want in [
        "playbook planme".to_owned(),
        format!("-> POST {}/plan", hook.url),
        r#"{"alert":"svc_down","host":"h1"}"#.to_owned(),
        r#"{"previous":"<steps.tell.result.status>"}"#.to_owned(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    assert_eq!(plan["plan"]["steps"][0]["params"]["body"]["host"], "h1");

    let (status, body) = post(
        s,
        "/api/v1/playbooks/nope/plan",
        json!({"incident_id": incident}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = post(
        s,
        "/api/v1/playbooks/planme/plan",
        json!({"incident_id": "fc-nope"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    assert!(hook.hits().is_empty(), "{:?}", hook.paths());
    assert!(runs_of(s, "planme").await.is_empty());
}

// ----- mutating steps, with a stand-in for the agent -----

/// A stand-in for the agent on `host`: takes its commands from the bus and
/// answers each script after `delay`, exit 0 (1 for scripts named
/// `fail*`). `on_command` runs as each command arrives (a script's effect).
fn fake_agent(
    state: &AppState,
    host: &str,
    delay: Duration,
    on_command: impl Fn(AppState, String) + Send + Sync + 'static,
) -> Arc<Mutex<Vec<Command>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (bus, host, log, state) = (
        state.bus.clone(),
        host.to_owned(),
        seen.clone(),
        state.clone(),
    );
    let on_command = Arc::new(on_command);
    tokio::spawn(async move {
        loop {
            for signed in bus.poll(&host, "fleet", Duration::from_secs(1)).await {
                let c: Command = serde_json::from_str(&signed.payload).unwrap();
                log.lock().unwrap().push(c.clone());
                let CommandAction::RunScript { script, .. } = c.action else {
                    panic!("unexpected command {c:?}");
                };
                let (bus, on_command, state) = (bus.clone(), on_command.clone(), state.clone());
                tokio::spawn(async move {
                    on_command(state, script.clone());
                    tokio::time::sleep(delay).await;
                    let exit = if script.starts_with("fail") { 1 } else { 0 };
                    bus.complete(CommandResult {
                        command_id: c.id,
                        host: c.host,
                        outcome: CommandOutcome::Applied,
                        message: "ran".into(),
                        detail: Some(CommandDetail::Script {
                            script,
                            exit_code: Some(exit),
                            timed_out: false,
                            duration_ms: 1,
                            stdout: String::new(),
                            stderr: "it broke".into(),
                        }),
                        finished_at_ms: now_ms(),
                    });
                });
            }
        }
    });
    seen
}

fn scripts(seen: &Mutex<Vec<Command>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|c| match &c.action {
            CommandAction::RunScript { script, .. } => script.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn exec(id: &str, host: &str, script: &str) -> String {
    format!(
        "  - id: {id}\n    action: exec\n    with:\n      host: \"{host}\"\n      script: {script}\n    timeout: 10s\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_aborts_after_a_mutating_step_runs_its_rollback_and_is_rolled_back() {
    let hook = Recorder::start().await;
    hook.answer(&[500]);
    let dir = pb_dir();
    let yaml = format!(
        "{}{}rollback:\n{}",
        exec("change", "{{ incident.host }}", "restart.sh"),
        notify("check", "check"),
        exec("undo", "{{ incident.host }}", "undo.sh"),
    );
    let pb = playbook(
        dir.path(),
        "rollback",
        "A",
        "{rate_limit: {per_target: {max: 5, per: 1h}}}",
        &yaml,
        &hook.url,
    );
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    let s = &f.state;
    let agent = fake_agent(s, "h1", Duration::ZERO, |_, _| {});
    ingest(s, "h1", "A").await;
    let run = &settled(s, "rollback", 1).await[0];
    assert_eq!(state_of(run), "rolled_back", "{run:#}");
    assert!(
        reason_of(run).contains("step check failed") && reason_of(run).ends_with("rolled back"),
        "{run:#}"
    );
    assert_eq!(run["mutated"], true);
    assert_eq!(
        steps_of(run),
        pairs(&[
            ("change", "succeeded"),
            ("check", "failed"),
            ("undo", "succeeded")
        ])
    );
    assert_eq!(run["steps"][2]["phase"], "rollback");
    assert_eq!(scripts(&agent), ["restart.sh", "undo.sh"]);
    // Each command carries its step's idempotency key.
    let ids: Vec<_> = agent.lock().unwrap().iter().map(|c| c.id.clone()).collect();
    let incident = run["incident_id"].as_str().unwrap();
    assert_eq!(
        ids,
        [
            format!("{incident}:rollback:change"),
            format!("{incident}:rollback:rollback.undo")
        ]
    );
    let audit = audit(s).await;
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.0 == "action.exec" && a.2 == "h1/A")
            .count(),
        2,
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mutating_step_beyond_max_hosts_is_refused_without_reaching_the_agent() {
    let dir = pb_dir();
    let steps = format!(
        "{}{}",
        exec("here", "h1", "a.sh"),
        exec("there", "h2", "b.sh")
    );
    let pb = playbook(
        dir.path(),
        "hosts",
        "A",
        "{max_hosts: 1, rate_limit: {per_target: {max: 5, per: 1h}}}",
        &steps,
        "unused",
    );
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    let s = &f.state;
    let h1 = fake_agent(s, "h1", Duration::ZERO, |_, _| {});
    let h2 = fake_agent(s, "h2", Duration::ZERO, |_, _| {});
    ingest(s, "h1", "A").await;
    let run = &settled(s, "hosts", 1).await[0];
    assert_eq!(state_of(run), "failed", "{run:#}");
    assert_eq!(
        steps_of(run),
        pairs(&[("here", "succeeded"), ("there", "failed")])
    );
    let error = run["steps"][1]["error"].as_str().unwrap();
    assert!(
        error.contains("would act on 2 hosts (h1, h2); guardrails.max_hosts is 1"),
        "{error}"
    );
    assert_eq!(scripts(&h1), ["a.sh"]);
    assert!(scripts(&h2).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kill_switch_lets_a_mutating_step_in_flight_finish_and_stops_before_the_next() {
    let dir = pb_dir();
    let steps = format!(
        "{}{}",
        exec("slow", "h1", "slow.sh"),
        exec("next", "h1", "next.sh")
    );
    let pb = playbook(
        dir.path(),
        "inflight",
        "A",
        "{rate_limit: {per_target: {max: 5, per: 1h}}}",
        &steps,
        "unused",
    );
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    let s = &f.state;
    let agent = fake_agent(s, "h1", Duration::from_millis(2_000), |_, _| {});
    ingest(s, "h1", "A").await;
    eventually("the agent to take the first command", async || {
        if scripts(&agent).is_empty() {
            Err("nothing yet".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    let (status, _) = post(
        s,
        "/api/v1/automation/kill-switch",
        json!({"on": true, "by": "alice", "reason": "mid-change"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let run = &settled(s, "inflight", 1).await[0];
    assert_eq!(state_of(run), "stopped", "{run:#}");
    assert!(
        reason_of(run).contains("kill switch before step next"),
        "{run:#}"
    );
    // The change under way was let finish and recorded, not abandoned.
    assert_eq!(steps_of(run), pairs(&[("slow", "succeeded")]));
    assert_eq!(run["mutated"], true);
    assert_eq!(scripts(&agent), ["slow.sh"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn s6_a_remediation_that_retriggers_its_own_alert_stops_at_the_causal_depth() {
    let dir = pb_dir();
    let pb = playbook(
        dir.path(),
        "loop",
        "A",
        "{max_depth: 2, rate_limit: {per_target: {max: 10, per: 1h}}}",
        &exec("restart", "{{ incident.host }}", "restart.sh"),
        "unused",
    );
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    let s = &f.state;
    // The "restart" knocks the service over again while it runs.
    let agent = fake_agent(s, "h1", Duration::from_millis(200), |state, _| {
        tokio::spawn(async move { retrigger(&state, "h1", "A").await });
    });
    ingest(s, "h1", "A").await;
    let runs = settled(s, "loop", 4).await;
    let chain: Vec<_> = runs
        .iter()
        .map(|r| (state_of(r), r["depth"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        chain,
        [
            ("succeeded", 0),
            ("succeeded", 1),
            ("succeeded", 2),
            ("blocked", 3)
        ],
        "{runs:#?}"
    );
    for pair in runs.windows(2) {
        assert_eq!(pair[1]["caused_by_run"], pair[0]["id"], "{runs:#?}");
    }
    assert!(
        reason_of(&runs[3]).contains("causal chain depth 3 exceeds max_depth 2"),
        "{:#}",
        runs[3]
    );
    assert!(breaker(s, "playbook:loop@h1/A").await.is_some());
    assert_eq!(scripts(&agent).len(), 3, "three restarts reached the host");
}

// ----- scheduled playbooks -----

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_playbook_runs_once_per_slot_without_an_incident() {
    let hook = Recorder::start().await;
    let dir = pb_dir();
    let path = dir.path().join("tick.yaml");
    let yaml = r#"version: 1
name: tick
description: every second
trigger: {schedule: "* * * * * *"}
steps:
  - id: tell
    action: notify
    with:
      url: "URL/tick"
      body: {run: "{{ run.id }}", playbook: "{{ playbook.name }}"}
"#;
    std::fs::write(&path, yaml.replace("URL", &hook.url)).unwrap();
    let pb = fincorp_playbooks::load_file(&path).unwrap().playbook;
    let f = fixture_with(vec![pb], crate::config::Automation::default());
    let s = &f.state;
    let scheduler = s.automation.start_scheduler();
    let runs = eventually("two scheduled runs", async || {
        let runs = runs_of(s, "tick").await;
        let done: Vec<_> = runs.iter().filter(|r| is_final(r)).cloned().collect();
        if done.len() >= 2 {
            Ok(done)
        } else {
            Err(format!("{runs:#?}"))
        }
    })
    .await;
    scheduler.abort();
    for r in &runs {
        assert_eq!(state_of(r), "succeeded", "{r:#}");
        assert_eq!(r["incident_id"], Value::Null);
        assert!(
            r["trigger"]
                .as_str()
                .unwrap()
                .starts_with("schedule:sched:"),
            "{r:#}"
        );
    }
    let mut slots: Vec<_> = runs.iter().map(|r| r["trigger"].to_string()).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), runs.len(), "one run per slot: {runs:#?}");
    let hits = hook.hits_at("/tick");
    assert!(hits.len() >= 2);
    assert!(hits.iter().all(|h| h.body["playbook"] == "tick"));
}
