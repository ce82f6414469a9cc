//! End-to-end tests of the `fincorp-sim` binary: it starts, announces its
//! address, serves the Table API with basic auth, stops cleanly on SIGTERM,
//! and uses the documented exit codes.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fincorp-sim");
const PASSWORD_VAR: &str = "FINCORP_SIM_CLI_TEST_PASSWORD";
const PASSWORD: &str = "cli-test-password";

/// Kills the child if a test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn servicenow(listen: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "servicenow",
        "--listen",
        listen,
        "--username",
        "fincorp-operator",
        "--password-env",
        PASSWORD_VAR,
    ])
    .env(PASSWORD_VAR, PASSWORD)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Waits for the "listening on" line and returns the URL it names.
fn wait_for_listening(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("servicenow simulator listening on ") {
                    return url.trim().to_owned();
                }
            }
            Err(e) => panic!("fincorp-sim did not print its listening line within 30 s: {e}"),
        }
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn help_exits_zero_and_names_the_servicenow_subcommand() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("servicenow"));
    let out = Command::new(BIN)
        .args(["servicenow", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--username",
        "--password-env",
        "--password-file",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

#[test]
fn usage_errors_exit_2() {
    // No password source.
    let out = Command::new(BIN)
        .args(["servicenow", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both password sources.
    let out = Command::new(BIN)
        .args([
            "servicenow",
            "--password-env",
            "X",
            "--password-file",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A password variable that is not set.
    let out = Command::new(BIN)
        .args([
            "servicenow",
            "--listen",
            "127.0.0.1:0",
            "--password-env",
            "FINCORP_SIM_SURELY_UNSET_VAR",
        ])
        .env_remove("FINCORP_SIM_SURELY_UNSET_VAR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FINCORP_SIM_SURELY_UNSET_VAR"));
    // No subcommand.
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_port_in_use_is_a_runtime_failure_with_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = servicenow(&addr).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn serves_the_table_api_with_basic_auth_and_stops_on_sigterm() {
    let mut child = Running(servicenow("127.0.0.1:0").spawn().unwrap());
    let url = wait_for_listening(&mut child.0);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = fincorp_api::http::client_builder(Duration::from_secs(10)).build().unwrap();
        let endpoint = format!("{url}/api/now/table/incident");
        let response = http
            .post(&endpoint)
            .basic_auth("fincorp-operator", Some(PASSWORD))
            .header("accept", "application/json")
            .json(&serde_json::json!({"short_description": "from the CLI test", "correlation_id": "cli-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["result"]["number"], "INC0010001");
        assert_eq!(body["result"]["correlation_id"], "cli-1");

        let response = http
            .get(&endpoint)
            .basic_auth("fincorp-operator", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
    });

    let pid = child.0.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success(), "could not send SIGTERM to {pid}");
    let status = wait_with_timeout(&mut child.0, Duration::from_secs(20))
        .expect("fincorp-sim did not exit on SIGTERM");
    assert_eq!(status.code(), Some(0), "SIGTERM should be a clean exit");
}
