//! Evaluation: replay labelled scenarios through the real [`Predictor`] and
//! measure what it says against the ground truth.
//!
//! [`replay`] feeds a [`Scenario`] second by second to a fresh predictor as
//! one app on one host, exactly as the correlator would: `observe` for every
//! sample, then `plan` / `run` / `install` (the training schedule decides
//! what is due). [`score`] compares the signals with the scenario's
//! [`Label`](crate::generator::Label); [`Report`] aggregates many outcomes
//! into the figures the issue asks for. Nothing here is assumed: every
//! number comes from the signals the predictor emitted and the wall-clock
//! time its calls took.
//!
//! # Definitions
//!
//! A *prediction* is one raised episode of a `predicted_<metric>_breach`
//! alert (refreshes of the same episode do not count again).
//!
//! - **true**: raised on the labelled metric of a breaching scenario, at or
//!   after the onset and before the real breach (the first sample over the
//!   threshold, when the agent's rule fires);
//! - **early**: on the labelled metric of a breaching scenario, before the
//!   behaviour started (a false alarm that happened to precede a breach);
//! - **late**: on the labelled metric after the real breach (the threshold
//!   alert has fired already; the prediction is right but useless);
//! - **false**: anything else (a scenario that never breaches, or another
//!   metric).
//!
//! Precision is `true / all predictions` (early, late and false all count
//! against it). Recall is the share of breaching scenarios with a true
//! prediction. The lead time of a detected scenario is the real breach time
//! minus the first true prediction; its *run-up* is the breach time minus
//! the onset, the most lead any predictor could have. The steady
//! false-positive rate is the share of steady scenarios with any prediction.
//!
//! An *anomaly* is one raised `anomaly_<metric>` episode. A spike is
//! detected when an anomaly is raised between its start and 10 s after its
//! end. Anomalies are reported per class, per hour of replayed time.

use std::fmt;
use std::time::{Duration, Instant};

use fincorp_api::wire::{AlertStatus, AppSample, HostSample, ProbeSample};

use crate::config::{Config, MetricOverride};
use crate::generator::{Class, Scenario, Thresholds};
use crate::signal::{ClearReason, Explanation, Signal, SignalKind};
use crate::{Metric, Predictor, UnixMs};

/// The replay's epoch: scenario second `s` is `START_MS + 1000 s`.
pub const START_MS: UnixMs = 1_700_000_000_000;
/// The app name the scenarios are replayed as.
pub const APP: &str = "FINCORP-APP-TRANSPROC";
/// The host name the scenarios are replayed as.
pub const HOST: &str = "eval01";
/// A spike counts as detected by an anomaly raised up to this long after it.
pub const SPIKE_GRACE_S: u32 = 10;

/// The default configuration with thresholds matching the generator's: the
/// agent rules `cpu > 80`, `rss_mb > 6144` and `latency_ms > 250`.
pub fn config_for(thr: Thresholds) -> Config {
    let mut cfg = Config::default();
    for (metric, threshold) in [
        (Metric::Cpu, thr.cpu),
        (Metric::RssMb, thr.rss_mb),
        (Metric::LatencyMs, thr.latency_ms),
    ] {
        cfg.metrics.insert(
            metric,
            MetricOverride {
                threshold: Some(threshold),
                ..MetricOverride::default()
            },
        );
    }
    cfg
}

/// The agent's sample of second `i` of `s`, as `app` on one host.
pub fn host_sample(s: &Scenario, i: usize, app: &str, at_ms: UnixMs) -> HostSample {
    let cpu = f64::from(s.cpu[i]);
    HostSample {
        at_ms,
        cpu_pct: cpu / 4.0,
        mem_used_bytes: 8 << 30,
        mem_total_bytes: 16 << 30,
        apps: vec![AppSample {
            app: app.to_owned(),
            processes: 4,
            cpu_pct: cpu,
            rss_bytes: (f64::from(s.rss_mb[i]) * 1024.0 * 1024.0) as u64,
            probe: Some(ProbeSample {
                ok: true,
                latency_ms: Some(f64::from(s.latency_ms[i])),
                status: Some(200),
                error: None,
            }),
            host_cpu_pct: Some(cpu / 4.0),
            throttling: None,
        }],
        cpu_per_core_pct: Vec::new(),
        mem_available_bytes: None,
        swap_used_bytes: None,
        swap_total_bytes: None,
        load: None,
    }
}

/// Where the predictor's time went during one replay (wall clock).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    /// `observe` calls and their total time.
    pub samples: u64,
    pub observe: Duration,
    /// Series evaluations, linfa fits in them, and the time of the forecast
    /// half of `TrainingJob::run`.
    pub evaluations: u64,
    pub fits: u64,
    pub forecast: Duration,
    /// k-means trainings, the rows they saw, and their time.
    pub trainings: u64,
    pub training_rows: u64,
    pub training: Duration,
    /// Training jobs, and the time of their `plan` + `install` (copying
    /// windows out, applying results; under the correlator's lock).
    pub jobs: u64,
    pub bookkeeping: Duration,
}

impl Cost {
    pub fn add(&mut self, o: &Cost) {
        self.samples += o.samples;
        self.observe += o.observe;
        self.evaluations += o.evaluations;
        self.fits += o.fits;
        self.forecast += o.forecast;
        self.trainings += o.trainings;
        self.training_rows += o.training_rows;
        self.training += o.training;
        self.jobs += o.jobs;
        self.bookkeeping += o.bookkeeping;
    }

    fn per(d: Duration, n: u64) -> f64 {
        if n == 0 {
            0.0
        } else {
            d.as_secs_f64() * 1e6 / n as f64
        }
    }

    /// Microseconds per `observe` (one host sample with one app).
    pub fn observe_us(&self) -> f64 {
        Self::per(self.observe, self.samples)
    }

    /// Microseconds per series evaluation (all its windows).
    pub fn evaluation_us(&self) -> f64 {
        Self::per(self.forecast, self.evaluations)
    }

    /// Microseconds per k-means training.
    pub fn training_us(&self) -> f64 {
        Self::per(self.training, self.trainings)
    }
}

/// What the predictor said during one replay, with the second of each
/// signal.
#[derive(Debug, Clone)]
pub struct Replay {
    pub signals: Vec<(u32, Signal)>,
    pub cost: Cost,
}

/// Replays `s` through a fresh [`Predictor`] with `cfg`, one sample per
/// second, running the training schedule after every sample.
pub fn replay(s: &Scenario, cfg: &Config) -> Replay {
    let mut p = Predictor::new(cfg.clone());
    let mut signals = Vec::new();
    let mut cost = Cost::default();
    for i in 0..s.len() {
        let now = START_MS + i as i64 * 1000;
        let sample = host_sample(s, i, APP, now);
        let t = Instant::now();
        let out = p.observe(HOST, &sample, now);
        cost.observe += t.elapsed();
        cost.samples += 1;
        signals.extend(out.into_iter().map(|x| (i as u32, x)));
        let t = Instant::now();
        if let Some(job) = p.plan(now) {
            let mut book = t.elapsed();
            let trained = job.run();
            let tm = trained.timing;
            cost.evaluations += tm.series as u64;
            cost.fits += tm.fits;
            cost.forecast += tm.forecast;
            cost.trainings += tm.apps as u64;
            cost.training_rows += tm.training_rows as u64;
            cost.training += tm.anomaly;
            let t = Instant::now();
            let out = p.install(trained, now);
            book += t.elapsed();
            cost.jobs += 1;
            cost.bookkeeping += book;
            signals.extend(out.into_iter().map(|x| (i as u32, x)));
        }
    }
    Replay { signals, cost }
}

/// How a prediction compares with the ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    True,
    Early,
    Late,
    False,
}

/// One raised prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictedEpisode {
    pub metric: Metric,
    /// Scenario second it was raised at.
    pub raised_s: u32,
    /// The breach time it first predicted, scenario seconds.
    pub predicted_breach_s: f64,
    /// The forecast window of the raising fit.
    pub window_s: i64,
    pub verdict: Verdict,
    /// How it ended, if it did within the scenario.
    pub cleared: Option<ClearReason>,
}

/// One raised anomaly.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyEpisode {
    pub metric: Metric,
    pub raised_s: u32,
    pub dominant: String,
    pub score: f64,
    /// Index into the label's spikes, when raised during one.
    pub spike: Option<usize>,
    /// Raised during labelled behaviour: a spike (or up to
    /// [`SPIKE_GRACE_S`] after it), or after a ramp's or leak's onset.
    pub during_behaviour: bool,
}

/// One scenario's replay, scored.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub class: Class,
    pub seed: u64,
    pub len_s: u32,
    pub onset_s: Option<u32>,
    pub breach_s: Option<u32>,
    pub predictions: Vec<PredictedEpisode>,
    pub anomalies: Vec<AnomalyEpisode>,
    /// Breach minus the first true prediction, seconds.
    pub lead_s: Option<f64>,
    /// Breach minus onset, seconds.
    pub runup_s: Option<f64>,
    /// The first true prediction's predicted breach minus the real one.
    pub eta_error_s: Option<f64>,
    pub spikes: usize,
    pub spikes_detected: usize,
    /// Seconds of normal behaviour: everything but spikes (with the grace)
    /// and the time from a ramp's or leak's onset on.
    pub normal_s: u32,
    pub cost: Cost,
}

impl Outcome {
    pub fn breaching(&self) -> bool {
        self.breach_s.is_some()
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.predictions.iter().filter(|p| p.verdict == v).count()
    }
}

fn s_of(ms: UnixMs) -> f64 {
    (ms - START_MS) as f64 / 1000.0
}

/// Scores a replay of `s` against its label.
pub fn score(s: &Scenario, r: &Replay) -> Outcome {
    let label = &s.label;
    let mut predictions: Vec<PredictedEpisode> = Vec::new();
    let mut anomalies: Vec<AnomalyEpisode> = Vec::new();
    for (_, sig) in &r.signals {
        let raised_s = s_of(sig.starts_at_ms).round() as u32;
        match (sig.kind, sig.status, &sig.explanation) {
            (SignalKind::Predicted, AlertStatus::Firing, Explanation::Forecast(x)) => {
                // Refreshes share the episode's start.
                if predictions
                    .iter()
                    .any(|p| p.metric == sig.metric && p.raised_s == raised_s)
                {
                    continue;
                }
                let verdict = match (label.breach_s, label.onset_s) {
                    (Some(b), onset) if sig.metric == label.metric => {
                        if raised_s >= b {
                            Verdict::Late
                        } else if onset.is_some_and(|o| raised_s < o) {
                            Verdict::Early
                        } else {
                            Verdict::True
                        }
                    }
                    _ => Verdict::False,
                };
                predictions.push(PredictedEpisode {
                    metric: sig.metric,
                    raised_s,
                    predicted_breach_s: s_of(x.predicted_breach_at_ms),
                    window_s: x.window_ms / 1000,
                    verdict,
                    cleared: None,
                });
            }
            (SignalKind::Predicted, AlertStatus::Resolved, _) => {
                if let Some(p) = predictions
                    .iter_mut()
                    .find(|p| p.metric == sig.metric && p.raised_s == raised_s)
                {
                    p.cleared = sig.cleared;
                }
            }
            (SignalKind::Anomaly, AlertStatus::Firing, Explanation::Anomaly(x)) => {
                let spike = label
                    .spikes
                    .iter()
                    .position(|&(a, b)| raised_s >= a && raised_s <= b + SPIKE_GRACE_S);
                let trend_started = matches!(s.class, Class::Ramp { .. } | Class::Leak)
                    && label.onset_s.is_some_and(|o| raised_s >= o);
                anomalies.push(AnomalyEpisode {
                    metric: sig.metric,
                    raised_s,
                    dominant: x.dominant.clone(),
                    score: x.score,
                    spike,
                    during_behaviour: spike.is_some() || trend_started,
                });
            }
            _ => {}
        }
    }
    let first_true = predictions.iter().find(|p| p.verdict == Verdict::True);
    let lead_s = first_true.and_then(|p| Some(f64::from(label.breach_s?) - f64::from(p.raised_s)));
    let eta_error_s =
        first_true.and_then(|p| Some(p.predicted_breach_s - f64::from(label.breach_s?)));
    let runup_s = label
        .breach_s
        .zip(label.onset_s)
        .map(|(b, o)| f64::from(b) - f64::from(o));
    let len_s = s.len() as u32;
    let normal_s = match s.class {
        Class::Ramp { .. } | Class::Leak => label.onset_s.unwrap_or(len_s).min(len_s),
        _ => {
            let busy: u32 = label
                .spikes
                .iter()
                .map(|&(a, b)| (b + SPIKE_GRACE_S).min(len_s).saturating_sub(a))
                .sum();
            len_s.saturating_sub(busy)
        }
    };
    let mut detected: Vec<usize> = anomalies.iter().filter_map(|a| a.spike).collect();
    detected.sort_unstable();
    detected.dedup();
    Outcome {
        class: s.class,
        seed: s.seed,
        len_s,
        onset_s: label.onset_s,
        breach_s: label.breach_s,
        predictions,
        anomalies,
        lead_s,
        runup_s,
        eta_error_s,
        spikes: label.spikes.len(),
        spikes_detected: detected.len(),
        normal_s,
        cost: r.cost,
    }
}

/// Replays and scores one scenario.
pub fn run(s: &Scenario, cfg: &Config) -> Outcome {
    score(s, &replay(s, cfg))
}

/// The median of `v` (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The figures of one class of scenarios.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassFigures {
    pub class: String,
    /// The ramp slope, points per second, for ramp classes.
    pub slope: Option<f64>,
    pub scenarios: usize,
    pub breaching: usize,
    pub detected: usize,
    pub true_predictions: usize,
    /// Early, late and false predictions.
    pub wrong_predictions: usize,
    /// Scenarios with at least one wrong prediction.
    pub scenarios_with_wrong: usize,
    pub median_lead_s: Option<f64>,
    pub min_lead_s: Option<f64>,
    pub median_runup_s: Option<f64>,
    /// Median of `|predicted breach - real breach|` of the first true
    /// prediction.
    pub median_abs_eta_error_s: Option<f64>,
    pub anomalies: usize,
    pub hours: f64,
    pub spikes: usize,
    pub spikes_detected: usize,
}

/// The aggregate figures of a suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub classes: Vec<ClassFigures>,
    pub predictions: usize,
    pub true_predictions: usize,
    /// `true / all`; `None` without any prediction.
    pub precision: Option<f64>,
    pub breaching: usize,
    pub detected: usize,
    pub recall: Option<f64>,
    pub steady: usize,
    pub steady_with_prediction: usize,
    pub steady_fp_rate: Option<f64>,
    /// Median lead over all detected breaching scenarios.
    pub median_lead_s: Option<f64>,
    /// Median lead over detected ramps of 1%/s or slower.
    pub median_lead_slow_ramps_s: Option<f64>,
    /// Share of detected ramps of 1%/s or slower with a lead of 60 s or more.
    pub slow_ramps_lead_60_share: Option<f64>,
    /// Anomaly episodes per hour on steady scenarios.
    pub steady_anomalies_per_hour: Option<f64>,
    /// Anomalies raised during labelled behaviour, and all anomalies.
    pub anomalies_true: usize,
    pub anomalies: usize,
    /// Anomalies raised during normal behaviour, per hour of it.
    pub false_anomalies_per_normal_hour: Option<f64>,
    pub spikes: usize,
    pub spikes_detected: usize,
    pub cost: Cost,
}

/// The targets.
pub const TARGET_PRECISION: f64 = 0.9;
pub const TARGET_STEADY_FP: f64 = 0.05;
pub const TARGET_LEAD_S: f64 = 60.0;
/// Ramps at or below this slope (points per second) must reach the lead.
pub const SLOW_RAMP: f64 = 1.0;

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

impl Report {
    /// Aggregates scored outcomes, class by class in order of appearance.
    pub fn from_outcomes(outcomes: &[Outcome]) -> Report {
        let mut names: Vec<String> = Vec::new();
        for o in outcomes {
            let n = o.class.name();
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let classes: Vec<ClassFigures> = names
            .into_iter()
            .map(|name| {
                let os: Vec<&Outcome> =
                    outcomes.iter().filter(|o| o.class.name() == name).collect();
                let leads: Vec<f64> = os.iter().filter_map(|o| o.lead_s).collect();
                let runups: Vec<f64> = os.iter().filter_map(|o| o.runup_s).collect();
                let etas: Vec<f64> = os
                    .iter()
                    .filter_map(|o| o.eta_error_s.map(f64::abs))
                    .collect();
                let wrong = |o: &Outcome| o.predictions.len() - o.count(Verdict::True);
                ClassFigures {
                    slope: os.iter().find_map(|o| match o.class {
                        Class::Ramp { slope } => Some(slope),
                        _ => None,
                    }),
                    scenarios: os.len(),
                    breaching: os.iter().filter(|o| o.breaching()).count(),
                    detected: os.iter().filter(|o| o.lead_s.is_some()).count(),
                    true_predictions: os.iter().map(|o| o.count(Verdict::True)).sum(),
                    wrong_predictions: os.iter().map(|o| wrong(o)).sum(),
                    scenarios_with_wrong: os.iter().filter(|o| wrong(o) > 0).count(),
                    median_lead_s: median(&leads),
                    min_lead_s: leads.iter().copied().reduce(f64::min),
                    median_runup_s: median(&runups),
                    median_abs_eta_error_s: median(&etas),
                    anomalies: os.iter().map(|o| o.anomalies.len()).sum(),
                    hours: os.iter().map(|o| f64::from(o.len_s)).sum::<f64>() / 3600.0,
                    spikes: os.iter().map(|o| o.spikes).sum(),
                    spikes_detected: os.iter().map(|o| o.spikes_detected).sum(),
                    class: name,
                }
            })
            .collect();
        let predictions: usize = outcomes.iter().map(|o| o.predictions.len()).sum();
        let true_predictions: usize = outcomes.iter().map(|o| o.count(Verdict::True)).sum();
        let breaching = outcomes.iter().filter(|o| o.breaching()).count();
        let detected = outcomes.iter().filter(|o| o.lead_s.is_some()).count();
        let steady: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.class == Class::Steady)
            .collect();
        let steady_with_prediction = steady.iter().filter(|o| !o.predictions.is_empty()).count();
        let slow: Vec<f64> = outcomes
            .iter()
            .filter(|o| matches!(o.class, Class::Ramp { slope } if slope <= SLOW_RAMP))
            .filter_map(|o| o.lead_s)
            .collect();
        let leads: Vec<f64> = outcomes.iter().filter_map(|o| o.lead_s).collect();
        let steady_hours: f64 = steady.iter().map(|o| f64::from(o.len_s)).sum::<f64>() / 3600.0;
        let steady_anomalies: usize = steady.iter().map(|o| o.anomalies.len()).sum();
        let anomalies: usize = outcomes.iter().map(|o| o.anomalies.len()).sum();
        let anomalies_true: usize = outcomes
            .iter()
            .map(|o| o.anomalies.iter().filter(|a| a.during_behaviour).count())
            .sum();
        let normal_hours = outcomes.iter().map(|o| f64::from(o.normal_s)).sum::<f64>() / 3600.0;
        let mut cost = Cost::default();
        for o in outcomes {
            cost.add(&o.cost);
        }
        Report {
            predictions,
            true_predictions,
            precision: ratio(true_predictions, predictions),
            breaching,
            detected,
            recall: ratio(detected, breaching),
            steady: steady.len(),
            steady_with_prediction,
            steady_fp_rate: ratio(steady_with_prediction, steady.len()),
            median_lead_s: median(&leads),
            median_lead_slow_ramps_s: median(&slow),
            slow_ramps_lead_60_share: ratio(
                slow.iter().filter(|l| **l >= TARGET_LEAD_S).count(),
                slow.len(),
            ),
            steady_anomalies_per_hour: (steady_hours > 0.0)
                .then(|| steady_anomalies as f64 / steady_hours),
            anomalies_true,
            anomalies,
            false_anomalies_per_normal_hour: (normal_hours > 0.0)
                .then(|| (anomalies - anomalies_true) as f64 / normal_hours),
            spikes: outcomes.iter().map(|o| o.spikes).sum(),
            spikes_detected: outcomes.iter().map(|o| o.spikes_detected).sum(),
            classes,
            cost,
        }
    }

    /// Whether each target is met: (name, met).
    pub fn targets(&self) -> Vec<(&'static str, bool)> {
        vec![
            (
                "median lead >= 60 s on ramps of 1%/s or slower",
                self.median_lead_slow_ramps_s
                    .is_some_and(|l| l >= TARGET_LEAD_S),
            ),
            (
                "median lead >= 60 s at each ramp slope <= 1%/s separately",
                self.classes
                    .iter()
                    .filter(|c| c.slope.is_some_and(|s| s <= SLOW_RAMP))
                    .all(|c| c.median_lead_s.is_some_and(|l| l >= TARGET_LEAD_S)),
            ),
            (
                "precision >= 0.9",
                self.precision.is_some_and(|p| p >= TARGET_PRECISION),
            ),
            (
                "false positives <= 5% of steady series",
                self.steady_fp_rate.is_some_and(|r| r <= TARGET_STEADY_FP),
            ),
        ]
    }
}

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:>5} {:>9} {:>6} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>10} {:>7}",
            "class",
            "n",
            "detected",
            "true",
            "wrong",
            "lead med",
            "lead min",
            "run-up",
            "|eta|",
            "anomalies",
            "anom/hour",
            "spikes"
        )?;
        for c in &self.classes {
            let detected = if c.breaching > 0 {
                format!("{}/{}", c.detected, c.breaching)
            } else {
                "-".into()
            };
            let spikes = if c.spikes > 0 {
                format!("{}/{}", c.spikes_detected, c.spikes)
            } else {
                "-".into()
            };
            writeln!(
                f,
                "{:<14} {:>5} {:>9} {:>6} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>10} {:>7}",
                c.class,
                c.scenarios,
                detected,
                c.true_predictions,
                c.wrong_predictions,
                opt(c.median_lead_s, 0),
                opt(c.min_lead_s, 0),
                opt(c.median_runup_s, 0),
                opt(c.median_abs_eta_error_s, 0),
                c.anomalies,
                opt((c.hours > 0.0).then(|| c.anomalies as f64 / c.hours), 2),
                spikes,
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "precision        {} ({} true of {} predictions)",
            opt(self.precision, 3),
            self.true_predictions,
            self.predictions
        )?;
        writeln!(
            f,
            "recall           {} ({} of {} breaching series predicted before the breach)",
            opt(self.recall, 3),
            self.detected,
            self.breaching
        )?;
        writeln!(
            f,
            "steady FP rate   {} ({} of {} steady series had a prediction)",
            opt(self.steady_fp_rate, 3),
            self.steady_with_prediction,
            self.steady
        )?;
        writeln!(
            f,
            "median lead      {} s on ramps <= 1%/s ({} of them >= 60 s); {} s over all detected",
            opt(self.median_lead_slow_ramps_s, 0),
            opt(self.slow_ramps_lead_60_share.map(|x| x * 100.0), 0) + "%",
            opt(self.median_lead_s, 0)
        )?;
        writeln!(
            f,
            "anomalies        {}/{} self-recovering spikes flagged; {} of {} anomalies during labelled behaviour; \
             {} false anomalies per hour of normal behaviour ({} per steady hour)",
            self.spikes_detected,
            self.spikes,
            self.anomalies_true,
            self.anomalies,
            opt(self.false_anomalies_per_normal_hour, 3),
            opt(self.steady_anomalies_per_hour, 3)
        )?;
        let c = &self.cost;
        writeln!(
            f,
            "cost             observe {:.1} us/sample; forecast {:.1} us per series evaluation ({:.1} fits); \
             k-means {:.1} ms per training ({:.0} rows); plan+install {:.1} us per job",
            c.observe_us(),
            c.evaluation_us(),
            if c.evaluations > 0 {
                c.fits as f64 / c.evaluations as f64
            } else {
                0.0
            },
            c.training_us() / 1000.0,
            if c.trainings > 0 {
                c.training_rows as f64 / c.trainings as f64
            } else {
                0.0
            },
            Cost::per(c.bookkeeping, c.jobs),
        )?;
        for (name, met) in self.targets() {
            writeln!(
                f,
                "target           {name}: {}",
                if met { "met" } else { "NOT met" }
            )?;
        }
        Ok(())
    }
}

/// The cost of one fleet size, measured by [`scale`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePoint {
    pub apps: usize,
    pub hosts: usize,
    /// (host, app) pairs and the series with forecasting among them.
    pub units: usize,
    pub series: usize,
    /// `observe` time per (host, app) sample, microseconds.
    pub observe_us_per_unit: f64,
    /// Per forecast cycle (every `forecast.every`), milliseconds: `plan`
    /// (copying windows out, under the lock), the forecast half of
    /// `TrainingJob::run` (no lock) and `install` (under the lock).
    pub plan_ms: f64,
    pub forecast_ms: f64,
    pub install_ms: f64,
    /// Forecast time per series evaluation, microseconds.
    pub forecast_us_per_series: f64,
    pub cycles: usize,
    /// k-means training per app, milliseconds, and its rows.
    pub training_ms_per_app: f64,
    pub training_rows_per_app: f64,
    pub history_bytes: usize,
    pub reservoir_bytes: usize,
}

/// Measures the predictor's cost for `apps × hosts` (host, app) pairs of
/// steady load: `warmup_s` seconds of samples (fills the 1 s rings and the
/// training reservoirs), one training of every app's anomaly model, then
/// `measure_s` seconds of samples with the training schedule after each.
pub fn scale(apps: usize, hosts: usize, warmup_s: u32, measure_s: u32, cfg: &Config) -> ScalePoint {
    const DISTINCT: usize = 64;
    let thr = Thresholds::default();
    let len = warmup_s + measure_s + 128;
    let dur = crate::generator::Durations {
        steady_s: len,
        cycle_s: len,
        spike_s: len,
    };
    let scenarios: Vec<Scenario> = (0..DISTINCT.min(apps * hosts).max(1))
        .map(|i| crate::generator::generate(Class::Steady, 7_000 + i as u64, thr, dur))
        .collect();
    let app_names: Vec<String> = (0..apps).map(|a| format!("FINCORP-APP-SCALE{a}")).collect();
    let host_names: Vec<String> = (0..hosts).map(|h| format!("host{h:05}")).collect();
    let sample = |h: usize, second: u32, now: UnixMs| -> HostSample {
        let mut hs = host_sample(&scenarios[0], 0, "", now);
        hs.apps = (0..apps)
            .map(|a| {
                let unit = h * apps + a;
                let sc = &scenarios[unit % scenarios.len()];
                let offset = (unit / scenarios.len()) % 128;
                let mut one = host_sample(sc, second as usize + offset, &app_names[a], now);
                one.apps.remove(0)
            })
            .collect();
        hs
    };
    let mut p = Predictor::new(cfg.clone());
    let mut observe = Duration::ZERO;
    let mut observed = 0u64;
    let mut second = 0u32;
    while second < warmup_s {
        let now = START_MS + i64::from(second) * 1000;
        for (h, name) in host_names.iter().enumerate() {
            let hs = sample(h, second, now);
            p.observe(name, &hs, now);
        }
        second += 1;
    }
    let mut training = Duration::ZERO;
    let mut trainings = 0usize;
    let mut training_rows = 0usize;
    let (mut plan, mut forecast, mut install) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut cycles = 0usize;
    let mut evaluations = 0usize;
    let mut run_schedule = |p: &mut Predictor, now: UnixMs, measured: bool| {
        let t = Instant::now();
        let Some(job) = p.plan(now) else { return };
        let planned = t.elapsed();
        let trained = job.run();
        let tm = trained.timing;
        let t = Instant::now();
        p.install(trained, now);
        let installed = t.elapsed();
        trainings += tm.apps;
        training_rows += tm.training_rows;
        training += tm.anomaly;
        if measured && tm.series > 0 {
            cycles += 1;
            evaluations += tm.series;
            plan += planned;
            forecast += tm.forecast;
            install += installed;
        }
    };
    // Train every app once (the warm-up filled the reservoirs).
    run_schedule(&mut p, START_MS + i64::from(second) * 1000, false);
    let end = warmup_s + measure_s;
    while second < end {
        let now = START_MS + i64::from(second) * 1000;
        for (h, name) in host_names.iter().enumerate() {
            let hs = sample(h, second, now);
            let t = Instant::now();
            p.observe(name, &hs, now);
            observe += t.elapsed();
            observed += hs.apps.len() as u64;
        }
        run_schedule(&mut p, now, true);
        second += 1;
    }
    let stats = p.stats();
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / cycles.max(1) as f64;
    ScalePoint {
        apps,
        hosts,
        units: stats.units,
        series: stats.series,
        observe_us_per_unit: Cost::per(observe, observed),
        plan_ms: ms(plan),
        forecast_ms: ms(forecast),
        install_ms: ms(install),
        forecast_us_per_series: Cost::per(forecast, evaluations as u64),
        cycles,
        training_ms_per_app: training.as_secs_f64() * 1e3 / trainings.max(1) as f64,
        training_rows_per_app: training_rows as f64 / trainings.max(1) as f64,
        history_bytes: stats.history_bytes,
        reservoir_bytes: stats.reservoir_bytes,
    }
}

impl ScalePoint {
    /// The table header for [`ScalePoint::row`].
    pub fn header() -> String {
        format!(
            "{:>5} {:>6} {:>7} {:>8} {:>10} {:>9} {:>11} {:>10} {:>12} {:>11} {:>9} {:>10} {:>10}",
            "apps",
            "hosts",
            "units",
            "series",
            "observe/u",
            "plan ms",
            "forecast ms",
            "install ms",
            "us/series",
            "train ms/app",
            "rows/app",
            "history",
            "reservoir"
        )
    }

    pub fn row(&self) -> String {
        format!(
            "{:>5} {:>6} {:>7} {:>8} {:>8.2}us {:>9.2} {:>11.2} {:>10.2} {:>12.2} {:>11.1} {:>9.0} {:>8.1}MB {:>8.1}MB",
            self.apps,
            self.hosts,
            self.units,
            self.series,
            self.observe_us_per_unit,
            self.plan_ms,
            self.forecast_ms,
            self.install_ms,
            self.forecast_us_per_series,
            self.training_ms_per_app,
            self.training_rows_per_app,
            self.history_bytes as f64 / 1e6,
            self.reservoir_bytes as f64 / 1e6,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{self, Durations, Label};
    use crate::signal::{AnomalyExplanation, ForecastExplanation};
    use fincorp_api::wire::Severity;

    fn ramp_scenario() -> Scenario {
        Scenario {
            class: Class::Ramp { slope: 0.5 },
            seed: 1,
            cpu: vec![10.0; 300],
            rss_mb: vec![100.0; 300],
            latency_ms: vec![5.0; 300],
            label: Label {
                metric: Metric::Cpu,
                threshold: 80.0,
                onset_s: Some(100),
                breach_s: Some(200),
                spikes: Vec::new(),
                other_breach: false,
            },
        }
    }

    fn forecast(
        metric: Metric,
        start_s: u32,
        at_s: u32,
        breach_s: u32,
        status: AlertStatus,
    ) -> (u32, Signal) {
        let ms = |s: u32| START_MS + i64::from(s) * 1000;
        let signal = Signal {
            kind: SignalKind::Predicted,
            status,
            host: HOST.into(),
            app: APP.into(),
            metric,
            starts_at_ms: ms(start_s),
            at_ms: ms(at_s),
            severity: Severity::Warning,
            cleared: (status == AlertStatus::Resolved).then_some(ClearReason::Breached),
            explanation: Explanation::Forecast(ForecastExplanation {
                window_ms: 60_000,
                points: 60,
                slope_per_s: 0.5,
                level: 50.0,
                r2: 0.9,
                t_stat: 10.0,
                rho: 0.1,
                noise_sd: 1.0,
                noise_t: 10.0,
                curvature_t: None,
                threshold: 80.0,
                horizon_ms: 300_000,
                evaluated_at_ms: ms(at_s),
                predicted_breach_at_ms: ms(breach_s),
                lead_ms: i64::from(breach_s - at_s) * 1000,
                score: 2.0,
            }),
        };
        (at_s, signal)
    }

    fn anomaly(at_s: u32) -> (u32, Signal) {
        let ms = START_MS + i64::from(at_s) * 1000;
        let signal = Signal {
            kind: SignalKind::Anomaly,
            status: AlertStatus::Firing,
            host: HOST.into(),
            app: APP.into(),
            metric: Metric::Cpu,
            starts_at_ms: ms,
            at_ms: ms,
            severity: Severity::Info,
            cleared: None,
            explanation: Explanation::Anomaly(AnomalyExplanation {
                score: 3.0,
                score_threshold: 1.5,
                max_score: 3.0,
                features: Vec::new(),
                dominant: "dev_cpu".into(),
                centroid: 0,
                clusters: 4,
                trained_at_ms: 0,
                training_rows: 500,
            }),
        };
        (at_s, signal)
    }

    #[test]
    fn score_classifies_each_prediction_against_the_label() {
        let s = ramp_scenario();
        let replay = Replay {
            signals: vec![
                forecast(Metric::Cpu, 50, 50, 300, AlertStatus::Firing),
                forecast(Metric::Cpu, 50, 60, 300, AlertStatus::Resolved),
                anomaly(90),
                forecast(Metric::Cpu, 120, 120, 210, AlertStatus::Firing),
                // A refresh of the same episode does not count again.
                forecast(Metric::Cpu, 120, 150, 205, AlertStatus::Firing),
                anomaly(130),
                forecast(Metric::LatencyMs, 150, 150, 400, AlertStatus::Firing),
                forecast(Metric::Cpu, 120, 200, 205, AlertStatus::Resolved),
                forecast(Metric::Cpu, 260, 260, 280, AlertStatus::Firing),
            ],
            cost: Cost::default(),
        };
        let o = score(&s, &replay);
        let verdicts: Vec<(Metric, u32, Verdict)> = o
            .predictions
            .iter()
            .map(|p| (p.metric, p.raised_s, p.verdict))
            .collect();
        assert_eq!(
            verdicts,
            [
                (Metric::Cpu, 50, Verdict::Early),
                (Metric::Cpu, 120, Verdict::True),
                (Metric::LatencyMs, 150, Verdict::False),
                (Metric::Cpu, 260, Verdict::Late),
            ]
        );
        assert_eq!(o.predictions[1].cleared, Some(ClearReason::Breached));
        assert_eq!(
            (o.lead_s, o.runup_s, o.eta_error_s),
            (Some(80.0), Some(100.0), Some(10.0))
        );
        assert_eq!(
            o.anomalies
                .iter()
                .map(|a| a.during_behaviour)
                .collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(o.normal_s, 100);

        let r = Report::from_outcomes(&[o]);
        assert_eq!(
            (r.predictions, r.true_predictions, r.precision),
            (4, 1, Some(0.25))
        );
        assert_eq!((r.breaching, r.detected, r.recall), (1, 1, Some(1.0)));
        assert_eq!((r.steady, r.steady_fp_rate), (0, None));
        assert_eq!(r.median_lead_slow_ramps_s, Some(80.0));
        assert_eq!((r.anomalies, r.anomalies_true), (2, 1));
        assert_eq!(r.false_anomalies_per_normal_hour, Some(36.0));
        assert_eq!(
            r.targets(),
            [
                ("median lead >= 60 s on ramps of 1%/s or slower", true),
                (
                    "median lead >= 60 s at each ramp slope <= 1%/s separately",
                    true
                ),
                ("precision >= 0.9", false),
                ("false positives <= 5% of steady series", false),
            ]
        );
    }

    #[test]
    fn spikes_count_as_detected_by_an_anomaly_during_them_or_just_after() {
        let mut s = ramp_scenario();
        s.class = Class::Spike;
        s.label.breach_s = None;
        s.label.spikes = vec![(100, 130), (200, 230), (250, 260)];
        let replay = Replay {
            signals: vec![
                anomaly(20),
                anomaly(105),
                anomaly(110),
                anomaly(235),
                forecast(Metric::Cpu, 120, 120, 200, AlertStatus::Firing),
            ],
            cost: Cost::default(),
        };
        let o = score(&s, &replay);
        assert_eq!((o.spikes, o.spikes_detected), (3, 2));
        assert_eq!(o.normal_s, 300 - 40 - 40 - 20);
        assert_eq!(o.count(Verdict::False), 1);
        assert_eq!(median(&[3.0, 1.0, 2.0, f64::NAN]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    /// The suite in small, through the real predictor (in a debug build, so
    /// one scenario of the classes that matter most and no anomaly model;
    /// the bench runs the whole suite).
    #[test]
    fn a_small_suite_through_the_real_predictor_predicts_ramps_and_leaks_and_stays_quiet_on_steady_load()
     {
        let thr = Thresholds::default();
        let dur = Durations {
            steady_s: 900,
            cycle_s: 900,
            spike_s: 900,
        };
        let mut cfg = config_for(thr);
        cfg.anomaly.enabled = false;
        let suite: Vec<Scenario> = [
            Class::Ramp { slope: 0.25 },
            Class::Ramp { slope: 1.0 },
            Class::Steady,
            Class::Cycle,
            Class::Spike,
            Class::Leak,
        ]
        .into_iter()
        .map(|c| generator::generate(c, 11, thr, dur))
        .collect();
        let outcomes: Vec<Outcome> = suite.iter().map(|s| run(s, &cfg)).collect();
        let r = Report::from_outcomes(&outcomes);
        let text = r.to_string();
        assert_eq!((r.breaching, r.detected, r.steady), (3, 3, 1), "{text}");
        assert_eq!(r.predictions, r.true_predictions, "{text}");
        let lead = |c: Class| {
            outcomes
                .iter()
                .find(|o| o.class == c)
                .and_then(|o| o.lead_s)
        };
        assert!(
            lead(Class::Ramp { slope: 0.25 }).is_some_and(|l| l >= 60.0),
            "{text}"
        );
        assert!(
            lead(Class::Ramp { slope: 1.0 }).is_some_and(|l| l >= 10.0),
            "{text}"
        );
        assert!(lead(Class::Leak).is_some_and(|l| l >= 300.0), "{text}");
        // Costs were measured, not assumed.
        assert!(
            r.cost.samples > 3_000 && r.cost.evaluations > 1_000 && r.cost.observe > Duration::ZERO,
            "{text}"
        );
        assert!(
            text.contains("precision")
                && text.contains("steady FP rate")
                && text.contains("median lead")
        );
    }

    #[test]
    fn scale_measures_a_small_fleet() {
        let p = scale(1, 3, 320, 5, &config_for(Thresholds::default()));
        assert_eq!((p.units, p.series), (3, 9), "{p:?}");
        assert_eq!(p.cycles, 2, "forecast every 2 s: {p:?}");
        assert!(
            p.forecast_us_per_series > 0.0 && p.observe_us_per_unit > 0.0,
            "{p:?}"
        );
        assert!(
            p.training_rows_per_app >= 300.0 && p.training_ms_per_app > 0.0,
            "{p:?}"
        );
        assert!(p.history_bytes > 9 * 2_640, "{p:?}");
        assert_eq!(p.row().split_whitespace().count(), 13, "{}", p.row());
    }
}
