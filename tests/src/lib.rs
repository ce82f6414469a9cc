//! Harness for the end-to-end scenarios in `tests/`: finds the built
//! binaries, picks free loopback ports, writes configs into a temporary
//! directory and runs the real processes, killing them when dropped. Each
//! process's output goes to a log file that failed assertions print.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The HMAC key every test stack shares between agent and correlator.
pub const AGENT_KEY: &str = "e2e-agent-key-0123456789abcdef0123456789";
/// The ServiceNow simulator's password in test stacks.
pub const SN_PASSWORD: &str = "e2e-servicenow-password";
pub const SN_USER: &str = "fincorp-operator";

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
