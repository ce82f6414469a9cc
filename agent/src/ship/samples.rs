//! The samples taken since the last batch, so every batch carries all of
//! them: the correlator's predictor needs each sample at the sampling
//! cadence, not one per heartbeat.
//!
//! Bounded: at most [`MAX_SAMPLES_PER_BATCH`] are kept, the oldest dropped
//! first (counted). At 1 s sampling and the default 10 s heartbeat a batch
//! carries 10; the bound only matters when batches are not built for a
//! while, e.g. when sampling backs off or the spool blocks.

use std::collections::VecDeque;

use fincorp_api::wire::HostSample;

/// The most samples one batch carries (about 1 KB each with 5 apps).
pub const MAX_SAMPLES_PER_BATCH: usize = 60;

/// Samples waiting for the next batch, oldest first.
#[derive(Debug)]
pub struct SampleBuffer {
    samples: VecDeque<HostSample>,
    max: usize,
    dropped: u64,
}

impl Default for SampleBuffer {
    fn default() -> Self {
        Self::with_capacity(MAX_SAMPLES_PER_BATCH)
    }
}

impl SampleBuffer {
    /// A buffer keeping at most `max` samples (at least one).
    pub fn with_capacity(max: usize) -> Self {
        let max = max.max(1);
        Self {
            samples: VecDeque::with_capacity(max.min(MAX_SAMPLES_PER_BATCH)),
            max,
            dropped: 0,
        }
    }

    /// Adds the newest sample, dropping the oldest when full.
    pub fn push(&mut self, sample: HostSample) {
        if self.samples.len() == self.max {
            self.samples.pop_front();
            self.dropped += 1;
        }
        self.samples.push_back(sample);
    }

    /// Everything buffered, oldest first; the buffer is empty afterwards.
    pub fn take(&mut self) -> Vec<HostSample> {
        self.samples.drain(..).collect()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Samples dropped because the buffer was full, since it was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64) -> HostSample {
        HostSample {
            at_ms,
            cpu_pct: 1.0,
            mem_used_bytes: 1,
            mem_total_bytes: 2,
            apps: vec![],
            cpu_per_core_pct: vec![],
            mem_available_bytes: None,
            swap_used_bytes: None,
            swap_total_bytes: None,
            load: None,
        }
    }

    fn times(v: &[HostSample]) -> Vec<i64> {
        v.iter().map(|s| s.at_ms).collect()
    }

    #[test]
    fn a_batch_takes_every_sample_since_the_last_one_in_order() {
        let mut b = SampleBuffer::default();
        for t in 1..=5 {
            b.push(sample(t));
        }
        assert_eq!(b.len(), 5);
        assert_eq!(times(&b.take()), [1, 2, 3, 4, 5]);
        assert!(b.is_empty());
        b.push(sample(6));
        assert_eq!(times(&b.take()), [6], "nothing sent twice");
        assert_eq!(b.dropped(), 0);
    }

    #[test]
    fn when_full_the_oldest_samples_are_dropped_and_counted() {
        let mut b = SampleBuffer::with_capacity(3);
        for t in 1..=7 {
            b.push(sample(t));
        }
        assert_eq!(times(&b.take()), [5, 6, 7]);
        assert_eq!(b.dropped(), 4);

        let mut d = SampleBuffer::default();
        for t in 0..(MAX_SAMPLES_PER_BATCH as i64 + 10) {
            d.push(sample(t));
        }
        let kept = d.take();
        assert_eq!(kept.len(), MAX_SAMPLES_PER_BATCH);
        assert_eq!(kept[0].at_ms, 10);
        assert_eq!(d.dropped(), 10);
    }
}
