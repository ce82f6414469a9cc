//! Compact per-series history: fixed-resolution rings of `f32` bucket means.
//!
//! A [`History`] holds two [`Ring`]s: `raw` at 1 s (the agent's sampling
//! interval) for the last minutes, and `coarse` (10 s means by default) for
//! the last hour. A bucket's time is implicit in its position, so a value
//! costs 4 bytes: with the defaults (300 s raw, 1 h of 10 s buckets) a series
//! holds 300 + 360 values, 2,640 bytes, plus ~80 bytes of bookkeeping.
//! Missing buckets (an agent outage) are `NaN` and skipped by the models.
//!
//! Samples normally arrive in order. Several in one bucket are averaged. A
//! late sample fills its bucket only if that bucket is still empty and still
//! retained; anything older is dropped. A jump forward clears the buckets in
//! between.

use crate::UnixMs;
use crate::config::HistoryConfig;

/// A ring of bucket means at a fixed resolution.
#[derive(Debug, Clone)]
pub struct Ring {
    res_ms: i64,
    values: Box<[f32]>,
    /// Slot number (`t_ms / res_ms`) of the newest bucket; `None` when empty.
    head: Option<i64>,
    /// Running sum and count of the newest bucket, still open.
    acc_sum: f64,
    acc_n: u32,
    /// Time of the newest sample pushed.
    last_t_ms: UnixMs,
}

/// A copy of a ring's buckets over a time range; `NaN` where missing.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Start of the first bucket.
    pub start_ms: UnixMs,
    pub res_ms: i64,
    pub values: Vec<f32>,
    /// The newest bucket is still open: its samples so far are centred here
    /// rather than at the bucket's middle.
    pub open_center_ms: Option<UnixMs>,
}

impl Window {
    /// The present buckets as (centre time in ms, value).
    pub fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        let last = self.values.len().saturating_sub(1);
        self.values.iter().enumerate().filter_map(move |(i, v)| {
            if !v.is_finite() {
                return None;
            }
            let center = match self.open_center_ms {
                Some(c) if i == last => c,
                _ => self.start_ms + i as i64 * self.res_ms + self.res_ms / 2,
            };
            Some((center as f64, f64::from(*v)))
        })
    }

    /// How many buckets hold a value.
    pub fn present(&self) -> usize {
        self.values.iter().filter(|v| v.is_finite()).count()
    }
}

impl Ring {
    /// A ring of `len` buckets of `res_ms` each (both at least 1).
    pub fn new(res_ms: i64, len: usize) -> Self {
        Self {
            res_ms: res_ms.max(1),
            values: vec![f32::NAN; len.max(1)].into_boxed_slice(),
            head: None,
            acc_sum: 0.0,
            acc_n: 0,
            last_t_ms: 0,
        }
    }

    pub fn resolution_ms(&self) -> i64 {
        self.res_ms
    }

    pub fn capacity(&self) -> usize {
        self.values.len()
    }

    fn idx(&self, slot: i64) -> usize {
        slot.rem_euclid(self.values.len() as i64) as usize
    }

    /// Adds a sample; returns false when it was dropped (not finite, or
    /// older than the ring, or its bucket already holds a value).
    pub fn push(&mut self, t_ms: UnixMs, v: f64) -> bool {
        if !v.is_finite() {
            return false;
        }
        let slot = t_ms.div_euclid(self.res_ms);
        let cap = self.values.len() as i64;
        match self.head {
            Some(head) if slot == head => {
                self.acc_sum += v;
                self.acc_n += 1;
                let i = self.idx(slot);
                self.values[i] = (self.acc_sum / f64::from(self.acc_n)) as f32;
                self.last_t_ms = self.last_t_ms.max(t_ms);
                true
            }
            Some(head) if slot < head => {
                let i = self.idx(slot);
                if head.saturating_sub(slot) >= cap || self.values[i].is_finite() {
                    return false;
                }
                self.values[i] = v as f32;
                true
            }
            _ => {
                // A new newest bucket: clear the ones skipped over.
                match self.head {
                    Some(head) if slot.saturating_sub(head) < cap => {
                        let mut s = head + 1;
                        while s < slot {
                            let i = self.idx(s);
                            self.values[i] = f32::NAN;
                            s += 1;
                        }
                    }
                    _ => self.values.fill(f32::NAN),
                }
                self.head = Some(slot);
                self.acc_sum = v;
                self.acc_n = 1;
                let i = self.idx(slot);
                self.values[i] = v as f32;
                self.last_t_ms = t_ms;
                true
            }
        }
    }

    /// The newest sample's time and its bucket's current mean.
    pub fn last(&self) -> Option<(UnixMs, f64)> {
        let head = self.head?;
        Some((self.last_t_ms, f64::from(self.values[self.idx(head)])))
    }

    /// The buckets covering `(end_ms - len_ms, end_ms]`, oldest first.
    pub fn window(&self, end_ms: UnixMs, len_ms: i64) -> Window {
        let n = (len_ms.max(self.res_ms) / self.res_ms).clamp(1, self.values.len() as i64);
        let last = end_ms.div_euclid(self.res_ms);
        let first = last - n + 1;
        let cap = self.values.len() as i64;
        let mut values = vec![f32::NAN; n as usize];
        if let Some(head) = self.head {
            // Retained slots are (head - cap, head]; copy their overlap with
            // [first, last] in at most two contiguous runs of the ring.
            let lo = first.max(head.saturating_sub(cap - 1));
            let hi = last.min(head);
            let mut slot = lo;
            while slot <= hi {
                let i = self.idx(slot);
                let run = ((hi - slot + 1) as usize).min(self.values.len() - i);
                let at = (slot - first) as usize;
                values[at..at + run].copy_from_slice(&self.values[i..i + run]);
                match slot.checked_add(run as i64) {
                    Some(next) => slot = next,
                    None => break,
                }
            }
        }
        let open_center_ms = match self.head {
            Some(head) if head == last && self.acc_n > 0 => {
                let start = head.saturating_mul(self.res_ms);
                Some(start / 2 + self.last_t_ms.min(end_ms) / 2)
            }
            _ => None,
        };
        Window {
            start_ms: first.saturating_mul(self.res_ms),
            res_ms: self.res_ms,
            values,
            open_center_ms,
        }
    }

    /// Heap bytes held by the ring's values.
    pub fn heap_bytes(&self) -> usize {
        self.values.len() * std::mem::size_of::<f32>()
    }
}

/// The history of one series: a 1 s ring and a downsampled ring.
#[derive(Debug, Clone)]
pub struct History {
    pub raw: Ring,
    pub coarse: Ring,
}

impl History {
    pub fn new(cfg: &HistoryConfig) -> Self {
        let raw_len = (cfg.raw_retention.as_millis_i64() / 1000).max(1) as usize;
        let res = cfg.coarse_resolution.as_millis_i64().max(1000);
        let coarse_len = (cfg.coarse_retention.as_millis_i64() / res).max(1) as usize;
        Self {
            raw: Ring::new(1000, raw_len),
            coarse: Ring::new(res, coarse_len),
        }
    }

    /// Adds a sample to both rings; false when the raw ring dropped it.
    pub fn push(&mut self, t_ms: UnixMs, v: f64) -> bool {
        let kept = self.raw.push(t_ms, v);
        if kept {
            self.coarse.push(t_ms, v);
        }
        kept
    }

    pub fn last(&self) -> Option<(UnixMs, f64)> {
        self.raw.last()
    }

    /// Total bytes of one series' history: the struct and its two rings.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.raw.heap_bytes() + self.coarse.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(w: &Window) -> Vec<Option<f32>> {
        w.values
            .iter()
            .map(|v| v.is_finite().then_some(*v))
            .collect()
    }

    #[test]
    fn ring_keeps_the_last_buckets_and_averages_within_one() {
        let mut r = Ring::new(1000, 4);
        for (t, v) in [
            (1_000, 1.0),
            (2_000, 2.0),
            (2_500, 4.0),
            (3_000, 5.0),
            (4_000, 6.0),
            (5_000, 7.0),
        ] {
            assert!(r.push(t, v));
        }
        let w = r.window(5_999, 4_000);
        assert_eq!(w.start_ms, 2_000);
        assert_eq!(vals(&w), [Some(3.0), Some(5.0), Some(6.0), Some(7.0)]);
        assert_eq!(r.last(), Some((5_000, 7.0)));
        // Wider than the ring is clamped to the ring.
        assert_eq!(r.window(5_999, 60_000).values.len(), 4);
    }

    #[test]
    fn gaps_are_nan_and_a_long_gap_clears_everything() {
        let mut r = Ring::new(1000, 5);
        r.push(0, 1.0);
        r.push(1_000, 2.0);
        r.push(4_000, 5.0);
        assert_eq!(
            vals(&r.window(4_000, 5_000)),
            [Some(1.0), Some(2.0), None, None, Some(5.0)]
        );
        // Time passing without samples shows as missing buckets.
        assert_eq!(vals(&r.window(6_000, 3_000)), [Some(5.0), None, None]);
        r.push(60_000, 9.0);
        assert_eq!(
            vals(&r.window(60_000, 5_000)),
            [None, None, None, None, Some(9.0)]
        );
    }

    #[test]
    fn late_samples_fill_empty_buckets_only_and_bad_values_are_dropped() {
        let mut r = Ring::new(1000, 5);
        r.push(0, 1.0);
        r.push(3_000, 4.0);
        assert!(
            r.push(1_000, 2.0),
            "empty retained bucket takes a late sample"
        );
        assert!(!r.push(1_500, 7.0), "a filled bucket does not");
        assert!(!r.push(-10_000, 7.0), "older than the ring is dropped");
        assert!(!r.push(4_000, f64::NAN) && !r.push(4_000, f64::INFINITY));
        assert_eq!(
            vals(&r.window(3_000, 4_000)),
            [Some(1.0), Some(2.0), None, Some(4.0)]
        );
        // Extreme timestamps do not panic.
        assert!(r.push(i64::MAX, 1.0));
        assert!(!r.push(i64::MIN, 1.0));
        let _ = r.window(i64::MAX, i64::MAX);
    }

    /// `window` slot by slot, the obvious way.
    fn naive_window(r: &Ring, end_ms: UnixMs, len_ms: i64) -> Vec<Option<f32>> {
        let n = (len_ms.max(r.res_ms) / r.res_ms).clamp(1, r.values.len() as i64);
        let last = end_ms.div_euclid(r.res_ms);
        (last - n + 1..=last)
            .map(|slot| match r.head {
                Some(head) if slot <= head && head - slot < r.values.len() as i64 => {
                    let v = r.values[r.idx(slot)];
                    v.is_finite().then_some(v)
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn window_copies_the_same_buckets_as_a_slot_by_slot_walk() {
        let mut r = Ring::new(1000, 7);
        let mut t = 0;
        for i in 0..200u64 {
            // Mostly 1 s steps, sometimes gaps and late samples.
            let step = [1_000, 1_000, 1_000, 3_000, 1_000, -2_000, 9_000, 1_000][(i % 8) as usize];
            t += step;
            r.push(t, i as f64);
            for (end, len) in [
                (t, 7_000),
                (t + 2_500, 4_000),
                (t - 3_000, 7_000),
                (t + 20_000, 30_000),
            ] {
                assert_eq!(
                    vals(&r.window(end, len)),
                    naive_window(&r, end, len),
                    "at {t}: window({end}, {len})"
                );
            }
        }
    }

    #[test]
    fn window_points_are_bucket_centres_and_the_open_bucket_its_samples() {
        let mut r = Ring::new(10_000, 6);
        r.push(0, 1.0);
        r.push(9_000, 3.0);
        r.push(10_000, 5.0);
        r.push(12_000, 7.0);
        let w = r.window(12_000, 20_000);
        let pts: Vec<(f64, f64)> = w.points().collect();
        assert_eq!(pts, [(5_000.0, 2.0), (11_000.0, 6.0)]);
    }

    #[test]
    fn history_downsamples_and_reports_its_size() {
        let mut h = History::new(&HistoryConfig::default());
        for s in 0..100 {
            h.push(s * 1000, s as f64);
        }
        let coarse = h.coarse.window(99_000, 100_000);
        assert_eq!(coarse.values.len(), 10);
        assert_eq!(coarse.values[0], 4.5);
        assert_eq!(h.raw.window(99_000, 300_000).present(), 100);
        // 300 + 360 f32 values and the struct itself.
        assert_eq!(h.raw.heap_bytes() + h.coarse.heap_bytes(), 2_640);
        assert!(h.bytes() < 2_800, "{}", h.bytes());
    }
}
