//! The `fincorpctl` binary's command line.

use std::process::Command;

fn ctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fincorpctl"))
}

#[test]
fn help_lists_the_commands() {
    let out = ctl().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["incidents", "playbook", "chaos"] {
        assert!(text.contains(cmd), "{text}");
    }
    let out = ctl()
        .args(["chaos", "cpu-spike", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--step"));
}

#[test]
fn usage_errors_exit_2() {
    let out = ctl().args(["chaos", "cpu-spike"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_invalid_playbook_exits_64_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, "version: 1\nname: p\ntrigger: {}\nsteps:\n  - id: s\n    action: servicenow.create\n    with: {}\n").unwrap();
    let out = ctl()
        .args(["playbook", "validate"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{}:7:11: error: missing required parameter `short_description`",
            file.display()
        )),
        "{stdout}"
    );
}

#[test]
fn an_unreachable_correlator_is_a_clear_failure() {
    let out = ctl()
        .args(["--url", "http://127.0.0.1:1", "incidents", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot reach the correlator at http://127.0.0.1:1")
    );
}
