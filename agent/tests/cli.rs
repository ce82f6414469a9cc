//! The `fincorp-agent` binary's command line: help, exit codes and
//! `--check-config` output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_fincorp-agent");

fn agent(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("FINCORP_AGENT_CONFIG")
        .env_remove("FINCORP_AGENT_KEY");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run fincorp-agent")
}

fn shipped_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/fincorp/agent.yaml")
}

#[test]
fn help_describes_the_flags() {
    let out = run(&mut agent(&["--help"]));
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--check-config",
        "--log-format",
        "--state-dir",
        "FINCORP_AGENT_STATE_DIR",
        "FINCORP_AGENT_CONFIG",
        "/etc/fincorp/agent.yaml",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_usage_error_exits_2() {
    let out = run(&mut agent(&["--log-format", "xml"]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&mut agent(&["--no-such-flag"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_shipped_example_checks_ok_with_the_key_set() {
    let example = shipped_example();
    let out = run(agent(&["--check-config", "--config"])
        .arg(&example)
        .env("FINCORP_AGENT_KEY", "0123456789abcdef0123456789abcdef"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("0123456789abcdef"),
        "the secret is never printed: {stderr}"
    );
}

#[test]
fn the_shipped_example_without_the_key_names_the_variable_and_exits_64() {
    let example = shipped_example();
    let out = run(agent(&["--check-config"]).env("FINCORP_AGENT_CONFIG", &example));
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("environment variable FINCORP_AGENT_KEY is not set (at correlator.secret)"),
        "{stderr}"
    );
}

#[test]
fn a_broken_config_exits_64_with_every_problem_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(
        &path,
        "\
version: 1
host: web01
correlator:
  url: http://127.0.0.1:9470
  key_id: fleet
  secret: { env: FINCORP_AGENT_KEY }
apps:
  - name: A
    select:
      exe: a
    rules:
      - name: r
        when: cpu_pct > 80
  - name: B
    select:
      cmdline: '(('
",
    )
    .unwrap();
    let out = run(agent(&["--check-config", "--config"])
        .arg(&path)
        .env("FINCORP_AGENT_KEY", "0123456789abcdef0123456789abcdef"));
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let file = path.display().to_string();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{file}:13:15: error: unknown metric `cpu_pct`")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{file}:16:16: error: invalid regex")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_unknown_key_or_missing_file_exits_64_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, "version: 1\nhots: web01\n").unwrap();
    // No --check-config: an invalid config must stop the agent before it starts.
    let out = run(agent(&["--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{}:2:1: error: unknown field `hots`",
            path.display()
        )),
        "{stderr}"
    );

    let out = run(agent(&["--config"]).arg(dir.path().join("missing.yaml")));
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.yaml:1:1: error: cannot read file")
    );
}
