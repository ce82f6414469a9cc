//! Predictive analytics for the correlator: forecast a threshold breach
//! before it happens and flag anomalous-but-below-threshold behaviour.
//!
//! This crate is pure: no IO, no clock of its own, no threads. Every call
//! takes the time it should act at, and the same inputs give the same
//! outputs, so a recorded stream replays exactly (see [`eval`]).
//!
//! # How the correlator uses it
//!
//! ```text
//!  ingest (under the predictor's lock; per sample, ~1-2 µs)   schedule (every second, off the ingest path)
//!  ───────────────────────────────────────────────────────    ─────────────────────────────────────────────────
//!  Predictor::observe(host, &HostSample, now)                  let job = predictor.plan(now)?;  // lock: copy windows
//!    ├─ history: push into per-series rings                    let out = job.run();             // NO lock: linfa fits
//!    ├─ anomaly: score vs the app's k-means model               //   (spawn_blocking; or job.split(n) + Trained::merge)
//!    └─ forecast: "the predicted breach happened"              let sig = predictor.install(out, now); // lock
//!  -> Vec<Signal>                                              -> Vec<Signal>
//! ```
//!
//! What the correlator must do:
//!
//! 1. **Config.** Embed [`Config`] as a `predict:` section of
//!    `correlator.yaml` (`#[serde(default)]`; every field has a default,
//!    unknown keys are errors). Call [`Config::validate`]; each
//!    [`ConfigProblem`]'s `key_path` is relative to the section (prefix it
//!    with `predict.` for the YAML locator). On reload, call
//!    [`Predictor::set_config`] and feed the signals it returns.
//! 2. **Ingest.** For every [`HostSample`](fincorp_api::wire::HostSample) of
//!    every accepted agent batch, call [`Predictor::observe`] with the
//!    batch's host and the receive time. Samples stamped more than
//!    `history.max_clock_skew` away from `now` are dropped (a spool resent
//!    after a long outage does not rewrite history). Forecasts need the
//!    agent's samples at its sampling cadence (every second by default), not
//!    only one per heartbeat: windows, coverage and the noise model adapt to
//!    a slower cadence, but one sample per 10 s heartbeat leaves only the
//!    5 min window.
//! 3. **Schedule.** Once a second: [`Predictor::plan`] (returns `None` when
//!    nothing is due: forecasts every `forecast.every`, k-means per app every
//!    `anomaly.every`), [`TrainingJob::run`] on a blocking thread, then
//!    [`Predictor::install`]. [`Predictor::retrain`] does all three inline.
//! 4. **Alerts.** Convert every [`Signal`] with [`Signal::to_alert`] into the
//!    fields of the correlation core's alert (source `predict`, names
//!    `predicted_<metric>_breach` at `warning` and `anomaly_<metric>` at
//!    `info`, deterministic event ids, a fingerprint per kind, host, app and
//!    metric) and ingest it like any other alert: it correlates into
//!    incidents and triggers playbooks by name (e.g. a TRANSPROC proactive
//!    reallocation on `predicted_cpu_breach`). The explanation (window,
//!    slope, R², t-statistics, noise level, predicted breach time, lead,
//!    anomaly score and features) is in the alert's labels and one-sentence
//!    summary, for the incident timeline.
//! 5. **Metrics.** [`Predictor::stats`] has the counters and sizes for
//!    `/metrics`; [`Trained::timing`] the time of each training job.
//!
//! ```
//! use fincorp_api::wire::{AppSample, HostSample};
//! use fincorp_predict::{Config, Predictor};
//!
//! let mut predictor = Predictor::new(Config::default());
//! let t0 = 1_700_000_000_000;
//! let mut alerts = Vec::new();
//! for s in 0..600 {
//!     let now = t0 + s * 1000;
//!     // Idle for 5 min, then CPU climbs 0.25 points a second toward 80.
//!     let cpu = if s < 300 { 20.0 } else { 20.0 + 0.25 * (s - 300) as f64 };
//!     let sample = HostSample {
//!         at_ms: now,
//!         cpu_pct: cpu / 4.0,
//!         mem_used_bytes: 1 << 30,
//!         mem_total_bytes: 4 << 30,
//!         apps: vec![AppSample {
//!             app: "FINCORP-APP-TRANSPROC".into(),
//!             processes: 1,
//!             cpu_pct: cpu + (s % 3) as f64,
//!             rss_bytes: 512 << 20,
//!             probe: None,
//!             host_cpu_pct: None,
//!             throttling: None,
//!         }],
//!         cpu_per_core_pct: Vec::new(),
//!         mem_available_bytes: None,
//!         swap_used_bytes: None,
//!         swap_total_bytes: None,
//!         load: None,
//!     };
//!     let mut signals = predictor.observe("web01", &sample, now);
//!     if let Some(job) = predictor.plan(now) {
//!         let trained = job.run(); // in the correlator: on a blocking thread
//!         signals.extend(predictor.install(trained, now));
//!     }
//!     alerts.extend(signals.iter().map(|signal| (s, signal.to_alert())));
//! }
//! let (at, first) = &alerts[0];
//! assert_eq!(first.name, "predicted_cpu_breach");
//! // CPU first exceeds 80 at second 540; the prediction came a minute or more before.
//! assert!(*at <= 480, "{at}");
//! assert!(first.labels.contains_key("predicted_breach_at"));
//! ```
//!
//! # The models
//!
//! - [`history`]: a compact per-(host, app, metric) history: a 1 s ring for
//!   the last minutes and a downsampled ring (10 s means) for the last hour,
//!   both configurable; `f32` values with implicit timestamps, about 2.7 KB
//!   per series with the defaults.
//! - [`forecast`]: per series, linfa-linear least squares of value on time
//!   over several sliding windows, gated on fit quality (R²), the slope's
//!   significance against the window's residuals and against the series'
//!   own normal variability (an AR(1)-plus-white-noise model estimated from
//!   its history before the window: the lag structure of the series), how
//!   far ahead the window extrapolates, and a time² fit that vetoes curves
//!   levelling off below the threshold. It predicts the time until the
//!   threshold is crossed and raises `predicted_<metric>_breach` when that is
//!   within the horizon, with debounce, hysteresis and a cooldown.
//! - [`anomaly`]: per app, linfa-clustering k-means over standardised
//!   feature vectors (CPU, RSS, latency, their deviation from the host's own
//!   moving average and their per-second differences), trained from a
//!   bounded per-app sample of recent normal rows. The score is the distance
//!   to the nearest centroid over the training distances' high percentile;
//!   `anomaly_<metric>` is raised after several consecutive samples over the
//!   score threshold while no metric is over its alert threshold.
//! - [`generator`] and [`eval`]: seeded, labelled series (ramps, steady load,
//!   daily-like cycles, self-recovering spikes, memory leaks) and their replay
//!   through the real [`Predictor`]. The benchmark prints the figures:
//!   `cargo bench -p fincorp-predict --bench predict` (see
//!   `benches/predict.rs` for its options).
#![forbid(unsafe_code)]

pub mod anomaly;
pub mod config;
pub mod eval;
pub mod forecast;
pub mod generator;
pub mod history;
pub mod predictor;
pub mod signal;

use std::fmt;

use fincorp_api::wire::AppSample;
use serde::{Deserialize, Serialize};

pub use config::{Config, ConfigProblem};
pub use predictor::{Predictor, Stats, Trained, TrainingJob};
pub use signal::{
    AlertParts, AnomalyExplanation, ClearReason, Explanation, ForecastExplanation, Signal,
    SignalKind,
};

/// Milliseconds since the Unix epoch (the wire's timestamp unit).
pub use fincorp_api::UnixMs;

/// A per-app metric the predictor keeps history of. The names are the
/// agent's rule metric names, so a threshold means the same thing in the
/// agent's `when: cpu > 80` and here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// CPU of the app's processes, % of one core (can exceed 100).
    Cpu,
    /// CPU of the app's processes, % of all the host's cores.
    HostCpu,
    /// Resident memory of the app's processes, MiB.
    RssMb,
    /// The latency probe's latency, ms; absent while the probe fails.
    LatencyMs,
}

impl Metric {
    /// Every metric, in index order.
    pub const ALL: [Metric; 4] = [
        Metric::Cpu,
        Metric::HostCpu,
        Metric::RssMb,
        Metric::LatencyMs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::HostCpu => "host_cpu",
            Metric::RssMb => "rss_mb",
            Metric::LatencyMs => "latency_ms",
        }
    }

    /// Position in [`Metric::ALL`].
    pub fn index(self) -> usize {
        match self {
            Metric::Cpu => 0,
            Metric::HostCpu => 1,
            Metric::RssMb => 2,
            Metric::LatencyMs => 3,
        }
    }

    /// The metric's value in one app sample, as the agent's rules compute
    /// it; `None` when absent (no probe, failing probe) or not finite.
    pub fn of_app(self, app: &AppSample) -> Option<f64> {
        const MIB: f64 = 1024.0 * 1024.0;
        let value = match self {
            Metric::Cpu => app.cpu_pct,
            Metric::HostCpu => app.host_cpu_pct?,
            Metric::RssMb => app.rss_bytes as f64 / MIB,
            Metric::LatencyMs => app.probe.as_ref().filter(|p| p.ok)?.latency_ms?,
        };
        value.is_finite().then_some(value)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!("unknown metric {s:?} (expected cpu, host_cpu, rss_mb or latency_ms)")
            })
    }
}

/// Which series: one metric of one app on one host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SeriesKey {
    pub host: String,
    pub app: String,
    pub metric: Metric,
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.host, self.app, self.metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fincorp_api::wire::ProbeSample;

    fn app(latency: Option<f64>, ok: bool) -> AppSample {
        AppSample {
            app: "A".into(),
            processes: 1,
            cpu_pct: 150.0,
            rss_bytes: 512 * 1024 * 1024,
            probe: Some(ProbeSample {
                ok,
                latency_ms: latency,
                status: None,
                error: None,
            }),
            host_cpu_pct: Some(f64::NAN),
            throttling: None,
        }
    }

    #[test]
    fn metrics_read_app_samples_like_the_agent() {
        let a = app(Some(12.5), true);
        assert_eq!(Metric::Cpu.of_app(&a), Some(150.0));
        assert_eq!(Metric::RssMb.of_app(&a), Some(512.0));
        assert_eq!(Metric::LatencyMs.of_app(&a), Some(12.5));
        // Not finite is absent, and so is a failing probe's latency.
        assert_eq!(Metric::HostCpu.of_app(&a), None);
        assert_eq!(Metric::LatencyMs.of_app(&app(Some(3.0), false)), None);
    }

    #[test]
    fn metric_names_round_trip_and_index_matches_all() {
        for (i, m) in Metric::ALL.into_iter().enumerate() {
            assert_eq!(m.index(), i);
            assert_eq!(m.name().parse::<Metric>(), Ok(m));
        }
        assert!("mem".parse::<Metric>().is_err());
    }
}
