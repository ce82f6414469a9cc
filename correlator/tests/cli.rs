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
        .env("FINCORP_VSPHERE_PASSWORD", "pw")
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
        .env("FINCORP_VSPHERE_PASSWORD", "pw")
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

/// With `api.tls`, the API is served over HTTPS with the configured
/// certificate (a client trusting it gets 200 from /healthz) and plain HTTP
/// on that port gets no answer; a key that does not match the certificate is
/// refused by --check-config, naming the section.
#[test]
fn api_tls_serves_https_with_the_configured_certificate() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("api.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("api.key"), cert.key_pair.serialize_pem()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("other.key"), other.key_pair.serialize_pem()).unwrap();
    std::fs::create_dir(dir.path().join("playbooks")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let write_config = |key: &str| {
        let config = dir.path().join("correlator.yaml");
        std::fs::write(
            &config,
            format!(
                "version: 1
listen: 127.0.0.1:{port}
state_dir: state
agent_auth:
  keys:
    - id: fleet
      secret: {{ env: FINCORP_AGENT_KEY }}
playbooks_dir: playbooks
api:
  tls:
    cert: api.crt
    key: {key}
"
            ),
        )
        .unwrap();
        config
    };
    // A mismatched key: refused at check time.
    let config = write_config("other.key");
    let out = correlator()
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .env("FINCORP_AGENT_KEY", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("api.tls") && stderr.contains("do not belong together"),
        "{stderr}"
    );

    let config = write_config("api.key");
    let log = dir.path().join("correlator.log");
    let out_file = std::fs::File::create(&log).unwrap();
    let mut child = correlator()
        .arg("--config")
        .arg(&config)
        .env("FINCORP_AGENT_KEY", "0123456789abcdef0123456789abcdef")
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .spawn()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let https_get = || -> Option<String> {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(client.clone(), name).ok()?;
        let mut tls = rustls::StreamOwned::new(conn, &mut tcp);
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer);
        (!answer.is_empty()).then_some(answer)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Some(a) = https_get() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no HTTPS answer; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    // Plain HTTP on the TLS port: no HTTP answer.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on https://"),
    );
    let _ = child.kill();
    let _ = child.wait();
}
