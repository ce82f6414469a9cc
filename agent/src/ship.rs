//! Shipping batches to the correlator: a bounded outbox over the durable
//! [`spool::DiskSpool`] (or an in-memory queue in tests), whose full policy
//! is to drop the oldest batch or to block sampling, and a sender task that
//! delivers batches in order, retrying with backoff and `Retry-After`.
//!
//! A batch is removed only once the correlator has answered 2xx (stored) or
//! a 4xx that will never change. Every event carries an id, so a resend after
//! a lost answer or a crash is harmless: the correlator stores each id once.

pub mod samples;
pub mod spool;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fincorp_api::wire::{AgentBatch, INGEST_AGENT_PATH, IngestAck};
use tokio::sync::{Notify, watch};

use crate::backoff::Backoff;
use crate::client::PostOutcome;
use crate::config::FullPolicy;

/// One serialised [`fincorp_api::wire::AgentBatch`] waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedBatch {
    pub seq: u64,
    /// Alert events inside, for logs.
    pub events: usize,
    /// The JSON body, exactly as it will be signed and sent.
    pub body: Vec<u8>,
}

impl QueuedBatch {
    /// Serialises a batch once; every attempt sends these exact bytes.
    pub fn encode(batch: &AgentBatch) -> Result<Self, serde_json::Error> {
        Ok(Self {
            seq: batch.seq,
            events: batch.events.len(),
            body: serde_json::to_vec(batch)?,
        })
    }
}

/// Storage for batches waiting to be sent, oldest first.
pub trait BatchQueue: Send {
    /// The sequence number for the next batch.
    fn next_seq(&mut self) -> u64;
    /// Stores a batch at the back (durably, for the disk spool).
    fn append(&mut self, batch: &QueuedBatch) -> io::Result<()>;
    /// The oldest batch, still queued.
    fn front(&mut self) -> io::Result<Option<QueuedBatch>>;
    /// Removes the oldest batch if it is `seq` (it may have been evicted
    /// while it was being sent).
    fn remove_front(&mut self, seq: u64) -> io::Result<bool>;
    /// Removes the oldest batch; returns its seq and event count.
    fn pop_front(&mut self) -> io::Result<Option<(u64, usize)>>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of queued bodies.
    fn bytes(&self) -> u64;
    /// Queued sequence numbers, oldest first (for tests and diagnostics).
    fn seqs(&self) -> Vec<u64>;
}

/// A bounded in-memory queue (tests, and `--no-spool` debugging).
#[derive(Debug, Default)]
pub struct MemoryQueue {
    items: VecDeque<QueuedBatch>,
    last_seq: u64,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }
}

impl BatchQueue for MemoryQueue {
    fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    fn append(&mut self, batch: &QueuedBatch) -> io::Result<()> {
        self.last_seq = self.last_seq.max(batch.seq);
        self.items.push_back(batch.clone());
        Ok(())
    }

    fn front(&mut self) -> io::Result<Option<QueuedBatch>> {
        Ok(self.items.front().cloned())
    }

    fn remove_front(&mut self, seq: u64) -> io::Result<bool> {
        if self.items.front().is_some_and(|b| b.seq == seq) {
            self.items.pop_front();
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn pop_front(&mut self) -> io::Result<Option<(u64, usize)>> {
        Ok(self.items.pop_front().map(|b| (b.seq, b.events)))
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn bytes(&self) -> u64 {
        self.items.iter().map(|b| b.body.len() as u64).sum()
    }

    fn seqs(&self) -> Vec<u64> {
        self.items.iter().map(|b| b.seq).collect()
    }
}

/// What became of a push.
#[derive(Debug)]
pub enum Pushed {
    /// Stored; `evicted` older batches were dropped to make room.
    Stored { evicted: usize },
    /// The spool is full and its policy is `block`: nothing was stored; wait
    /// for [`Outbox::space`] and try again.
    Full,
    /// Larger than the whole spool: dropped (counted).
    TooLarge,
    /// The spool could not be written: dropped (counted).
    Failed(io::Error),
}

/// Counters of the outbox, for `/metrics`.
#[derive(Debug, Default)]
pub struct OutboxCounters {
    pub spooled: AtomicU64,
    pub sent: AtomicU64,
    pub send_failures: AtomicU64,
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
    pub duplicate_events: AtomicU64,
    pub write_errors: AtomicU64,
}

/// The shared handle to the outbox: the sampling loop pushes, the sender pops.
#[derive(Clone)]
pub struct Outbox {
    queue: Arc<Mutex<dyn BatchQueue>>,
    max_bytes: u64,
    policy: FullPolicy,
    notify: Arc<Notify>,
    /// Signalled whenever a batch leaves the queue (room for a blocked push).
    space: Arc<Notify>,
    /// Cuts a retry wait short (at shutdown).
    flush: Arc<Notify>,
    pub counters: Arc<OutboxCounters>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.len())
            .field("bytes", &self.bytes())
            .field("max_bytes", &self.max_bytes)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Outbox {
    pub fn new(queue: impl BatchQueue + 'static, max_bytes: u64, policy: FullPolicy) -> Self {
        Self {
            queue: Arc::new(Mutex::new(queue)),
            max_bytes: max_bytes.max(1),
            policy,
            notify: Arc::new(Notify::new()),
            space: Arc::new(Notify::new()),
            flush: Arc::new(Notify::new()),
            counters: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, dyn BatchQueue + 'static> {
        // Every queue operation leaves the queue consistent before it can
        // fail, so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sequence number for the next batch (continues across restarts
    /// with the disk spool).
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq()
    }

    /// Stores a batch, applying the full policy. Blocking file IO with the
    /// disk spool: call it from a blocking thread.
    pub fn push(&self, batch: &QueuedBatch) -> Pushed {
        let size = batch.body.len() as u64;
        if size > self.max_bytes {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                seq = batch.seq,
                size,
                max = self.max_bytes,
                "batch larger than the whole spool; dropped"
            );
            return Pushed::TooLarge;
        }
        let mut q = self.lock();
        let mut evicted = 0;
        while q.bytes() + size > self.max_bytes {
            match self.policy {
                FullPolicy::Block => return Pushed::Full,
                FullPolicy::DropOldest => match q.pop_front() {
                    Ok(Some((seq, events))) => {
                        evicted += 1;
                        let total = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::error!(
                            seq,
                            events,
                            dropped_total = total,
                            "spool full: dropped the oldest batch"
                        );
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                        return Pushed::Failed(e);
                    }
                },
            }
        }
        if let Err(e) = q.append(batch) {
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Pushed::Failed(e);
        }
        drop(q);
        self.counters.spooled.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
        Pushed::Stored { evicted }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> u64 {
        self.lock().bytes()
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Queued sequence numbers, oldest first.
    pub fn seqs(&self) -> Vec<u64> {
        self.lock().seqs()
    }

    /// Batches dropped (spool full, too large, or unwritable).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    fn front(&self) -> io::Result<Option<QueuedBatch>> {
        self.lock().front()
    }

    fn remove_front(&self, seq: u64) {
        if let Err(e) = self.lock().remove_front(seq) {
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(seq, error = %e, "cannot remove a delivered batch from the spool; it will be sent again");
        }
        self.space.notify_waiters();
    }

    /// Waits until a batch leaves the queue (for a blocked push).
    pub async fn space(&self) {
        self.space.notified().await;
    }

    /// Asks the sender to retry now instead of finishing its backoff wait;
    /// used once at shutdown so the grace period is not spent asleep.
    pub fn flush_now(&self) {
        self.flush.notify_one();
    }

    /// Waits for a retry delay, or less if [`Outbox::flush_now`] is called.
    async fn wait_retry(&self, delay: Duration) {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.flush.notified() => {}
        }
    }

    /// Waits until the outbox is empty or `timeout` passes; true if empty.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_empty() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Removes a delivered batch (file IO: on a blocking thread).
async fn remove_front(outbox: &Outbox, seq: u64) {
    let o = outbox.clone();
    let _ = tokio::task::spawn_blocking(move || o.remove_front(seq)).await;
}

/// Sends queued batches in order, forever (cancel the task to stop it).
///
/// 2xx removes the batch; 429/503 wait for `Retry-After` (or back off);
/// 5xx and transport errors back off with jitter; 401 is logged as an error
/// and retried; any other 4xx drops the batch, which would never succeed.
pub async fn run_sender(link: watch::Receiver<crate::Link>, outbox: Outbox) {
    let mut backoff = Backoff::default();
    loop {
        let correlator = link.borrow().ingest.clone();
        let notified = outbox.notify.notified();
        let o = outbox.clone();
        let front = tokio::task::spawn_blocking(move || o.front())
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        let batch = match front {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                notified.await;
                continue;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                outbox.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot read the spool");
                outbox.wait_retry(delay).await;
                continue;
            }
        };
        match correlator.post_signed(INGEST_AGENT_PATH, &batch.body).await {
            PostOutcome::Success(body) => {
                let ack = serde_json::from_slice::<IngestAck>(&body).ok();
                let duplicates = ack.as_ref().map_or(0, |a| a.duplicates);
                if duplicates > 0 {
                    outbox
                        .counters
                        .duplicate_events
                        .fetch_add(u64::from(duplicates), Ordering::Relaxed);
                }
                if backoff.attempts() > 0 || duplicates > 0 {
                    tracing::info!(
                        seq = batch.seq,
                        events = batch.events,
                        duplicates,
                        after_attempts = backoff.attempts(),
                        "batch delivered"
                    );
                } else {
                    tracing::debug!(seq = batch.seq, events = batch.events, "batch delivered");
                }
                outbox.counters.sent.fetch_add(1, Ordering::Relaxed);
                remove_front(&outbox, batch.seq).await;
                backoff.reset();
            }
            PostOutcome::Retry { after, reason } => {
                outbox
                    .counters
                    .send_failures
                    .fetch_add(1, Ordering::Relaxed);
                let delay = after.unwrap_or_else(|| backoff.next_delay());
                tracing::warn!(
                    seq = batch.seq,
                    attempt = backoff.attempts(),
                    retry_in_ms = delay.as_millis() as u64,
                    queued = outbox.len(),
                    %reason,
                    "batch not delivered; will retry"
                );
                outbox.wait_retry(delay).await;
            }
            PostOutcome::Unauthorized(reason) => {
                outbox
                    .counters
                    .send_failures
                    .fetch_add(1, Ordering::Relaxed);
                let delay = backoff.next_delay();
                tracing::error!(
                    seq = batch.seq,
                    url = correlator.base_url(),
                    retry_in_ms = delay.as_millis() as u64,
                    %reason,
                    "correlator rejected the batch's signature (401): check correlator.key_id and the secret, and that this host's clock is in sync"
                );
                outbox.wait_retry(delay).await;
            }
            PostOutcome::Rejected { status, reason } => {
                tracing::error!(
                    seq = batch.seq,
                    events = batch.events,
                    status = status.as_u16(),
                    %reason,
                    "correlator refused the batch; dropping it"
                );
                outbox.counters.rejected.fetch_add(1, Ordering::Relaxed);
                remove_front(&outbox, batch.seq).await;
                backoff.reset();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
