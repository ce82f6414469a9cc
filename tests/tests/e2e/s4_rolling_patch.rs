//! S4, rolling patching (SPEC §3, issue 6 "Must show" 1): a cron-scheduled
//! playbook patches FINCORP-APP-TRANSPROC-TEST on six hosts, two at a time,
//! with at most 10% failures and at least three healthy hosts kept outside
//! each batch. Host 4 cannot take the patch: its app stops answering. The
//! rollout halts after batch 2 (1 of 6 failed, 16.7% > 10%), rolls back
//! batch 2 (hosts 3 and 4), and never touches batch 3.
//!
//! How the six hosts are made faithful on one machine: each host is a real
//! `fincorp-agent` process with its own host name, state directory and
//! script allowlist, so every drain, patch, restart, rollback and undrain
//! is a signed command to that host's agent, which runs the host's own
//! script. Each host's app is an HTTP endpoint (served by this test) that
//! the host's agent probes every second; the health gate reads those
//! probes. The scripts keep the host's state in its own directory: the
//! patch writes the version, and on host 4 (which holds an `incompatible`
//! marker, as a host with the wrong firmware would) it breaks the app, so
//! its probe fails; the rollback restores the previous version and the app
//! answers again. Every script appends its invocation to the host's log and
//! to a shared, ordered log: the test asserts on those files.
//!
//! The playbook's cron schedule is set a few seconds ahead once every agent
//! reports, then the playbooks are reloaded; an operator approves the start
//! (the playbook requires it, as the shipped one does).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fincorp_tests::*;
use serde_json::{Value, json};

const APP: &str = "FINCORP-APP-TRANSPROC-TEST";
const PLAYBOOK: &str = "s4-rolling-patch";

/// The app on one host: answers `GET /health` with 200 `UP`, or 503 while
/// the host's `broken` marker exists.
fn serve_app(host_dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let answer: &[u8] = if host_dir.join("broken").exists() {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nDOWN"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nUP"
            };
            let _ = conn.write_all(answer);
        }
    });
    url
}

/// The host's scripts: each logs its invocation, then does its part to
/// the host's state in `host_dir`.
fn write_scripts(scripts: &Path, host: &str, host_dir: &Path, shared_log: &Path) {
    let log = |name: &str| {
        format!(
            "#!/bin/sh\necho \"{name} $*\" >> {dir}/invocations.log\necho \"{host} {name} $*\" >> {shared}\n",
            dir = host_dir.display(),
            shared = shared_log.display()
        )
    };
    let dir = host_dir.display();
    for (name, body) in [
        ("lb-drain.sh", format!("touch {dir}/drained\n")),
        ("lb-undrain.sh", format!("rm -f {dir}/drained\n")),
        (
            "apply-patch.sh",
            format!(
                "echo \"$2\" > {dir}/version\nif [ -e {dir}/incompatible ]; then touch {dir}/broken; echo 'patched; the app no longer starts'; else echo patched; fi\n"
            ),
        ),
        ("restart-app.sh", "echo restarted\n".to_owned()),
        (
            "rollback-patch.sh",
            format!("echo previous > {dir}/version\nrm -f {dir}/broken\necho rolled back\n"),
        ),
    ] {
        write_script(scripts, name, &format!("{}{body}", log(name)));
    }
}

/// Starts the agent of one host (its own config, state and allowlist).
fn start_host_agent(
    stack: &Stack,
    host: &str,
    host_dir: &Path,
    scripts: &Path,
    probe_url: &str,
) -> Proc {
    let config = host_dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1
host: {host}
sample_interval: 1s
heartbeat_interval: 1s
state_dir: {state}
metrics:
  enabled: false
correlator:
  url: {api}
  key_id: fleet
  secret: {{ env: FINCORP_AGENT_KEY }}
  timeout: 5s
actions:
  run_script:
    enabled: true
    dir: {scripts}
    max_timeout: 30s
  rate_limit:
    max_commands: 100
    per: 1m
apps:
  - name: {APP}
    select:
      cmdline: 'fincorp-s4-app-{host}'
    probe:
      http:
        url: {probe_url}
        timeout: 500ms
        expect_status: 200
        expect_body: UP
    rules:
      - name: probe_down
        when: probe_up < 1
        for: 1s
        severity: critical
",
            state = host_dir.join("agent-state").display(),
            api = stack.api,
            scripts = scripts.display(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin("fincorp-agent"));
    cmd.arg("--config")
        .arg(&config)
        .env("FINCORP_AGENT_KEY", AGENT_KEY)
        .env("RUST_LOG", "info");
    Proc::spawn(&format!("agent-{host}"), cmd, host_dir)
}

/// A cron schedule (seconds first, with the year) for `at_ms`, UTC.
fn cron_at(at_ms: i64) -> String {
    // "2026-11-22T10:00:05.000Z"
    let t = fincorp_api::format_ms(at_ms);
    let num = |r: std::ops::Range<usize>| t[r].parse::<u32>().unwrap();
    format!(
        "{} {} {} {} {} * {}",
        num(17..19),
        num(14..16),
        num(11..13),
        num(8..10),
        num(5..7),
        num(0..4)
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn invocations(host_dir: &Path) -> Vec<String> {
    read(&host_dir.join("invocations.log"))
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn s4_rolling_patch_halts_at_the_failure_threshold_and_rolls_back_the_failed_batch() {
    let _serial = serial();
    let pb_dir = tempfile::tempdir().unwrap();
    let mut stack = Stack::start_without_agent(&StackConfig {
        resolve_after: "2s".into(),
        playbooks_dir: Some(pb_dir.path().to_path_buf()),
        ..StackConfig::default()
    });
    let shared_log = stack.dir().join("rollout.log");
    let hosts: Vec<String> = (1..=6)
        .map(|i| format!("s4-tp-{i}-{}", std::process::id()))
        .collect();
    let dirs: Vec<PathBuf> = hosts
        .iter()
        .map(|h| stack.dir().join("hosts").join(h))
        .collect();
    let mut agents = Vec::new();
    for (host, dir) in hosts.iter().zip(&dirs) {
        std::fs::create_dir_all(dir).unwrap();
        let url = serve_app(dir.clone());
        let scripts = scripts_dir(dir);
        write_scripts(&scripts, host, dir, &shared_log);
        agents.push(start_host_agent(&stack, host, dir, &scripts, &url));
    }
    // Host 4 cannot take this patch.
    std::fs::write(dirs[3].join("incompatible"), "firmware too old\n").unwrap();
    let logs = |stack: &Stack, agents: &[Proc]| {
        let mut out = stack.logs();
        for a in agents {
            out.push_str(&format!("--- {} ---\n{}\n", a.name, a.logs()));
        }
        out
    };

    // Every host's agent probes its app and reports it up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agents.iter().all(|a| a.logs().contains("probe is up")) {
        for a in &mut agents {
            a.assert_running();
        }
        assert!(
            Instant::now() < deadline,
            "agents not up:\n{}",
            logs(&stack, &agents)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));

    // The playbook, scheduled a few seconds from now.
    let slot = fincorp_api::now_ms() + 4_000;
    std::fs::write(
        pb_dir.path().join(format!("{PLAYBOOK}.yaml")),
        format!(
            "version: 1
name: {PLAYBOOK}
description: S4 rolling patch
trigger:
  schedule: \"{cron}\"
guardrails:
  rate_limit:
    per_playbook: {{max: 1, per: 1d}}
  max_hosts: 6
  approval:
    required: true
    timeout: 2m
steps:
  - id: patch
    action: rolling_patch
    with:
      app: {APP}
      hosts: [{hosts}]
      serial: 2
      max_fail_percentage: 10
      min_healthy: 3
      drain: {{script: lb-drain.sh, args: [\"{{app}}\", \"{{host}}\"]}}
      patch: {{script: apply-patch.sh, args: [\"{{app}}\", \"2026.11\"], timeout: 20s}}
      restart: {{script: restart-app.sh, args: [\"{{app}}\"]}}
      rollback: {{script: rollback-patch.sh, args: [\"{{app}}\"]}}
      undrain: {{script: lb-undrain.sh, args: [\"{{app}}\", \"{{host}}\"]}}
      health: {{samples: 2, timeout: 8s, poll: 250ms}}
      silence_for: 10m
",
            cron = cron_at(slot),
            hosts = hosts.join(", "),
        ),
    )
    .unwrap();
    let (status, body) = post_json(
        &format!("{}/api/v1/playbooks/reload", stack.api),
        &json!({}),
    );
    assert_eq!(status, 200, "{body}");

    // The schedule fires; an operator approves the start.
    let run_id = wait_for(
        &mut stack,
        Duration::from_secs(20),
        "the scheduled run",
        |s| {
            runs(s, &format!("playbook={PLAYBOOK}"))
                .into_iter()
                .find(|r| r["state"] == "awaiting_approval")
                .and_then(|r| r["id"].as_str().map(str::to_owned))
        },
    );
    let (status, body) = post_json(
        &format!("{}/api/v1/runs/{run_id}/approve", stack.api),
        &json!({"by": "oncall", "reason": "Sunday maintenance window"}),
    );
    assert_eq!(status, 200, "{body}");

    // Progress is in the run record while the rollout goes on.
    let mut saw_progress = false;
    let run = wait_for(
        &mut stack,
        Duration::from_secs(120),
        "the rollout to end",
        |s| {
            let run = s.api_get(&format!("/api/v1/runs/{run_id}"));
            let step = &run["steps"][0];
            if step["state"] == "running" && step["result"]["state"] == "running" {
                saw_progress = true;
            }
            (run["finished_at_ms"].is_i64()).then_some(run)
        },
    );
    let context = format!("run: {run:#}\n{}", logs(&stack, &agents));

    // 1. The rollout halted at the threshold, after batch 2.
    assert_eq!(run["state"], "failed", "{context}");
    let reason = run["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("halted after batch 2 of 3"), "{context}");
    assert!(
        reason.contains("1 of 6 hosts failed (16.7% > max_fail_percentage 10%)"),
        "{context}"
    );
    assert!(
        saw_progress,
        "no progress seen in the run record; {context}"
    );
    let report = &run["steps"][0]["result"];
    assert_eq!(report["state"], "halted", "{context}");
    let batches: Vec<&Value> = report["batches"].as_array().unwrap().iter().collect();
    let states: Vec<&str> = batches
        .iter()
        .map(|b| b["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["succeeded", "rolled_back", "not_started"],
        "{context}"
    );
    let outcome = |h: &str| {
        report["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["host"] == h)
            .map(|r| r["outcome"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let outcomes: Vec<String> = hosts.iter().map(|h| outcome(h)).collect();
    assert_eq!(
        outcomes,
        [
            "patched",
            "patched",
            "rolled_back",
            "rolled_back",
            "not_started",
            "not_started"
        ],
        "{context}"
    );
    let h4_phases: Vec<String> = report["hosts"][3]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}:{}", p["phase"].as_str().unwrap(), p["ok"]))
        .collect();
    assert_eq!(
        h4_phases,
        [
            "drain:true",
            "patch:true",
            "restart:true",
            "health:false",
            "rollback:true",
            "rollback_restart:true",
            "rollback_health:true",
            "undrain:true"
        ],
        "{context}"
    );

    // 2. What the hosts ran, from their own logs: batch 1 patched, batch 2
    //    patched and rolled back (both hosts), batch 3 untouched.
    let full = [
        "lb-drain.sh",
        "apply-patch.sh",
        "restart-app.sh",
        "lb-undrain.sh",
    ];
    let rolled = [
        "lb-drain.sh",
        "apply-patch.sh",
        "restart-app.sh",
        "rollback-patch.sh",
        "restart-app.sh",
        "lb-undrain.sh",
    ];
    for i in [0, 1] {
        assert_eq!(invocations(&dirs[i]), full, "{}; {context}", hosts[i]);
        assert_eq!(read(&dirs[i].join("version")).trim(), "2026.11");
    }
    for i in [2, 3] {
        assert_eq!(invocations(&dirs[i]), rolled, "{}; {context}", hosts[i]);
        assert_eq!(read(&dirs[i].join("version")).trim(), "previous");
    }
    for i in [4, 5] {
        assert!(invocations(&dirs[i]).is_empty(), "{}; {context}", hosts[i]);
        assert!(!dirs[i].join("version").exists());
    }
    assert!(
        read(&dirs[0].join("invocations.log"))
            .contains("apply-patch.sh FINCORP-APP-TRANSPROC-TEST 2026.11"),
        "arguments with placeholders filled"
    );
    // Every host is back in service and host 4's app answers again.
    assert!(
        dirs.iter().all(|d| !d.join("drained").exists()),
        "{context}"
    );
    assert!(!dirs[3].join("broken").exists());
    // Batch 2 started only after batch 1 was healthy and back in service.
    let order: Vec<String> = read(&shared_log).lines().map(str::to_owned).collect();
    let pos = |host: &str, script: &str, last: bool| {
        let hit = |l: &String| l.starts_with(&format!("{host} {script}"));
        if last {
            order.iter().rposition(hit)
        } else {
            order.iter().position(hit)
        }
        .unwrap_or_else(|| panic!("{host} {script} not in {order:#?}"))
    };
    let batch1_done =
        pos(&hosts[0], "lb-undrain.sh", true).max(pos(&hosts[1], "lb-undrain.sh", true));
    let batch2_start =
        pos(&hosts[2], "lb-drain.sh", false).min(pos(&hosts[3], "lb-drain.sh", false));
    assert!(batch1_done < batch2_start, "{order:#?}");

    // 3. One maintenance silence per patched host, by the run, all expired.
    let silences = stack.api_get("/api/v1/silences")["silences"]
        .as_array()
        .cloned()
        .unwrap();
    let mut silenced: Vec<String> = silences
        .iter()
        .map(|s| s["matchers"][0].as_str().unwrap().to_owned())
        .collect();
    silenced.sort();
    let mut want: Vec<String> = hosts[..4].iter().map(|h| format!("host={h}")).collect();
    want.sort();
    assert_eq!(silenced, want, "{silences:#?}");
    for s in &silences {
        assert_eq!(s["created_by"], format!("automation:{run_id}"), "{s:#}");
        assert_eq!(s["active"], false, "{s:#}");
        assert!(s["expired_at_ms"].is_i64(), "{s:#}");
    }

    // 4. Host 4's app went down during the patch and its agent raised
    //    probe_down, but the rollout's silence kept it from paging: it was
    //    recorded as silenced, and no incident was opened.
    assert!(
        agents[3].logs().contains("alert firing") && agents[3].logs().contains("probe_down"),
        "host 4's agent never raised probe_down:\n{}",
        agents[3].logs()
    );
    let db = rusqlite::Connection::open_with_flags(
        stack.database(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let silenced_by: Vec<String> = db
        .prepare("SELECT silence_id FROM silenced_alerts WHERE host = ?1 AND name = 'probe_down'")
        .unwrap()
        .query_map([&hosts[3]], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let h4_silence = silences
        .iter()
        .find(|s| s["matchers"][0] == format!("host={}", hosts[3]))
        .unwrap();
    assert_eq!(
        silenced_by,
        [h4_silence["id"].as_str().unwrap().to_owned()],
        "{context}"
    );
    // Its probe is up again well before the silence ended; nothing opens.
    std::thread::sleep(Duration::from_secs(3));
    let incidents = stack.api_get("/api/v1/incidents")["incidents"]
        .as_array()
        .cloned()
        .unwrap();
    assert!(
        incidents.is_empty(),
        "the patch paged someone: {incidents:#?}"
    );
    drop(agents);
}
