//! The [`Predictor`]: history, forecasts and anomaly models for every
//! (host, app), behind three calls the correlator makes.
//!
//! - [`Predictor::observe`] on every agent sample (the ingest path): pushes
//!   the app metrics into their series' history, scores the sample with the
//!   app's current anomaly model, and notices a predicted breach that
//!   happened. Cost: a few map lookups and `k` distances per (host, app).
//! - [`Predictor::plan`] on a schedule (every second is fine; it returns
//!   `None` when nothing is due): copies out what training needs (the windows
//!   of the series due a forecast, the rows of the apps due a model): about
//!   4 µs per series (62 ms for 15,000 series, measured by the bench).
//! - [`TrainingJob::run`] without the lock, e.g. in `spawn_blocking`: every
//!   linfa fit happens here (about 25–35 µs per series evaluation, ~30–170
//!   ms per app's k-means). It is a pure function of the job;
//!   [`TrainingJob::split`] and [`Trained::merge`] spread it over threads.
//! - [`Predictor::install`] with the lock again: applies the evaluations to
//!   the per-series state machines, swaps in the new models, forgets stale
//!   (host, app)s, and returns the signals.
//!
//! [`Predictor::retrain`] does the last three in one call, for tests and
//! replays. Everything is deterministic: maps are ordered, k-means is seeded,
//! and time only comes in through the arguments.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use fincorp_api::wire::{AlertStatus, HostSample};

use crate::anomaly::{self, Model, Reservoir, Row};
use crate::config::{Config, MetricSettings};
use crate::forecast::{self, Evaluation, SeriesInput};
use crate::history::History;
use crate::signal::{ClearReason, Explanation, Signal, SignalKind};
use crate::{Metric, UnixMs};

/// One metric's history and prediction state.
#[derive(Debug, Clone)]
struct Series {
    settings: MetricSettings,
    history: History,
    track: forecast::Track,
}

/// One app on one host.
#[derive(Debug, Clone)]
struct Unit {
    host: Arc<str>,
    app: Arc<str>,
    last_seen_ms: UnixMs,
    /// By [`Metric::index`]; only metrics with forecasting on have a series.
    series: [Option<Box<Series>>; 4],
    /// By [`Metric::index`]: the alert thresholds, for "below threshold".
    thresholds: [Option<f64>; 4],
    anomaly: anomaly::Track,
    /// Previous sample and moving averages, for the anomaly features.
    features: anomaly::HostFeatures,
}

/// One app's anomaly model and training sample.
#[derive(Debug, Clone)]
struct AppState {
    reservoir: Reservoir,
    model: Option<Arc<Model>>,
    planned_at_ms: Option<UnixMs>,
}

/// Counters and sizes, for the correlator's `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Host samples observed.
    pub samples: u64,
    /// Samples dropped for a timestamp too far from `now`.
    pub dropped_skew: u64,
    /// (host, app) pairs tracked.
    pub units: usize,
    /// Series with history (forecasting on).
    pub series: usize,
    /// Bytes of all series' history (rings and their structs).
    pub history_bytes: usize,
    /// Bytes of all apps' training reservoirs.
    pub reservoir_bytes: usize,
    /// Apps with a trained anomaly model.
    pub models: usize,
    pub forecast_evaluations: u64,
    pub forecast_fits: u64,
    pub anomaly_trainings: u64,
    /// Currently raised predictions and anomalies.
    pub raised_predictions: usize,
    pub raised_anomalies: usize,
}

/// Everything training needs, copied out of the predictor. `Send`.
#[derive(Debug, Clone)]
pub struct TrainingJob {
    pub at_ms: UnixMs,
    forecast_cfg: crate::config::ForecastConfig,
    anomaly_cfg: crate::config::AnomalyConfig,
    series: Vec<(Arc<str>, Arc<str>, Metric, SeriesInput)>,
    apps: Vec<(Arc<str>, Vec<Row>)>,
}

/// What training produced, to [`Predictor::install`].
#[derive(Debug, Clone)]
pub struct Trained {
    pub at_ms: UnixMs,
    evaluations: Vec<(Arc<str>, Arc<str>, Metric, Evaluation)>,
    models: Vec<(Arc<str>, Option<Model>)>,
    pub timing: Timing,
}

impl Trained {
    /// Joins the results of a [`TrainingJob::split`], in the split's order;
    /// times add up (CPU time, not wall time). `None` for no parts.
    pub fn merge(parts: Vec<Trained>) -> Option<Trained> {
        let mut it = parts.into_iter();
        let mut all = it.next()?;
        for t in it {
            all.evaluations.extend(t.evaluations);
            all.models.extend(t.models);
            let (a, b) = (&mut all.timing, t.timing);
            a.series += b.series;
            a.fits += b.fits;
            a.forecast += b.forecast;
            a.apps += b.apps;
            a.training_rows += b.training_rows;
            a.anomaly += b.anomaly;
        }
        Some(all)
    }
}

/// Where a job's time went (measured, not used in any decision).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    pub series: usize,
    pub fits: u64,
    pub forecast: StdDuration,
    pub apps: usize,
    pub training_rows: usize,
    pub anomaly: StdDuration,
}

impl TrainingJob {
    /// Series to evaluate and apps to train in this job.
    pub fn size(&self) -> (usize, usize) {
        (self.series.len(), self.apps.len())
    }

    /// Splits the job into at most `parts` contiguous jobs of about equal
    /// size, to run on several threads; [`Trained::merge`] joins their
    /// results in order, so installing the merge is the same as installing
    /// the unsplit job's result.
    pub fn split(self, parts: usize) -> Vec<TrainingJob> {
        let parts = parts.max(1);
        let series_chunk = self.series.len().div_ceil(parts).max(1);
        let apps_chunk = self.apps.len().div_ceil(parts).max(1);
        let mut series = self.series.into_iter();
        let mut apps = self.apps.into_iter();
        let mut out = Vec::with_capacity(parts);
        loop {
            let s: Vec<_> = series.by_ref().take(series_chunk).collect();
            let a: Vec<_> = apps.by_ref().take(apps_chunk).collect();
            if s.is_empty() && a.is_empty() && !out.is_empty() {
                break;
            }
            out.push(TrainingJob {
                at_ms: self.at_ms,
                forecast_cfg: self.forecast_cfg.clone(),
                anomaly_cfg: self.anomaly_cfg.clone(),
                series: s,
                apps: a,
            });
        }
        out
    }

    /// Fits every series' windows and trains every app's model.
    pub fn run(self) -> Trained {
        let t0 = Instant::now();
        let mut fits = 0;
        let evaluations: Vec<_> = self
            .series
            .into_iter()
            .map(|(host, app, metric, input)| {
                let e = forecast::evaluate(&input, &self.forecast_cfg, self.at_ms);
                fits += u64::from(e.fits);
                (host, app, metric, e)
            })
            .collect();
        let forecast = t0.elapsed();
        let t1 = Instant::now();
        let training_rows = self.apps.iter().map(|(_, r)| r.len()).sum();
        let models: Vec<_> = self
            .apps
            .into_iter()
            .map(|(app, rows)| {
                let m = Model::train(
                    rows.iter(),
                    &self.anomaly_cfg.metrics,
                    &self.anomaly_cfg,
                    self.at_ms,
                );
                (app, m)
            })
            .collect();
        Trained {
            at_ms: self.at_ms,
            timing: Timing {
                series: evaluations.len(),
                fits,
                forecast,
                apps: models.len(),
                training_rows,
                anomaly: t1.elapsed(),
            },
            evaluations,
            models,
        }
    }
}

/// History, models and state for every (host, app) the correlator hears of.
#[derive(Debug, Clone)]
pub struct Predictor {
    cfg: Config,
    /// host → app → unit.
    units: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Unit>>,
    apps: BTreeMap<Arc<str>, AppState>,
    next_forecast_ms: UnixMs,
    stats: Stats,
}

/// (host, app) of a signal.
type Names<'a> = (&'a str, &'a str);

fn forecast_signal(
    u: Names<'_>,
    metric: Metric,
    t: forecast::Transition,
    severity: fincorp_api::wire::Severity,
    at_ms: UnixMs,
) -> Signal {
    let (status, since, cleared, x) = match t {
        forecast::Transition::Raise(x) => (AlertStatus::Firing, x.evaluated_at_ms, None, x),
        forecast::Transition::Refresh {
            since_ms,
            explanation,
        } => (AlertStatus::Firing, since_ms, None, explanation),
        forecast::Transition::Clear {
            reason,
            since_ms,
            last,
        } => (AlertStatus::Resolved, since_ms, Some(reason), last),
    };
    Signal {
        kind: SignalKind::Predicted,
        status,
        host: u.0.to_string(),
        app: u.1.to_string(),
        metric,
        starts_at_ms: since,
        at_ms,
        severity,
        cleared,
        explanation: Explanation::Forecast(x),
    }
}

fn anomaly_signal(
    u: Names<'_>,
    t: anomaly::Transition,
    severity: fincorp_api::wire::Severity,
    at_ms: UnixMs,
) -> Signal {
    let (status, since, metric, cleared, x) = match t {
        anomaly::Transition::Raise {
            metric,
            explanation,
        } => (AlertStatus::Firing, at_ms, metric, None, explanation),
        anomaly::Transition::Clear { reason, episode } => (
            AlertStatus::Resolved,
            episode.since_ms,
            episode.metric,
            Some(reason),
            episode.last,
        ),
    };
    Signal {
        kind: SignalKind::Anomaly,
        status,
        host: u.0.to_string(),
        app: u.1.to_string(),
        metric,
        starts_at_ms: since,
        at_ms,
        severity,
        cleared,
        explanation: Explanation::Anomaly(x),
    }
}

impl Predictor {
    /// A predictor with no history. Validate `cfg` first
    /// ([`Config::validate`]); an invalid one still works, clamped.
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            units: BTreeMap::new(),
            apps: BTreeMap::new(),
            next_forecast_ms: UnixMs::MIN,
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn new_unit(cfg: &Config, host: &str, app: &str, now: UnixMs) -> Unit {
        let mut series: [Option<Box<Series>>; 4] = Default::default();
        let mut thresholds = [None; 4];
        for m in Metric::ALL {
            let s = cfg.metric(app, m);
            thresholds[m.index()] = s.threshold;
            if s.forecast {
                series[m.index()] = Some(Box::new(Series {
                    settings: s,
                    history: History::new(&cfg.history),
                    track: forecast::Track::default(),
                }));
            }
        }
        Unit {
            host: Arc::from(host),
            app: Arc::from(app),
            last_seen_ms: now,
            series,
            thresholds,
            anomaly: anomaly::Track::default(),
            features: anomaly::HostFeatures::default(),
        }
    }

    /// Takes one host sample (all its apps) received at `now`.
    pub fn observe(&mut self, host: &str, sample: &HostSample, now: UnixMs) -> Vec<Signal> {
        let mut out = Vec::new();
        self.stats.samples += 1;
        if !self.cfg.enabled {
            return out;
        }
        let t = sample.at_ms;
        if (t - now).abs() > self.cfg.history.max_clock_skew.as_millis_i64() {
            self.stats.dropped_skew += 1;
            return out;
        }
        let cfg = &self.cfg;
        let units = match self.units.get_mut(host) {
            Some(u) => u,
            None => self.units.entry(Arc::from(host)).or_default(),
        };
        for a in &sample.apps {
            if !cfg.app_enabled(&a.app) {
                continue;
            }
            let unit = match units.get_mut(a.app.as_str()) {
                Some(u) => u,
                None => {
                    let u = Self::new_unit(cfg, host, &a.app, t);
                    units.entry(u.app.clone()).or_insert(u)
                }
            };
            unit.last_seen_ms = unit.last_seen_ms.max(t);
            for m in Metric::ALL {
                let (Some(s), Some(v)) = (&mut unit.series[m.index()], m.of_app(a)) else {
                    continue;
                };
                s.history.push(t, v);
                let thr = s.settings.threshold.unwrap_or(f64::INFINITY);
                if let Some(tr) = s.track.on_sample(v, thr, t, &cfg.forecast) {
                    out.push(forecast_signal(
                        (&unit.host, &unit.app),
                        m,
                        tr,
                        cfg.forecast.severity,
                        t,
                    ));
                }
            }
            if !cfg.anomaly_enabled(&a.app) {
                continue;
            }
            let metrics =
                &cfg.anomaly.metrics[..cfg.anomaly.metrics.len().min(anomaly::MAX_METRICS)];
            let mut levels = [None; anomaly::MAX_METRICS];
            for (l, m) in levels.iter_mut().zip(metrics) {
                *l = m.of_app(a);
            }
            let below =
                Metric::ALL
                    .into_iter()
                    .all(|m| match (unit.thresholds[m.index()], m.of_app(a)) {
                        (Some(thr), Some(v)) => v <= thr,
                        _ => true,
                    });
            let tau = cfg.anomaly.baseline_window.as_millis_i64();
            let learn = unit.anomaly.learnable(t, &cfg.anomaly);
            let row = unit.features.row(&levels[..metrics.len()], t, tau, learn);
            let app_state = match self.apps.get_mut(a.app.as_str()) {
                Some(s) => s,
                None => self
                    .apps
                    .entry(unit.app.clone())
                    .or_insert_with(|| AppState {
                        reservoir: Reservoir::new(cfg.anomaly.max_train_rows),
                        model: None,
                        planned_at_ms: None,
                    }),
            };
            let model = app_state.model.as_deref();
            let scored = model.and_then(|m| m.score(&row).map(|s| (s, m)));
            if let Some(tr) = unit.anomaly.on_score(&row, scored, below, t, &cfg.anomaly) {
                out.push(anomaly_signal(
                    (&unit.host, &unit.app),
                    tr,
                    cfg.anomaly.severity,
                    t,
                ));
            }
            if below && unit.anomaly.learnable(t, &cfg.anomaly) {
                app_state.reservoir.offer(row);
            }
        }
        out
    }

    /// Copies out the training due at `now`; `None` when nothing is due.
    pub fn plan(&mut self, now: UnixMs) -> Option<TrainingJob> {
        if !self.cfg.enabled {
            return None;
        }
        let mut series = Vec::new();
        if self.cfg.forecast.enabled && now >= self.next_forecast_ms {
            self.next_forecast_ms = now.saturating_add(self.cfg.forecast.every.as_millis_i64());
            let raw_len = self
                .cfg
                .forecast
                .windows
                .iter()
                .map(|w| w.as_millis_i64())
                .max()
                .unwrap_or(0);
            let coarse_len = self.cfg.history.coarse_retention.as_millis_i64();
            for unit in self.units.values().flat_map(|a| a.values()) {
                for m in Metric::ALL {
                    let Some(s) = &unit.series[m.index()] else {
                        continue;
                    };
                    let Some(threshold) = s.settings.threshold else {
                        continue;
                    };
                    let last = s.history.last();
                    // Nothing recent: nothing to fit, and a raised prediction
                    // counts a miss through an empty evaluation.
                    series.push((
                        unit.host.clone(),
                        unit.app.clone(),
                        m,
                        SeriesInput {
                            threshold,
                            horizon_ms: s.settings.horizon_ms,
                            raw: s.history.raw.window(now, raw_len.max(1000)),
                            coarse: Some(s.history.coarse.window(now, coarse_len)),
                            last,
                        },
                    ));
                }
            }
        }
        let mut apps = Vec::new();
        if self.cfg.anomaly.enabled {
            let every = self.cfg.anomaly.every.as_millis_i64();
            let window_s = (self.cfg.anomaly.train_window.as_millis_i64() / 1000).max(1) as u64;
            let mut per_app: BTreeMap<&str, u64> = BTreeMap::new();
            for unit in self.units.values().flat_map(|a| a.values()) {
                *per_app.entry(&unit.app).or_default() += 1;
            }
            for (app, st) in self.apps.iter_mut() {
                let n = per_app.get(&**app).copied().unwrap_or(0);
                let cap = self.cfg.anomaly.max_train_rows as u64;
                st.reservoir.set_stride((n * window_s).div_ceil(cap.max(1)));
                let due = st.planned_at_ms.is_none_or(|p| now - p >= every);
                if due
                    && st.reservoir.len() >= self.cfg.anomaly.min_train_rows
                    && self.cfg.anomaly_enabled(app)
                {
                    st.planned_at_ms = Some(now);
                    apps.push((app.clone(), st.reservoir.rows().copied().collect()));
                }
            }
        }
        if series.is_empty() && apps.is_empty() {
            return None;
        }
        Some(TrainingJob {
            at_ms: now,
            forecast_cfg: self.cfg.forecast.clone(),
            anomaly_cfg: self.cfg.anomaly.clone(),
            series,
            apps,
        })
    }

    /// Applies a finished job at `now` and forgets stale (host, app)s.
    pub fn install(&mut self, trained: Trained, now: UnixMs) -> Vec<Signal> {
        let mut out = Vec::new();
        let cfg = &self.cfg;
        self.stats.forecast_evaluations += trained.evaluations.len() as u64;
        self.stats.forecast_fits += trained.timing.fits;
        for (host, app, metric, e) in trained.evaluations {
            let Some(unit) = self.units.get_mut(&host).and_then(|a| a.get_mut(&app)) else {
                continue;
            };
            let Some(s) = &mut unit.series[metric.index()] else {
                continue;
            };
            if let Some(tr) = s.track.on_eval(&e, &cfg.forecast) {
                out.push(forecast_signal(
                    (&unit.host, &unit.app),
                    metric,
                    tr,
                    cfg.forecast.severity,
                    now,
                ));
            }
        }
        for (app, model) in trained.models {
            self.stats.anomaly_trainings += 1;
            if let (Some(st), Some(m)) = (self.apps.get_mut(&app), model) {
                st.model = Some(Arc::new(m));
            }
        }
        out.extend(self.forget_stale(now));
        out
    }

    /// Plans, runs and installs in one call (tests, replays, small setups).
    pub fn retrain(&mut self, now: UnixMs) -> Vec<Signal> {
        match self.plan(now) {
            Some(job) => {
                let trained = job.run();
                self.install(trained, now)
            }
            None => self.forget_stale(now),
        }
    }

    fn close_unit(
        cfg: &Config,
        unit: &mut Unit,
        reason: ClearReason,
        now: UnixMs,
        out: &mut Vec<Signal>,
    ) {
        for m in Metric::ALL {
            if let Some(s) = &mut unit.series[m.index()]
                && let Some(tr) = s.track.close(reason, now, &cfg.forecast)
            {
                out.push(forecast_signal(
                    (&unit.host, &unit.app),
                    m,
                    tr,
                    cfg.forecast.severity,
                    now,
                ));
            }
        }
        if let Some(tr) = unit.anomaly.close(reason) {
            out.push(anomaly_signal(
                (&unit.host, &unit.app),
                tr,
                cfg.anomaly.severity,
                now,
            ));
        }
    }

    fn forget_stale(&mut self, now: UnixMs) -> Vec<Signal> {
        let mut out = Vec::new();
        let stale = self.cfg.history.stale_after.as_millis_i64();
        let cfg = &self.cfg;
        for apps in self.units.values_mut() {
            apps.retain(|_, u| {
                if now - u.last_seen_ms <= stale {
                    return true;
                }
                Self::close_unit(cfg, u, ClearReason::Stale, now, &mut out);
                false
            });
        }
        self.units.retain(|_, a| !a.is_empty());
        out
    }

    /// Replaces the configuration (a reload). Series whose forecasting is now
    /// off, and anomalies of apps now off, resolve with reason `disabled`;
    /// newly enabled series start with empty history.
    pub fn set_config(&mut self, cfg: Config, now: UnixMs) -> Vec<Signal> {
        let mut out = Vec::new();
        self.cfg = cfg;
        let cfg = &self.cfg;
        for unit in self.units.values_mut().flat_map(|a| a.values_mut()) {
            let (host, app) = (unit.host.clone(), unit.app.clone());
            for m in Metric::ALL {
                let s = cfg.metric(&app, m);
                unit.thresholds[m.index()] = s.threshold;
                match (&mut unit.series[m.index()], s.forecast) {
                    (Some(series), true) => series.settings = s,
                    (slot @ Some(_), false) => {
                        if let Some(series) = slot
                            && let Some(tr) =
                                series
                                    .track
                                    .close(ClearReason::Disabled, now, &cfg.forecast)
                        {
                            out.push(forecast_signal(
                                (&host, &app),
                                m,
                                tr,
                                cfg.forecast.severity,
                                now,
                            ));
                        }
                        *slot = None;
                    }
                    (slot @ None, true) => {
                        *slot = Some(Box::new(Series {
                            settings: s,
                            history: History::new(&cfg.history),
                            track: forecast::Track::default(),
                        }))
                    }
                    (None, false) => {}
                }
            }
            if !cfg.anomaly_enabled(&app)
                && let Some(tr) = unit.anomaly.close(ClearReason::Disabled)
            {
                out.push(anomaly_signal(
                    (&unit.host, &unit.app),
                    tr,
                    cfg.anomaly.severity,
                    now,
                ));
            }
        }
        for (app, st) in self.apps.iter_mut() {
            if !cfg.anomaly_enabled(app) {
                st.model = None;
            }
        }
        out
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.units = 0;
        s.series = 0;
        s.history_bytes = 0;
        s.raised_predictions = 0;
        s.raised_anomalies = 0;
        for u in self.units.values().flat_map(|a| a.values()) {
            s.units += 1;
            for series in u.series.iter().flatten() {
                s.series += 1;
                s.history_bytes += series.history.bytes() + std::mem::size_of::<Series>();
                s.raised_predictions += usize::from(series.track.raised_since().is_some());
            }
            s.raised_anomalies += usize::from(u.anomaly.raised().is_some());
        }
        s.reservoir_bytes = self.apps.values().map(|a| a.reservoir.heap_bytes()).sum();
        s.models = self.apps.values().filter(|a| a.model.is_some()).count();
        s
    }

    /// A series' history, e.g. to chart it next to a prediction.
    pub fn history(&self, host: &str, app: &str, metric: Metric) -> Option<&History> {
        let u = self.units.get(host)?.get(app)?;
        u.series[metric.index()].as_deref().map(|s| &s.history)
    }

    /// An app's current anomaly model.
    pub fn model(&self, app: &str) -> Option<&Model> {
        self.apps.get(app)?.model.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricOverride;
    use fincorp_api::wire::{AppSample, ProbeSample, Severity};

    const T0: UnixMs = 1_700_000_000_000;
    const APP: &str = "FINCORP-APP-TRANSPROC";

    /// Deterministic noise in [-1, 1) (splitmix64).
    fn noise(i: u64) -> f64 {
        let mut z = i
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 30)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 2.0
    }

    fn sample(at_ms: UnixMs, apps: &[(&str, f64, f64, f64)]) -> HostSample {
        HostSample {
            at_ms,
            cpu_pct: 10.0,
            mem_used_bytes: 1 << 30,
            mem_total_bytes: 4 << 30,
            apps: apps
                .iter()
                .map(|&(app, cpu, rss_mb, latency_ms)| AppSample {
                    app: app.into(),
                    processes: 1,
                    cpu_pct: cpu,
                    rss_bytes: (rss_mb * 1024.0 * 1024.0) as u64,
                    probe: Some(ProbeSample {
                        ok: true,
                        latency_ms: Some(latency_ms),
                        status: Some(200),
                        error: None,
                    }),
                    host_cpu_pct: None,
                    throttling: None,
                })
                .collect(),
            cpu_per_core_pct: Vec::new(),
            mem_available_bytes: None,
            swap_used_bytes: None,
            swap_total_bytes: None,
            load: None,
        }
    }

    /// Feeds `cpu(second)` for `seconds` seconds to one host and app, running
    /// the schedule every second; returns (second, signal) pairs.
    fn feed(
        p: &mut Predictor,
        from: u32,
        seconds: u32,
        cpu: impl Fn(u32) -> f64,
    ) -> Vec<(u32, Signal)> {
        feed_with(p, from, seconds, |s| {
            (cpu(s), 20.0 + noise(u64::from(s) + 7_000_000))
        })
    }

    /// Second `s` of APP on one host: `cpu`, `lat`, and RSS about 1000 MB.
    fn app_sample(s: u32, cpu: f64, lat: f64) -> HostSample {
        let now = T0 + i64::from(s) * 1000;
        sample(
            now,
            &[(
                APP,
                cpu,
                1000.0 + 3.0 * noise(u64::from(s) + 3_000_000),
                lat,
            )],
        )
    }

    /// [`feed`] with `(cpu, latency_ms)` by second.
    fn feed_with(
        p: &mut Predictor,
        from: u32,
        seconds: u32,
        f: impl Fn(u32) -> (f64, f64),
    ) -> Vec<(u32, Signal)> {
        let mut out = Vec::new();
        for s in from..from + seconds {
            let now = T0 + i64::from(s) * 1000;
            let (cpu, lat) = f(s);
            let hs = app_sample(s, cpu, lat);
            out.extend(p.observe("web01", &hs, now).into_iter().map(|x| (s, x)));
            out.extend(p.retrain(now).into_iter().map(|x| (s, x)));
        }
        out
    }

    fn predicted(signals: &[(u32, Signal)]) -> Vec<&(u32, Signal)> {
        signals
            .iter()
            .filter(|(_, s)| s.kind == SignalKind::Predicted)
            .collect()
    }

    #[test]
    fn a_slow_chaos_staircase_is_predicted_before_the_first_sample_over_the_threshold() {
        // Four minutes of normal load, then the chaos simulator's shape at a
        // slow pace: from 50%, +5 points every 10 s, to 95%.
        let cpu = |s: u32| {
            if s < 240 {
                30.0 + 2.0 * noise(u64::from(s))
            } else {
                (50.0 + 5.0 * f64::from((s - 240) / 10)).min(95.0) + noise(u64::from(s))
            }
        };
        let mut p = Predictor::new(Config::default());
        let signals = feed(&mut p, 0, 400, cpu);
        let first_over = (0..400).find(|&s| cpu(s) > 80.0).unwrap();
        let preds = predicted(&signals);
        let (raised_at, raised) = preds.first().expect("a prediction");
        assert_eq!(raised.status, AlertStatus::Firing);
        assert!(*raised_at >= 240, "not before the ramp: {raised_at}");
        let lead = first_over - raised_at;
        assert!(
            lead >= 20,
            "raised at {raised_at}, first sample over 80 at {first_over}"
        );
        let a = raised.to_alert();
        assert_eq!(
            (a.name.as_str(), a.severity),
            ("predicted_cpu_breach", Severity::Warning)
        );
        assert_eq!((a.host.as_str(), a.app.as_deref()), ("web01", Some(APP)));
        let Explanation::Forecast(x) = &raised.explanation else {
            panic!()
        };
        assert!(
            x.slope_per_s > 0.2 && x.slope_per_s < 1.0 && x.noise_t >= 5.0,
            "{x:?}"
        );
        assert!(a.labels.contains_key("predicted_breach_at") && a.labels.contains_key("noise_t"));
        // The breach fulfils it: resolved as breached on the first sample over.
        let resolved: Vec<_> = preds
            .iter()
            .filter(|(_, s)| s.status == AlertStatus::Resolved)
            .collect();
        assert_eq!(resolved.len(), 1, "{resolved:?}");
        assert_eq!(resolved[0].0, first_over);
        assert_eq!(resolved[0].1.cleared, Some(ClearReason::Breached));
        assert_eq!(resolved[0].1.fingerprint(), raised.fingerprint());
        assert!(
            preds.iter().all(|(s, _)| *s <= first_over),
            "nothing after the breach"
        );
    }

    #[test]
    fn an_agent_sampling_every_five_seconds_still_gets_its_ramp_predicted() {
        // The agent backs off to 5 s samples; the windows, coverage and the
        // noise model follow its cadence.
        let cpu = |s: u32| {
            if s < 400 {
                30.0 + 2.0 * noise(u64::from(s))
            } else {
                30.0 + 0.25 * f64::from(s - 400) + noise(u64::from(s))
            }
        };
        let mut p = Predictor::new(Config::default());
        let mut signals = Vec::new();
        for s in 0..700u32 {
            let now = T0 + i64::from(s) * 1000;
            if s % 5 == 0 {
                let hs = app_sample(s, cpu(s), 20.0 + noise(u64::from(s) + 7_000_000));
                signals.extend(p.observe("web01", &hs, now).into_iter().map(|x| (s, x)));
            }
            signals.extend(p.retrain(now).into_iter().map(|x| (s, x)));
        }
        let first_over = (0..700).step_by(5).find(|&s| cpu(s) > 80.0).unwrap();
        let preds = predicted(&signals);
        let (raised_at, _) = preds.first().expect("a prediction");
        assert!(
            *raised_at >= 400 && first_over - raised_at >= 60,
            "raised at {raised_at}, breach at {first_over}"
        );
        // Steady load at the same cadence stays quiet.
        let mut q = Predictor::new(Config::default());
        let mut quiet = Vec::new();
        for s in 0..1800u32 {
            let now = T0 + i64::from(s) * 1000;
            if s % 5 == 0 {
                let c = 60.0 + 6.0 * (f64::from(s) / 40.0).sin() + 2.0 * noise(u64::from(s));
                let hs = app_sample(s, c, 20.0 + noise(u64::from(s) + 7_000_000));
                quiet.extend(q.observe("web01", &hs, now).into_iter().map(|x| (s, x)));
            }
            quiet.extend(q.retrain(now).into_iter().map(|x| (s, x)));
        }
        assert!(
            predicted(&quiet).is_empty(),
            "{:?}",
            predicted(&quiet).first()
        );
    }

    #[test]
    fn steady_noisy_load_with_wander_raises_nothing() {
        // 30 minutes of load wandering by ±8 points (slow sine plus noise)
        // around 60%: short stretches rise steeply, none is a trend.
        let cpu = |s: u32| 60.0 + 6.0 * (f64::from(s) / 40.0).sin() + 2.0 * noise(u64::from(s));
        let mut p = Predictor::new(Config::default());
        let signals = feed(&mut p, 0, 1800, cpu);
        assert!(
            predicted(&signals).is_empty(),
            "{:?}",
            predicted(&signals).first()
        );
        assert!(p.stats().forecast_evaluations >= 800);
    }

    #[test]
    fn a_new_series_predicts_nothing_until_it_has_a_reference() {
        // A steep ramp from the first sample: no history tells it from the
        // series' normal, so nothing for reference_gap + min_reference_points.
        let cfg = Config::default();
        let quiet_s = (cfg.forecast.reference_gap.as_millis_i64() / 1000) as u32
            + cfg.forecast.min_reference_points;
        let mut p = Predictor::new(cfg);
        let signals = feed(&mut p, 0, quiet_s, |s| {
            5.0 + 0.2 * f64::from(s) + noise(u64::from(s))
        });
        assert!(predicted(&signals).is_empty(), "{signals:?}");
        // With the history it has now, the same ramp is predicted.
        let signals = feed(&mut p, quiet_s, 120, |s| {
            5.0 + 0.2 * f64::from(s) + noise(u64::from(s))
        });
        assert!(!predicted(&signals).is_empty());
    }

    #[test]
    fn an_excursion_below_the_thresholds_is_an_anomaly_once_the_model_is_trained() {
        let mut p = Predictor::new(Config::default());
        let mut signals = feed(&mut p, 0, 700, |s| 40.0 + 2.0 * noise(u64::from(s)));
        assert!(p.model(APP).is_some(), "trained after 300 rows");
        assert!(signals.is_empty(), "{signals:?}");
        // Latency triples for 30 s at normal CPU; CPU stays under 80.
        signals.extend(feed_with(&mut p, 700, 60, |s| {
            let lat = if s < 730 { 60.0 } else { 20.0 };
            (
                40.0 + 2.0 * noise(u64::from(s)),
                lat + noise(u64::from(s) + 7_000_000),
            )
        }));
        let anomalies: Vec<_> = signals
            .iter()
            .filter(|(_, s)| s.kind == SignalKind::Anomaly)
            .collect();
        assert_eq!(anomalies.len(), 2, "{anomalies:?}");
        let (raised_at, raised) = anomalies[0];
        assert!((704..=706).contains(raised_at), "{raised_at}");
        let a = raised.to_alert();
        assert_eq!(
            (a.name.as_str(), a.severity),
            ("anomaly_latency_ms", Severity::Info)
        );
        let (cleared_at, cleared) = anomalies[1];
        assert!(
            (739..=745).contains(cleared_at) && cleared.cleared == Some(ClearReason::Normal),
            "{cleared_at} {cleared:?}"
        );
    }

    #[test]
    fn switched_off_apps_and_metrics_produce_nothing_and_a_reload_resolves_what_was_raised() {
        let ramp = |s: u32| {
            if s < 240 {
                20.0 + noise(u64::from(s))
            } else {
                20.0 + 0.5 * f64::from(s - 240)
            }
        };
        let mut off = Config::default();
        off.apps.insert(
            APP.into(),
            crate::config::AppConfig {
                enabled: Some(false),
                ..Default::default()
            },
        );
        let mut p = Predictor::new(off);
        assert!(feed(&mut p, 0, 360, ramp).is_empty());
        assert_eq!(p.stats().units, 0);

        let mut p = Predictor::new(Config::default());
        let signals = feed(&mut p, 0, 300, ramp);
        assert!(!predicted(&signals).is_empty() && p.stats().raised_predictions == 1);
        let mut no_cpu = Config::default();
        no_cpu.metrics.insert(
            Metric::Cpu,
            MetricOverride {
                forecast: Some(false),
                ..Default::default()
            },
        );
        let out = p.set_config(no_cpu, T0 + 300_000);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].status, out[0].cleared),
            (AlertStatus::Resolved, Some(ClearReason::Disabled))
        );
        assert!(p.history("web01", APP, Metric::Cpu).is_none());
        assert!(predicted(&feed(&mut p, 300, 60, ramp)).is_empty());
    }

    #[test]
    fn silent_hosts_are_forgotten_and_their_raised_signals_resolve_as_stale() {
        let mut p = Predictor::new(Config::default());
        let signals = feed(&mut p, 0, 300, |s| if s < 240 { 20.0 } else { 20.0 + 0.5 * f64::from(s - 240) } + noise(u64::from(s)));
        assert!(!predicted(&signals).is_empty());
        let stale = p.config().history.stale_after.as_millis_i64();
        assert!(
            p.retrain(T0 + 299_000 + stale)
                .iter()
                .all(|s| s.kind != SignalKind::Predicted)
        );
        let out = p.retrain(T0 + 300_000 + stale);
        assert!(
            out.iter().any(|s| s.cleared == Some(ClearReason::Stale)),
            "{out:?}"
        );
        assert_eq!((p.stats().units, p.stats().series), (0, 0));
    }

    #[test]
    fn samples_stamped_far_from_now_are_dropped() {
        let mut p = Predictor::new(Config::default());
        let now = T0;
        let skew = p.config().history.max_clock_skew.as_millis_i64();
        p.observe(
            "h",
            &sample(now - skew - 1, &[(APP, 10.0, 100.0, 5.0)]),
            now,
        );
        p.observe(
            "h",
            &sample(now + skew + 1, &[(APP, 10.0, 100.0, 5.0)]),
            now,
        );
        assert_eq!(
            (p.stats().samples, p.stats().dropped_skew, p.stats().units),
            (2, 2, 0)
        );
        p.observe("h", &sample(now, &[(APP, 10.0, 100.0, 5.0)]), now);
        assert_eq!(
            p.history("h", APP, Metric::Cpu).and_then(History::last),
            Some((now, 10.0))
        );
    }

    #[test]
    fn the_split_schedule_equals_retrain_and_replays_are_identical() {
        let cpu = |s: u32| if s < 240 { 30.0 } else { 30.0 + 0.4 * f64::from(s - 240) } + 2.0 * noise(u64::from(s));
        let mut a = Predictor::new(Config::default());
        let by_retrain = feed(&mut a, 0, 330, cpu);
        let mut b = Predictor::new(Config::default());
        let mut by_parts = Vec::new();
        for s in 0..330u32 {
            let now = T0 + i64::from(s) * 1000;
            let hs = app_sample(s, cpu(s), 20.0 + noise(u64::from(s) + 7_000_000));
            by_parts.extend(b.observe("web01", &hs, now).into_iter().map(|x| (s, x)));
            if let Some(job) = b.plan(now) {
                let job: TrainingJob = std::thread::spawn(move || job).join().unwrap();
                let trained = job.run();
                by_parts.extend(b.install(trained, now).into_iter().map(|x| (s, x)));
            }
        }
        assert!(!predicted(&by_retrain).is_empty());
        assert_eq!(by_retrain, by_parts);
        // Split over threads and merged: the same again.
        let mut d = Predictor::new(Config::default());
        let mut by_threads = Vec::new();
        for s in 0..330u32 {
            let now = T0 + i64::from(s) * 1000;
            let hs = app_sample(s, cpu(s), 20.0 + noise(u64::from(s) + 7_000_000));
            by_threads.extend(d.observe("web01", &hs, now).into_iter().map(|x| (s, x)));
            if let Some(job) = d.plan(now) {
                let parts: Vec<Trained> = job
                    .split(3)
                    .into_iter()
                    .map(|j| std::thread::spawn(move || j.run()))
                    .map(|h| h.join().unwrap())
                    .collect();
                by_threads.extend(
                    d.install(Trained::merge(parts).unwrap(), now)
                        .into_iter()
                        .map(|x| (s, x)),
                );
            }
        }
        assert_eq!(by_retrain, by_threads);
        let mut c = Predictor::new(Config::default());
        assert_eq!(feed(&mut c, 0, 330, cpu), by_retrain);
    }

    #[test]
    fn stats_count_units_series_and_bytes() {
        let mut p = Predictor::new(Config::default());
        for s in 0..10 {
            let now = T0 + s * 1000;
            let hs = sample(
                now,
                &[
                    (APP, 10.0, 100.0, 5.0),
                    ("FINCORP-APP-HFT", 20.0, 200.0, 1.0),
                ],
            );
            p.observe("a", &hs, now);
            p.observe("b", &hs, now);
        }
        let st = p.stats();
        // Only cpu has a threshold by default: one series per (host, app).
        assert_eq!((st.samples, st.units, st.series), (20, 4, 4));
        assert!(
            st.history_bytes > 4 * 2_640 && st.history_bytes < 4 * 3_200,
            "{}",
            st.history_bytes
        );
        assert_eq!(st.models, 0);
    }
}
