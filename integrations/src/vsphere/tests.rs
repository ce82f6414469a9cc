//! The vSphere client against the in-process simulator (`fincorp-sim`):
//! sessions, lookup, power, the hot-add rules enforced before sending,
//! plans matching what is sent, error mapping, retries and failed hosts.
//! Each test starts its own simulator on 127.0.0.1:0.

use std::time::{Duration, Instant};

use fincorp_api::config::Secret;
use fincorp_sim::vsphere::{self as sim, Faults, Inventory, RecordedRequest, RunningSim, SimState};
use serde_json::json;

use super::*;
use crate::retry::RetryPolicy;

const USER: &str = "fincorp-automation@vsphere.local";
const PASSWORD: &str = "vc-correct-horse";

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
}

fn client(url: &str, password: &str) -> VsphereClient {
    VsphereClient::new(VsphereConfig {
        url: url.to_owned(),
        username: USER.to_owned(),
        password: Secret::new(password),
        timeout: Duration::from_secs(10),
    })
    .unwrap()
    .with_retry(fast_retry())
}

async fn start_with(inventory: Inventory) -> (RunningSim, VsphereClient) {
    let sim = sim::spawn(SimState::new(USER, PASSWORD, inventory))
        .await
        .unwrap();
    let client = client(&sim.url(), PASSWORD);
    (sim, client)
}

async fn start() -> (RunningSim, VsphereClient) {
    start_with(Inventory::default()).await
}

/// (method, path, status) of every request the simulator saw.
fn log(sim: &RunningSim) -> Vec<(String, String, u16)> {
    sim.state
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.status))
        .collect()
}

fn rows(list: &[(&str, &str, u16)]) -> Vec<(String, String, u16)> {
    list.iter()
        .map(|(m, p, s)| (m.to_string(), p.to_string(), *s))
        .collect()
}

fn patches(sim: &RunningSim) -> usize {
    sim.state
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count()
}

fn sent_url(sim: &RunningSim, r: &RecordedRequest) -> String {
    match &r.query {
        Some(q) => format!("{}{}?{q}", sim.url(), r.path),
        None => format!("{}{}", sim.url(), r.path),
    }
}

/// The plan is, request for request, what the simulator saw (method, URL,
/// body, Accept, Content-Type, session header present).
fn assert_sent_as_planned(sim: &RunningSim, plan: &[PlannedRequest], sent: &[RecordedRequest]) {
    assert_eq!(plan.len(), sent.len(), "plan {plan:#?}\nsent {sent:#?}");
    for (planned, sent) in plan.iter().zip(sent) {
        assert_eq!(planned.method, sent.method);
        assert_eq!(planned.url, sent_url(sim, sent));
        assert_eq!(planned.body, sent.body);
        assert_eq!(planned.header("Accept"), sent.accept.as_deref());
        assert_eq!(planned.header("Content-Type"), sent.content_type.as_deref());
        assert_eq!(planned.header(SESSION_HEADER).is_some(), sent.has_session);
        assert_eq!(
            planned.header(SESSION_HEADER).unwrap_or("<redacted>"),
            "<redacted>"
        );
    }
}

fn refused_reason(err: VsphereError) -> String {
    match err {
        VsphereError::Refused { reason, .. } => reason,
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn login_uses_basic_auth_once_then_the_session_header() {
    let (sim, client) = start().await;
    assert!(!client.has_session());
    let vms = client.list_vms().await.unwrap();
    assert_eq!(vms.len(), 6);
    client.find_vm("core-primary-ny").await.unwrap();
    assert!(client.has_session());
    let sent = sim.state.requests();
    assert_eq!(
        log(&sim),
        rows(&[
            ("POST", "/api/session", 201),
            ("GET", "/api/vcenter/vm", 200),
            ("GET", "/api/vcenter/vm", 200),
        ])
    );
    assert_eq!(sent[0].auth_scheme.as_deref(), Some("Basic"));
    assert!(!sent[0].has_session);
    for r in &sent[1..] {
        assert!(r.has_session, "{r:?}");
        assert_eq!(r.auth_scheme, None, "basic auth only on login");
    }
    assert_eq!(sim.state.live_sessions(), 1);

    client.logout().await.unwrap();
    assert!(!client.has_session());
    assert_eq!(sim.state.live_sessions(), 0);
    client.logout().await.unwrap(); // nothing held: nothing sent
    client.list_vms().await.unwrap();
    assert_eq!(
        log(&sim)[3..],
        rows(&[
            ("DELETE", "/api/session", 204),
            ("POST", "/api/session", 201),
            ("GET", "/api/vcenter/vm", 200),
        ])[..]
    );
    // A session the server already forgot still logs out cleanly.
    sim.state.expire_sessions();
    client.logout().await.unwrap();
    assert_eq!(log(&sim).last().unwrap().2, 401);
}

#[tokio::test]
async fn an_expired_session_is_renewed_once_and_the_call_resent() {
    let (sim, client) = start().await;
    sim.state
        .set_session_idle_timeout(Duration::from_millis(300));
    client.find_vm("core-primary-ny").await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let vm = client.find_vm("core-primary-ny").await.unwrap();
    assert_eq!(vm.vm, "vm-1001");
    assert_eq!(
        log(&sim),
        rows(&[
            ("POST", "/api/session", 201),
            ("GET", "/api/vcenter/vm", 200),
            ("GET", "/api/vcenter/vm", 401),
            ("POST", "/api/session", 201),
            ("GET", "/api/vcenter/vm", 200),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_login() {
    let (sim, client) = start().await;
    let mut tasks = Vec::new();
    for name in ["core-primary-ny", "hft-engine-ny-01", "crm-web-ny-01"] {
        for _ in 0..4 {
            let client = client.clone();
            tasks.push(tokio::spawn(
                async move { client.find_vm(name).await.unwrap() },
            ));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let logins = sim
        .state
        .requests()
        .iter()
        .filter(|r| r.path == "/api/session")
        .count();
    assert_eq!(logins, 1);
}

#[tokio::test]
async fn a_wrong_password_is_a_login_error_sent_once() {
    let (sim, _) = start().await;
    let client = client(&sim.url(), "wrong");
    let err = client.find_vm("core-primary-ny").await.unwrap_err();
    match &err {
        VsphereError::Login {
            status,
            message,
            url,
        } => {
            assert_eq!(*status, 401);
            assert_eq!(message, "Authentication required.");
            assert!(url.ends_with("/api/session"), "{url}");
        }
        other => panic!("expected Login, got {other:?}"),
    }
    assert!(!err.to_string().contains("wrong"));
    assert_eq!(log(&sim), rows(&[("POST", "/api/session", 401)]));
}

#[tokio::test]
async fn vm_lookup_finds_one_or_says_clearly_why_not() {
    let mut inventory = Inventory::default();
    let mut twin = inventory.vms[3].clone(); // transproc-app-ny-01
    twin.vm = "vm-3003".into();
    twin.host = "esx-ldn-01".into();
    twin.power_state = sim::PowerState::PoweredOff;
    inventory.vms.push(twin);
    let (sim, client) = start_with(inventory).await;

    let found = client.find_vm("core-standby-london").await.unwrap();
    assert_eq!(
        found,
        VmSummary {
            vm: "vm-2001".into(),
            name: "core-standby-london".into(),
            power_state: PowerState::PoweredOff,
            cpu_count: Some(8),
            memory_size_mib: Some(32768),
        }
    );
    let err = client.find_vm("core-standby-paris").await.unwrap_err();
    assert!(
        matches!(&err, VsphereError::VmNotFound { name } if name == "core-standby-paris"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "vsphere: no VM is named \"core-standby-paris\""
    );
    let err = client.find_vm("transproc-app-ny-01").await.unwrap_err();
    match &err {
        VsphereError::AmbiguousVm { name, vms } => {
            assert_eq!(name, "transproc-app-ny-01");
            assert_eq!(
                vms,
                &[
                    "vm-1003 (POWERED_ON, 4 CPU, 8192 MiB)".to_owned(),
                    "vm-3003 (POWERED_OFF, 4 CPU, 8192 MiB)".to_owned()
                ]
            );
        }
        other => panic!("expected AmbiguousVm, got {other:?}"),
    }
    let plan = client.plan_find_vm("core-standby-london").unwrap();
    let sent: Vec<_> = sim
        .state
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .take(1)
        .collect();
    assert_sent_as_planned(&sim, &[plan], &sent);
    assert!(matches!(
        client.find_vm(" ").await,
        Err(VsphereError::InvalidInput {
            field: "vm name",
            ..
        })
    ));

    let info = client.vm("vm-1001").await.unwrap();
    assert_eq!(info.vm, "vm-1001");
    assert_eq!(info.name, "core-primary-ny");
    assert_eq!(
        info.cpu,
        CpuInfo {
            count: 8,
            cores_per_socket: 4,
            hot_add_enabled: true,
            hot_remove_enabled: false
        }
    );
    assert_eq!(info.memory.hot_add_increment_size_mib, Some(128));
    assert_eq!(info.memory.hot_add_limit_mib, Some(131072));
    assert_eq!(
        client.power_state("vm-2001").await.unwrap(),
        PowerState::PoweredOff
    );
}

#[tokio::test]
async fn powering_on_the_london_standby_and_starting_a_running_vm_both_succeed() {
    let (sim, client) = start().await;
    let plan = client.plan_power("vm-2001", PowerAction::Start).unwrap();
    assert_eq!(
        plan.url,
        format!("{}/api/vcenter/vm/vm-2001/power?action=start", sim.url())
    );
    assert!(sim.state.requests().is_empty(), "planning sends nothing");
    assert_eq!(
        client.power("vm-2001", PowerAction::Start).await.unwrap(),
        PowerOutcome::Done
    );
    assert_eq!(
        sim.state.vm("vm-2001").unwrap().power_state,
        sim::PowerState::PoweredOn
    );
    assert_eq!(
        client.power_state("vm-2001").await.unwrap(),
        PowerState::PoweredOn
    );
    let power_posts: Vec<_> = sim
        .state
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/power") && r.method == "POST")
        .collect();
    assert_sent_as_planned(&sim, &[plan], &power_posts);

    // Starting it again: vCenter answers ALREADY_IN_DESIRED_STATE, which is success.
    sim.state.clear_requests();
    assert_eq!(
        client.power("vm-2001", PowerAction::Start).await.unwrap(),
        PowerOutcome::AlreadyInDesiredState
    );
    assert_eq!(
        log(&sim),
        rows(&[("POST", "/api/vcenter/vm/vm-2001/power", 400)]),
        "not retried"
    );
    assert_eq!(
        client.power("vm-1001", PowerAction::Start).await.unwrap(),
        PowerOutcome::AlreadyInDesiredState
    );
    assert_eq!(
        client.power("vm-2001", PowerAction::Stop).await.unwrap(),
        PowerOutcome::Done
    );
}

#[tokio::test]
async fn cpu_hot_add_on_a_running_vm_without_hot_add_is_refused_before_any_patch() {
    let (sim, client) = start().await;
    // transproc-app-ny-01 (vm-1003): on, cpu.hot_add_enabled false.
    let reason = refused_reason(client.set_cpu_count("vm-1003", 6).await.unwrap_err());
    assert!(reason.contains("CPU hot-add is disabled"), "{reason}");
    assert_eq!(
        log(&sim),
        rows(&[
            ("POST", "/api/session", 201),
            ("GET", "/api/vcenter/vm/vm-1003", 200)
        ])
    );
    assert_eq!(patches(&sim), 0);
    assert_eq!(sim.state.vm("vm-1003").unwrap().cpu_count, 4);
}

#[tokio::test]
async fn cpu_counts_that_are_not_a_multiple_of_cores_per_socket_or_out_of_range_are_refused() {
    let (sim, client) = start().await;
    // core-primary-ny: 4 cores per socket.
    let err = client.set_cpu_count("vm-1001", 10).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "vsphere: cpu count 8 → 10 on vm-1001 refused before sending: 10 is not a multiple of the VM's 4 cores per socket"
    );
    // Out of range: refused before even reading the VM.
    sim.state.clear_requests();
    let reason = refused_reason(client.set_cpu_count("vm-1001", 0).await.unwrap_err());
    assert!(reason.contains("1 to 768"), "{reason}");
    assert!(sim.state.requests().is_empty());
    assert_eq!(patches(&sim), 0);
}

#[tokio::test]
async fn online_decreases_are_refused_even_where_vsphere_would_allow_them() {
    let (sim, client) = start().await;
    let reason = refused_reason(client.set_cpu_count("vm-1001", 4).await.unwrap_err());
    assert!(reason.contains("hot-remove is disabled"), "{reason}");
    // crm-web-ny-01 has hot_remove_enabled: vSphere would accept; FINCORP does not.
    let reason = refused_reason(client.set_cpu_count("vm-1004", 1).await.unwrap_err());
    assert!(
        reason.contains("does not remove CPUs from a running VM"),
        "{reason}"
    );
    let reason = refused_reason(client.set_memory_mib("vm-1001", 16384).await.unwrap_err());
    assert!(reason.contains("cannot be removed"), "{reason}");
    assert_eq!(patches(&sim), 0);
    assert_eq!(sim.state.vm("vm-1004").unwrap().cpu_count, 2);
}

#[tokio::test]
async fn memory_hot_add_rules_are_enforced_before_sending() {
    let (sim, client) = start().await;
    let reason = refused_reason(client.set_memory_mib("vm-1003", 16384).await.unwrap_err());
    assert!(reason.contains("memory hot-add is disabled"), "{reason}");
    let reason = refused_reason(
        client
            .set_memory_mib("vm-1001", 32768 + 64)
            .await
            .unwrap_err(),
    );
    assert!(reason.contains("steps of at least 128 MiB"), "{reason}");
    let reason = refused_reason(client.set_memory_mib("vm-1001", 262144).await.unwrap_err());
    assert!(reason.contains("at most 131072 MiB"), "{reason}");
    let reason = refused_reason(client.set_memory_mib("vm-1001", 32770).await.unwrap_err());
    assert!(reason.contains("multiple of 4 MiB"), "{reason}");
    assert_eq!(patches(&sim), 0);
}

#[tokio::test]
async fn a_valid_hot_add_is_sent_as_planned_and_the_vm_grows() {
    let (sim, client) = start().await;
    let before = client.vm("vm-1001").await.unwrap();
    let cpu_plan = client.plan_set_cpu_count(&before, 12).unwrap();
    let memory_plan = client.plan_set_memory_mib(&before, 49152).unwrap();
    assert_eq!(cpu_plan[1].body, Some(json!({"count": 12})));
    assert_eq!(memory_plan[1].body, Some(json!({"size_MiB": 49152})));
    sim.state.clear_requests();

    let change = client.set_cpu_count("vm-1001", 12).await.unwrap();
    assert_eq!(
        change,
        HardwareChange {
            vm: "vm-1001".into(),
            resource: Resource::Cpu,
            before: 8,
            after: 12,
            applied: true
        }
    );
    let change = client.set_memory_mib("vm-1001", 49152).await.unwrap();
    assert_eq!(
        (change.before, change.after, change.applied),
        (32768, 49152, true)
    );
    let mut plan = cpu_plan;
    plan.extend(memory_plan);
    assert_sent_as_planned(&sim, &plan, &sim.state.requests());
    assert_eq!(
        log(&sim)
            .iter()
            .filter(|(m, _, _)| m == "PATCH")
            .map(|(_, _, s)| *s)
            .collect::<Vec<_>>(),
        [204, 204]
    );
    let vm = sim.state.vm("vm-1001").unwrap();
    assert_eq!((vm.cpu_count, vm.memory_mib), (12, 49152));
    let info = client.vm("vm-1001").await.unwrap();
    assert_eq!((info.cpu.count, info.memory.size_mib), (12, 49152));

    // Asking for what it already has sends no PATCH.
    sim.state.clear_requests();
    let same = client.set_cpu_count("vm-1001", 12).await.unwrap();
    assert!(!same.applied);
    assert_eq!(patches(&sim), 0);
}

#[tokio::test]
async fn a_powered_off_vm_changes_freely_within_limits() {
    let (sim, client) = start().await;
    // core-standby-london: off, 8 CPU (4 per socket), 32 GiB.
    let change = client.set_cpu_count("vm-2001", 4).await.unwrap();
    assert_eq!((change.before, change.after, change.applied), (8, 4, true));
    let change = client.set_memory_mib("vm-2001", 16388).await.unwrap();
    assert!(change.applied, "4 MiB granularity only while off");
    let vm = sim.state.vm("vm-2001").unwrap();
    assert_eq!((vm.cpu_count, vm.memory_mib), (4, 16388));
    assert!(
        client.set_cpu_count("vm-2001", 6).await.is_err(),
        "still a multiple of 4 per socket"
    );
}

#[tokio::test]
async fn vsphere_errors_are_mapped_to_their_error_type() {
    let (_sim, client) = start().await;
    let err = client.vm("vm-404").await.unwrap_err();
    match &err {
        VsphereError::Api {
            status,
            error_type,
            message,
            method,
            url,
        } => {
            assert_eq!((*status, error_type), (404, &ErrorType::NotFound));
            assert_eq!(
                message,
                "Virtual machine with identifier 'vm-404' does not exist."
            );
            assert_eq!(method, "GET");
            assert!(url.ends_with("/api/vcenter/vm/vm-404"), "{url}");
        }
        other => panic!("expected Api, got {other:?}"),
    }
    assert_eq!(err.status(), Some(404));
    let err = client
        .power("vm-2001", PowerAction::Reset)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), Some(&ErrorType::NotAllowedInCurrentState));
    assert_eq!(err.status(), Some(400));
    let err = client
        .power("vm-404", PowerAction::Start)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), Some(&ErrorType::NotFound));
}

#[tokio::test]
async fn injected_429_503_and_busy_answers_are_retried() {
    let (sim, client) = start().await;
    client.login().await.unwrap();
    sim.state.clear_requests();
    sim.state.set_faults(Faults {
        rate_limit_next: 1,
        retry_after_s: 1,
        fail_next_5xx: 1,
        fail_status: 503,
        path_prefix: Some("/api/vcenter".into()),
        ..Faults::default()
    });
    let started = Instant::now();
    client.find_vm("core-primary-ny").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "Retry-After 1 twice: {:?}",
        started.elapsed()
    );
    assert_eq!(
        log(&sim),
        rows(&[
            ("GET", "/api/vcenter/vm", 429),
            ("GET", "/api/vcenter/vm", 503),
            ("GET", "/api/vcenter/vm", 200),
        ])
    );

    // RESOURCE_BUSY is a 400, retried by its error type.
    sim.state.clear_requests();
    sim.state.set_faults(Faults {
        busy_next: 2,
        ..Faults::default()
    });
    assert_eq!(
        client.power("vm-2001", PowerAction::Start).await.unwrap(),
        PowerOutcome::Done
    );
    assert_eq!(
        log(&sim).iter().map(|r| r.2).collect::<Vec<_>>(),
        [400, 400, 204]
    );

    // When the retries run out, the last error says what it was.
    sim.state.set_faults(Faults {
        fail_next_5xx: 100,
        fail_status: 503,
        retry_after_s: 0,
        ..Faults::default()
    });
    let err = client.list_vms().await.unwrap_err();
    assert_eq!(err.error_type(), Some(&ErrorType::ServiceUnavailable));
    assert_eq!(err.status(), Some(503));
    sim.state.set_faults(Faults::default());

    // A 503 on login is retried too.
    let fresh = self::client(&sim.url(), PASSWORD);
    sim.state.clear_requests();
    sim.state.set_faults(Faults {
        fail_next_5xx: 1,
        fail_status: 503,
        retry_after_s: 0,
        ..Faults::default()
    });
    fresh.login().await.unwrap();
    assert_eq!(
        log(&sim),
        rows(&[("POST", "/api/session", 503), ("POST", "/api/session", 201)])
    );
}

#[tokio::test]
async fn a_failed_host_or_a_failing_power_on_is_a_clear_error_not_retried() {
    let (sim, client) = start().await;
    client.login().await.unwrap();
    sim.state.set_faults(Faults {
        failed_hosts: vec!["esx-ny-01".into()],
        fail_power_on: vec!["core-standby-london".into()],
        ..Faults::default()
    });
    sim.state.clear_requests();
    let err = client
        .power("vm-1001", PowerAction::Stop)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), Some(&ErrorType::ResourceInaccessible));
    assert!(
        err.to_string().contains(
            "Host 'esx-ny-01' of virtual machine 'core-primary-ny' (vm-1001) is not responding"
        ),
        "{err}"
    );
    assert_eq!(sim.state.requests().len(), 1, "not retried");
    let err = client.set_cpu_count("vm-1001", 12).await.unwrap_err();
    assert_eq!(err.error_type(), Some(&ErrorType::ResourceInaccessible));
    assert_eq!(patches(&sim), 0, "the read failed, so nothing was changed");
    // The failover target itself fails to power on.
    let err = client
        .power("vm-2001", PowerAction::Start)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), Some(&ErrorType::UnableToAllocateResource));
    assert!(err.to_string().contains("insufficient resources"), "{err}");
    assert_eq!(
        sim.state.vm("vm-2001").unwrap().power_state,
        sim::PowerState::PoweredOff
    );
}

#[tokio::test]
async fn plans_never_carry_the_password_or_the_session_id() {
    let (_sim, client) = start().await;
    client.login().await.unwrap();
    let info = client.vm("vm-2001").await.unwrap();
    let mut plans = vec![
        client.plan_login(),
        client.plan_find_vm("core-standby-london").unwrap(),
        client.plan_power("vm-2001", PowerAction::Start).unwrap(),
    ];
    plans.extend(client.plan_set_cpu_count(&info, 4).unwrap());
    let text = serde_json::to_string(&plans).unwrap();
    assert!(!text.contains(PASSWORD));
    assert!(
        text.contains("\"vmware-api-session-id\",\"<redacted>\""),
        "{text}"
    );
    assert!(
        text.contains("\"Authorization\",\"Basic <redacted>\""),
        "{text}"
    );
    assert!(!format!("{client:?}").contains(PASSWORD));
}
