//! Outbox, spool and sender tests against the in-process mock correlator.

use std::sync::atomic::Ordering;
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
            cpu_per_core_pct: Vec::new(),
            mem_available_bytes: None,
            swap_used_bytes: None,
            swap_total_bytes: None,
            load: None,
        }],
    })
    .unwrap()
}

fn seqs(mock: &MockCorrelator) -> Vec<u64> {
    mock.batches().iter().map(|b| b.seq).collect()
}

/// A link to a correlator at `url`, as the agent's tasks get it.
pub(crate) fn link(
    url: &str,
    signing: fincorp_api::signing::SigningKey,
) -> tokio::sync::watch::Receiver<crate::Link> {
    let c = crate::client::Correlator::new(url, signing, Duration::from_secs(5)).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(crate::Link {
        ingest: c.clone(),
        poll: c,
        host: "web01".into(),
    });
    // The tasks only read; keep the channel open for the test's lifetime.
    std::mem::forget(tx);
    rx
}

fn memory_outbox() -> Outbox {
    Outbox::new(MemoryQueue::new(), 1 << 20, FullPolicy::DropOldest)
}

fn start_sender(
    mock: &MockCorrelator,
    signing: fincorp_api::signing::SigningKey,
) -> (Outbox, tokio::task::JoinHandle<()>) {
    let outbox = memory_outbox();
    let task = tokio::spawn(run_sender(link(&mock.url, signing), outbox.clone()));
    (outbox, task)
}

/// The size of one test batch on disk.
fn batch_size() -> u64 {
    batch(1).body.len() as u64
}

#[test]
fn a_full_drop_oldest_outbox_sheds_the_oldest_and_counts_it() {
    let outbox = Outbox::new(
        MemoryQueue::new(),
        3 * batch_size() + 2,
        FullPolicy::DropOldest,
    );
    for seq in 1..=5 {
        assert!(matches!(outbox.push(&batch(seq)), Pushed::Stored { .. }));
    }
    assert_eq!((outbox.len(), outbox.dropped()), (3, 2));
    assert_eq!(outbox.seqs(), [3, 4, 5]);
    assert_eq!(outbox.front().unwrap().map(|b| b.seq), Some(3));
    assert_eq!(outbox.bytes(), 3 * batch_size());
}

#[test]
fn a_full_block_outbox_refuses_until_there_is_room() {
    let outbox = Outbox::new(MemoryQueue::new(), 2 * batch_size() + 2, FullPolicy::Block);
    assert!(matches!(
        outbox.push(&batch(1)),
        Pushed::Stored { evicted: 0 }
    ));
    assert!(matches!(
        outbox.push(&batch(2)),
        Pushed::Stored { evicted: 0 }
    ));
    assert!(matches!(outbox.push(&batch(3)), Pushed::Full));
    assert_eq!(
        (outbox.seqs(), outbox.dropped()),
        (vec![1, 2], 0),
        "nothing shed"
    );
    outbox.remove_front(1);
    assert!(matches!(
        outbox.push(&batch(3)),
        Pushed::Stored { evicted: 0 }
    ));
    assert_eq!(outbox.seqs(), [2, 3]);
    // A batch larger than the whole spool can never fit: dropped, counted.
    let tiny = Outbox::new(MemoryQueue::new(), 10, FullPolicy::Block);
    assert!(matches!(tiny.push(&batch(1)), Pushed::TooLarge));
    assert_eq!(tiny.dropped(), 1);
}

#[test]
fn the_disk_spool_survives_a_reopen_in_order_and_continues_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    {
        let outbox = Outbox::new(
            spool::DiskSpool::open(&spool_dir).unwrap(),
            1 << 20,
            FullPolicy::DropOldest,
        );
        for _ in 0..3 {
            let seq = outbox.next_seq();
            outbox.push(&batch(seq));
        }
        outbox.remove_front(1);
        // Dropped without any shutdown: as after kill -9.
    }
    // An interrupted write leaves a temporary file; it is not a batch.
    std::fs::write(spool_dir.join("99.tmp"), b"{\"half").unwrap();
    let spool = spool::DiskSpool::open(&spool_dir).unwrap();
    assert_eq!(spool.seqs(), [2, 3]);
    assert_eq!(spool.bytes(), 2 * batch_size());
    assert!(!spool_dir.join("99.tmp").exists());
    let outbox = Outbox::new(spool, 1 << 20, FullPolicy::DropOldest);
    assert_eq!(
        outbox.front().unwrap().unwrap(),
        batch(2),
        "the exact bytes come back"
    );
    assert_eq!(outbox.next_seq(), 4, "numbering continues");
    outbox.remove_front(2);
    outbox.remove_front(3);
    drop(outbox);
    let spool = spool::DiskSpool::open(&spool_dir).unwrap();
    assert!(spool.seqs().is_empty());
    let mut spool = spool;
    assert_eq!(spool.next_seq(), 4, "even when the spool was empty");
}

#[test]
fn a_corrupt_spool_file_is_moved_aside_and_a_second_agent_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let first = spool::DiskSpool::open(dir.path()).unwrap();
    let err = spool::DiskSpool::open(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("in use by another fincorp-agent"),
        "{err}"
    );
    drop(first);
    std::fs::write(
        dir.path().join("00000000000000000007-0.batch"),
        b"{not json",
    )
    .unwrap();
    let spool = spool::DiskSpool::open(dir.path()).unwrap();
    assert_eq!((spool.len(), spool.corrupt_at_start), (0, 1));
    assert!(dir.path().join("00000000000000000007-0.corrupt").exists());
}

#[tokio::test]
async fn batches_arrive_signed_and_in_order() {
    let mock = MockCorrelator::start().await;
    let (outbox, task) = start_sender(&mock, key());
    for seq in 1..=5 {
        outbox.push(&batch(seq));
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
    outbox.push(&batch(1));
    outbox.push(&batch(2));
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
    outbox.push(&batch(1));
    outbox.push(&batch(2));
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
    outbox.push(&batch(1));
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
    let outbox = memory_outbox();
    let task = tokio::spawn(run_sender(
        link(&format!("http://{addr}"), key()),
        outbox.clone(),
    ));
    outbox.push(&batch(1));
    assert!(!outbox.drained(Duration::from_millis(500)).await);
    assert_eq!(outbox.len(), 1);
    assert!(outbox.counters.send_failures.load(Ordering::Relaxed) >= 1);
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
    outbox.push(&batch(1));
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
