//! Command handling tests: verification, allowlist, idempotency and the
//! poll → execute → report loop against the mock correlator.

use std::path::Path;

use fincorp_api::signing::sign_command;
use fincorp_api::wire::{CommandDetail, CpuLimit};

use super::*;
use crate::testing::{MockCorrelator, config, key};
use journal::Journal;

const NOW: UnixMs = 1_700_000_000_000;

/// A fake cgroup v1 tree with app `APP` at quota 50000/100000.
fn tree() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cpu/fincorp/APP");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cpu.cfs_quota_us"), "50000\n").unwrap();
    std::fs::write(dir.join("cpu.cfs_period_us"), "100000\n").unwrap();
    root
}

fn quota(root: &Path) -> String {
    std::fs::read_to_string(root.join("cpu/fincorp/APP/cpu.cfs_quota_us"))
        .unwrap()
        .trim()
        .to_owned()
}

fn agent_config(root: &Path, url: &str, reallocate_enabled: bool) -> AgentConfig {
    agent_config_with(root, url, reallocate_enabled, "")
}

/// `extra_actions` is YAML indented by four spaces, under `actions:`.
fn agent_config_with(
    root: &Path,
    url: &str,
    reallocate_enabled: bool,
    extra_actions: &str,
) -> AgentConfig {
    config(&format!(
        "\
version: 1
host: web01
correlator:
  url: {url}
  key_id: fleet
  secret: {{ env: UNUSED_IN_TESTS }}
actions:
  reallocate:
    enabled: {reallocate_enabled}
    max_increase_pct: 50
    max_cpu_cores: 2.0
{extra_actions}cgroup_root: {root}
apps:
  - name: APP
    select: {{ exe: app }}
    cgroup: fincorp/APP
  - name: NOCG
    select: {{ exe: nocg }}
  - name: UNIT
    select: {{ systemd_unit: fincorp-unit.service }}
",
        root = root.display()
    ))
}

fn executor(root: &Path, enabled: bool) -> Executor {
    Executor::new(&agent_config(root, "http://127.0.0.1:9", enabled))
}

fn command(id: &str, host: &str, app: &str, pct: f64) -> Command {
    Command {
        id: id.into(),
        host: host.into(),
        issued_at_ms: NOW - 1_000,
        expires_at_ms: NOW + 60_000,
        action: CommandAction::Reallocate {
            app: app.into(),
            resource: Resource::Cpu,
            increase_pct: pct,
        },
    }
}

fn signed(cmd: &Command) -> SignedCommand {
    sign_command(&key(), cmd)
}

fn refused(result: Option<CommandResult>, reason_starts: &str) -> CommandResult {
    let r = result.expect("a result is reported");
    assert_eq!(r.outcome, CommandOutcome::Refused, "{r:?}");
    assert!(
        r.message.starts_with(reason_starts),
        "{:?} does not start with {reason_starts:?}",
        r.message
    );
    assert_eq!(r.detail, None);
    r
}

#[tokio::test]
async fn an_allowed_command_is_applied_with_before_and_after() {
    let root = tree();
    let mut ex = executor(root.path(), true);
    let r = ex
        .handle(&signed(&command("run1:raise", "web01", "APP", 20.0)), NOW)
        .await
        .unwrap();
    assert_eq!(r.outcome, CommandOutcome::Applied, "{r:?}");
    assert_eq!(
        (r.command_id.as_str(), r.host.as_str()),
        ("run1:raise", "web01")
    );
    assert_eq!(quota(root.path()), "60000");
    let Some(CommandDetail::Reallocate {
        app,
        before,
        after,
        cgroup_version,
        ..
    }) = r.detail
    else {
        panic!("no detail: {r:?}")
    };
    assert_eq!((app.as_str(), cgroup_version), ("APP", 1));
    assert_eq!(
        before,
        CpuLimit {
            quota_us: Some(50_000),
            period_us: 100_000
        }
    );
    assert_eq!(
        after,
        CpuLimit {
            quota_us: Some(60_000),
            period_us: 100_000
        }
    );
}

#[tokio::test]
async fn a_forged_command_is_not_executed_and_not_answered() {
    let root = tree();
    let mut ex = executor(root.path(), true);
    let mut forged = signed(&command("f1", "web01", "APP", 20.0));
    forged.payload = forged.payload.replace("20.0", "50.0");
    assert_eq!(ex.handle(&forged, NOW).await, None);
    let attacker =
        fincorp_api::signing::SigningKey::new("fleet", b"attacker-secret-attacker-secret!")
            .unwrap();
    assert_eq!(
        ex.handle(
            &sign_command(&attacker, &command("f2", "web01", "APP", 20.0)),
            NOW
        )
        .await,
        None
    );
    assert_eq!(quota(root.path()), "50000", "nothing was executed");
}

#[tokio::test]
async fn an_expired_command_is_refused() {
    let root = tree();
    let mut ex = executor(root.path(), true);
    let cmd = command("old", "web01", "APP", 20.0);
    refused(
        ex.handle(&signed(&cmd), cmd.expires_at_ms + 1).await,
        "expired at ",
    );
    assert_eq!(quota(root.path()), "50000");
}

#[tokio::test]
async fn a_command_for_another_host_is_refused() {
    let root = tree();
    let mut ex = executor(root.path(), true);
    let r = refused(
        ex.handle(&signed(&command("c1", "db07", "APP", 20.0)), NOW)
            .await,
        "addressed to host \"db07\"",
    );
    assert_eq!(r.host, "web01");
    assert_eq!(quota(root.path()), "50000");
}

#[tokio::test]
async fn a_command_not_on_the_allowlist_is_refused() {
    let root = tree();
    let mut ex = executor(root.path(), false);
    refused(
        ex.handle(&signed(&command("c1", "web01", "APP", 20.0)), NOW)
            .await,
        "action reallocate is not enabled in this agent's allowlist",
    );
    assert_eq!(quota(root.path()), "50000");
}

#[tokio::test]
async fn out_of_bounds_increases_and_unknown_apps_are_refused() {
    let root = tree();
    let mut ex = executor(root.path(), true);
    for (id, pct) in [("zero", 0.0), ("negative", -10.0), ("too-big", 50.5)] {
        refused(
            ex.handle(&signed(&command(id, "web01", "APP", pct)), NOW)
                .await,
            "increase_pct ",
        );
    }
    refused(
        ex.handle(
            &signed(&command("u", "web01", "FINCORP-APP-NOPE", 10.0)),
            NOW,
        )
        .await,
        "unknown app",
    );
    refused(
        ex.handle(&signed(&command("n", "web01", "NOCG", 10.0)), NOW)
            .await,
        "app \"NOCG\" has no cgroup",
    );
    assert_eq!(quota(root.path()), "50000");
    // The maximum itself is allowed.
    let r = ex
        .handle(&signed(&command("max", "web01", "APP", 50.0)), NOW)
        .await
        .unwrap();
    assert_eq!(r.outcome, CommandOutcome::Applied, "{r:?}");
    assert_eq!(quota(root.path()), "75000");
}

#[tokio::test]
async fn a_repeated_command_id_is_executed_once_and_answered_with_the_first_result() {
    let root = tree();
    let mut ex = executor(root.path(), true);
    let cmd = signed(&command("run7:raise", "web01", "APP", 20.0));
    let first = ex.handle(&cmd, NOW).await.unwrap();
    assert_eq!(first.outcome, CommandOutcome::Applied);
    let again = ex.handle(&cmd, NOW + 5_000).await.unwrap();
    assert_eq!(again, first, "the cached result, timestamps included");
    assert_eq!(quota(root.path()), "60000", "executed once, not 72000");
    // Even after expiry a repeat gets the original answer, not a refusal.
    let late = ex.handle(&cmd, NOW + 3_600_000).await.unwrap();
    assert_eq!(late, first);
}

#[tokio::test]
async fn polled_commands_are_executed_and_their_results_reported_signed() {
    let root = tree();
    let mock = MockCorrelator::start().await;
    let cfg = agent_config(root.path(), &mock.url, true);
    let now = fincorp_api::now_ms();
    let mut cmd = command("run9:raise", "web01", "APP", 20.0);
    cmd.expires_at_ms = now + 600_000;
    let mut forged = signed(&command("forged", "web01", "APP", 40.0));
    forged.signature = "00".repeat(32);
    mock.state
        .commands
        .lock()
        .unwrap()
        .extend([forged, signed(&cmd), signed(&cmd)]);

    let link = crate::ship::tests::link(&mock.url, cfg.correlator.key.clone());
    let (tx, rx) = mpsc::channel(16);
    let executor = Arc::new(Mutex::new(Executor::new(&cfg)));
    let poller = tokio::spawn(run_poller(link.clone(), executor, tx));
    let reporter = tokio::spawn(run_reporter(link, rx));

    assert!(
        mock.wait_until(Duration::from_secs(10), |m| m.results().len() >= 2)
            .await,
        "{:?}",
        mock.results()
    );
    let results = mock.results();
    assert_eq!(
        results.len(),
        2,
        "the forged command got no answer: {results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| r.command_id == "run9:raise" && r.outcome == CommandOutcome::Applied)
    );
    assert_eq!(
        results[0], results[1],
        "the repeat was answered from the cache"
    );
    assert_eq!(quota(root.path()), "60000");
    assert_eq!(
        mock.state
            .unauthorized
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    poller.abort();
    reporter.abort();
}

#[tokio::test]
async fn a_replayed_command_is_not_run_again_even_after_a_restart() {
    let root = tree();
    let state = tempfile::tempdir().unwrap();
    let journal_path = state.path().join("commands.jsonl");
    let cfg = agent_config(root.path(), "http://127.0.0.1:9", true);
    let cmd = signed(&command("run3:raise", "web01", "APP", 20.0));
    let first = {
        let mut ex = Executor::with_journal(&cfg, Journal::open(&journal_path).unwrap());
        ex.handle(&cmd, NOW).await.unwrap()
    };
    assert_eq!(first.outcome, CommandOutcome::Applied, "{first:?}");
    assert_eq!(quota(root.path()), "60000");
    // The agent restarts; the correlator (or an attacker replaying the
    // captured message) sends the same signed command again.
    let mut ex = Executor::with_journal(&cfg, Journal::open(&journal_path).unwrap());
    let again = ex.handle(&cmd, NOW + 1_000).await.unwrap();
    assert_eq!(again, first, "answered with the first result");
    assert_eq!(quota(root.path()), "60000", "not executed a second time");
    assert_eq!(
        ex.counters
            .replayed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_command_interrupted_by_a_crash_is_never_run_again() {
    let root = tree();
    let state = tempfile::tempdir().unwrap();
    let journal_path = state.path().join("commands.jsonl");
    let cfg = agent_config(root.path(), "http://127.0.0.1:9", true);
    // As if the agent died between recording the start and the result.
    Journal::open(&journal_path)
        .unwrap()
        .begin("run4:raise", NOW)
        .unwrap();
    let mut ex = Executor::with_journal(&cfg, Journal::open(&journal_path).unwrap());
    let r = ex
        .handle(
            &signed(&command("run4:raise", "web01", "APP", 20.0)),
            NOW + 5,
        )
        .await
        .unwrap();
    assert_eq!(r.outcome, CommandOutcome::Failed, "{r:?}");
    assert!(
        r.message
            .starts_with("interrupted: the agent stopped while running it"),
        "{}",
        r.message
    );
    assert_eq!(quota(root.path()), "50000", "not run");
}

#[tokio::test]
async fn an_authentic_command_of_an_unknown_kind_is_refused() {
    let root = tree();
    let mut ex = executor(root.path(), true);
    // Signed with the right key, but an action this agent does not have.
    let payload = format!(
        r#"{{"id":"x1","host":"web01","issued_at_ms":{},"expires_at_ms":{},"action":{{"kind":"exec_shell","cmd":"rm -rf /"}}}}"#,
        NOW - 1,
        NOW + 60_000
    );
    let tag = {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, crate::testing::SECRET.as_bytes());
        let sig = ring::hmac::sign(&k, format!("fincorp-command-v1\n{payload}").as_bytes());
        sig.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let signed = SignedCommand {
        key_id: "fleet".into(),
        payload,
        signature: tag,
    };
    refused(ex.handle(&signed, NOW).await, "unsupported command: ");
}

#[tokio::test]
async fn the_local_rate_limit_refuses_beyond_its_budget() {
    let root = tree();
    let cfg = agent_config_with(
        root.path(),
        "http://127.0.0.1:9",
        true,
        "  rate_limit:\n    max_commands: 2\n    per: 1m\n",
    );
    let mut ex = Executor::new(&cfg);
    for (i, id) in ["a", "b"].into_iter().enumerate() {
        let r = ex
            .handle(&signed(&command(id, "web01", "APP", 10.0)), NOW + i as i64)
            .await
            .unwrap();
        assert_eq!(r.outcome, CommandOutcome::Applied, "{r:?}");
    }
    let r = refused(
        ex.handle(&signed(&command("c", "web01", "APP", 10.0)), NOW + 10)
            .await,
        "local rate limit: 2 commands already ran in the last 1m",
    );
    assert_eq!(r.command_id, "c");
    assert_eq!(quota(root.path()), "60500", "two raises of 10%, not three");
    // A minute later there is room again.
    let mut later = command("d", "web01", "APP", 10.0);
    later.expires_at_ms = NOW + 600_000;
    let r = ex.handle(&signed(&later), NOW + 60_001).await.unwrap();
    assert_eq!(r.outcome, CommandOutcome::Applied, "{r:?}");
}

fn action_command(id: &str, action: CommandAction) -> Command {
    Command {
        action,
        ..command(id, "web01", "APP", 1.0)
    }
}

#[tokio::test]
async fn actions_not_enabled_are_refused_whatever_they_ask() {
    let root = tree();
    let mut ex = executor(root.path(), true);
    let cases = [
        (
            CommandAction::SetLimits {
                app: "APP".into(),
                cpu_cores: Some(1.0),
                cpu_weight: None,
                memory_max_bytes: None,
            },
            "action set_limits is not enabled",
        ),
        (
            CommandAction::RestartUnit { app: "UNIT".into() },
            "action restart_unit is not enabled",
        ),
        (
            CommandAction::RunScript {
                script: "drain.sh".into(),
                args: vec![],
                timeout_ms: None,
            },
            "action run_script is not enabled",
        ),
        (
            CommandAction::Reallocate {
                app: "APP".into(),
                resource: Resource::Memory,
                increase_pct: 10.0,
            },
            "memory reallocation is not allowed",
        ),
    ];
    for (i, (action, reason)) in cases.into_iter().enumerate() {
        refused(
            ex.handle(&signed(&action_command(&format!("n{i}"), action)), NOW)
                .await,
            reason,
        );
    }
    assert_eq!(quota(root.path()), "50000");
}

/// A fake `systemctl` that records its arguments and keeps unit properties
/// in a state file, like systemd would.
fn fake_systemctl(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("systemctl");
    std::fs::write(dir.join("state"), "CPUQuotaPerSecUSec=500000us\nCPUWeight=100\nMemoryMax=1073741824\nActiveState=active\nSubState=running\nMainPID=100\nExecMainStartTimestampMonotonic=1000\n").unwrap();
    std::fs::write(
        &path,
        r#"#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/calls.log"
cmd=$1; shift
case "$cmd" in
show)
  shift
  while [ $# -gt 0 ]; do
    if [ "$1" = -p ]; then grep "^$2=" "$d/state" || echo "$2="; shift 2; else shift; fi
  done ;;
set-property)
  [ "$1" = --runtime ] && shift
  shift
  for kv in "$@"; do
    k=${kv%%=*}; v=${kv#*=}
    if [ "$k" = CPUQuota ]; then k=CPUQuotaPerSecUSec; v="$(( ${v%\%} * 10000 ))us"; fi
    grep -v "^$k=" "$d/state" > "$d/state.new"; echo "$k=$v" >> "$d/state.new"; mv "$d/state.new" "$d/state"
  done ;;
restart)
  pid=$(sed -n 's/^MainPID=//p' "$d/state")
  ts=$(sed -n 's/^ExecMainStartTimestampMonotonic=//p' "$d/state")
  grep -v '^MainPID=\|^ExecMainStartTimestampMonotonic=' "$d/state" > "$d/state.new"
  echo "MainPID=$((pid + 1))" >> "$d/state.new"; echo "ExecMainStartTimestampMonotonic=$((ts + 5))" >> "$d/state.new"
  mv "$d/state.new" "$d/state" ;;
*) echo "unknown $cmd" >&2; exit 1 ;;
esac
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_systemd_app_is_resized_restarted_and_reallocated_through_systemctl() {
    let root = tree();
    let fake = tempfile::tempdir().unwrap();
    let systemctl = fake_systemctl(fake.path());
    let cfg = agent_config_with(
        root.path(),
        "http://127.0.0.1:9",
        true,
        &format!(
            "  set_limits:\n    enabled: true\n    max_cpu_cores: 4\n    min_memory_mb: 64\n    max_memory_mb: 4096\n  restart_unit:\n    enabled: true\n  systemctl: {}\n",
            systemctl.display()
        ),
    );
    let mut ex = Executor::new(&cfg);
    let set = ex
        .handle(
            &signed(&action_command(
                "s1",
                CommandAction::SetLimits {
                    app: "UNIT".into(),
                    cpu_cores: Some(1.5),
                    cpu_weight: Some(200),
                    memory_max_bytes: Some(2 << 30),
                },
            )),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(set.outcome, CommandOutcome::Applied, "{set:?}");
    let Some(CommandDetail::Limits {
        backend,
        target,
        before,
        after,
        ..
    }) = &set.detail
    else {
        panic!("{set:?}")
    };
    assert_eq!(
        (backend.as_str(), target.as_str()),
        ("systemd", "fincorp-unit.service")
    );
    assert_eq!(before.cpu.and_then(|c| c.cores()), Some(0.5));
    assert_eq!(after.cpu.and_then(|c| c.cores()), Some(1.5));
    assert_eq!(
        (before.cpu_weight, after.cpu_weight),
        (Some(100), Some(200))
    );
    assert_eq!(after.memory.and_then(|m| m.max_bytes), Some(2 << 30));
    assert!(
        calls(fake.path()).contains(&"set-property --runtime fincorp-unit.service CPUQuota=150% CPUWeight=200 MemoryMax=2147483648".to_owned()),
        "{:?}",
        calls(fake.path())
    );

    let raise = ex
        .handle(&signed(&command("r1", "web01", "UNIT", 20.0)), NOW)
        .await
        .unwrap();
    assert_eq!(raise.outcome, CommandOutcome::Applied, "{raise:?}");
    assert!(
        calls(fake.path())
            .iter()
            .any(|c| c == "set-property --runtime fincorp-unit.service CPUQuota=180%")
    );

    let restart = ex
        .handle(
            &signed(&action_command(
                "t1",
                CommandAction::RestartUnit { app: "UNIT".into() },
            )),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(restart.outcome, CommandOutcome::Applied, "{restart:?}");
    let Some(CommandDetail::Restart {
        unit,
        before,
        after,
        ..
    }) = &restart.detail
    else {
        panic!("{restart:?}")
    };
    assert_eq!(unit, "fincorp-unit.service");
    assert_eq!((before.main_pid, after.main_pid), (100, 101));
    assert!(after.started_monotonic_us > before.started_monotonic_us);
    assert!(calls(fake.path()).contains(&"restart fincorp-unit.service".to_owned()));

    // Only units of configured apps, and only apps that are units.
    refused(
        ex.handle(
            &signed(&action_command(
                "t2",
                CommandAction::RestartUnit { app: "APP".into() },
            )),
            NOW,
        )
        .await,
        "app \"APP\" is not a systemd unit",
    );
    // Out-of-bounds limits are refused before systemctl is run.
    let before_calls = calls(fake.path()).len();
    refused(
        ex.handle(
            &signed(&action_command(
                "s2",
                CommandAction::SetLimits {
                    app: "UNIT".into(),
                    cpu_cores: None,
                    cpu_weight: None,
                    memory_max_bytes: Some(1 << 20),
                },
            )),
            NOW,
        )
        .await,
        "memory_max_bytes 1048576 is outside the allowed range",
    );
    assert_eq!(
        calls(fake.path()).len(),
        before_calls,
        "systemctl was not run"
    );
}

fn script_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let write = |name: &str, body: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write(
        "drain.sh",
        "#!/bin/sh\necho \"draining $1 $2\"\necho \"PATH=$PATH HOME=${HOME:-unset}\"\necho oops >&2\n",
        0o755,
    );
    write("fail.sh", "#!/bin/sh\necho failing\nexit 3\n", 0o755);
    write("hang.sh", "#!/bin/sh\nsleep 30 &\nsleep 30\n", 0o755);
    write("loose.sh", "#!/bin/sh\ntrue\n", 0o777);
    write("plain.txt", "not a script\n", 0o644);
    std::os::unix::fs::symlink("/bin/true", dir.path().join("link.sh")).unwrap();
    dir
}

fn run_script(id: &str, script: &str, args: &[&str], timeout_ms: Option<u64>) -> SignedCommand {
    signed(&action_command(
        id,
        CommandAction::RunScript {
            script: script.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            timeout_ms,
        },
    ))
}

#[tokio::test]
async fn allowlisted_scripts_run_with_a_timeout_and_anything_else_is_refused() {
    let root = tree();
    let scripts = script_dir();
    let cfg = agent_config_with(
        root.path(),
        "http://127.0.0.1:9",
        true,
        &format!(
            "  run_script:\n    enabled: true\n    dir: {}\n    max_timeout: 5s\n",
            scripts.path().display()
        ),
    );
    let mut ex = Executor::new(&cfg);
    let ok = ex
        .handle(
            &run_script("x1", "drain.sh", &["web01", "--fast"], None),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(ok.outcome, CommandOutcome::Applied, "{ok:?}");
    let Some(CommandDetail::Script {
        exit_code,
        timed_out,
        stdout,
        stderr,
        ..
    }) = &ok.detail
    else {
        panic!("{ok:?}")
    };
    assert_eq!((*exit_code, *timed_out), (Some(0), false));
    assert!(
        stdout.starts_with("draining web01 --fast\nPATH=/usr/local/sbin"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("HOME=unset"),
        "the environment is cleared: {stdout}"
    );
    assert_eq!(stderr, "oops");

    let failed = ex
        .handle(&run_script("x2", "fail.sh", &[], None), NOW)
        .await
        .unwrap();
    assert_eq!(failed.outcome, CommandOutcome::Failed);
    assert_eq!(failed.message, "fail.sh exited 3");
    assert!(matches!(
        failed.detail,
        Some(CommandDetail::Script {
            exit_code: Some(3),
            ..
        })
    ));

    let started = std::time::Instant::now();
    let hung = ex
        .handle(&run_script("x3", "hang.sh", &[], Some(300)), NOW)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "killed at the timeout, children too"
    );
    assert_eq!(hung.outcome, CommandOutcome::Failed);
    assert!(
        hung.message.starts_with("hang.sh timed out after 300ms"),
        "{}",
        hung.message
    );

    for (id, script, reason) in [
        (
            "y1",
            "../../bin/sh",
            "script \"../../bin/sh\" must be a file name",
        ),
        ("y2", "/bin/sh", "script \"/bin/sh\" must be a file name"),
        (
            "y3",
            "missing.sh",
            "script \"missing.sh\" is not in the allowlist directory",
        ),
        ("y4", "loose.sh", ""),
        ("y5", "plain.txt", ""),
        ("y6", "link.sh", ""),
    ] {
        let r = refused(
            ex.handle(&run_script(id, script, &[], None), NOW).await,
            reason,
        );
        let expected = match id {
            "y4" => "is writable by group or others",
            "y5" => "is not executable",
            "y6" => "is not a regular file (symlinks are refused)",
            _ => "",
        };
        assert!(r.message.contains(expected), "{id}: {}", r.message);
    }
}
