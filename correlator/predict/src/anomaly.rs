//! Anomaly detection: per-app k-means (linfa-clustering) over feature
//! vectors, scored by distance relative to the training distribution.
//!
//! A feature [`Row`] holds, for each configured metric (by default `cpu`,
//! `rss_mb`, `latency_ms`), three features: its level, its deviation from
//! the host's own moving average (`dev_`, time constant `baseline_window`)
//! and its per-second difference from the previous sample (`d_`). The
//! deviation matters because one app runs at different loads on different
//! hosts: 60% CPU is normal on a busy host and a spike on an idle one.
//!
//! Every app keeps a bounded [`Reservoir`] of recent rows from all its
//! hosts, thinned by a stride so it spans about `train_window` whatever the
//! number of hosts. Rows of an open anomaly (for `learn_after`) and rows with
//! a metric over its alert threshold stay out, so the model learns normal
//! behaviour.
//!
//! [`Model::train`] standardises the features (mean, standard deviation with
//! a per-metric floor) and runs k-means (k-means++ init, seeded, so training
//! is deterministic). A row's distance to a centroid is measured in that
//! cluster's own spread per feature (floored at the metric's noise floor, so
//! a tight cluster still tolerates normal jitter): a diagonal Mahalanobis
//! distance to the centroid k-means assigns the row to. The given
//! percentile (p99 by default) of the training rows' distances is the scale,
//! and [`Model::score`] is distance over scale: about 1% of normal rows score
//! above 1.
//!
//! [`Track`] raises an anomaly after `consecutive` scores over
//! `score_threshold` while every metric is below its alert threshold
//! (anomalous but below threshold: over it, the agent's alert speaks), and
//! clears it after `clear_after` scores at or under it.

use std::collections::VecDeque;

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;

use crate::config::AnomalyConfig;
use crate::signal::{AnomalyExplanation, ClearReason};
use crate::{Metric, UnixMs};

/// At most this many metrics feed the model...
pub const MAX_METRICS: usize = 4;
/// ...each as three features.
pub const MAX_FEATURES: usize = 3 * MAX_METRICS;

/// A feature vector for `m` metrics: levels `[0, m)`, deviations from the
/// host's moving average `[m, 2m)`, per-second differences `[2m, 3m)`;
/// `NaN` where absent.
pub type Row = [f32; MAX_FEATURES];

/// The smallest spread a feature of `metric` is measured in, so a constant
/// feature does not make every tiny change anomalous.
fn sd_floor(metric: Metric) -> f64 {
    match metric {
        Metric::Cpu | Metric::HostCpu => 1.0,
        Metric::RssMb => 4.0,
        Metric::LatencyMs => 1.0,
    }
}

/// The name of feature `i` for `metrics`: `cpu`, `dev_cpu` or `d_cpu`.
pub fn feature_name(metrics: &[Metric], i: usize) -> String {
    let m = metrics.len().max(1);
    let metric = metrics.get(i % m).map(|x| x.name()).unwrap_or("?");
    match i / m {
        0 => metric.to_owned(),
        1 => format!("dev_{metric}"),
        _ => format!("d_{metric}"),
    }
}

/// Per-(host, app) feature state: the previous sample and the moving
/// averages.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFeatures {
    prev: Option<(UnixMs, [f32; MAX_METRICS])>,
    /// `NaN` until a metric has been seen.
    base: [f32; MAX_METRICS],
}

impl Default for HostFeatures {
    fn default() -> Self {
        Self {
            prev: None,
            base: [f32::NAN; MAX_METRICS],
        }
    }
}

impl HostFeatures {
    /// The row for this sample's `levels` (one per configured metric) at
    /// `now`, updating the state. Differences need a previous sample at most
    /// 5 s older; a gap over `tau_ms` restarts the moving averages. With
    /// `learn` false (during an anomaly) the moving averages hold still, so
    /// an excursion does not shift the host's normal.
    pub fn row(&mut self, levels: &[Option<f64>], now: UnixMs, tau_ms: i64, learn: bool) -> Row {
        let m = levels.len().min(MAX_METRICS);
        let mut row = [f32::NAN; MAX_FEATURES];
        let mut cur = [f32::NAN; MAX_METRICS];
        let dt_ms = self.prev.map(|(t, _)| now - t);
        let alpha = match dt_ms {
            Some(dt) if dt > 0 && dt <= tau_ms => 1.0 - (-(dt as f64) / tau_ms.max(1) as f64).exp(),
            Some(dt) if dt <= 0 => 0.0,
            _ => 1.0,
        } as f32;
        for i in 0..m {
            let v = levels[i].map(|v| v as f32).unwrap_or(f32::NAN);
            cur[i] = v;
            row[i] = v;
            if !v.is_finite() {
                continue;
            }
            let base = self.base[i];
            if base.is_finite() && alpha < 1.0 {
                row[m + i] = v - base;
                if learn {
                    self.base[i] = base + alpha * (v - base);
                }
            } else {
                self.base[i] = v;
            }
            if let (Some((_, p)), Some(dt)) = (self.prev, dt_ms)
                && dt > 0
                && dt <= 5_000
            {
                row[2 * m + i] = (v - p[i]) / (dt as f32 / 1000.0);
            }
        }
        self.prev = Some((now, cur));
        row
    }
}

/// A bounded, thinned FIFO of an app's recent normal rows.
#[derive(Debug, Clone)]
pub struct Reservoir {
    rows: VecDeque<Row>,
    cap: usize,
    stride: u64,
    seen: u64,
}

impl Reservoir {
    pub fn new(cap: usize) -> Self {
        Self {
            rows: VecDeque::new(),
            cap: cap.max(1),
            stride: 1,
            seen: 0,
        }
    }

    /// Keep every `stride`-th offered row.
    pub fn set_stride(&mut self, stride: u64) {
        self.stride = stride.max(1);
    }

    pub fn offer(&mut self, row: Row) {
        self.seen += 1;
        if self.seen % self.stride != 0 {
            return;
        }
        if self.rows.len() == self.cap {
            self.rows.pop_front();
        }
        self.rows.push_back(row);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter()
    }

    pub fn heap_bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<Row>()
    }
}

/// A trained per-app model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The metrics the rows were built from (the config's, at training).
    pub metrics: Vec<Metric>,
    /// Indexes of the row features used (present in ≥ 90% of rows).
    pub dims: Vec<usize>,
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
    /// Standardised centroids, `clusters × dims`.
    pub centroids: Array2<f64>,
    /// Each cluster's spread per feature, standardised, `clusters × dims`.
    pub spreads: Array2<f64>,
    /// The training distances' percentile: the distance that scores 1.
    pub scale: f64,
    pub trained_at_ms: UnixMs,
    pub rows: usize,
}

/// One row's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub score: f64,
    pub centroid: usize,
    /// The row feature (index into [`Row`]) contributing most.
    pub dominant: usize,
}

impl Model {
    /// Trains on `rows`; `None` with fewer than `min_train_rows` usable rows
    /// or when k-means fails.
    pub fn train<'a>(
        rows: impl Iterator<Item = &'a Row> + Clone,
        metrics: &[Metric],
        cfg: &AnomalyConfig,
        now: UnixMs,
    ) -> Option<Model> {
        let m = metrics.len().min(MAX_METRICS);
        let total = rows.clone().count();
        if total < cfg.min_train_rows.max(2) || m == 0 {
            return None;
        }
        let dims: Vec<usize> = (0..3 * m)
            .filter(|&j| rows.clone().filter(|r| r[j].is_finite()).count() * 10 >= total * 9)
            .collect();
        if dims.is_empty() {
            return None;
        }
        let usable: Vec<&Row> = rows
            .filter(|r| dims.iter().all(|&j| r[j].is_finite()))
            .collect();
        let n = usable.len();
        if n < cfg.min_train_rows.max(2) {
            return None;
        }
        let d = dims.len();
        let mut mean = vec![0.0; d];
        let mut sd = vec![0.0; d];
        let mut floor = vec![0.0; d];
        for (k, &j) in dims.iter().enumerate() {
            let mu = usable.iter().map(|r| f64::from(r[j])).sum::<f64>() / n as f64;
            let var = usable
                .iter()
                .map(|r| (f64::from(r[j]) - mu).powi(2))
                .sum::<f64>()
                / n as f64;
            mean[k] = mu;
            sd[k] = var.sqrt().max(sd_floor(metrics[j % m]));
            floor[k] = sd_floor(metrics[j % m]) / sd[k];
        }
        let x = Array2::from_shape_fn((n, d), |(i, k)| {
            (f64::from(usable[i][dims[k]]) - mean[k]) / sd[k]
        });
        let k = cfg.clusters.min(n / 20).max(1);
        let model = KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(cfg.seed))
            .n_runs(3)
            .max_n_iterations(100)
            .tolerance(1e-4)
            .fit(&DatasetBase::from(x.clone()))
            .ok()?;
        let centroids = model.centroids().clone();
        if centroids.iter().any(|c| !c.is_finite()) {
            return None;
        }
        // Each cluster's spread per feature (members by Euclidean nearest, as
        // k-means assigned them); small clusters borrow the pooled spread.
        let k = centroids.nrows();
        let mut sum2 = Array2::<f64>::zeros((k, d));
        let mut count = vec![0usize; k];
        for r in x.rows() {
            let c = (0..k)
                .min_by(|&a, &b| {
                    let da: f64 = centroids
                        .row(a)
                        .iter()
                        .zip(r.iter())
                        .map(|(p, q)| (p - q).powi(2))
                        .sum();
                    let db: f64 = centroids
                        .row(b)
                        .iter()
                        .zip(r.iter())
                        .map(|(p, q)| (p - q).powi(2))
                        .sum();
                    da.total_cmp(&db)
                })
                .unwrap_or(0);
            count[c] += 1;
            for (j, v) in r.iter().enumerate() {
                sum2[[c, j]] += (v - centroids[[c, j]]).powi(2);
            }
        }
        let pooled: Vec<f64> = (0..d)
            .map(|j| (sum2.column(j).sum() / n as f64).sqrt())
            .collect();
        let spreads = Array2::from_shape_fn((k, d), |(c, j)| {
            let s = if count[c] >= 10 {
                (sum2[[c, j]] / count[c] as f64).sqrt()
            } else {
                pooled[j]
            };
            s.max(floor[j]).max(1e-9)
        });
        let mut model = Model {
            metrics: metrics[..m].to_vec(),
            dims,
            mean,
            sd,
            centroids,
            spreads,
            scale: 1.0,
            trained_at_ms: now,
            rows: n,
        };
        let mut dists: Vec<f64> = x
            .rows()
            .into_iter()
            .map(|r| model.nearest(r.as_slice().unwrap_or(&[])).1)
            .collect();
        dists.sort_by(f64::total_cmp);
        let at = ((n as f64 * cfg.percentile).ceil() as usize).clamp(1, n) - 1;
        model.scale = dists[at].max(1e-6);
        Some(model)
    }

    /// The nearest centroid of a standardised row (Euclidean, as k-means
    /// assigns) and the row's distance to it in that cluster's spread.
    fn nearest(&self, z: &[f64]) -> (usize, f64) {
        let mut best = (0, f64::INFINITY);
        for (c, cen) in self.centroids.rows().into_iter().enumerate() {
            let d2: f64 = z.iter().zip(cen.iter()).map(|(v, p)| (v - p).powi(2)).sum();
            if d2 < best.1 {
                best = (c, d2);
            }
        }
        let c = best.0;
        let (cen, spr) = (self.centroids.row(c), self.spreads.row(c));
        let d2: f64 = z
            .iter()
            .zip(cen.iter().zip(spr.iter()))
            .map(|(v, (p, s))| ((v - p) / s).powi(2))
            .sum();
        (c, d2.sqrt())
    }

    /// Scores a row; `None` when a used feature is missing.
    pub fn score(&self, row: &Row) -> Option<Score> {
        let mut z = [0.0_f64; MAX_FEATURES];
        for (k, &j) in self.dims.iter().enumerate() {
            let v = row[j];
            if !v.is_finite() {
                return None;
            }
            z[k] = (f64::from(v) - self.mean[k]) / self.sd[k];
        }
        let z = &z[..self.dims.len()];
        let (centroid, dist) = self.nearest(z);
        let (cen, spr) = (self.centroids.row(centroid), self.spreads.row(centroid));
        let term = |k: usize| ((z[k] - cen[k]) / spr[k]).powi(2);
        let dominant = (0..self.dims.len())
            .max_by(|&a, &b| term(a).total_cmp(&term(b)))
            .map(|k| self.dims[k])
            .unwrap_or(0);
        Some(Score {
            score: dist / self.scale,
            centroid,
            dominant,
        })
    }

    pub fn clusters(&self) -> usize {
        self.centroids.nrows()
    }
}

/// What a [`Track`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Raise {
        metric: Metric,
        explanation: AnomalyExplanation,
    },
    /// The episode ended; it carries its latest explanation.
    Clear {
        reason: ClearReason,
        episode: Episode,
    },
}

/// Per-(host, app) anomaly state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    over: u32,
    under: u32,
    raised: Option<Episode>,
}

/// An open anomaly.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub since_ms: UnixMs,
    pub metric: Metric,
    pub last: AnomalyExplanation,
}

impl Track {
    pub fn raised(&self) -> Option<&Episode> {
        self.raised.as_ref()
    }

    /// Whether this (host, app)'s rows may be learned from now.
    pub fn learnable(&self, now: UnixMs, cfg: &AnomalyConfig) -> bool {
        self.raised
            .as_ref()
            .is_none_or(|e| now - e.since_ms >= cfg.learn_after.as_millis_i64())
    }

    /// Applies one scored sample. `below_thresholds` is false when a metric
    /// is over its alert threshold: that is the agent's alert, not an
    /// anomaly, so nothing new is raised then.
    pub fn on_score(
        &mut self,
        row: &Row,
        scored: Option<(Score, &Model)>,
        below_thresholds: bool,
        now: UnixMs,
        cfg: &AnomalyConfig,
    ) -> Option<Transition> {
        let (s, model) = scored?;
        let anomalous = s.score > cfg.score_threshold;
        if let Some(e) = &mut self.raised {
            if anomalous {
                self.under = 0;
                e.last.score = s.score;
                e.last.max_score = e.last.max_score.max(s.score);
                return None;
            }
            self.under += 1;
            if self.under >= cfg.clear_after {
                return self.close(ClearReason::Normal);
            }
            return None;
        }
        if !(anomalous && below_thresholds) {
            self.over = 0;
            return None;
        }
        self.over += 1;
        if self.over < cfg.consecutive {
            return None;
        }
        self.over = 0;
        self.under = 0;
        let m = model.metrics.len().max(1);
        let metric = model
            .metrics
            .get(s.dominant % m)
            .copied()
            .unwrap_or(Metric::Cpu);
        let explanation = AnomalyExplanation {
            score: s.score,
            score_threshold: cfg.score_threshold,
            max_score: s.score,
            features: model
                .dims
                .iter()
                .map(|&j| (feature_name(&model.metrics, j), f64::from(row[j])))
                .collect(),
            dominant: feature_name(&model.metrics, s.dominant),
            centroid: s.centroid,
            clusters: model.clusters(),
            trained_at_ms: model.trained_at_ms,
            training_rows: model.rows,
        };
        self.raised = Some(Episode {
            since_ms: now,
            metric,
            last: explanation.clone(),
        });
        Some(Transition::Raise {
            metric,
            explanation,
        })
    }

    /// Ends a raised anomaly for `reason`; `None` when nothing was raised.
    pub fn close(&mut self, reason: ClearReason) -> Option<Transition> {
        self.over = 0;
        self.under = 0;
        self.raised
            .take()
            .map(|episode| Transition::Clear { reason, episode })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: [Metric; 3] = [Metric::Cpu, Metric::RssMb, Metric::LatencyMs];

    fn noise(i: u64) -> f32 {
        let x = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
        ((x - 0.5) * 2.0) as f32
    }

    /// Two hosts' normal: one at cpu 20, one at cpu 60, both rss ~1000 MB,
    /// latency ~20 ms; small deviations and differences.
    fn normal_rows(n: u64) -> Vec<Row> {
        (0..n)
            .map(|i| {
                let base = if i % 2 == 0 { 20.0 } else { 60.0 };
                let dev = [2.0 * noise(i), 5.0 * noise(i + 7), 2.0 * noise(i + 13)];
                let d = [2.0 * noise(i + 17), noise(i + 19), noise(i + 23)];
                row(base + dev[0], 1000.0 + dev[1], 20.0 + dev[2], dev, d)
            })
            .collect()
    }

    fn row(cpu: f32, rss: f32, lat: f32, dev: [f32; 3], d: [f32; 3]) -> Row {
        let mut r = [f32::NAN; MAX_FEATURES];
        r[..9].copy_from_slice(&[cpu, rss, lat, dev[0], dev[1], dev[2], d[0], d[1], d[2]]);
        r
    }

    fn calm(cpu: f32, rss: f32, lat: f32) -> Row {
        row(cpu, rss, lat, [0.0; 3], [0.0; 3])
    }

    #[test]
    fn host_features_give_levels_deviations_and_per_second_differences() {
        let mut h = HostFeatures::default();
        let tau = 600_000;
        let r = h.row(&[Some(10.0), Some(100.0), None], 0, tau, true);
        assert_eq!((r[0], r[1]), (10.0, 100.0));
        assert!(
            r[3].is_nan() && r[6].is_nan(),
            "nothing to compare with yet"
        );
        let r = h.row(&[Some(14.0), Some(102.0), Some(5.0)], 2_000, tau, true);
        assert_eq!(
            (r[3], r[4]),
            (4.0, 2.0),
            "deviation from the average so far"
        );
        assert!(r[5].is_nan(), "latency has no average yet");
        assert_eq!((r[6], r[7]), (2.0, 1.0), "per second");
        // The average moves slowly: a level held for 10 s barely shifts it.
        let mut last = r;
        for s in 2..12 {
            last = h.row(&[Some(14.0), Some(102.0), Some(5.0)], s * 1_000, tau, true);
        }
        assert!(last[3] > 3.5 && last[6] == 0.0, "{last:?}");
        // A gap longer than 5 s: no difference; longer than tau: a new average.
        let r = h.row(&[Some(20.0), Some(100.0), Some(5.0)], 20_000, tau, true);
        assert!(r[6].is_nan() && r[3] > 9.0);
        let r = h.row(&[Some(20.0), Some(100.0), Some(5.0)], 2_000_000, tau, true);
        assert!(r[3].is_nan());
        // While not learning (an anomaly is raised) the average holds still.
        let a = h.row(&[Some(50.0), Some(100.0), Some(5.0)], 2_001_000, tau, false);
        let b = h.row(&[Some(50.0), Some(100.0), Some(5.0)], 2_002_000, tau, false);
        assert_eq!((a[3], b[3]), (30.0, 30.0));
        let c = h.row(&[Some(50.0), Some(100.0), Some(5.0)], 2_003_000, tau, true);
        let d = h.row(&[Some(50.0), Some(100.0), Some(5.0)], 2_004_000, tau, true);
        assert!(
            c[3] == 30.0 && d[3] < 30.0,
            "learning again: {} {}",
            c[3],
            d[3]
        );
    }

    #[test]
    fn model_scores_normal_rows_low_and_odd_rows_high_with_the_right_dominant() {
        let cfg = AnomalyConfig::default();
        let rows = normal_rows(2000);
        let m = Model::train(rows.iter(), &METRICS, &cfg, 42).expect("trains");
        assert_eq!(m.dims, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(m.clusters() >= 2 && m.rows == 2000);
        // About 1% of the training rows score over 1.
        let over = rows
            .iter()
            .filter(|r| m.score(r).unwrap().score > 1.0)
            .count();
        assert!((5..=40).contains(&over), "{over}");
        // Between the two hosts' levels: unseen cpu 40.
        // The idle host 20 points over its own average.
        let s = m
            .score(&row(40.0, 1000.0, 20.0, [20.0, 0.0, 0.0], [0.0; 3]))
            .unwrap();
        assert!(
            s.score > 2.0 && feature_name(&METRICS, s.dominant) == "dev_cpu",
            "{s:?}"
        );
        // A latency jump at normal cpu.
        let s = m
            .score(&row(20.0, 1000.0, 20.0, [0.0; 3], [0.0, 0.0, 40.0]))
            .unwrap();
        assert!(
            s.score > 2.0 && feature_name(&METRICS, s.dominant) == "d_latency_ms",
            "{s:?}"
        );
        // A host 20 points over its own average, at a level normal elsewhere.
        let s = m
            .score(&row(60.0, 1000.0, 20.0, [20.0, 0.0, 0.0], [0.0; 3]))
            .unwrap();
        assert!(
            s.score > 2.0 && feature_name(&METRICS, s.dominant) == "dev_cpu",
            "{s:?}"
        );
        assert!(m.score(&calm(20.0, f32::NAN, 20.0)).is_none());
        // Deterministic.
        assert_eq!(Model::train(rows.iter(), &METRICS, &cfg, 42), Some(m));
    }

    #[test]
    fn too_few_or_featureless_rows_train_nothing() {
        let cfg = AnomalyConfig::default();
        let rows = normal_rows(100);
        assert!(Model::train(rows.iter(), &METRICS, &cfg, 0).is_none());
        let empty = vec![[f32::NAN; MAX_FEATURES]; 1000];
        assert!(Model::train(empty.iter(), &METRICS, &cfg, 0).is_none());
        // Constant rows train (sd floors), and score a change as anomalous.
        let flat = vec![calm(10.0, 100.0, 5.0); 1000];
        let m = Model::train(flat.iter(), &METRICS, &cfg, 0).expect("constant data trains");
        assert!(m.score(&flat[0]).unwrap().score < 1.0);
        assert!(m.score(&calm(30.0, 100.0, 5.0)).unwrap().score > 1.0);
    }

    #[test]
    fn a_feature_mostly_absent_is_dropped() {
        let cfg = AnomalyConfig::default();
        let mut rows = normal_rows(1000);
        for r in rows.iter_mut().skip(1).step_by(3) {
            r[2] = f32::NAN;
            r[5] = f32::NAN;
            r[8] = f32::NAN;
        }
        let m = Model::train(rows.iter(), &METRICS, &cfg, 0).unwrap();
        assert_eq!(m.dims, [0, 1, 3, 4, 6, 7]);
        assert!(m.score(&calm(20.0, 1000.0, f32::NAN)).is_some());
    }

    #[test]
    fn reservoir_is_bounded_and_thinned() {
        let mut r = Reservoir::new(10);
        r.set_stride(3);
        for i in 0..100 {
            r.offer([i as f32; MAX_FEATURES]);
        }
        assert_eq!(r.len(), 10);
        let firsts: Vec<f32> = r.rows().map(|x| x[0]).collect();
        assert_eq!(
            firsts,
            [71.0, 74.0, 77.0, 80.0, 83.0, 86.0, 89.0, 92.0, 95.0, 98.0]
        );
    }

    #[test]
    fn track_needs_consecutive_scores_below_thresholds_and_clears_when_normal() {
        let cfg = AnomalyConfig::default(); // threshold 1.5, consecutive 5, clear_after 10
        let rows = normal_rows(1000);
        let m = Model::train(rows.iter(), &METRICS, &cfg, 0).unwrap();
        let odd = row(40.0, 1000.0, 20.0, [20.0, 0.0, 0.0], [0.0; 3]);
        let normal = rows[0];
        let mut t = Track::default();
        let feed = |t: &mut Track, r: &Row, below: bool| {
            t.on_score(r, m.score(r).map(|s| (s, &m)), below, 1_000, &cfg)
        };
        for _ in 0..4 {
            assert_eq!(feed(&mut t, &odd, true), None);
        }
        assert_eq!(feed(&mut t, &normal, true), None, "the run broke");
        for _ in 0..4 {
            assert_eq!(feed(&mut t, &odd, true), None);
        }
        assert_eq!(
            feed(&mut t, &odd, false),
            None,
            "over an alert threshold: not ours"
        );
        for _ in 0..4 {
            assert_eq!(feed(&mut t, &odd, true), None);
        }
        match feed(&mut t, &odd, true) {
            Some(Transition::Raise {
                metric,
                explanation,
            }) => {
                assert_eq!(metric, Metric::Cpu);
                assert_eq!(explanation.dominant, "dev_cpu");
                assert_eq!(explanation.features[0], ("cpu".to_owned(), 40.0));
            }
            other => panic!("{other:?}"),
        }
        assert!(!t.learnable(2_000, &cfg) && t.learnable(1_000 + 900_000, &cfg));
        for _ in 0..9 {
            assert_eq!(feed(&mut t, &normal, true), None);
        }
        match feed(&mut t, &normal, true) {
            Some(Transition::Clear { reason, episode }) => {
                assert_eq!(
                    (reason, episode.since_ms, episode.metric),
                    (ClearReason::Normal, 1_000, Metric::Cpu)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.close(ClearReason::Stale), None);
    }
}
