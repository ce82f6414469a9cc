//! Harness for the end-to-end scenarios in `tests/`: finds the built
//! binaries, picks free loopback ports, writes configs into a temporary
//! directory and runs the real processes, killing them when dropped. Each
//! process's output goes to a log file that failed assertions print.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The HMAC key every test stack shares between agent and correlator.
pub const AGENT_KEY: &str = "e2e-agent-key-0123456789abcdef0123456789";
/// The ServiceNow simulator's password in test stacks.
pub const SN_PASSWORD: &str = "e2e-servicenow-password";
pub const SN_USER: &str = "fincorp-operator";
/// The vCenter simulator's user and password in test stacks.
pub const VC_USER: &str = "fincorp-automation@vsphere.local";
pub const VC_PASSWORD: &str = "e2e-vcenter-password";

/// The directory holding the workspace's built binaries (`target/debug`),
/// or `FINCORP_BIN_DIR` when set.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FINCORP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Test executables live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// The path of a workspace binary. Panics with what to do when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace binaries first (`cargo test --workspace` builds them; \
         or `cargo build --workspace --bins`), or set FINCORP_BIN_DIR",
        path.display()
    );
    path
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running child process whose stdout and stderr go to a log file.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's output so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the logs) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early with {status}:\n{}", self.name, self.logs());
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `url` until it answers 2xx, or panics with the process's logs.
pub fn wait_http_ok(url: &str, proc: &mut Proc, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = fincorp_api::http::client(Duration::from_secs(2));
    loop {
        proc.assert_running();
        let ok = rt.block_on(async {
            client
                .get(url)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        });
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} not up after {timeout:?}; {} log:\n{}",
            proc.name,
            proc.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads lines from a child's stdout on a thread, handing them over a channel.
pub fn line_reader(
    stdout: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Checks that the cgroup cpu controller is writable here, so scenarios that
/// need it fail with a clear reason instead of passing silently.
pub fn require_writable_cgroups(root: &Path) {
    let v1 = root.join("cpu");
    let probe_parent = if v1.join("cpu.cfs_quota_us").exists() {
        v1
    } else {
        root.to_path_buf()
    };
    let probe = probe_parent.join(format!("fincorp-e2e-probe-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
        }
        Err(e) => panic!(
            "cgroups are not writable here ({}: {e}). This scenario rewrites a real cgroup CPU quota, so it needs \
             root and a cgroup v1 `cpu` hierarchy or cgroup v2 with the cpu controller. It fails rather than pass silently.",
            probe.display()
        ),
    }
}

/// CPU time used so far by all threads of `pid`, in nanoseconds. The
/// scenarios measure with this copy rather than `fincorpctl`'s, so a bug in
/// the tool under test cannot hide itself.
pub fn cpu_time_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// Scenarios run one at a time: they measure CPU and time, and share the
/// machine's two cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where cgroup hierarchies are mounted on the test machine.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// True when the cpu controller is on cgroup v1.
pub fn cgroup_v1() -> bool {
    Path::new(CGROUP_ROOT).join("cpu/cpu.cfs_quota_us").exists()
}

/// Sends `signal` (e.g. `-TERM`) to `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// The directory of a cgroup given relative to the cpu controller.
pub fn cgroup_dir(relative: &str) -> PathBuf {
    if cgroup_v1() {
        Path::new(CGROUP_ROOT).join("cpu").join(relative)
    } else {
        Path::new(CGROUP_ROOT).join(relative)
    }
}

/// What a test stack runs with.
#[derive(Debug, Clone, Default)]
pub struct StackConfig {
    /// The agent's `apps:` entries, as YAML indented by two spaces.
    pub agent_apps: String,
    /// `correlation.resolve_after` of the correlator.
    pub resolve_after: String,
    /// The correlator's playbooks; the shipped ones when `None`.
    pub playbooks_dir: Option<PathBuf>,
    /// More top-level correlator configuration (YAML), e.g. `automation:`.
    pub correlator_extra: String,
    /// Enables the agent's `run_script` action with this allowlist directory.
    pub scripts_dir: Option<PathBuf>,
    /// Starts a vCenter simulator (`fincorp-sim vsphere`) serving the VMs of
    /// this inventory file, and points `integrations.vsphere` at it.
    pub vsphere_inventory: Option<PathBuf>,
}

/// A ServiceNow simulator, a correlator and an agent on 127.0.0.1, with
/// configs in a temporary directory. Processes can be stopped and started
/// again (same config, same database) to test outages.
pub struct Stack {
    dir: tempfile::TempDir,
    pub sim: Proc,
    pub correlator: Option<Proc>,
    pub agent: Option<Proc>,
    /// The correlator's base URL.
    pub api: String,
    /// The ServiceNow simulator's base URL.
    pub sn: String,
    /// The vCenter simulator, when `vsphere_inventory` was given.
    pub vcenter_sim: Option<Proc>,
    /// Its base URL.
    pub vcenter: Option<String>,
    /// The host name the agent reports.
    pub host: String,
}

impl Stack {
    /// Starts the simulator and the correlator (waiting until both answer),
    /// then the agent.
    pub fn start(cfg: &StackConfig) -> Stack {
        let mut stack = Self::start_without_agent(cfg);
        stack.start_agent();
        stack
    }

    /// Starts the simulator and the correlator only; the agent's config is
    /// written, so `start_agent` can still start it.
    pub fn start_without_agent(cfg: &StackConfig) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (api_port, sn_port) = (free_port(), free_port());
        let api = format!("http://127.0.0.1:{api_port}");
        let sn = format!("http://127.0.0.1:{sn_port}");
        let host = format!("e2e-host-{}", std::process::id());
        let vcenter = cfg
            .vsphere_inventory
            .as_ref()
            .map(|_| format!("http://127.0.0.1:{}", free_port()));
        let playbooks = cfg
            .playbooks_dir
            .clone()
            .unwrap_or_else(|| repo_root().join("packaging/etc/fincorp/playbooks"));
        std::fs::write(
            d.join("correlator.yaml"),
            format!(
                "version: 1
listen: 127.0.0.1:{api_port}
state_dir: state
agent_auth:
  max_skew: 30s
  keys:
    - id: fleet
      secret: {{ env: FINCORP_AGENT_KEY }}
correlation:
  window: 5m
  resolve_after: {resolve_after}
playbooks_dir: {playbooks}
integrations:
  servicenow:
    url: {sn}
    username: {SN_USER}
    password: {{ env: FINCORP_SERVICENOW_PASSWORD }}
    timeout: 10s
{vsphere}{extra}",
                vsphere = match &vcenter {
                    Some(url) => format!(
                        "  vsphere:\n    url: {url}\n    username: {VC_USER}\n    password: {{ env: FINCORP_VSPHERE_PASSWORD }}\n    timeout: 10s\n"
                    ),
                    None => String::new(),
                },
                extra = cfg.correlator_extra,
                resolve_after = cfg.resolve_after,
                playbooks = playbooks.display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("agent.yaml"),
            format!(
                "version: 1
host: {host}
sample_interval: 1s
heartbeat_interval: 5s
state_dir: agent-state
metrics:
  enabled: false
correlator:
  url: {api}
  key_id: fleet
  secret: {{ env: FINCORP_AGENT_KEY }}
  timeout: 5s
actions:
  reallocate:
    enabled: true
    max_increase_pct: 50
    max_cpu_cores: 2.0
{scripts}cgroup_root: {CGROUP_ROOT}
apps:
{apps}",
                apps = cfg.agent_apps,
                scripts = match &cfg.scripts_dir {
                    Some(dir) => format!(
                        "  run_script:\n    enabled: true\n    dir: {}\n    max_timeout: 30s\n  rate_limit:\n    max_commands: 100\n    per: 1m\n",
                        dir.display()
                    ),
                    None => String::new(),
                },
            ),
        )
        .unwrap();

        let mut sim_cmd = Command::new(bin("fincorp-sim"));
        sim_cmd
            .args([
                "servicenow",
                "--listen",
                &format!("127.0.0.1:{sn_port}"),
                "--username",
                SN_USER,
            ])
            .args(["--password-env", "FINCORP_SERVICENOW_PASSWORD"])
            .env("FINCORP_SERVICENOW_PASSWORD", SN_PASSWORD);
        let mut sim = Proc::spawn("fincorp-sim", sim_cmd, d);
        wait_http_ok(
            &format!("{sn}/sim/health"),
            &mut sim,
            Duration::from_secs(20),
        );

        let vcenter_sim = cfg.vsphere_inventory.as_ref().map(|inventory| {
            let url = vcenter.as_deref().expect("set with the inventory");
            let mut c = Command::new(bin("fincorp-sim"));
            c.args(["vsphere", "--listen", url.trim_start_matches("http://")])
                .args([
                    "--username",
                    VC_USER,
                    "--password-env",
                    "FINCORP_VSPHERE_PASSWORD",
                ])
                .arg("--inventory")
                .arg(inventory)
                .env("FINCORP_VSPHERE_PASSWORD", VC_PASSWORD);
            let mut proc = Proc::spawn("fincorp-sim-vsphere", c, d);
            wait_http_ok(
                &format!("{url}/sim/health"),
                &mut proc,
                Duration::from_secs(20),
            );
            proc
        });

        let mut stack = Stack {
            dir,
            sim,
            correlator: None,
            agent: None,
            api,
            sn,
            vcenter_sim,
            vcenter,
            host,
        };
        stack.start_correlator();
        stack
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The correlator's SQLite database file.
    pub fn database(&self) -> PathBuf {
        self.dir().join("state/correlator.db")
    }

    /// Starts the correlator and waits until it answers.
    pub fn start_correlator(&mut self) {
        self.start_correlator_with_log("info");
    }

    /// [`Stack::start_correlator`] with another `RUST_LOG` filter.
    pub fn start_correlator_with_log(&mut self, rust_log: &str) {
        let mut c = Command::new(bin("fincorp-correlator"));
        c.arg("--config")
            .arg(self.dir().join("correlator.yaml"))
            .env("FINCORP_AGENT_KEY", AGENT_KEY)
            .env("FINCORP_SERVICENOW_PASSWORD", SN_PASSWORD)
            .env("FINCORP_VSPHERE_PASSWORD", VC_PASSWORD)
            .env("RUST_LOG", rust_log);
        let mut proc = Proc::spawn("fincorp-correlator", c, self.dir());
        wait_http_ok(
            &format!("{}/healthz", self.api),
            &mut proc,
            Duration::from_secs(20),
        );
        self.correlator = Some(proc);
    }

    /// Starts the agent.
    pub fn start_agent(&mut self) {
        let mut a = Command::new(bin("fincorp-agent"));
        a.arg("--config")
            .arg(self.dir().join("agent.yaml"))
            .env("FINCORP_AGENT_KEY", AGENT_KEY)
            .env("RUST_LOG", "info");
        let mut proc = Proc::spawn("fincorp-agent", a, self.dir());
        std::thread::sleep(Duration::from_millis(500));
        proc.assert_running();
        self.agent = Some(proc);
    }

    /// Panics with all logs if the correlator or agent has died.
    pub fn assert_running(&mut self) {
        let logs = self.logs();
        for p in [self.correlator.as_mut(), self.agent.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("{} exited early with {status}:\n{logs}", p.name);
            }
        }
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in [
            self.correlator.as_ref(),
            self.agent.as_ref(),
            Some(&self.sim),
            self.vcenter_sim.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            out.push_str(&format!("--- {} ---\n{}\n", p.name, p.logs()));
        }
        out
    }

    /// GET a correlator path as JSON.
    pub fn api_get(&self, path: &str) -> Value {
        get_json(&format!("{}{path}", self.api), None)
    }

    /// GET a ServiceNow simulator path as JSON, with the stack's credentials.
    pub fn sn_get(&self, path: &str) -> Value {
        get_json(&format!("{}{path}", self.sn), Some((SN_USER, SN_PASSWORD)))
    }

    /// GET a vCenter simulator path as JSON (its `/sim/*` endpoints need no
    /// session). Panics when the stack has no vCenter simulator.
    pub fn vc_get(&self, path: &str) -> Value {
        let url = self
            .vcenter
            .as_deref()
            .expect("the stack has no vCenter simulator");
        get_json(&format!("{url}{path}"), None)
    }
}

/// GET `url` as JSON; panics with the status and body unless 2xx.
pub fn get_json(url: &str, auth: Option<(&str, &str)>) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = fincorp_api::http::client(Duration::from_secs(10));
        let mut req = client.get(url).header("accept", "application/json");
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "GET {url}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {text}"))
    })
}

/// POSTs JSON to `url`; returns the status and the body as JSON (or text).
pub fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = fincorp_api::http::client(Duration::from_secs(10));
        let resp = client
            .post(url)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

/// Polls `check` every 200 ms until it returns `Some`, or panics with `what`
/// and the stack's logs after `timeout`.
pub fn wait_for<T>(
    stack: &mut Stack,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(&Stack) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check(stack) {
            return v;
        }
        stack.assert_running();
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            stack.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A webhook receiver on 127.0.0.1: answers 200 to every POST and keeps
/// the JSON bodies, in arrival order.
pub struct Recorder {
    pub url: String,
    bodies: std::sync::Arc<Mutex<Vec<Value>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        Self::start_delayed(Duration::ZERO)
    }

    /// Like [`Recorder::start`], but answers each request `delay` after
    /// receiving it (the body is kept on arrival).
    pub fn start_delayed(delay: Duration) -> Recorder {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let bodies = std::sync::Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Headers, then Content-Length bytes of body.
                    let body = loop {
                        let Ok(n) = conn.read(&mut chunk) else {
                            break None;
                        };
                        if n == 0 {
                            break None;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break Some(buf[end + 4..end + 4 + len].to_vec());
                        }
                    };
                    if let Some(body) = body {
                        let v = serde_json::from_slice(&body).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&body).into())
                        });
                        kept.lock().unwrap().push(v);
                    }
                    std::thread::sleep(delay);
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                });
            }
        });
        Recorder { url, bodies }
    }

    /// The bodies received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Writes an executable script (mode 0755) into an allowlist directory.
pub fn write_script(dir: &Path, name: &str, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A directory for agent scripts: not writable by group or others.
pub fn scripts_dir(parent: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent.join("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The runs of the correlator, newest first.
pub fn runs(stack: &Stack, query: &str) -> Vec<Value> {
    stack.api_get(&format!("/api/v1/runs?{query}"))["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Kills a chaos command (its burner then sees EOF and exits) and removes
/// the test's cgroup and its parent, also when an assertion fails.
pub struct ChaosGuard {
    pub chaos: Option<Child>,
    pub cgroup: PathBuf,
}

impl Drop for ChaosGuard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.chaos {
            let _ = c.kill();
            let _ = c.wait();
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(parent) = self.cgroup.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// The agent script the two-change playbooks run: appends `mark WORD` to a
/// file, so a test counts at the target how often each change ran.
pub const MARK_SCRIPT: &str = "#!/bin/sh\necho \"mark $2\" >> \"$1\"\n";

/// A playbook making two changes on the incident's host (`exec mark.sh
/// first`, then `second`) with a wait of `settle` between them that never
/// succeeds (so the run sits there, then goes on).
pub fn two_changes_playbook(
    name: &str,
    app: &str,
    alert: &str,
    marks: &Path,
    settle: &str,
) -> String {
    format!(
        "version: 1
name: {name}
description: two changes with a settling wait between them
trigger:
  apps: [{app}]
  alerts: [{alert}]
guardrails:
  rate_limit:
    per_target: {{max: 5, per: 1h}}
steps:
  - id: first
    action: exec
    with:
      host: \"{{{{ incident.host }}}}\"
      script: mark.sh
      args: [\"{marks}\", first]
  - id: settle
    action: wait_for
    with:
      host: \"{{{{ incident.host }}}}\"
      metric: cpu
      op: \"<\"
      value: -1
      within: {settle}
    on_failure: continue
  - id: second
    action: exec
    with:
      host: \"{{{{ incident.host }}}}\"
      script: mark.sh
      args: [\"{marks}\", second]
",
        marks = marks.display()
    )
}

/// Lines of a file containing `word` (0 when it does not exist yet).
pub fn count_lines(path: &Path, word: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(word))
        .count()
}
