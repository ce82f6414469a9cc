//! `vsphere.reallocate` against the in-process vSphere simulator's default
//! inventory: the hot-add rules refuse before anything is sent, relative
//! changes round up to what the VM accepts, and plans show the exact PATCH.

use std::time::Duration;

use fincorp_api::config::Secret;
use fincorp_integrations::retry::RetryPolicy;
use fincorp_integrations::vsphere::{VsphereClient, VsphereConfig};
use fincorp_sim::vsphere::{self as sim, Inventory, RunningSim, SimState};
use serde_json::{Map, Value, json};

use super::Reallocate;
use crate::actions::testing::FakeEnv;
use crate::actions::{ActionError, Planned, StepContext, execute, plan};

const USER: &str = "fincorp-automation@vsphere.local";
const PASSWORD: &str = "vc-test-password";

async fn env() -> (RunningSim, FakeEnv) {
    let sim = sim::spawn(SimState::new(USER, PASSWORD, Inventory::default()))
        .await
        .unwrap();
    let mut env = FakeEnv::new(|_, _, _| Err("no agent command expected".into()));
    env.vsphere = Some(
        VsphereClient::new(VsphereConfig {
            url: sim.url(),
            username: USER.into(),
            password: Secret::new(PASSWORD),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
        .with_retry(RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            max_retry_after: Duration::from_secs(1),
        }),
    );
    (sim, env)
}

fn ctx() -> StepContext {
    StepContext {
        run_id: "run-1".into(),
        step_id: "grow".into(),
        incident_id: Some("fc-1".into()),
        app: Some("FINCORP-APP-HFT".into()),
        idempotency_key: "fc-1:p:grow".into(),
        timeout: Duration::from_secs(10),
    }
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn patches(sim: &RunningSim) -> Vec<(String, Value)> {
    sim.state
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| (r.path, r.body.unwrap_or(Value::Null)))
        .collect()
}

#[tokio::test]
async fn an_exact_cpu_count_is_planned_and_sent_as_one_patch() {
    let (sim, env) = env().await;
    // hft-engine-ny-01: running, 4 cores, 2 per socket, CPU hot-add on.
    let p = params(json!({"vm": "hft-engine-ny-01", "resource": "cpu", "to": 6}));
    let planned = plan(&env, &Reallocate, &p, &ctx()).unwrap();
    let http: Vec<_> = planned
        .iter()
        .map(|p| match p {
            Planned::Http { request } => request.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let shown: Vec<_> = http
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.replacen(&sim.url(), "", 1)))
        .collect();
    assert_eq!(
        shown,
        [
            "POST /api/session",
            "GET /api/vcenter/vm?names=hft-engine-ny-01",
            "GET /api/vcenter/vm/{id of hft-engine-ny-01}",
            "PATCH /api/vcenter/vm/{id of hft-engine-ny-01}/hardware/cpu",
        ]
    );
    assert_eq!(http[3].body, Some(json!({"count": 6})));
    assert!(sim.state.requests().is_empty(), "planning sends nothing");

    let out = execute(&env, &Reallocate, &p, &ctx()).await.unwrap();
    assert_eq!(
        out.result,
        json!({"vm": "hft-engine-ny-01", "vm_id": "vm-1002", "power_state": "POWERED_ON",
               "resource": "cpu", "unit": "cores", "before": 4, "after": 6, "applied": true})
    );
    assert_eq!(
        patches(&sim),
        [(
            "/api/vcenter/vm/vm-1002/hardware/cpu".to_owned(),
            json!({"count": 6})
        )]
    );
    assert_eq!(sim.state.vm("vm-1002").unwrap().cpu_count, 6);
}

#[tokio::test]
async fn relative_changes_round_up_to_what_the_vm_accepts() {
    let (sim, env) = env().await;
    // 4 cores, 2 per socket: +20% is 4.8, rounded up to 6.
    let out = execute(
        &env,
        &Reallocate,
        &params(json!({"vm": "hft-engine-ny-01", "resource": "cpu", "increase_pct": 20})),
        &ctx(),
    )
    .await
    .unwrap();
    assert_eq!(
        (&out.result["before"], &out.result["after"]),
        (&json!(4), &json!(6))
    );
    // 16384 MiB, hot-add increment 128: +10% is 18022.4, rounded up to 18048.
    let out = execute(
        &env,
        &Reallocate,
        &params(json!({"vm": "hft-engine-ny-01", "resource": "memory", "increase_pct": "10"})),
        &ctx(),
    )
    .await
    .unwrap();
    assert_eq!(out.result["after"], 18048);
    assert_eq!(out.result["unit"], "MiB");
    let out = execute(
        &env,
        &Reallocate,
        &params(json!({"vm": "hft-engine-ny-01", "resource": "memory", "add": 1024})),
        &ctx(),
    )
    .await
    .unwrap();
    assert_eq!(out.result["after"], 18048 + 1024);
    assert_eq!(
        patches(&sim)
            .into_iter()
            .map(|(_, b)| b)
            .collect::<Vec<_>>(),
        [
            json!({"count": 6}),
            json!({"size_MiB": 18048}),
            json!({"size_MiB": 19072})
        ]
    );
    // A plan cannot know the current size: it says how the new one is made.
    let planned = plan(
        &env,
        &Reallocate,
        &params(json!({"vm": "hft-engine-ny-01", "resource": "cpu", "increase_pct": 20})),
        &ctx(),
    )
    .unwrap();
    let Planned::Http { request } = planned.last().unwrap() else {
        panic!()
    };
    assert_eq!(
        request.body,
        Some(
            json!({"count": "<current cores + 20%, rounded up to a multiple of its cores per socket>"})
        )
    );
}

#[tokio::test]
async fn hot_add_rules_refuse_before_any_patch_is_sent() {
    let (sim, env) = env().await;
    for (p, why) in [
        // transproc-app-ny-01: running, CPU and memory hot-add disabled.
        (
            json!({"vm": "transproc-app-ny-01", "resource": "cpu", "add": 1}),
            "CPU hot-add is disabled",
        ),
        (
            json!({"vm": "transproc-app-ny-01", "resource": "memory", "increase_pct": 50}),
            "memory hot-add is disabled",
        ),
        // hft-engine-ny-01: 2 cores per socket.
        (
            json!({"vm": "hft-engine-ny-01", "resource": "cpu", "add": 1}),
            "not a multiple of the VM's 2 cores per socket",
        ),
        // No online decrease.
        (
            json!({"vm": "hft-engine-ny-01", "resource": "cpu", "to": 2}),
            "hot-remove is disabled",
        ),
        (
            json!({"vm": "no-such-vm", "resource": "cpu", "to": 2}),
            "no VM is named",
        ),
    ] {
        let err = execute(&env, &Reallocate, &params(p.clone()), &ctx())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ActionError::Refused(m) if m.contains(why)),
            "{p}: {err}"
        );
        assert!(!err.retryable());
    }
    assert!(patches(&sim).is_empty());
}

#[tokio::test]
async fn the_new_size_is_given_exactly_one_way_and_checked_even_in_plans() {
    let (sim, env) = env().await;
    for (p, why) in [
        (json!({"vm": "a", "resource": "cpu"}), "exactly one of"),
        (
            json!({"vm": "a", "resource": "cpu", "to": 4, "add": 2}),
            "exactly one of",
        ),
        (
            json!({"vm": "a", "resource": "cpu", "add": 1.5}),
            "whole number",
        ),
        (
            json!({"vm": "a", "resource": "memory", "increase_pct": -5}),
            "above 0",
        ),
    ] {
        let err = plan(&env, &Reallocate, &params(p.clone()), &ctx()).unwrap_err();
        assert!(
            matches!(&err, ActionError::InvalidParams(m) if m.contains(why)),
            "{p}: {err}"
        );
    }
    let err = plan(
        &env,
        &Reallocate,
        &params(json!({"vm": "a", "resource": "memory", "to": 1026})),
        &ctx(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ActionError::Refused(m) if m.contains("multiple of 4 MiB")),
        "{err}"
    );
    assert!(sim.state.requests().is_empty());
}
