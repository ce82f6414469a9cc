//! S5 at the correlator: it is killed with SIGKILL while events stream in.
//! After a restart, every event it acknowledged (2xx) is stored, and the
//! client's resends of unacknowledged requests store nothing twice: each
//! request is all or nothing, and each event id is stored once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fincorp_tests::*;
use serde_json::{Value, json};

const PER_REQUEST: usize = 10;

fn batch(n: usize) -> Value {
    let events: Vec<Value> = (0..PER_REQUEST)
        .map(|i| {
            let k = n * PER_REQUEST + i;
            json!({"id": format!("crash-{k}"), "source": "hardware", "name": format!("sensor_{k}"),
                   "host": format!("rack-host-{}", k % 7), "severity": "warning",
                   "starts_at": "2026-11-22T10:00:00Z"})
        })
        .collect();
    json!({ "events": events })
}

#[test]
fn no_acknowledged_event_is_lost_or_duplicated_across_sigkill() {
    let _serial = serial();
    let mut stack = Stack::start_without_agent(&StackConfig {
        agent_apps: String::new(),
        resolve_after: "5s".into(),
        ..StackConfig::default()
    });
    let url = format!("{}/api/v1/ingest/events", stack.api);

    // (batch number, acknowledged?) for every request sent.
    let sent: Arc<Mutex<Vec<(usize, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (sent, stop, url) = (sent.clone(), stop.clone(), url.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let client = fincorp_api::http::client(Duration::from_secs(5));
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let ok = rt.block_on(async {
                    client
                        .post(&url)
                        .json(&batch(n))
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                });
                sent.lock().unwrap().push((n, matches!(ok, Ok(true))));
                if ok.is_err() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                n += 1;
            }
        })
    };

    std::thread::sleep(Duration::from_millis(1500));
    stack.correlator.as_mut().unwrap().kill(); // SIGKILL, mid-stream
    let acked_before_kill = sent.lock().unwrap().iter().filter(|(_, ok)| *ok).count();
    std::thread::sleep(Duration::from_millis(300));
    stack.start_correlator();
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let sent = sent.lock().unwrap().clone();
    assert!(
        acked_before_kill > 10,
        "too few requests before the kill to mean anything: {acked_before_kill}\n{}",
        stack.logs()
    );
    assert!(
        sent.iter().any(|(_, ok)| !ok),
        "no request failed during the outage: the kill did not happen mid-stream"
    );

    // The client resends what was not acknowledged, as an agent would. A
    // request is all or nothing: fully stored already, or not at all.
    for (n, _) in sent.iter().filter(|(_, ok)| !ok) {
        let (status, ack) = post_json(&url, &batch(*n));
        assert_eq!(status, 200, "{ack}");
        let (acc, dup) = (
            ack["accepted"].as_u64().unwrap(),
            ack["duplicates"].as_u64().unwrap(),
        );
        assert!(
            (acc, dup) == (PER_REQUEST as u64, 0) || (acc, dup) == (0, PER_REQUEST as u64),
            "batch {n} was half stored: {ack}"
        );
    }

    // Read what the correlator stored.
    let conn = rusqlite::Connection::open_with_flags(
        stack.database(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let ids: BTreeSet<String> = {
        let mut stmt = conn.prepare("SELECT id FROM events").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let expected: BTreeSet<String> = (0..sent.len() * PER_REQUEST)
        .map(|k| format!("crash-{k}"))
        .collect();
    let acked: BTreeSet<String> = sent
        .iter()
        .filter(|(_, ok)| *ok)
        .flat_map(|(n, _)| (0..PER_REQUEST).map(move |i| format!("crash-{}", n * PER_REQUEST + i)))
        .collect();
    assert!(
        acked.is_subset(&ids),
        "acknowledged events missing: {:?}",
        acked.difference(&ids).take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        ids, expected,
        "after resends every event is stored, and nothing else"
    );
    let alerts: i64 = conn
        .query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        alerts as usize,
        expected.len(),
        "one alert episode per event: none duplicated, none lost"
    );
    println!(
        "ingest crash: {} requests, {} acknowledged before the kill, {} resent",
        sent.len(),
        acked_before_kill,
        sent.iter().filter(|(_, ok)| !ok).count()
    );
}
