//! S3: core banking's primary in New York fails and FINCORP fails it over to
//! London, with the shipped `core-failover-london` playbook, the real
//! correlator and agent, and the vCenter and ServiceNow simulators.
//!
//! - The primary `core-ny-01` has no agent here: silent, as a dead server
//!   is. A blackbox monitor reports its probe down, then the BMC a critical
//!   power-supply failure (the hardware alert that triggers the playbook).
//! - The agent on this machine plays the London standby host. Its
//!   FINCORP-APP-CORE probe points at a local port where the test starts
//!   the app only once the vCenter simulator reports the standby VM
//!   `core-ldn-01` powered on, as the app would boot with its VM.
//! - The traffic switch (the global load balancer's API) is a local
//!   webhook receiver.
//!
//! The chain: ticket opened → run waits for approval, nothing powered on →
//! approved → primary confirmed down → standby powered on in the simulator
//! → probe healthy on the standby → traffic switched → verified → the
//! ticket's work notes hold every phase with its time.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use fincorp_tests::{
    Recorder, Stack, StackConfig, free_port, get_json, post_json, repo_root, runs, serial, wait_for,
};
use serde_json::{Value, json};

const APP: &str = "FINCORP-APP-CORE";
const PRIMARY: &str = "core-ny-01";
const PLAYBOOK: &str = "core-failover-london";

/// The shipped playbook with this site's values: the load balancer is
/// `switch_url`, the standby host is `standby_host`, and the outage is
/// confirmed over 3 s instead of 30 s. Each value must be found, so a
/// change to the shipped playbook fails here instead of being tested
/// half-way.
fn site_playbook(dir: &Path, switch_url: &str, standby_host: &str) {
    let shipped = repo_root().join(format!("packaging/etc/fincorp/playbooks/{PLAYBOOK}.yaml"));
    let mut text = std::fs::read_to_string(&shipped).unwrap();
    for (from, to) in [
        (
            "  switch_url: https://gslb.fincorp.example/api/v1/pools/core-banking/active-site\n"
                .to_owned(),
            format!("  switch_url: {switch_url}\n"),
        ),
        (
            "  standby_host: core-ldn-01\n".to_owned(),
            format!("  standby_host: {standby_host}\n"),
        ),
        (
            "  probe_down_for: 30s\n".to_owned(),
            "  probe_down_for: 3s\n".to_owned(),
        ),
        (
            "  boot_timeout: 10m\n".to_owned(),
            "  boot_timeout: 2m\n".to_owned(),
        ),
    ] {
        assert_eq!(
            text.matches(&from).count(),
            1,
            "{from:?} not found once in {}",
            shipped.display()
        );
        text = text.replace(&from, &to);
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{PLAYBOOK}.yaml")), text).unwrap();
}

/// The standby's app: waits until the vCenter simulator has the standby VM
/// on, then answers its probe. The time it came up (ms), 0 before.
fn london_app_boots_with_its_vm(vcenter: String, port: u16) -> Arc<AtomicI64> {
    let up_at = Arc::new(AtomicI64::new(0));
    let set = up_at.clone();
    std::thread::spawn(move || {
        loop {
            let vms = get_json(&format!("{vcenter}/sim/vms"), None);
            let on = vms["vms"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["name"] == "core-ldn-01" && v["power_state"] == "POWERED_ON");
            if on {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        set.store(fincorp_api::now_ms(), Ordering::SeqCst);
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nconnection: close\r\n\r\ncore: ready\n",
                );
            });
        }
    });
    up_at
}

fn vm_state(stack: &Stack, name: &str) -> String {
    stack.vc_get("/sim/vms")["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .map(|v| v["power_state"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no VM {name}"))
}

fn run(stack: &Stack, id: &str) -> Value {
    stack.api_get(&format!("/api/v1/runs/{id}"))
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {run:#}"))
}

#[test]
fn s3_core_fails_over_to_london_after_approval_and_the_ticket_logs_every_phase() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let gslb = Recorder::start();
    let probe_port = free_port();
    let pb_dir = work.path().join("playbooks");
    // The agent's host name is only known once the stack exists.
    site_playbook(&pb_dir, &gslb.url, "standby-host-to-be-set");
    let mut stack = Stack::start_without_agent(&StackConfig {
        agent_apps: format!(
            "  - name: {APP}
    select:
      cmdline: 'fincorp-core-banking-ledger --site london'
    probe:
      http:
        url: http://127.0.0.1:{probe_port}/health
        timeout: 500ms
"
        ),
        resolve_after: "10m".into(),
        playbooks_dir: Some(pb_dir.clone()),
        vsphere_inventory: Some(repo_root().join("packaging/local/vsphere-inventory.yaml")),
        ..StackConfig::default()
    });
    let standby = stack.host.clone();
    site_playbook(&pb_dir, &gslb.url, &standby);
    let (status, body) = post_json(
        &format!("{}/api/v1/playbooks/reload", stack.api),
        &json!({}),
    );
    assert_eq!(status, 200, "{body}");
    let vcenter = stack.vcenter.clone().unwrap();
    let app_up_at = london_app_boots_with_its_vm(vcenter, probe_port);
    stack.start_agent();
    assert_eq!(vm_state(&stack, "core-ldn-01"), "POWERED_OFF");
    assert_eq!(vm_state(&stack, PRIMARY), "POWERED_ON");

    // The primary fails: the blackbox probe first (it alone starts nothing),
    // then the BMC.
    let events = format!("{}/api/v1/ingest/events", stack.api);
    let event = |source: &str, name: &str, summary: &str| {
        json!({"events": [{"source": source, "name": name, "host": PRIMARY, "app": APP,
                           "severity": "critical", "summary": summary}]})
    };
    let (status, body) = post_json(
        &events,
        &event(
            "blackbox",
            "probe_down",
            "https://core-ny-01:8443/health: connection refused",
        ),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_json(
        &events,
        &event(
            "hardware",
            "psu_failure",
            "BMC: power supplies PS1 and PS2 failed; host powered off",
        ),
    );
    assert_eq!(status, 200, "{body}");
    let failed_at = fincorp_api::now_ms();

    // The run opens the ticket, then waits for a person: nothing is powered
    // on and no traffic moves before that.
    let waiting = wait_for(
        &mut stack,
        Duration::from_secs(60),
        "the failover run to wait for approval",
        |s| {
            runs(s, &format!("playbook={PLAYBOOK}"))
                .into_iter()
                .find(|r| r["state"] == "awaiting_approval")
        },
    );
    let run_id = waiting["id"].as_str().unwrap().to_owned();
    let incident_id = waiting["incident_id"].as_str().unwrap().to_owned();
    assert_eq!(waiting["approval"]["step_id"], "approve", "{waiting:#}");
    let requested_at = waiting["approval"]["requested_at_ms"].as_i64().unwrap();
    let prompt = waiting["approval"]["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("Fail FINCORP-APP-CORE over from core-ny-01 to London (core-ldn-01)?")
            && prompt.contains("psu_failure"),
        "{prompt}"
    );
    let tickets = stack.sn_get(&format!(
        "/api/now/table/incident?sysparm_query=correlation_id={incident_id}"
    ));
    let tickets = tickets["result"].as_array().unwrap().clone();
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    let ticket = tickets[0].clone();
    assert!(
        prompt.contains(ticket["number"].as_str().unwrap()),
        "the prompt names the ticket: {prompt}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(vm_state(&stack, "core-ldn-01"), "POWERED_OFF");
    assert!(gslb.bodies().is_empty(), "{:?}", gslb.bodies());
    assert_eq!(app_up_at.load(Ordering::SeqCst), 0);

    // An operator approves.
    let (status, body) = post_json(
        &format!("{}/api/v1/runs/{run_id}/approve", stack.api),
        &json!({"by": "alice.sre", "reason": "NY datacenter confirms the PSU failure"}),
    );
    assert_eq!(status, 200, "{body}");
    let approved_at = fincorp_api::now_ms();

    let done = wait_for(
        &mut stack,
        Duration::from_secs(180),
        "the failover run to finish",
        |s| {
            let r = run(s, &run_id);
            matches!(
                r["state"].as_str(),
                Some("succeeded" | "failed" | "rolled_back" | "stopped" | "interrupted")
            )
            .then_some(r)
        },
    );
    assert_eq!(done["state"], "succeeded", "{done:#}\n{}", stack.logs());

    // vCenter powered the standby on, and the app came up on it after that.
    assert_eq!(vm_state(&stack, "core-ldn-01"), "POWERED_ON");
    assert_eq!(
        vm_state(&stack, PRIMARY),
        "POWERED_ON",
        "the primary VM is left alone"
    );
    let app_up_at = app_up_at.load(Ordering::SeqCst);
    assert!(
        app_up_at >= approved_at,
        "the app came up after the approval"
    );

    // Every phase, in order, each after the one before.
    let failover = step(&done, "failover");
    assert_eq!(failover["state"], "succeeded");
    let result = &failover["result"];
    let phases = result["phases"].as_array().unwrap();
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "confirm_down",
            "power_on",
            "wait_probe",
            "switch_traffic",
            "verify"
        ]
    );
    assert!(phases.iter().all(|p| p["outcome"] == "ok"), "{phases:#?}");
    let at = |i: usize, k: &str| phases[i][k].as_i64().unwrap();
    for i in 1..phases.len() {
        assert!(
            at(i - 1, "finished_at_ms") <= at(i, "started_at_ms"),
            "{phases:#?}"
        );
    }
    assert!(
        at(0, "finished_at_ms") - at(0, "started_at_ms") >= 3_000,
        "the outage was confirmed over probe_down_for (3s): {phases:#?}"
    );
    assert!(
        at(1, "finished_at_ms") <= app_up_at,
        "powered on, then the app came up"
    );
    assert!(
        at(2, "finished_at_ms") >= app_up_at,
        "the probe was seen up after the app came up"
    );
    assert_eq!(result["vm_id"], "vm-2001");
    assert_eq!(result["power"], "done");
    assert_eq!(result["standby_host"], standby.as_str());
    assert!(
        phases[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 confirming alert(s) on core-ny-01"),
        "{:#}",
        phases[0]
    );

    // The load balancer was told once, after the probe was healthy.
    let calls = gslb.bodies();
    assert_eq!(
        calls,
        vec![json!({
            "pool": "core-banking",
            "active_site": "london",
            "members": [standby],
            "reason": format!("FINCORP incident {incident_id}: psu_failure on {PRIMARY}"),
        })]
    );
    assert_eq!(result["switch"]["status"], 200);

    // One ticket, whose work notes hold the proposal and the full log.
    let all = stack.sn_get(&format!(
        "/api/now/table/incident?sysparm_query=correlation_id={incident_id}"
    ));
    assert_eq!(all["result"].as_array().unwrap().len(), 1, "{all:#}");
    assert_eq!(
        all["result"][0]["state"], "2",
        "the log step set it In Progress: {all:#}"
    );
    let notes = stack.sn_get(&format!(
        "/api/now/table/sys_journal_field?sysparm_query=element_id={}^element=work_notes",
        ticket["sys_id"].as_str().unwrap()
    ));
    let notes: Vec<String> = notes["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["value"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(notes.len(), 2, "the proposal, then the log: {notes:#?}");
    let all_notes = notes.join("\n---\n");
    assert!(
        all_notes.contains("Waiting for an operator's approval"),
        "{all_notes}"
    );
    let log = notes
        .iter()
        .find(|n| n.contains("failed FINCORP-APP-CORE over"))
        .unwrap_or_else(|| panic!("no failover log in {all_notes}"));
    assert!(
        log.contains("approved by alice.sre: NY datacenter confirms the PSU failure"),
        "{log}"
    );
    for line in result["log"].as_str().unwrap().lines() {
        assert!(
            log.contains(line),
            "{line:?} missing from the ticket:\n{log}"
        );
    }
    for phase in names {
        assert!(log.contains(&format!(" {phase} ok (")), "{phase}: {log}");
    }
    assert!(
        log.contains("core-ldn-01 (vm-2001) was POWERED_OFF; started"),
        "{log}"
    );

    println!(
        "S3: primary failure to approval request {}ms; approval to traffic switched {:.1}s, to verified {:.1}s; standby app up {:.1}s after the approval; ticket {}",
        (requested_at - failed_at).max(0),
        (at(3, "finished_at_ms") - approved_at) as f64 / 1000.0,
        (at(4, "finished_at_ms") - approved_at) as f64 / 1000.0,
        (app_up_at - approved_at) as f64 / 1000.0,
        ticket["number"].as_str().unwrap_or_default()
    );
    drop(stack);
}
