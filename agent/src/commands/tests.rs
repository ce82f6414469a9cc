//! Command handling tests: verification, allowlist, idempotency and the
//! poll → execute → report loop against the mock correlator.

use std::path::Path;

use fincorp_api::signing::sign_command;
use fincorp_api::wire::{CommandDetail, CpuLimit};

use super::*;
use crate::testing::{MockCorrelator, config, key};

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
cgroup_root: {root}
apps:
  - name: APP
    select: {{ exe: app }}
    cgroup: fincorp/APP
  - name: NOCG
    select: {{ exe: nocg }}
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

#[test]
fn the_result_cache_forgets_the_oldest() {
    let mut cache = ResultCache::new(2);
    let result = |id: &str| CommandResult {
        command_id: id.into(),
        host: "h".into(),
        outcome: CommandOutcome::Refused,
        message: String::new(),
        detail: None,
        finished_at_ms: 0,
    };
    cache.insert(result("a"));
    cache.insert(result("b"));
    cache.insert(result("a"));
    cache.insert(result("c"));
    assert!(cache.get("a").is_none());
    assert!(cache.get("b").is_some() && cache.get("c").is_some());
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

    let poll = Correlator::new(&mock.url, cfg.correlator.key.clone(), POLL_TIMEOUT).unwrap();
    let report = Correlator::new(
        &mock.url,
        cfg.correlator.key.clone(),
        Duration::from_secs(5),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let poller = tokio::spawn(run_poller(poll, cfg.host.clone(), Executor::new(&cfg), tx));
    let reporter = tokio::spawn(run_reporter(report, rx));

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
