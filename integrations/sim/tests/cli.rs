//! End-to-end tests of the `fincorp-sim` binary: each simulator starts,
//! announces its address, serves its API (ServiceNow with basic auth and
//! OAuth; vSphere with sessions), stops cleanly on SIGTERM, and the binary
//! uses the documented exit codes.

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

/// Waits for the "servicenow ... listening on" line; the URL it names.
fn wait_for_listening(child: &mut Child) -> String {
    wait_for_line(child, "servicenow simulator listening on ")
}

/// Waits for a line starting with `prefix`; the rest of it.
fn wait_for_line(child: &mut Child, prefix: &str) -> String {
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
                if let Some(url) = line.strip_prefix(prefix) {
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
fn help_exits_zero_and_names_the_subcommands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("servicenow"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("vsphere"));
    let out = Command::new(BIN)
        .args(["vsphere", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--username",
        "--password-env",
        "--password-file",
        "--inventory",
        "--session-idle-timeout",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
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
        "--oauth-client-id",
        "--oauth-secret-env",
        "--token-lifetime",
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

const VSPHERE_USER: &str = "fincorp-automation@vsphere.local";

fn vsphere(listen: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "vsphere",
        "--listen",
        listen,
        "--username",
        VSPHERE_USER,
        "--password-env",
        PASSWORD_VAR,
    ])
    .env(PASSWORD_VAR, PASSWORD)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

fn sigterm_and_wait(child: &mut Running) {
    let pid = child.0.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success(), "could not send SIGTERM to {pid}");
    let status = wait_with_timeout(&mut child.0, Duration::from_secs(20))
        .expect("fincorp-sim did not exit on SIGTERM");
    assert_eq!(status.code(), Some(0), "SIGTERM should be a clean exit");
}

#[test]
fn serves_the_vsphere_api_with_sessions_and_stops_on_sigterm() {
    let mut child = Running(vsphere("127.0.0.1:0").spawn().unwrap());
    let url = wait_for_line(&mut child.0, "vsphere simulator listening on ");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = fincorp_api::http::client_builder(Duration::from_secs(10))
            .build()
            .unwrap();
        let response = http
            .post(format!("{url}/api/session"))
            .basic_auth(VSPHERE_USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let session: String = response.json().await.unwrap();

        let response = http
            .get(format!("{url}/api/vcenter/vm"))
            .header("vmware-api-session-id", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let vms: serde_json::Value = response.json().await.unwrap();
        let names: Vec<&str> = vms
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"core-primary-ny"), "{names:?}");
        assert!(names.contains(&"core-standby-london"), "{names:?}");

        let response = http
            .post(format!("{url}/api/vcenter/vm/vm-2001/power?action=start"))
            .header("vmware-api-session-id", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 204);

        let response = http
            .get(format!("{url}/api/vcenter/vm"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "no session");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error_type"], "UNAUTHENTICATED");
    });
    sigterm_and_wait(&mut child);
}

#[test]
fn a_vsphere_inventory_file_is_served_and_a_bad_one_exits_64_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("inventory.yaml");
    std::fs::write(
        &good,
        "vms:\n  - vm: vm-77\n    name: lab-vm\n    host: esx-lab-01\n    power_state: POWERED_OFF\n    cpu_count: 2\n    memory_mib: 2048\n",
    )
    .unwrap();
    let mut cmd = vsphere("127.0.0.1:0");
    cmd.arg("--inventory").arg(&good);
    let mut child = Running(cmd.spawn().unwrap());
    let url = wait_for_line(&mut child.0, "vsphere simulator listening on ");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = fincorp_api::http::client(Duration::from_secs(10));
        let vms: serde_json::Value = http
            .get(format!("{url}/sim/vms"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(vms["vms"].as_array().unwrap().len(), 1);
        assert_eq!(vms["vms"][0]["vm"], "vm-77");
    });
    sigterm_and_wait(&mut child);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "vms:\n  - name: lab-vm\n    host: esx-lab-01\n    power_state: POWERED_OFF\n    cpu_count: 3\n    cores_per_socket: 2\n    memory_mib: 2048\n",
    )
    .unwrap();
    let out = vsphere("127.0.0.1:0")
        .arg("--inventory")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:5:"), "{stderr}");
    assert!(
        stderr.contains("not a multiple of cores_per_socket"),
        "{stderr}"
    );
}

#[test]
fn servicenow_with_oauth_issues_tokens_the_table_api_accepts() {
    let mut cmd = servicenow("127.0.0.1:0");
    cmd.args([
        "--oauth-client-id",
        "fincorp-cli-test",
        "--oauth-secret-env",
        "FINCORP_SIM_CLI_TEST_OAUTH_SECRET",
        "--token-lifetime",
        "10m",
    ])
    .env("FINCORP_SIM_CLI_TEST_OAUTH_SECRET", "cli-oauth-secret");
    let mut child = Running(cmd.spawn().unwrap());
    let url = wait_for_listening(&mut child.0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = fincorp_api::http::client(Duration::from_secs(10));
        let response = http
            .post(format!("{url}/oauth_token.do"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=password&client_id=fincorp-cli-test&client_secret=cli-oauth-secret&username=fincorp-operator&password={PASSWORD}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let grant: serde_json::Value = response.json().await.unwrap();
        assert_eq!(grant["expires_in"], 600);
        let token = grant["access_token"].as_str().unwrap();
        let response = http
            .get(format!("{url}/api/now/table/incident"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    });
    sigterm_and_wait(&mut child);

    // An OAuth secret without a client id is a usage error.
    let out = Command::new(BIN)
        .args([
            "servicenow",
            "--password-env",
            PASSWORD_VAR,
            "--oauth-secret-env",
            "X",
        ])
        .env(PASSWORD_VAR, PASSWORD)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
