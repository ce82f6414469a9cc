//! Shipping batches to the correlator: a bounded outbox that sheds the
//! oldest batch when full, and a sender task that delivers batches in order.
//!
//! The outbox is behind the [`BatchQueue`] trait so the in-memory queue can
//! be swapped for a durable on-disk spool. Producers (the sampling loop) never
//! wait on the network: `push` only takes a short lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fincorp_api::wire::{AgentBatch, INGEST_AGENT_PATH};
use tokio::sync::Notify;

use crate::backoff::Backoff;
use crate::client::{Correlator, PostOutcome};

/// How many batches the in-memory outbox holds before dropping the oldest.
pub const OUTBOX_CAPACITY: usize = 10_000;

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
    /// Appends a batch; returns the batch evicted to make room, if any.
    fn push(&mut self, batch: QueuedBatch) -> Option<QueuedBatch>;
    /// The oldest batch, still queued.
    fn front(&self) -> Option<&QueuedBatch>;
    /// Removes the oldest batch if it is `seq` (it may have been evicted
    /// while it was being sent).
    fn remove_front(&mut self, seq: u64) -> bool;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A bounded in-memory queue that sheds the oldest batch when full.
#[derive(Debug)]
pub struct MemoryQueue {
    items: VecDeque<QueuedBatch>,
    capacity: usize,
}

impl MemoryQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }
}

impl BatchQueue for MemoryQueue {
    fn push(&mut self, batch: QueuedBatch) -> Option<QueuedBatch> {
        let evicted = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(batch);
        evicted
    }

    fn front(&self) -> Option<&QueuedBatch> {
        self.items.front()
    }

    fn remove_front(&mut self, seq: u64) -> bool {
        if self.items.front().is_some_and(|b| b.seq == seq) {
            self.items.pop_front();
            true
        } else {
            false
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// The shared handle to the outbox: the sampling loop pushes, the sender pops.
#[derive(Clone)]
pub struct Outbox {
    queue: Arc<Mutex<dyn BatchQueue>>,
    notify: Arc<Notify>,
    /// Cuts a retry wait short (at shutdown).
    flush: Arc<Notify>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Outbox {
    pub fn new(queue: impl BatchQueue + 'static) -> Self {
        Self {
            queue: Arc::new(Mutex::new(queue)),
            notify: Arc::new(Notify::new()),
            flush: Arc::new(Notify::new()),
            dropped: Arc::default(),
        }
    }

    /// An in-memory outbox of [`OUTBOX_CAPACITY`] batches.
    pub fn in_memory() -> Self {
        Self::new(MemoryQueue::new(OUTBOX_CAPACITY))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, dyn BatchQueue + 'static> {
        // A panic while holding the lock cannot leave the queue inconsistent
        // (every operation is a single VecDeque call), so poisoning is ignored.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a batch without waiting; when full the oldest batch is dropped,
    /// counted and logged.
    pub fn push(&self, batch: QueuedBatch) {
        let evicted = self.lock().push(batch);
        if let Some(old) = evicted {
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(
                seq = old.seq,
                events = old.events,
                dropped_total = total,
                "outbox full: dropped the oldest batch"
            );
        }
        self.notify.notify_one();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn front(&self) -> Option<QueuedBatch> {
        self.lock().front().cloned()
    }

    fn remove_front(&self, seq: u64) {
        self.lock().remove_front(seq);
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

/// Sends queued batches in order, forever (cancel the task to stop it).
///
/// 2xx removes the batch; 429/503 wait for `Retry-After` (or back off);
/// 5xx and transport errors back off with jitter; 401 is logged as an error
/// and retried; any other 4xx drops the batch, which would never succeed.
pub async fn run_sender(correlator: Correlator, outbox: Outbox) {
    let mut backoff = Backoff::default();
    loop {
        let Some(batch) = outbox.front() else {
            outbox.notify.notified().await;
            continue;
        };
        match correlator.post_signed(INGEST_AGENT_PATH, &batch.body).await {
            PostOutcome::Success(_) => {
                tracing::debug!(seq = batch.seq, events = batch.events, "batch delivered");
                outbox.remove_front(batch.seq);
                backoff.reset();
            }
            PostOutcome::Retry { after, reason } => {
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
                outbox.remove_front(batch.seq);
                backoff.reset();
            }
        }
    }
}

#[cfg(test)]
mod tests;
