//! The `fincorp-correlator` binary's command line: help, config checking and
//! exit codes.

use std::process::Command;

fn correlator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fincorp-correlator"))
}

#[test]
fn help_works() {
    let out = correlator().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--check-config"));
}

#[test]
fn an_invalid_config_exits_64_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("correlator.yaml");
    std::fs::write(
        &file,
        "version: 1\nlisten: 127.0.0.1:9470\nstat_dir: /tmp\n",
    )
    .unwrap();
    let out = correlator()
        .arg("--config")
        .arg(&file)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:1: error: unknown field `stat_dir`",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn the_shipped_config_checks_ok() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/etc/fincorp/correlator.yaml");
    let out = correlator()
        .arg("--config")
        .arg(&shipped)
        .arg("--check-config")
        .env("FINCORP_AGENT_KEY", "0123456789abcdef0123456789abcdef")
        .env("FINCORP_SERVICENOW_PASSWORD", "pw")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK ("));
}

#[test]
fn a_missing_secret_is_named_and_exits_64() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/etc/fincorp/correlator.yaml");
    let out = correlator()
        .arg("--config")
        .arg(&shipped)
        .arg("--check-config")
        .env_remove("FINCORP_AGENT_KEY")
        .env("FINCORP_SERVICENOW_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("environment variable FINCORP_AGENT_KEY is not set"),
        "{stderr}"
    );
}
