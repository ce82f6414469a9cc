//! S5 from the agent's side (SPEC §3, issue 3 "Must show" 2): the correlator
//! is killed; while it is down an app flaps (firing/resolved transitions),
//! the agent spools every batch, is itself killed with SIGKILL and
//! restarted (and sees one more flap); then the correlator comes back.
//! Every alert transition and every batch produced meanwhile arrives, and
//! the correlator stores each event id exactly once.
//!
//! What was produced is read from the agent's own evidence: its log lines
//! (every transition is logged with its `event_id`) and the spool files on
//! disk at the moment of the SIGKILL and when the correlator comes back.
//! What arrived is read from the correlator: its `events` table (SQLite,
//! opened read-only), the incident's alert episodes over the REST API, and
//! its ingest request counters; and from the agent's `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fincorp_tests::*;
use serde_json::Value;

const APP: &str = "FINCORP-APP-S5-TEST";

/// The flapping app: a shell whose command line the agent's selector
/// matches, with a child. Both are killed (by PID) when dropped.
struct Flapper {
    shell: Child,
    child_pid: u32,
}

impl Flapper {
    fn start(marker: &str) -> Flapper {
        let mut shell = Command::new("/bin/sh")
            .args(["-c", "sleep 300 & echo $!; wait", marker])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the flapper");
        let mut line = String::new();
        BufReader::new(shell.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the child's pid");
        let child_pid = line.trim().parse().expect("a pid");
        Flapper { shell, child_pid }
    }
}

impl Drop for Flapper {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child_pid.to_string()])
            .status();
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

/// A sample's value in Prometheus text, by its full series name.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.rsplit_once(' ').is_some_and(|(name, _)| name == series))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

fn get_text(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = fincorp_api::http::client(Duration::from_secs(5));
        let resp = client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        resp.text().await.unwrap()
    })
}

/// `(status, event_id)` of every alert transition in an agent log.
fn transitions(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| l.contains(APP))
        .filter_map(|l| {
            let status = if l.contains("alert firing") {
                "firing"
            } else if l.contains("alert resolved") {
                "resolved"
            } else {
                return None;
            };
            let id = l.split("event_id=").nth(1)?.split_whitespace().next()?;
            Some((status.to_owned(), id.trim_matches('"').to_owned()))
        })
        .collect()
}

/// Batches in the agent's spool: seq → event ids.
fn spool(dir: &Path) -> BTreeMap<u64, Vec<String>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir.join("agent-state/spool")) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".batch") else {
            continue;
        };
        let seq: u64 = stem.split('-').next().unwrap().parse().unwrap();
        let body: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap())
            .unwrap_or_else(|err| panic!("spooled batch {name} is not JSON: {err}"));
        assert_eq!(body["seq"].as_u64(), Some(seq), "{name}");
        let ids = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        out.insert(seq, ids);
    }
    out
}

/// Waits until the agent's log shows `n` transitions of the app.
fn wait_transitions(stack: &mut Stack, n: usize, what: &str) -> Vec<(String, String)> {
    wait_for(stack, Duration::from_secs(30), what, |s| {
        let t = transitions(&s.agent.as_ref()?.logs());
        (t.len() >= n).then_some(t)
    })
}

/// One flap: the app starts (alert fires), then stops (alert resolves).
fn flap(stack: &mut Stack, marker: &str, before: usize) -> Vec<(String, String)> {
    let flapper = Flapper::start(marker);
    wait_transitions(stack, before + 1, "the alert to fire");
    drop(flapper);
    wait_transitions(stack, before + 2, "the alert to resolve")
}

#[test]
fn s5_agent_spool_survives_a_correlator_outage_and_agent_sigkill_without_loss_or_duplicates() {
    let _serial = serial();
    let marker = format!("fincorp-s5-flapper-{}", std::process::id());
    let mut stack = Stack::start_without_agent(&StackConfig {
        agent_apps: format!(
            "  - name: {APP}
    select:
      cmdline: '{marker}'
    rules:
      - name: running
        when: processes >= 1
        severity: warning
"
        ),
        resolve_after: "1s".into(),
        ..StackConfig::default()
    });
    // Faster discovery and heartbeats than the harness default, so the
    // scenario produces many batches in little time.
    let agent_yaml = stack.dir().join("agent.yaml");
    let metrics_port = free_port();
    let text = std::fs::read_to_string(&agent_yaml).unwrap();
    std::fs::write(
        &agent_yaml,
        text.replace(
            "heartbeat_interval: 5s\n",
            "heartbeat_interval: 1s\ndiscovery_interval: 500ms\nspool:\n  max_size: 16MiB\n  when_full: block\n",
        )
        .replace(
            "metrics:\n  enabled: false\n",
            &format!("metrics:\n  listen: 127.0.0.1:{metrics_port}\n"),
        ),
    )
    .unwrap();
    let agent_metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    stack.start_agent();

    // Baseline: the pipeline works end to end.
    let baseline = flap(&mut stack, &marker, 0);
    assert_eq!(baseline.len(), 2);
    wait_for(
        &mut stack,
        Duration::from_secs(30),
        "the baseline alert stored",
        |s| {
            let list = s.api_get(&format!("/api/v1/incidents?app={APP}"));
            (!list["incidents"].as_array()?.is_empty()).then_some(())
        },
    );

    // The correlator dies (SIGKILL).
    drop(stack.correlator.take());
    // Three flaps while it is down: six transitions, all spooled.
    let mut seen = baseline.len();
    for _ in 0..3 {
        seen = flap(&mut stack, &marker, seen).len();
    }
    let before_kill = transitions(&stack.agent.as_ref().unwrap().logs());
    assert_eq!(before_kill.len(), 8, "{before_kill:?}");
    let down_events: Vec<(String, String)> = before_kill[2..].to_vec();
    // Wait until the last transition's batch is on disk, then SIGKILL the agent.
    let last_id = down_events.last().unwrap().1.clone();
    wait_for(
        &mut stack,
        Duration::from_secs(10),
        "the last transition spooled",
        |s| {
            spool(s.dir())
                .values()
                .flatten()
                .any(|id| *id == last_id)
                .then_some(())
        },
    );
    let mut agent = stack.agent.take().unwrap();
    send_signal(agent.pid(), "-KILL");
    agent.kill();
    let at_kill = spool(stack.dir());
    let spooled_ids: BTreeSet<String> = at_kill.values().flatten().cloned().collect();
    for (status, id) in &down_events {
        assert!(
            spooled_ids.contains(id),
            "{status} event {id} is not in the spool at SIGKILL time: {at_kill:?}"
        );
    }
    assert!(
        at_kill.len() >= 6,
        "at least the six event batches: {at_kill:?}"
    );
    let seqs: Vec<u64> = at_kill.keys().copied().collect();
    assert_eq!(
        seqs,
        (seqs[0]..=*seqs.last().unwrap()).collect::<Vec<_>>(),
        "no gap in the spool: nothing dropped"
    );

    // The agent restarts (the correlator is still down) and sees one more flap.
    stack.start_agent();
    let after_restart = flap(&mut stack, &marker, 0);
    assert_eq!(after_restart.len(), 2, "{after_restart:?}");
    let last_id = after_restart[1].1.clone();
    wait_for(
        &mut stack,
        Duration::from_secs(10),
        "the post-restart transitions spooled",
        |s| {
            spool(s.dir())
                .values()
                .flatten()
                .any(|id| *id == last_id)
                .then_some(())
        },
    );
    let restarted_log = stack.agent.as_ref().unwrap().logs();
    assert!(
        restarted_log.contains("batches left in the spool by an earlier run will be sent first"),
        "{restarted_log}"
    );

    // Everything the restarted correlator must receive.
    let pending = spool(stack.dir());
    assert!(
        at_kill.keys().all(|seq| pending.contains_key(seq)),
        "the batches spooled at SIGKILL time are still spooled after the restart"
    );
    let sent_before = metric(
        &get_text(&agent_metrics),
        "fincorp_agent_batches_sent_total",
    )
    .unwrap();
    assert_eq!(sent_before, 0.0, "nothing could be sent since the restart");

    // The correlator comes back.
    stack.start_correlator();
    wait_for(
        &mut stack,
        Duration::from_secs(60),
        "the spool to drain",
        |s| spool(s.dir()).is_empty().then_some(()),
    );
    // Batches leave the spool only on 2xx (or a 4xx, counted as rejected).
    let agent_text = get_text(&agent_metrics);
    assert_eq!(
        metric(&agent_text, "fincorp_agent_batches_rejected_total"),
        Some(0.0),
        "{agent_text}"
    );
    assert_eq!(
        metric(&agent_text, "fincorp_agent_batches_dropped_total"),
        Some(0.0)
    );
    let sent = metric(&agent_text, "fincorp_agent_batches_sent_total").unwrap();
    assert!(
        sent >= pending.len() as f64,
        "sent {sent} < {} pending",
        pending.len()
    );
    // The correlator (fresh counters since its restart) acknowledged them all.
    let correlator_text = get_text(&format!("{}/metrics", stack.api));
    let ok = metric(
        &correlator_text,
        "fincorp_correlator_ingest_requests_total{endpoint=\"agent\",code=\"200\"}",
    )
    .unwrap_or(0.0);
    assert!(
        ok >= pending.len() as f64,
        "correlator took {ok} agent batches, {} were pending:\n{correlator_text}",
        pending.len()
    );
    assert!(
        !correlator_text.lines().any(|l| l
            .starts_with("fincorp_correlator_ingest_requests_total{endpoint=\"agent\",code=\"4")),
        "no agent batch refused:\n{correlator_text}"
    );

    // The restarted correlator stored exactly the eight transitions that
    // happened while it was down (six before the agent's SIGKILL, two
    // after), each once: its counters start at zero with the process.
    let all: Vec<(String, String)> = before_kill.iter().chain(&after_restart).cloned().collect();
    assert_eq!(all.len(), 10);
    let stored_now = metric(
        &correlator_text,
        "fincorp_correlator_ingest_events_total{source=\"agent\"}",
    );
    assert_eq!(
        stored_now,
        Some(8.0),
        "events stored after the outage:\n{correlator_text}"
    );

    // And the database holds each event id exactly once (schema v2 and v3
    // both keep `id`, `fingerprint` and `status` in `events`).
    let db = rusqlite::Connection::open_with_flags(
        stack.database(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the correlator's database read-only");
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('events')")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let has_id_column = ["id", "fingerprint", "status"]
        .iter()
        .all(|c| columns.iter().any(|have| have == c));
    if has_id_column {
        // The app's one rule: one fingerprint for every transition.
        let fingerprint = {
            let list = stack.api_get(&format!("/api/v1/incidents?app={APP}"));
            let id = list["incidents"][0]["id"].as_str().unwrap().to_owned();
            let detail = stack.api_get(&format!("/api/v1/incidents/{id}"));
            detail["alerts"][0]["fingerprint"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let mut rows: Vec<(String, String)> = db
            .prepare("SELECT id, status FROM events WHERE fingerprint = ?1 ORDER BY received_at_ms")
            .unwrap()
            .query_map([&fingerprint], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (status, id) in &all {
            let n = rows.iter().filter(|(i, s)| i == id && s == status).count();
            assert_eq!(
                n, 1,
                "{status} event {id} stored {n} times; stored: {rows:?}"
            );
        }
        rows.sort();
        assert_eq!(
            rows.len(),
            all.len(),
            "exactly the transitions, no extra events: {rows:?}"
        );
    } else {
        // A later schema keys events differently; the exact count above and
        // the episodes below still prove "each once".
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert!(
            n >= all.len() as i64,
            "{n} events stored, expected at least {}",
            all.len()
        );
    }

    // The incident shows one alert episode per flap, each resolved once.
    let list = stack.api_get(&format!("/api/v1/incidents?app={APP}"));
    let mut episodes = BTreeSet::new();
    for inc in list["incidents"].as_array().unwrap() {
        let detail = stack.api_get(&format!(
            "/api/v1/incidents/{}",
            inc["id"].as_str().unwrap()
        ));
        for a in detail["alerts"].as_array().unwrap() {
            let key = (
                a["fingerprint"].as_str().unwrap().to_owned(),
                a["starts_at_ms"].as_i64().unwrap(),
            );
            assert!(episodes.insert(key.clone()), "episode {key:?} listed twice");
            assert_eq!(a["status"].as_str(), Some("resolved"), "{a}");
        }
    }
    assert_eq!(episodes.len(), 5, "five flaps, five episodes: {episodes:?}");
}
