//! S2 with ticketing (SPEC §3, issue 6 "Must show" 1): a high-CPU alert on
//! FINCORP-APP-HFT from the real agent (a busy loop the agent recognises as
//! the app) and a DIMM ECC error from the host's BMC (a hardware event) on
//! the same host become ONE incident, the hardware alert joining with its
//! grouping reason recorded. The shipped ServiceNow playbooks
//! (`servicenow-critical-{ticket,update,resolve}.yaml`, copied as installed)
//! open exactly one ticket for it, append a work note when the hardware
//! alert joins, and resolve the ticket (state 6 with a close code) when the
//! incident resolves. The ServiceNow simulator is asked directly, by
//! correlation_id, what it holds.
//!
//! The other shipped playbooks are left out: the HFT reallocation needs a
//! writable cgroup and is S1's subject.

use std::process::{Child, Command};
use std::time::Duration;

use fincorp_api::rest::{IncidentDetail, IncidentState, RunState};
use fincorp_tests::*;
use serde_json::{Value, json};

const APP: &str = "FINCORP-APP-HFT";
const TICKET_PLAYBOOKS: &[&str] = &[
    "servicenow-critical-ticket",
    "servicenow-critical-update",
    "servicenow-critical-resolve",
];

/// A busy loop whose command line carries `marker`; killed when dropped.
struct Burner(Child);

impl Burner {
    fn start(marker: &str) -> Burner {
        Burner(
            Command::new("/bin/sh")
                .args(["-c", "while :; do :; done", marker])
                .spawn()
                .expect("spawn the CPU burner"),
        )
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.stop();
    }
}

fn hardware_event(host: &str, status: &str) -> Value {
    json!({"events": [{
        "source": "hardware",
        "name": "dimm_ecc_uncorrectable",
        "host": host,
        "severity": "critical",
        "status": status,
        "summary": "BMC: uncorrectable ECC error on DIMM A3",
        "labels": {"slot": "A3", "bmc": "idrac"},
    }]})
}

/// The tickets the simulator holds for a correlation_id (any state).
fn tickets(stack: &Stack, correlation_id: &str) -> Vec<Value> {
    stack.sn_get(&format!(
        "/api/now/table/incident?sysparm_query=correlation_id={correlation_id}"
    ))["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn work_notes(stack: &Stack, sys_id: &str) -> Vec<String> {
    stack.sn_get(&format!(
        "/api/now/table/sys_journal_field?sysparm_query=element_id={sys_id}^element=work_notes"
    ))["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["value"].as_str().map(str::to_owned))
        .collect()
}

fn detail(stack: &Stack, id: &str) -> IncidentDetail {
    serde_json::from_value(stack.api_get(&format!("/api/v1/incidents/{id}"))).unwrap()
}

/// The runs of `playbook` on the incident that have finished.
fn finished(d: &IncidentDetail, playbook: &str) -> Vec<RunState> {
    d.runs
        .iter()
        .filter(|r| r.playbook == playbook && !r.state.is_active())
        .map(|r| r.state)
        .collect()
}

#[test]
fn s2_cpu_and_hardware_alerts_make_one_incident_with_one_ticket_updated_then_resolved() {
    let _serial = serial();
    let pb_dir = tempfile::tempdir().unwrap();
    for name in TICKET_PLAYBOOKS {
        std::fs::copy(
            repo_root().join(format!("packaging/etc/fincorp/playbooks/{name}.yaml")),
            pb_dir.path().join(format!("{name}.yaml")),
        )
        .unwrap();
    }
    let marker = format!("fincorp-s2-hft-{}", std::process::id());
    let mut stack = Stack::start(&StackConfig {
        agent_apps: format!(
            "  - name: {APP}
    select:
      cmdline: '{marker}'
    rules:
      - name: cpu_high
        when: cpu > 50
        for: 1s
        severity: critical
"
        ),
        resolve_after: "3s".into(),
        playbooks_dir: Some(pb_dir.path().to_path_buf()),
        ..StackConfig::default()
    });
    let host = stack.host.clone();
    let mut burner = Burner::start(&marker);

    // 1. The agent's CPU alert opens the incident; the ticket playbook
    //    opens one ticket keyed by the incident id.
    let incident = wait_for(
        &mut stack,
        Duration::from_secs(30),
        "the CPU incident",
        |s| {
            s.api_get(&format!("/api/v1/incidents?app={APP}"))["incidents"][0]["id"]
                .as_str()
                .map(str::to_owned)
        },
    );
    let ticket = wait_for(&mut stack, Duration::from_secs(20), "the ticket", |s| {
        tickets(s, &incident).first().cloned()
    });
    let sys_id = ticket["sys_id"].as_str().unwrap().to_owned();
    assert_eq!(ticket["active"], "true");
    assert_eq!(ticket["urgency"], "1");

    // 2. The BMC reports an uncorrectable ECC error on the same host: it
    //    joins the incident (not a new one), with the reason recorded...
    let (status, body) = post_json(
        &format!("{}/api/v1/ingest/events", stack.api),
        &hardware_event(&host, "firing"),
    );
    assert_eq!(status, 200, "{body}");
    let d = wait_for(
        &mut stack,
        Duration::from_secs(10),
        "the hardware alert joining",
        |s| {
            let d = detail(s, &incident);
            (d.alerts.len() == 2).then_some(d)
        },
    );
    let hw = d.alerts.iter().find(|a| a.source == "hardware").unwrap();
    assert_eq!(hw.host, host);
    let joined = d
        .timeline
        .iter()
        .find(|t| t.kind == "alert_joined" && t.data["source"] == "hardware")
        .unwrap_or_else(|| panic!("no grouping decision recorded: {:#?}", d.timeline));
    assert!(
        joined.data["reason"]["detail"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{joined:?}"
    );
    let all = stack.api_get("/api/v1/incidents")["incidents"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(all.len(), 1, "one incident for both alerts: {all:#?}");

    // ...and the update playbook notes it in the same ticket.
    let notes = wait_for(&mut stack, Duration::from_secs(30), "the work note", |s| {
        let notes = work_notes(s, &sys_id);
        notes
            .iter()
            .any(|n| n.contains("dimm_ecc_uncorrectable"))
            .then_some(notes)
    });
    assert!(
        notes.iter().any(
            |n| n.contains("[hardware, critical] joined FINCORP incident") && n.contains(&incident)
        ),
        "{notes:#?}"
    );

    // 3. Both conditions clear: the incident resolves after its quiet
    //    period, and the resolve playbook resolves the ticket.
    burner.stop();
    let (status, body) = post_json(
        &format!("{}/api/v1/ingest/events", stack.api),
        &hardware_event(&host, "resolved"),
    );
    assert_eq!(status, 200, "{body}");
    let resolved = wait_for(
        &mut stack,
        Duration::from_secs(40),
        "the ticket resolved",
        |s| {
            tickets(s, &incident)
                .into_iter()
                .find(|t| t["state"] == "6")
        },
    );
    assert_eq!(resolved["sys_id"], sys_id.as_str());
    assert_eq!(resolved["close_code"], "Solution provided");
    assert_eq!(resolved["active"], "false");
    assert!(
        resolved["close_notes"]
            .as_str()
            .is_some_and(|n| n.contains(&incident) && n.contains("2 alert(s)")),
        "{resolved:#}"
    );

    // Exactly one ticket, in ServiceNow and on the incident; each playbook
    // ran once and succeeded.
    let everything = stack.sn_get("/api/now/table/incident")["result"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(everything.len(), 1, "{everything:#?}");
    let d = wait_for(
        &mut stack,
        Duration::from_secs(10),
        "the runs to finish",
        |s| {
            let d = detail(s, &incident);
            (TICKET_PLAYBOOKS.iter().all(|p| !finished(&d, p).is_empty())
                && d.runs.iter().all(|r| !r.state.is_active()))
            .then_some(d)
        },
    );
    assert_eq!(d.incident.state, IncidentState::Resolved);
    assert_eq!(d.tickets.len(), 1);
    assert_eq!(d.tickets[0].number, ticket["number"].as_str().unwrap());
    // The ticket playbook ran for the opening alert and again for the
    // joining one (a lookup that found the ticket); the others once.
    for p in TICKET_PLAYBOOKS {
        let runs = if *p == "servicenow-critical-ticket" {
            2
        } else {
            1
        };
        assert_eq!(
            finished(&d, p),
            vec![RunState::Succeeded; runs],
            "{p}: {:#?}",
            d.runs
        );
    }
    assert!(
        d.timeline
            .iter()
            .any(|t| t.kind == "run_decided" && t.data["trigger"] == "incident:resolved"),
        "{:#?}",
        d.timeline
    );
    assert_eq!(
        work_notes(&stack, &sys_id)
            .iter()
            .filter(|n| n.contains("dimm_ecc_uncorrectable"))
            .count(),
        1,
        "one note per joining alert"
    );
}
