//! `fincorpctl audit verify` against a running correlator: intact after
//! operators act, and reporting the entry when the database is edited behind
//! the correlator's back or an entry is deleted.

use std::process::Command;
use std::time::Duration;

use fincorp_tests::*;
use serde_json::json;

fn ctl(stack: &Stack, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("fincorpctl"))
        .arg("--url")
        .arg(&stack.api)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn audit_verify_detects_an_edited_or_deleted_entry() {
    let _serial = serial();
    // No playbooks: the entries counted below are the operators' alone (the
    // shipped ticket playbooks would audit their ServiceNow actions too).
    let no_playbooks = tempfile::tempdir().unwrap();
    let mut stack = Stack::start_without_agent(&StackConfig {
        agent_apps: String::new(),
        resolve_after: "5s".into(),
        playbooks_dir: Some(no_playbooks.path().to_path_buf()),
        ..StackConfig::default()
    });
    let ev = json!({"events": [{"source": "hardware", "name": "psu_failed", "host": "core-ny-01", "severity": "critical"}]});
    assert_eq!(
        post_json(&format!("{}/api/v1/ingest/events", stack.api), &ev).0,
        200
    );
    let id = wait_for(&mut stack, Duration::from_secs(10), "the incident", |s| {
        s.api_get("/api/v1/incidents")["incidents"][0]["id"]
            .as_str()
            .map(str::to_owned)
    });
    for (op, reason) in [
        ("ack", "looking"),
        ("resolve", "PSU swapped"),
        ("close", "done"),
    ] {
        let (ok, out) = ctl(
            &stack,
            &["incidents", op, &id, "--reason", reason, "--by", "alice"],
        );
        assert!(ok, "{op}: {out}");
    }
    let (ok, out) = ctl(
        &stack,
        &[
            "silences",
            "add",
            "host=core-ny-01",
            "--duration",
            "1h",
            "--comment",
            "PSU work",
            "--by",
            "bob",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = ctl(&stack, &["audit", "verify"]);
    assert!(ok && out.contains("audit log intact: 4 entries"), "{out}");

    // Someone edits an entry in the database.
    let db = rusqlite::Connection::open(stack.database()).unwrap();
    db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2", [])
        .unwrap();
    let (ok, out) = ctl(&stack, &["audit", "verify"]);
    assert!(!ok && out.contains("entry 2 was altered"), "{out}");
    db.execute("UPDATE audit SET actor = 'alice' WHERE seq = 2", [])
        .unwrap();
    let (ok, _) = ctl(&stack, &["audit", "verify"]);
    assert!(ok);

    // ...or deletes one.
    db.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
    let (ok, out) = ctl(&stack, &["audit", "verify"]);
    assert!(
        !ok && out.contains("entry 4 follows entry 2: entries are missing"),
        "{out}"
    );
}
