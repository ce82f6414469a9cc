//! Outbox and sender tests against the in-process mock correlator.

use std::time::Instant;

use fincorp_api::wire::{AgentBatch, AgentInfo, HostSample};

use super::*;
use crate::testing::{MockCorrelator, key};

fn batch(seq: u64) -> QueuedBatch {
    QueuedBatch::encode(&AgentBatch {
        agent: AgentInfo {
            host: "web01".into(),
            version: "test".into(),
        },
        seq,
        sent_at_ms: 1_000 + seq as i64,
        events: Vec::new(),
        samples: vec![HostSample {
            at_ms: 1,
            cpu_pct: 1.0,
            mem_used_bytes: 1,
            mem_total_bytes: 2,
            apps: Vec::new(),
        }],
    })
    .unwrap()
}

fn seqs(mock: &MockCorrelator) -> Vec<u64> {
    mock.batches().iter().map(|b| b.seq).collect()
}

fn start_sender(
    mock: &MockCorrelator,
    signing: fincorp_api::signing::SigningKey,
) -> (Outbox, tokio::task::JoinHandle<()>) {
    let outbox = Outbox::new(MemoryQueue::new(100));
    let correlator = Correlator::new(&mock.url, signing, Duration::from_secs(5)).unwrap();
    let task = tokio::spawn(run_sender(correlator, outbox.clone()));
    (outbox, task)
}

#[test]
fn a_full_memory_queue_drops_the_oldest_batch() {
    let mut q = MemoryQueue::new(2);
    assert_eq!(q.push(batch(1)), None);
    assert_eq!(q.push(batch(2)), None);
    assert_eq!(q.push(batch(3)).map(|b| b.seq), Some(1));
    assert_eq!(q.front().map(|b| b.seq), Some(2));
    assert!(!q.remove_front(3), "only the front can be removed");
    assert!(q.remove_front(2));
    assert_eq!((q.len(), q.front().map(|b| b.seq)), (1, Some(3)));
}

#[test]
fn the_outbox_counts_what_it_sheds() {
    let outbox = Outbox::new(MemoryQueue::new(3));
    for seq in 1..=5 {
        outbox.push(batch(seq));
    }
    assert_eq!((outbox.len(), outbox.dropped()), (3, 2));
    assert_eq!(outbox.front().map(|b| b.seq), Some(3));
}

#[tokio::test]
async fn batches_arrive_signed_and_in_order() {
    let mock = MockCorrelator::start().await;
    let (outbox, task) = start_sender(&mock, key());
    for seq in 1..=5 {
        outbox.push(batch(seq));
    }
    assert!(
        mock.wait_until(Duration::from_secs(10), |m| m.batches().len() >= 5)
            .await,
        "got {:?}",
        seqs(&mock)
    );
    assert_eq!(seqs(&mock), [1, 2, 3, 4, 5]);
    assert_eq!(
        mock.state.unauthorized.load(Ordering::SeqCst),
        0,
        "every request verified"
    );
    assert!(outbox.drained(Duration::from_secs(5)).await);
    task.abort();
}

#[tokio::test]
async fn a_503_then_500_is_retried_honouring_retry_after_and_delivery_stays_in_order() {
    let mock = MockCorrelator::start().await;
    mock.state
        .ingest_script
        .lock()
        .unwrap()
        .extend([(503, Some(1)), (500, None)]);
    let (outbox, task) = start_sender(&mock, key());
    let started = Instant::now();
    outbox.push(batch(1));
    outbox.push(batch(2));
    assert!(
        mock.wait_until(Duration::from_secs(20), |m| m.batches().len() >= 2)
            .await,
        "got {:?}",
        seqs(&mock)
    );
    assert_eq!(seqs(&mock), [1, 2], "batch 2 waited for batch 1");
    assert_eq!(
        mock.state.ingest_attempts.load(Ordering::SeqCst),
        4,
        "two failures, then two successes"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was honoured"
    );
    // Each attempt was signed afresh: a reused nonce would have been a 401.
    assert_eq!(mock.state.unauthorized.load(Ordering::SeqCst), 0);
    task.abort();
}

#[tokio::test]
async fn a_429_is_retried_and_other_4xx_drop_the_batch() {
    let mock = MockCorrelator::start().await;
    mock.state
        .ingest_script
        .lock()
        .unwrap()
        .extend([(429, Some(0)), (400, None)]);
    let (outbox, task) = start_sender(&mock, key());
    outbox.push(batch(1));
    outbox.push(batch(2));
    assert!(
        mock.wait_until(Duration::from_secs(10), |m| !m.batches().is_empty())
            .await
    );
    assert!(outbox.drained(Duration::from_secs(5)).await);
    // 429 → retried → 400 → batch 1 dropped; batch 2 delivered.
    assert_eq!(seqs(&mock), [2]);
    assert_eq!(mock.state.ingest_attempts.load(Ordering::SeqCst), 3);
    task.abort();
}

#[tokio::test]
async fn a_wrong_key_is_retried_not_dropped() {
    let mock = MockCorrelator::start().await;
    let wrong = fincorp_api::signing::SigningKey::new("fleet", b"ffffffffffffffffffffffffffffffff")
        .unwrap();
    let (outbox, task) = start_sender(&mock, wrong);
    outbox.push(batch(1));
    assert!(
        mock.wait_until(Duration::from_secs(10), |m| m
            .state
            .unauthorized
            .load(Ordering::SeqCst)
            >= 2)
            .await,
        "a 401 is retried"
    );
    assert!(mock.batches().is_empty());
    assert_eq!(
        outbox.len(),
        1,
        "the batch is kept for when the key is fixed"
    );
    task.abort();
}

#[tokio::test]
async fn an_unreachable_correlator_keeps_batches_queued() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let outbox = Outbox::new(MemoryQueue::new(10));
    let correlator =
        Correlator::new(&format!("http://{addr}"), key(), Duration::from_secs(1)).unwrap();
    let task = tokio::spawn(run_sender(correlator, outbox.clone()));
    outbox.push(batch(1));
    assert!(!outbox.drained(Duration::from_millis(500)).await);
    assert_eq!(outbox.len(), 1);
    task.abort();
}

#[tokio::test]
async fn flush_now_cuts_a_long_retry_wait_short_for_shutdown() {
    let mock = MockCorrelator::start().await;
    mock.state
        .ingest_script
        .lock()
        .unwrap()
        .push_back((503, Some(60)));
    let (outbox, task) = start_sender(&mock, key());
    outbox.push(batch(1));
    assert!(
        mock.wait_until(Duration::from_secs(10), |m| m
            .state
            .ingest_attempts
            .load(Ordering::SeqCst)
            >= 1)
            .await
    );
    // Without a flush the sender would sleep for the 60 s Retry-After.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(mock.batches().is_empty());
    outbox.flush_now();
    assert!(
        outbox.drained(Duration::from_secs(10)).await,
        "flushed well before the 60 s Retry-After"
    );
    assert_eq!(seqs(&mock), [1]);
    task.abort();
}
