//! The `fincorp-agent` binary in operation: SIGHUP reload (a bad config
//! keeps the old one), sd_notify READY/WATCHDOG/RELOADING/STOPPING, the
//! spool across `kill -9`, SIGTERM flushing, a full spool blocking
//! sampling, the overhead budget, and `/metrics` checked by promtool.
//! Each test runs the real binary against the in-process mock correlator.

#[allow(dead_code)]
#[path = "../src/testing.rs"]
mod testing;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fincorp_api::wire::AgentBatch;
use testing::{MockCorrelator, SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_fincorp-agent");

/// A running agent; killed when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(config: &Path, env: &[(&str, &str)]) -> Agent {
        let log = config.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // systemd sets WATCHDOG_PID to the service's PID; a shell that
        // `exec`s the agent knows it in advance.
        let own_pid = env
            .iter()
            .any(|(k, v)| *k == "WATCHDOG_PID" && *v == "self");
        let mut cmd = if own_pid {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", BIN]);
            c
        } else {
            Command::new(BIN)
        };
        cmd.arg("--config")
            .arg(config)
            .env("FINCORP_AGENT_KEY", SECRET)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("FINCORP_AGENT_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in env.iter().filter(|(k, _)| *k != "WATCHDOG_PID") {
            cmd.env(k, v);
        }
        Agent {
            child: cmd.spawn().expect("start fincorp-agent"),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit; its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config with `apps` (YAML indented by two spaces) and `extra` top-level keys.
fn write_config(dir: &Path, url: &str, metrics_port: u16, extra: &str, apps: &str) -> PathBuf {
    let path = dir.join("agent.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1
host: ops-host
sample_interval: 200ms
heartbeat_interval: 200ms
discovery_interval: 200ms
state_dir: state
shutdown_grace: 10s
metrics:
  listen: 127.0.0.1:{metrics_port}
correlator:
  url: {url}
  key_id: fleet
  secret: {{ env: FINCORP_AGENT_KEY }}
  timeout: 2s
{extra}apps:
{apps}"
        ),
    )
    .unwrap();
    path
}

const ONE_APP: &str = "  - name: FINCORP-APP-OPS-A
    select: { exe: no-such-exe-ops-a }
";

async fn get(url: &str) -> Option<(u16, String)> {
    let client = fincorp_api::http::client(Duration::from_secs(2));
    let resp = client.get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// Polls `url` until `cond(body)` holds; the last body, or a panic with the agent's log.
async fn wait_metrics(
    agent: &Agent,
    url: &str,
    timeout: Duration,
    cond: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some((200, body)) = get(url).await {
            if cond(&body) {
                return body;
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "condition on {url} not met in {timeout:?}; last body:\n{last}\nagent log:\n{}",
        agent.logs()
    );
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_config_keeps_the_old_one_when_invalid_and_metrics_pass_promtool() {
    let mock = MockCorrelator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &mock.url, port, "", ONE_APP);
    let agent = Agent::start(&config, &[]);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let body = wait_metrics(&agent, &url, Duration::from_secs(20), |b| {
        b.contains("fincorp_app_up{app=\"FINCORP-APP-OPS-A\"}")
            && metric(b, "fincorp_agent_batches_sent_total").unwrap_or(0.0) >= 1.0
    })
    .await;
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/healthz"))
            .await
            .map(|r| r.0),
        Some(200)
    );

    // promtool lints the live exposition.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): apt-get install -y prometheus; this test fails rather than skip the check"));
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A broken config: the agent logs why (file:line:col) and keeps running the old one.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good.replace(
            "select: { exe: no-such-exe-ops-a }",
            "select: { exe: a, colour: red }",
        ),
    )
    .unwrap();
    agent.signal(rustix::process::Signal::HUP);
    let body = wait_metrics(&agent, &url, Duration::from_secs(10), |b| {
        b.contains("fincorp_agent_config_reloads_total{result=\"error\"} 1")
    })
    .await;
    assert_eq!(
        metric(&body, "fincorp_agent_config_last_reload_successful"),
        Some(0.0)
    );
    assert!(
        body.contains("fincorp_app_up{app=\"FINCORP-APP-OPS-A\"}"),
        "old config still in force"
    );
    let logs = agent.logs();
    let file = config.display().to_string();
    assert!(
        logs.contains("config reload refused")
            && logs.contains(&format!("{file}:"))
            && logs.contains("unknown field `colour`"),
        "{logs}"
    );

    // A good config with another app: applied without a restart.
    std::fs::write(
        &config,
        good.replace("FINCORP-APP-OPS-A", "FINCORP-APP-OPS-B"),
    )
    .unwrap();
    agent.signal(rustix::process::Signal::HUP);
    let body = wait_metrics(&agent, &url, Duration::from_secs(10), |b| {
        b.contains("fincorp_app_up{app=\"FINCORP-APP-OPS-B\"}")
    })
    .await;
    assert!(!body.contains("FINCORP-APP-OPS-A"), "{body}");
    assert!(body.contains("fincorp_agent_config_reloads_total{result=\"ok\"} 1"));
    assert_eq!(
        metric(&body, "fincorp_agent_config_last_reload_successful"),
        Some(1.0)
    );
    let mut agent = agent;
    assert!(agent.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_sends_ready_watchdog_reloading_and_stopping() {
    let mock = MockCorrelator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let config = write_config(dir.path(), &mock.url, free_port(), "", ONE_APP);
    let mut agent = Agent::start(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
            ("WATCHDOG_PID", "self"),
        ],
    );
    let mut seen: Vec<String> = Vec::new();
    let recv_until = |want: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let mut buf = [0u8; 4096];
            let Ok(n) = socket.recv(&mut buf) else { break };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.lines().any(|l| l == want) {
                return;
            }
        }
        panic!(
            "no {want} from the agent; got {seen:?}\nlog:\n{}",
            std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
        );
    };
    recv_until("READY=1", &mut seen);
    assert!(
        seen.last()
            .unwrap()
            .contains("STATUS=sampling 1 apps every 200ms"),
        "{seen:?}"
    );
    // WATCHDOG_USEC=400ms: pings every 200 ms.
    recv_until("WATCHDOG=1", &mut seen);
    recv_until("WATCHDOG=1", &mut seen);
    agent.signal(rustix::process::Signal::HUP);
    recv_until("RELOADING=1", &mut seen);
    assert!(seen.last().unwrap().contains("MONOTONIC_USEC="), "{seen:?}");
    recv_until("READY=1", &mut seen);
    agent.signal(rustix::process::Signal::TERM);
    recv_until("STOPPING=1", &mut seen);
    assert_eq!(agent.wait_exit(Duration::from_secs(15)), Some(0));
}

fn spooled(dir: &Path) -> Vec<u64> {
    let mut seqs: Vec<u64> = std::fs::read_dir(dir.join("state/spool"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_suffix(".batch")?.split('-').next()?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    seqs.sort();
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_spooled_while_the_correlator_is_down_survive_kill_9_and_are_delivered_after_restart()
 {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        dir.path(),
        &format!("http://{addr}"),
        free_port(),
        "",
        ONE_APP,
    );
    let mut agent = Agent::start(&config, &[]);
    // Nothing listens on `addr`: heartbeats pile up in the spool.
    let deadline = Instant::now() + Duration::from_secs(20);
    while spooled(dir.path()).len() < 5 {
        assert!(
            Instant::now() < deadline,
            "nothing spooled:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.signal(rustix::process::Signal::KILL);
    assert_eq!(
        agent.wait_exit(Duration::from_secs(5)),
        None,
        "killed by a signal, no exit code"
    );
    let at_kill = spooled(dir.path());
    assert!(at_kill.len() >= 5, "{at_kill:?}");
    assert_eq!(
        at_kill,
        (at_kill[0]..=at_kill[at_kill.len() - 1]).collect::<Vec<_>>(),
        "contiguous: nothing lost before the kill"
    );

    let mock = MockCorrelator::start_on(&addr).await;
    let agent = Agent::start(&config, &[]);
    let last_killed = *at_kill.last().unwrap();
    let delivered = |m: &MockCorrelator| m.batches().iter().any(|b| b.seq > last_killed);
    assert!(
        mock.wait_until(Duration::from_secs(20), delivered).await,
        "no new batch after the restart:\n{}",
        agent.logs()
    );
    let got: Vec<u64> = mock.batches().iter().map(|b| b.seq).collect();
    let first_new = got.iter().position(|s| *s > last_killed).unwrap();
    assert_eq!(
        &got[..first_new],
        &at_kill[..],
        "every spooled batch, in order, before new ones"
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "no duplicates, in order: {got:?}"
    );
    let batches: Vec<AgentBatch> = mock.batches();
    assert!(batches.iter().all(|b| b.agent.host == "ops-host"));
    assert!(
        agent
            .logs()
            .contains("batches left in the spool by an earlier run will be sent first")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_spool_within_the_grace_period() {
    let mock = MockCorrelator::start().await;
    // The first attempt is told to come back in 60 s; batches queue behind it.
    mock.state
        .ingest_script
        .lock()
        .unwrap()
        .push_back((503, Some(60)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &mock.url, free_port(), "", ONE_APP);
    let mut agent = Agent::start(&config, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while spooled(dir.path()).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "nothing spooled:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        mock.batches().is_empty(),
        "still waiting out the Retry-After"
    );
    let stopped = Instant::now();
    agent.signal(rustix::process::Signal::TERM);
    assert_eq!(
        agent.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        agent.logs()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "within the grace, not after the 60 s Retry-After"
    );
    assert!(
        spooled(dir.path()).is_empty(),
        "flushed: {:?}\n{}",
        spooled(dir.path()),
        agent.logs()
    );
    let got: Vec<u64> = mock.batches().iter().map(|b| b.seq).collect();
    assert!(
        got.len() >= 4 && got.windows(2).all(|w| w[1] == w[0] + 1),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_with_the_block_policy_stops_sampling_until_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!("http://{addr}"),
        port,
        "spool:\n  max_size: 64KiB\n  when_full: block\n",
        // Twenty apps make each batch a few KiB, so the spool fills fast.
        &(0..20)
            .map(|i| {
                format!(
                    "  - name: FINCORP-APP-FILL-{i}\n    select: {{ exe: no-such-exe-fill-{i} }}\n"
                )
            })
            .collect::<String>(),
    );
    let agent = Agent::start(&config, &[]);
    let url = format!("http://127.0.0.1:{port}/metrics");
    // Each batch is a few KiB; 64 KiB fill up in a few seconds at 200 ms.
    let body = wait_metrics(&agent, &url, Duration::from_secs(60), |b| {
        metric(b, "fincorp_agent_sampling_blocked_seconds_total").is_some()
            && get_blocking_health(port) == Some(503)
    })
    .await;
    let spool_bytes = metric(&body, "fincorp_agent_spool_bytes").unwrap();
    assert!(spool_bytes <= 65_536.0, "{spool_bytes}");
    assert_eq!(
        metric(&body, "fincorp_agent_batches_dropped_total"),
        Some(0.0),
        "block never drops"
    );
    // The baseline is taken a moment after the block shows: a sample that
    // was in flight when the spool filled may still be counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = get(&url).await.unwrap().1;
    let samples = metric(&settled, "fincorp_agent_samples_total").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = get(&url).await.unwrap().1;
    assert_eq!(
        metric(&later, "fincorp_agent_samples_total"),
        Some(samples),
        "sampling is blocked"
    );
    // The correlator comes back: the spool drains and sampling resumes.
    let mock = MockCorrelator::start_on(&addr).await;
    let body = wait_metrics(&agent, &url, Duration::from_secs(60), |b| {
        metric(b, "fincorp_agent_samples_total").unwrap_or(0.0) > samples + 3.0
    })
    .await;
    assert!(metric(&body, "fincorp_agent_sampling_blocked_seconds_total").unwrap() > 0.5);
    let got: Vec<u64> = mock.batches().iter().map(|b| b.seq).collect();
    assert!(
        !got.is_empty() && got.windows(2).all(|w| w[1] == w[0] + 1),
        "nothing lost: {got:?}"
    );
    assert!(agent.logs().contains("spool full: sampling is blocked"));
}

fn get_blocking_health(port: u16) -> Option<u16> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_overhead_budget_the_agent_samples_less_often_and_says_so() {
    let mock = MockCorrelator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A budget no process can meet: 0.0001% of a core and 1 MB.
    let config = write_config(
        dir.path(),
        &mock.url,
        port,
        "overhead_budget:\n  cpu_pct: 0.0001\n  rss_mb: 1\n  window: 1s\n  max_sample_interval: 800ms\n",
        ONE_APP,
    );
    let agent = Agent::start(&config, &[]);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let body = wait_metrics(&agent, &url, Duration::from_secs(30), |b| {
        metric(b, "fincorp_agent_sample_interval_seconds") == Some(0.8)
    })
    .await;
    assert_eq!(
        metric(&body, "fincorp_agent_configured_sample_interval_seconds"),
        Some(0.2)
    );
    assert_eq!(
        metric(&body, "fincorp_agent_overhead_budget_exceeded"),
        Some(1.0)
    );
    assert!(
        metric(&body, "fincorp_agent_overhead_slowdowns_total").unwrap() >= 2.0,
        "200 -> 400 -> 800 ms"
    );
    assert!(
        agent
            .logs()
            .contains("over the overhead budget: sampling less often")
    );
}
