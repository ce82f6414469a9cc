//! The whole agent against the mock correlator: a real process is found,
//! its alert fires, batches arrive signed, and the alert resolves when the
//! process exits.

use std::process::Command;
use std::sync::atomic::Ordering;

use fincorp_api::wire::AlertStatus;

use super::*;
use crate::testing::{MockCorrelator, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_alerts_on_a_real_process_ships_signed_batches_and_resolves_when_it_exits() {
    let mock = MockCorrelator::start().await;
    let seconds = format!(
        "300.{}{}",
        std::process::id(),
        fincorp_api::now_ms() % 1_000_000
    );
    let mut child = Command::new("sleep")
        .arg(&seconds)
        .spawn()
        .expect("spawn sleep");
    let pattern = format!("^sleep {}$", regex::escape(&seconds));
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&format!(
        "\
version: 1
host: test-host
state_dir: {state}
metrics:
  enabled: false
sample_interval: 200ms
heartbeat_interval: 400ms
discovery_interval: 200ms
correlator:
  url: {url}
  key_id: fleet
  secret: {{ env: UNUSED_IN_TESTS }}
apps:
  - name: FINCORP-APP-SLEEPER-TEST
    select:
      cmdline: '{pattern}'
    rules:
      - name: running
        when: processes >= 1
        for: 200ms
        severity: info
",
        url = mock.url,
        state = state.path().display(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(run_with_grace(
        cfg,
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(5),
    ));

    let fired = |m: &MockCorrelator| {
        m.batches()
            .iter()
            .flat_map(|b| b.events.clone())
            .any(|e| e.status == AlertStatus::Firing)
    };
    let ok = mock.wait_until(Duration::from_secs(20), fired).await;
    // Then a quiet heartbeat or two: they carry the samples in between.
    let carried = mock
        .wait_until(Duration::from_secs(20), |m| {
            m.batches().iter().any(|b| b.samples.len() >= 2)
        })
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "no firing event: {:#?}", mock.batches());
    assert!(
        carried,
        "no batch carried more than one sample: {:?}",
        mock.batches()
            .iter()
            .map(|b| b.samples.len())
            .collect::<Vec<_>>()
    );

    let resolved = |m: &MockCorrelator| {
        m.batches()
            .iter()
            .flat_map(|b| b.events.clone())
            .any(|e| e.status == AlertStatus::Resolved)
    };
    assert!(
        mock.wait_until(Duration::from_secs(20), resolved).await,
        "no resolved event: {:#?}",
        mock.batches()
    );
    stop_tx.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(15), agent).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "the agent stops cleanly: {stopped:?}"
    );

    let batches = mock.batches();
    assert_eq!(
        mock.state.unauthorized.load(Ordering::SeqCst),
        0,
        "every request was signed"
    );
    let seqs: Vec<u64> = batches.iter().map(|b| b.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "in order, none lost"
    );
    assert!(
        batches
            .iter()
            .all(|b| b.agent.host == "test-host" && b.agent.version == VERSION)
    );
    // Every sample goes out once, in order: a batch carries all the samples
    // taken since the previous one (heartbeat 400 ms, samples every 200 ms).
    let at: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.samples.iter().map(|s| s.at_ms))
        .collect();
    assert!(
        batches.iter().all(|b| !b.samples.is_empty()),
        "{batches:#?}"
    );
    assert!(
        at.windows(2)
            .all(|w| w[1] > w[0] && (w[1] - w[0]) % 200 == 0),
        "strictly increasing, one or more sampling intervals apart: {at:?}"
    );
    let span = (at[at.len() - 1] - at[0]) / 200 + 1;
    assert!(
        at.len() as i64 * 4 >= span * 3,
        "{} of the {span} sampling ticks between the first and last sample were shipped (one per heartbeat would be half)",
        at.len()
    );

    let events: Vec<_> = batches.iter().flat_map(|b| b.events.clone()).collect();
    let firing = events
        .iter()
        .find(|e| e.status == AlertStatus::Firing)
        .unwrap();
    let resolved = events
        .iter()
        .find(|e| e.status == AlertStatus::Resolved)
        .unwrap();
    assert_eq!(firing.app.as_deref(), Some("FINCORP-APP-SLEEPER-TEST"));
    assert_eq!(firing.fingerprint, resolved.fingerprint);
    assert_eq!(firing.starts_at_ms, resolved.starts_at_ms);
    assert!(
        firing.at_ms - firing.starts_at_ms >= 200,
        "for: 200ms was respected: {firing:?}"
    );
    assert_eq!(resolved.value, 0.0, "no processes once it exited");

    // The batch carrying the firing event shows the process; the resolving one shows none.
    let app_in = |status: AlertStatus| {
        let b = batches
            .iter()
            .find(|b| b.events.iter().any(|e| e.status == status))
            .unwrap();
        b.samples[0].apps[0].clone()
    };
    assert_eq!(app_in(AlertStatus::Firing).processes, 1);
    assert!(app_in(AlertStatus::Firing).rss_bytes > 0);
    let gone = app_in(AlertStatus::Resolved);
    assert_eq!((gone.processes, gone.cpu_pct, gone.rss_bytes), (0, 0.0, 0));
    // The agent also long-polled for commands with a signed request.
    assert!(mock.state.polls.load(Ordering::SeqCst) >= 1);
}

#[test]
fn tick_timestamps_are_exactly_one_interval_apart_despite_jitter() {
    let start = Instant::now();
    let mut clock = TickClock::default();
    let second = Duration::from_secs(1);
    assert_eq!(clock.at_ms(start, 1_000_000), 1_000_000);
    // The wall clock read 3 ms late, then 2 ms early: the stamps ignore it.
    assert_eq!(clock.at_ms(start + second, 1_001_003), 1_001_000);
    assert_eq!(clock.at_ms(start + 2 * second, 1_001_998), 1_002_000);
    // A step of the wall clock (NTP) re-anchors.
    assert_eq!(clock.at_ms(start + 3 * second, 1_010_000), 1_010_000);
    assert_eq!(clock.at_ms(start + 4 * second, 1_011_004), 1_011_000);
}
