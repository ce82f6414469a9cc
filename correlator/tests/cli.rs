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

/// Under systemd (`Type=notify`, `WatchdogSec=`): READY=1 with a STATUS line
/// only once the API accepts connections, WATCHDOG=1 at half of
/// WATCHDOG_USEC, and STOPPING=1 on SIGTERM, then exit 0.
#[test]
fn under_systemd_it_notifies_ready_once_listening_then_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    std::fs::create_dir(dir.path().join("playbooks")).unwrap();
    let config = dir.path().join("correlator.yaml");
    std::fs::write(
        &config,
        "version: 1
listen: 127.0.0.1:0
state_dir: state
agent_auth:
  keys:
    - id: fleet
      secret: { env: FINCORP_AGENT_KEY }
playbooks_dir: playbooks
",
    )
    .unwrap();
    let log = dir.path().join("correlator.log");
    let out = std::fs::File::create(&log).unwrap();
    // systemd sets WATCHDOG_PID to the service's PID; a shell that `exec`s
    // the correlator knows it in advance.
    let child = Command::new("/bin/sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_fincorp-correlator"))
        .arg("--config")
        .arg(&config)
        .env("FINCORP_AGENT_KEY", "0123456789abcdef0123456789abcdef")
        .env("NOTIFY_SOCKET", &socket_path)
        // 400 ms: a ping every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("FINCORP_STATE_DIR")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let mut child_guard = Kill(child);

    let mut seen: Vec<String> = Vec::new();
    let mut recv_until = |want: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let mut buf = [0u8; 4096];
            let Ok(n) = socket.recv(&mut buf) else { break };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.lines().any(|l| l == want) {
                return msg;
            }
        }
        panic!(
            "no {want} from the correlator; got {seen:?}\nlog:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };

    let ready = recv_until("READY=1");
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("READY=1 without a STATUS line: {ready:?}"));
    // The STATUS names the bound address; READY means it accepts connections.
    let addr = status
        .strip_prefix("listening on ")
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("unexpected STATUS: {status:?}"));
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{status:?}"
    );
    std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("READY=1 sent, but {addr} refuses connections: {e}"));
    assert!(status.contains("0 playbook(s)"), "{status:?}");

    recv_until("WATCHDOG=1");
    recv_until("WATCHDOG=1");

    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    recv_until("STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child_guard.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}
