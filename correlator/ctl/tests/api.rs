//! `fincorpctl` against a real `fincorp-correlator` on 127.0.0.1: dry-run
//! plans of stored incidents, runs and their approvals, the kill switch,
//! circuit breakers and playbook reloads. The correlator binary is the one
//! next to `fincorpctl` in `target/<profile>` (`cargo build -p
//! fincorp-correlator`, or any workspace build, puts it there).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fincorp_api::rest::{
    AutomationStatus, IncidentList, KillSwitchView, PlanView, PlaybookView, RunList, RunState,
    RunView,
};
use serde_json::json;

const AGENT_KEY: &str = "ctl-test-agent-key-0123456789abcdef012345";

/// A correlator with its config, database and playbooks in a temporary
/// directory; killed when dropped.
struct Correlator {
    dir: tempfile::TempDir,
    child: Child,
    url: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Correlator {
    /// Starts a correlator loading `playbooks` (file name, YAML) and waits
    /// until it answers.
    fn start(playbooks: &[(&str, String)]) -> Correlator {
        Self::start_with(playbooks, "")
    }

    /// [`Correlator::start`] with more top-level configuration (YAML).
    fn start_with(playbooks: &[(&str, String)], extra: &str) -> Correlator {
        let bin = Path::new(env!("CARGO_BIN_EXE_fincorpctl")).with_file_name("fincorp-correlator");
        assert!(
            bin.is_file(),
            "{} is missing: build it first (`cargo build -p fincorp-correlator`, or `cargo test --workspace`)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let pb_dir = dir.path().join("playbooks");
        std::fs::create_dir(&pb_dir).unwrap();
        for (name, text) in playbooks {
            std::fs::write(pb_dir.join(name), text).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("correlator.yaml");
        std::fs::write(
            &config,
            format!(
                "version: 1
listen: 127.0.0.1:{port}
state_dir: {state}
agent_auth:
  keys:
    - id: fleet
      secret: {{ env: FINCORP_AGENT_KEY }}
playbooks_dir: {playbooks}
{extra}",
                state = dir.path().join("state").display(),
                playbooks = pb_dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("correlator.log")).unwrap();
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .env("FINCORP_AGENT_KEY", AGENT_KEY)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut c = Correlator {
            dir,
            child,
            url: format!("http://127.0.0.1:{port}"),
            rt,
            http: fincorp_api::http::client(Duration::from_secs(5)),
        };
        let health = format!("{}/healthz", c.url);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!("the correlator exited with {status}:\n{}", c.logs());
            }
            let up = c.rt.block_on(async {
                c.http
                    .get(&health)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            });
            if up {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "the correlator is not up after 20 s:\n{}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("correlator.log")).unwrap_or_default()
    }

    fn playbooks_dir(&self) -> PathBuf {
        self.dir.path().join("playbooks")
    }

    /// Runs `fincorpctl --url <this correlator> ARGS` with `USER=tester`.
    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_with(args, |_| {})
    }

    fn ctl_with(&self, args: &[&str], env: impl FnOnce(&mut Command)) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fincorpctl"));
        cmd.arg("--url")
            .arg(&self.url)
            .args(args)
            .env("USER", "tester");
        env(&mut cmd);
        cmd.output().unwrap()
    }

    /// `fincorpctl ARGS --json`, which must succeed, parsed.
    fn json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.ctl(&all);
        let stdout = ok(&out, &format!("{all:?}"), self);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{all:?}: {e}:\n{stdout}"))
    }

    /// Posts a generic event (which opens or joins an incident) and returns
    /// the id of the newest incident of `app`.
    fn event(&self, host: &str, app: &str, name: &str) -> String {
        let body = json!({"events": [{"source": "hardware", "name": name, "host": host, "app": app, "severity": "critical"}]});
        let status = self.rt.block_on(async {
            self.http
                .post(format!("{}/api/v1/ingest/events", self.url))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        });
        assert!(status.is_success(), "ingest: {status}\n{}", self.logs());
        let list: IncidentList = self.json(&["incidents", "list", "--app", app]);
        list.incidents
            .first()
            .unwrap_or_else(|| panic!("no incident for {app}:\n{}", self.logs()))
            .id
            .clone()
    }

    /// Waits until `runs list ARGS` shows runs all matching `done`.
    fn wait_runs(&self, args: &[&str], n: usize, done: impl Fn(&RunView) -> bool) -> Vec<RunView> {
        let mut all = vec!["runs", "list"];
        all.extend_from_slice(args);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let list: RunList = self.json(&all);
            if list.runs.len() == n && list.runs.iter().all(&done) {
                return list.runs;
            }
            assert!(
                Instant::now() < deadline,
                "runs {args:?} did not settle: {:#?}\n{}",
                list.runs,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Correlator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stdout of a command that must exit 0.
fn ok(out: &Output, what: &str, c: &Correlator) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: stdout:\n{}\nstderr:\n{}\ncorrelator:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the exit code and returns (stdout, stderr).
fn exits(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// A webhook to a port nothing listens on: fails at once, and the run goes
/// on. Needs no agent.
fn notify_playbook(name: &str, app: &str, guardrails: &str) -> String {
    format!(
        "version: 1
name: {name}
description: tell a webhook nobody listens to
trigger:
  apps: [{app}]
{guardrails}steps:
  - id: tell
    action: notify
    with:
      url: http://127.0.0.1:9/hook
      body: {{incident: \"{{{{ incident.id }}}}\", host: \"{{{{ incident.host }}}}\"}}
    on_failure: continue
"
    )
}

/// Waits for an operator before running a script (which, with no agent,
/// would wait for one).
fn approval_playbook(apps: &str) -> String {
    format!(
        "version: 1
name: ctl-approve
description: a script that needs an operator's approval
trigger:
  apps: [{apps}]
guardrails:
  rate_limit:
    per_target: {{max: 5, per: 1h}}
  approval: {{required: true, timeout: 1m}}
steps:
  - id: restart
    action: exec
    with:
      host: \"{{{{ incident.host }}}}\"
      script: restart.sh
"
    )
}

/// A ServiceNow ticket on a correlator without ServiceNow: it cannot plan.
const TICKET_PLAYBOOK: &str = "version: 1
name: ctl-ticket
description: a ticket nobody can open
trigger:
  apps: [CTL-NEVER]
guardrails:
  rate_limit:
    per_target: {max: 5, per: 1h}
steps:
  - id: ticket
    action: servicenow.create
    with:
      short_description: \"{{ incident.title }}\"
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn plans_runs_and_approvals_against_a_live_correlator() {
    let notify = notify_playbook("ctl-notify", "CTL-NOTIFY", "");
    let c = Correlator::start(&[
        ("notify.yaml", notify.clone()),
        ("approve.yaml", approval_playbook("CTL-APP-1, CTL-APP-2")),
        ("ticket.yaml", TICKET_PLAYBOOK.to_owned()),
    ]);
    let pb = c.playbooks_dir();

    // playbook list
    let list: Vec<PlaybookView> = c.json(&["playbook", "list"]);
    let mut names: Vec<_> = list.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["ctl-approve", "ctl-notify", "ctl-ticket"]);
    let text = ok(&c.ctl(&["playbook", "list"]), "playbook list", &c);
    assert!(text.contains("ctl-approve  [mutating]"), "{text}");
    assert!(text.contains("steps: restart (exec)"), "{text}");

    // A run triggered by an event: its failed webhook shows in runs show.
    let incident = c.event("ctl-h1", "CTL-NOTIFY", "disk_failed");
    let runs = c.wait_runs(&["--incident", &incident], 1, |r| !r.state.is_active());
    let run = &runs[0];
    assert_eq!(
        (run.playbook.as_str(), run.state),
        ("ctl-notify", RunState::Succeeded)
    );
    let table = ok(
        &c.ctl(&["runs", "list", "--playbook", "ctl-notify"]),
        "runs list",
        &c,
    );
    assert!(table.starts_with("ID "), "{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with(&run.id))
        .unwrap_or_else(|| panic!("{} not in:\n{table}", run.id));
    for want in ["ctl-notify", "succeeded", &incident, "ctl-h1/CTL-NOTIFY"] {
        assert!(line.contains(want), "{want:?} not in {line:?}");
    }
    let other = ok(
        &c.ctl(&["runs", "list", "--state", "failed"]),
        "runs list --state",
        &c,
    );
    assert!(!other.contains(&run.id), "{other}");
    let shown = ok(&c.ctl(&["runs", "show", &run.id]), "runs show", &c);
    assert!(shown.contains("ctl-notify  succeeded"), "{shown}");
    let step = shown
        .lines()
        .find(|l| l.trim_start().starts_with("tell "))
        .unwrap_or_else(|| panic!("no step line in:\n{shown}"));
    for want in ["notify", "main", "failed", "127.0.0.1:9"] {
        assert!(step.contains(want), "{want:?} not in {step:?}");
    }
    let view: RunView = c.json(&["runs", "show", &run.id]);
    assert_eq!(view.steps.len(), 1);
    assert!(view.steps[0].attempts >= 1);

    // plan --incident: the correlator renders it against the stored incident.
    let notify_file = pb.join("notify.yaml");
    let notify_file = notify_file.to_str().unwrap();
    let out = c.ctl(&["playbook", "plan", notify_file, "--incident", &incident]);
    let text = ok(&out, "plan --incident", &c);
    assert!(text.starts_with("playbook ctl-notify\n"), "{text}");
    assert!(text.contains("-> POST http://127.0.0.1:9/hook"), "{text}");
    assert!(
        text.contains(&format!(
            "{{\"host\":\"ctl-h1\",\"incident\":\"{incident}\"}}"
        )),
        "{text}"
    );
    let view: PlanView = c.json(&["playbook", "plan", notify_file, "--incident", &incident]);
    assert_eq!(view.text, text);
    assert_eq!(view.plan["playbook"], "ctl-notify");

    // A mutating step that cannot plan: printed, then refused.
    let ticket = pb.join("ticket.yaml");
    let out = c.ctl(&[
        "playbook",
        "plan",
        ticket.to_str().unwrap(),
        "--incident",
        &incident,
    ]);
    let (stdout, stderr) = exits(&out, 1);
    assert!(stdout.contains("requests: NOT PLANNABLE"), "{stdout}");
    assert!(
        stderr.contains("dry run refused: mutating step(s) ticket cannot say exactly"),
        "{stderr}"
    );
    assert!(stderr.contains("ServiceNow is not configured"), "{stderr}");

    // An unknown incident: the correlator's message, exit 1.
    let out = c.ctl(&["playbook", "plan", notify_file, "--incident", "fc-nope"]);
    let (_, stderr) = exits(&out, 1);
    assert!(
        stderr.contains("404 Not Found") && stderr.contains("fc-nope"),
        "{stderr}"
    );

    // A playbook the correlator has not loaded.
    let stray = write(
        c.dir.path(),
        "stray.yaml",
        &notify_playbook("ctl-stray", "X", ""),
    );
    let out = c.ctl(&[
        "playbook",
        "plan",
        stray.to_str().unwrap(),
        "--incident",
        &incident,
    ]);
    let (_, stderr) = exits(&out, 1);
    assert!(stderr.contains("no playbook \"ctl-stray\""), "{stderr}");

    // Two runs wait for an approval.
    let first = c.event("ctl-h2", "CTL-APP-1", "svc_down");
    let second = c.event("ctl-h3", "CTL-APP-2", "svc_down");
    let waiting = c.wait_runs(&["--playbook", "ctl-approve"], 2, |r| {
        r.state == RunState::AwaitingApproval && r.approval.is_some()
    });
    let id_of = |incident: &str| {
        waiting
            .iter()
            .find(|r| r.incident_id.as_deref() == Some(incident))
            .unwrap()
            .id
            .clone()
    };
    let (approve, reject) = (id_of(&first), id_of(&second));
    let shown = ok(&c.ctl(&["runs", "show", &approve]), "runs show", &c);
    assert!(
        shown.contains("AWAITING APPROVAL (step guardrail:approval)"),
        "{shown}"
    );
    assert!(shown.contains("wants to run restart (exec)"), "{shown}");
    let listed = ok(
        &c.ctl(&["runs", "list", "--state", "awaiting_approval"]),
        "runs list --state awaiting_approval",
        &c,
    );
    assert!(
        listed.contains(&approve) && listed.contains(&reject),
        "{listed}"
    );

    let out = c.ctl(&[
        "runs", "approve", &approve, "--by", "alice", "--reason", "go",
    ]);
    let text = ok(&out, "runs approve", &c);
    assert!(
        text.starts_with(&format!("run {approve} approved by alice; it is now ")),
        "{text}"
    );
    let view: RunView = c.json(&["runs", "show", &approve]);
    assert_ne!(view.state, RunState::AwaitingApproval, "{view:#?}");
    assert!(view.approval.is_none(), "{view:#?}");

    // --by defaults to $USER.
    let out = c.ctl_with(&["runs", "reject", &reject, "--reason", "not now"], |cmd| {
        cmd.env("USER", "bob");
    });
    let text = ok(&out, "runs reject", &c);
    assert_eq!(
        text,
        format!("run {reject} rejected by bob; it is now rejected\n")
    );
    let view: RunView = c.json(&["runs", "show", &reject]);
    assert_eq!(view.state, RunState::Rejected);
    assert!(
        view.reason.as_deref().unwrap_or_default().contains("bob"),
        "{view:#?}"
    );

    // Deciding twice: the correlator's conflict, exit 1.
    let out = c.ctl(&["runs", "approve", &reject]);
    let (_, stderr) = exits(&out, 1);
    assert!(stderr.contains("409 Conflict"), "{stderr}");
    assert!(stderr.contains("waits for no approval"), "{stderr}");
    // Neither --by nor USER: a usage error, nothing sent.
    let out = c.ctl_with(&["runs", "approve", &approve], |cmd| {
        cmd.env_remove("USER");
    });
    let (_, stderr) = exits(&out, 2);
    assert!(stderr.contains("--by"), "{stderr}");
    // An unknown run.
    let out = c.ctl(&["runs", "show", "run-nope"]);
    let (_, stderr) = exits(&out, 1);
    assert!(stderr.contains("no run \"run-nope\""), "{stderr}");
}

#[test]
fn the_kill_switch_breakers_and_reloads() {
    let c = Correlator::start(&[(
        "budget.yaml",
        notify_playbook(
            "ctl-budget",
            "CTL-BUDGET",
            "guardrails:\n  rate_limit:\n    per_target: {max: 1, per: 1h}\n",
        ),
    )]);

    // Two alerts on one incident: the second run exceeds the budget and
    // trips the breaker of the playbook on that host/app.
    let incident = c.event("ctl-b1", "CTL-BUDGET", "first");
    c.event("ctl-b1", "CTL-BUDGET", "second");
    let runs = c.wait_runs(&["--incident", &incident], 2, |r| !r.state.is_active());
    assert!(
        runs.iter().any(|r| r.state == RunState::Blocked),
        "{runs:#?}"
    );
    let key = "playbook:ctl-budget@ctl-b1/CTL-BUDGET";
    let status: AutomationStatus = c.json(&["automation", "status"]);
    assert_eq!(
        status.breakers.iter().map(|b| &b.key).collect::<Vec<_>>(),
        [key]
    );
    let text = ok(&c.ctl(&["automation", "status"]), "automation status", &c);
    for want in [
        "kill switch: off",
        "active runs: 0",
        "breakers tripped: 1",
        &format!("  {key}  tripped "),
        "    reason: budget exhausted: 1 runs of ctl-budget on ctl-b1/CTL-BUDGET",
        "playbooks: 1",
        "  ctl-budget: at most 1 runs per 1h per target",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }

    // Reset: the key (with `:`, `@` and `/`) is one path segment.
    let out = c.ctl(&[
        "automation",
        "breaker",
        "reset",
        key,
        "--by",
        "alice",
        "--reason",
        "looked at it",
    ]);
    let text = ok(&out, "breaker reset", &c);
    assert!(
        text.starts_with(&format!("breaker {key} reset by alice\n")),
        "{text}"
    );
    assert!(text.contains("breakers: none tripped"), "{text}");
    let out = c.ctl(&["automation", "breaker", "reset", key]);
    let (_, stderr) = exits(&out, 1);
    assert!(
        stderr.contains(&format!("404 Not Found: no tripped breaker \"{key}\"")),
        "{stderr}"
    );

    // The kill switch.
    let off: KillSwitchView = c.json(&["automation", "kill-switch", "status"]);
    assert!(!off.on);
    let out = c.ctl(&[
        "automation",
        "kill-switch",
        "on",
        "--by",
        "alice",
        "--reason",
        "drill",
    ]);
    let text = ok(&out, "kill-switch on", &c);
    assert!(text.starts_with("kill switch: ON"), "{text}");
    let text = ok(
        &c.ctl(&["automation", "kill-switch", "status"]),
        "kill-switch status",
        &c,
    );
    assert!(text.starts_with("kill switch: ON"), "{text}");
    assert!(text.contains(" by alice: drill"), "{text}");
    let status: AutomationStatus = c.json(&["automation", "status"]);
    assert!(status.kill_switch.on);
    assert_eq!(status.kill_switch.changed_by.as_deref(), Some("alice"));
    let text = ok(&c.ctl(&["automation", "status"]), "automation status", &c);
    assert!(text.starts_with("kill switch: ON"), "{text}");
    // A reason is required.
    let out = c.ctl(&["automation", "kill-switch", "off"]);
    let (_, stderr) = exits(&out, 2);
    assert!(stderr.contains("--reason"), "{stderr}");
    let on: KillSwitchView = c.json(&["automation", "kill-switch", "status"]);
    assert!(on.on);
    let out = c.ctl(&["automation", "kill-switch", "off", "--reason", "done"]);
    let text = ok(&out, "kill-switch off", &c);
    assert!(text.starts_with("kill switch: off"), "{text}");
    assert!(text.contains(" by tester: done"), "{text}");

    // Reload: a new playbook with a warning loads; a broken one is refused
    // with its position, exit 64, and the loaded set stays.
    let dir = c.playbooks_dir();
    write(
        &dir,
        "risky.yaml",
        "version: 1\nname: ctl-risky\ntrigger:\n  apps: [CTL-RISKY]\nsteps:\n  - id: raise\n    action: reallocate\n    with:\n      host: \"{{ incident.host }}\"\n      app: CTL-RISKY\n      resource: cpu\n      increase_pct: 20\n",
    );
    let text = ok(&c.ctl(&["playbook", "reload"]), "playbook reload", &c);
    assert!(
        text.contains(&format!(
            "{}:1:1: warning: mutating automation without a rate limit",
            dir.join("risky.yaml").display()
        )),
        "{text}"
    );
    assert!(
        text.ends_with("reloaded 2 playbooks: ctl-budget, ctl-risky\n"),
        "{text}"
    );
    let broken = write(
        &dir,
        "zz-broken.yaml",
        "version: 1\nname: ctl-broken\ntrigger:\n  apps: [X]\nsteps:\n  - id: a\n    action: nuke\n",
    );
    let out = c.ctl(&["playbook", "reload"]);
    let (_, stderr) = exits(&out, 64);
    assert!(
        stderr.contains(&format!(
            "{}:7:13: error: unknown action \"nuke\"",
            broken.display()
        )),
        "{stderr}"
    );
    let list: Vec<PlaybookView> = c.json(&["playbook", "list"]);
    assert_eq!(list.len(), 2);
}

/// With `api.tokens`, fincorpctl sends its token from FINCORP_TOKEN or
/// `--token-file`; without one, or with a viewer's for an admin's action, the
/// correlator's refusal is shown and the exit is 1.
#[test]
fn tokens_from_the_environment_or_a_file_authenticate_the_cli() {
    // printf %s admin-token-123 | sha256sum; printf %s viewer-token-456 | sha256sum
    let sha = |t: &str| {
        let d = ring_digest(t);
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let c = Correlator::start_with(
        &[],
        &format!(
            "api:\n  tokens:\n    - {{name: head-of-ops, role: admin, sha256: {}}}\n    - {{name: wallboard, role: viewer, sha256: {}}}\n",
            sha("admin-token-123"),
            sha("viewer-token-456")
        ),
    );
    let out = c.ctl(&["incidents", "list"]);
    let (_, stderr) = exits(&out, 1);
    assert!(stderr.contains("401"), "{stderr}");
    let out = c.ctl_with(&["incidents", "list"], |cmd| {
        cmd.env("FINCORP_TOKEN", "viewer-token-456");
    });
    ok(&out, "incidents list with a viewer token", &c);
    let out = c.ctl_with(
        &["automation", "kill-switch", "on", "--reason", "drill"],
        |cmd| {
            cmd.env("FINCORP_TOKEN", "viewer-token-456");
        },
    );
    let (_, stderr) = exits(&out, 1);
    assert!(
        stderr.contains("403") || stderr.contains("forbidden"),
        "{stderr}"
    );
    let file = c.dir.path().join("admin.token");
    std::fs::write(&file, "admin-token-123\n").unwrap();
    let out = c.ctl(&[
        "--token-file",
        file.to_str().unwrap(),
        "automation",
        "kill-switch",
        "on",
        "--reason",
        "drill",
    ]);
    ok(&out, "kill-switch on with the admin's token file", &c);
    let view: KillSwitchView = {
        let out = c.ctl_with(&["automation", "kill-switch", "status", "--json"], |cmd| {
            cmd.env("FINCORP_TOKEN", "viewer-token-456");
        });
        serde_json::from_str(&ok(&out, "kill-switch status", &c)).unwrap()
    };
    assert!(view.on);
    // The token's name, not $USER, is the actor.
    assert_eq!(view.changed_by.as_deref(), Some("head-of-ops"));
}

fn ring_digest(text: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .to_vec()
}

/// `playbook run` asks the correlator to run a loaded playbook for an
/// incident now: a new run (its own idempotency scope), started by the
/// operator, through the guardrails; `--dry-run` executes nothing.
#[test]
fn playbook_run_starts_a_manual_run_for_an_incident() {
    let c = Correlator::start(&[("tell.yaml", notify_playbook("tell", "RUN-APP", ""))]);
    let incident = c.event("run-h1", "RUN-APP", "disk_full");
    // The alert itself triggered the first run.
    c.wait_runs(&["--playbook", "tell"], 1, |r| {
        r.state == RunState::Succeeded
    });
    let run: RunView = c.json(&[
        "playbook",
        "run",
        "tell",
        "--incident",
        &incident,
        "--dry-run",
        "--reason",
        "rehearsal",
    ]);
    assert!(run.dry_run, "{run:?}");
    assert_eq!(run.trigger, "manual:tester");
    assert_eq!(run.incident_id.as_deref(), Some(incident.as_str()));
    let runs = c.wait_runs(&["--playbook", "tell"], 2, |r| {
        matches!(r.state, RunState::Succeeded | RunState::Planned)
    });
    let manual = runs.iter().find(|r| r.id == run.id).unwrap();
    assert_eq!(manual.state, RunState::Planned, "{manual:?}");
    assert_eq!(manual.steps[0].state, RunState::Planned);
    // Unknown playbook or incident: clear errors, exit 1.
    let out = c.ctl(&["playbook", "run", "nope", "--incident", &incident]);
    let (_, stderr) = exits(&out, 1);
    assert!(stderr.contains("no playbook"), "{stderr}");
    let out = c.ctl(&["playbook", "run", "tell", "--incident", "fc-nope"]);
    let (_, stderr) = exits(&out, 1);
    assert!(stderr.contains("404"), "{stderr}");
    // Audited with who asked.
    let out = c.ctl(&["audit", "verify"]);
    ok(&out, "audit verify", &c);
}
