//! Prediction settings: defaults for every knob, per-metric and per-app
//! overrides, and the on/off switches.
//!
//! The structs deserialise with `deny_unknown_fields` and every field
//! defaulted, so the correlator can embed a `predict:` section in its YAML
//! and write only what differs. [`Config::validate`] reports every problem at
//! once with its key path (e.g. `forecast.windows[1]`), which the correlator's
//! YAML locator maps to file:line:col.
//!
//! Thresholds are "higher is worse" and mirror the agent's rules: the default
//! `cpu` threshold 80 is the agent's `when: cpu > 80`. A metric without a
//! threshold gets no forecast (there is nothing to breach) but still feeds
//! the anomaly model.

use std::collections::BTreeMap;

use fincorp_api::config::Duration;
use fincorp_api::wire::Severity;
use serde::{Deserialize, Serialize};

use crate::Metric;

/// Everything the [`crate::Predictor`] can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The master switch: off means `observe` only counts samples.
    pub enabled: bool,
    pub history: HistoryConfig,
    pub forecast: ForecastConfig,
    pub anomaly: AnomalyConfig,
    /// Per-metric settings over the built-in defaults (see [`MetricSettings::default_for`]).
    pub metrics: BTreeMap<Metric, MetricOverride>,
    /// Per-app settings over the per-metric ones, by app name.
    pub apps: BTreeMap<String, AppConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            history: HistoryConfig::default(),
            forecast: ForecastConfig::default(),
            anomaly: AnomalyConfig::default(),
            metrics: BTreeMap::new(),
            apps: BTreeMap::new(),
        }
    }
}

/// How much history each series keeps.
///
/// Memory per series is about `4 * (raw_retention / 1s + coarse_retention /
/// coarse_resolution)` bytes plus ~100 bytes of bookkeeping: 2.7 KB with the
/// defaults (300 + 360 `f32` values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// How long 1 s samples are kept; bounds the forecast `windows`.
    pub raw_retention: Duration,
    /// Bucket width of the downsampled ring (bucket means).
    pub coarse_resolution: Duration,
    /// How long downsampled buckets are kept; bounds `coarse_windows`.
    pub coarse_retention: Duration,
    /// A (host, app) with no sample for this long is forgotten (its open
    /// signals resolve with reason `stale`).
    pub stale_after: Duration,
    /// Samples stamped further than this from `now` (either way) are dropped.
    pub max_clock_skew: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            raw_retention: Duration::from_secs(300),
            coarse_resolution: Duration::from_secs(10),
            coarse_retention: Duration::from_secs(3600),
            stale_after: Duration::from_secs(600),
            max_clock_skew: Duration::from_secs(300),
        }
    }
}

/// Trend forecasting (linfa-linear) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    pub enabled: bool,
    /// How often each series' trend is refitted (the training schedule).
    pub every: Duration,
    /// Sliding windows fitted on the 1 s ring; the best passing fit wins.
    pub windows: Vec<Duration>,
    /// Longer windows fitted on the downsampled ring (slow leaks).
    pub coarse_windows: Vec<Duration>,
    /// Windows longer than this many horizons are not fitted for a series:
    /// a 5 min horizon needs no 30 min trend (and on a 30 min window the
    /// rising half of a cycle looks like one), a 30 min memory horizon does.
    pub max_window_per_horizon: f64,
    /// A window predicts no further ahead than this many times its own
    /// length: a breach 5 min out is not read off 30 s of data (a wander or
    /// the rising half of a cycle looks straight for a while), but off the
    /// longer windows that also see it.
    pub max_extrapolation: f64,
    /// Fewest points a window must hold...
    pub min_points: u32,
    /// ...and the least fraction of the samples it should hold at the
    /// series' sampling cadence (an agent outage leaves it short).
    pub min_coverage: f64,
    /// Least R² of the linear fit.
    pub min_r2: f64,
    /// Least t-statistic of the slope, after inflating its standard error
    /// for the residuals' lag-1 autocorrelation.
    pub min_t: f64,
    /// A time² term whose t-statistic is below `-curvature_t` (a curve
    /// levelling off) vetoes the prediction if the curve never reaches the
    /// threshold within the horizon.
    pub curvature_t: f64,
    /// Least t-statistic of the slope against the series' own normal
    /// variability: AR(1) plus white noise estimated from its 1 s history
    /// before `reference_gap` (so a ramp that just started does not inflate
    /// it) and from its downsampled history before the window (slow wander,
    /// cycles). Load that wanders produces short-window slopes that look
    /// significant against the window's own residuals; this compares them
    /// with what the series normally does.
    pub min_noise_t: f64,
    /// The most recent stretch left out of the reference.
    pub reference_gap: Duration,
    /// Fewest samples (before `reference_gap`) the reference needs (fewer
    /// for a series sampled less often than every second: 70% of what the
    /// stretch holds at its cadence, at least 10); a series with less
    /// history raises no prediction yet. With the defaults a new series can
    /// predict after 3 minutes (an end-to-end test can set e.g. `30s` and
    /// `20`).
    pub min_reference_points: u32,
    /// Consecutive passing fits before a prediction is raised (debounce).
    pub confirm: u32,
    /// Consecutive fits that no longer hold (with relaxed gates) before a
    /// raised prediction clears (hysteresis).
    pub clear_after: u32,
    /// After a prediction clears, no new one for this series for this long.
    pub cooldown: Duration,
    /// While raised, a refreshed signal (new ETA) at most this often.
    pub refresh_every: Duration,
    pub severity: Severity,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            every: Duration::from_secs(2),
            windows: vec![
                Duration::from_secs(30),
                Duration::from_secs(60),
                Duration::from_secs(120),
                Duration::from_secs(300),
            ],
            coarse_windows: vec![Duration::from_secs(900), Duration::from_secs(1800)],
            max_window_per_horizon: 2.0,
            max_extrapolation: 2.0,
            min_points: 20,
            min_coverage: 0.7,
            min_r2: 0.6,
            min_t: 5.0,
            curvature_t: 3.0,
            min_noise_t: 5.0,
            reference_gap: Duration::from_secs(120),
            min_reference_points: 60,
            confirm: 2,
            clear_after: 3,
            cooldown: Duration::from_secs(60),
            refresh_every: Duration::from_secs(30),
            severity: Severity::Warning,
        }
    }
}

/// Anomaly detection (linfa-clustering k-means) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    pub enabled: bool,
    /// How often each app's model is retrained.
    pub every: Duration,
    /// The per-app training sample covers about this much recent time.
    pub train_window: Duration,
    /// The metrics whose level, deviation from the host's own moving average
    /// and per-second difference are the features (at most 4).
    pub metrics: Vec<Metric>,
    /// Time constant of each host's moving average (the `dev_` features).
    pub baseline_window: Duration,
    /// k of k-means (fewer when there are few rows).
    pub clusters: usize,
    /// Rows kept per app for training (bounds memory and training time).
    pub max_train_rows: usize,
    /// No model (so no anomaly) before an app has this many rows.
    pub min_train_rows: usize,
    /// The training distances' percentile that scores 1.0.
    pub percentile: f64,
    /// A sample is anomalous when its score exceeds this...
    pub score_threshold: f64,
    /// ...and an anomaly is raised after this many anomalous samples in a row.
    pub consecutive: u32,
    /// It clears after this many samples in a row at or below the threshold.
    pub clear_after: u32,
    /// Rows of a raised anomaly are kept out of training for this long; after
    /// that the model learns them (a lasting shift becomes the new normal).
    pub learn_after: Duration,
    /// Seed of k-means++ initialisation (training is deterministic).
    pub seed: u64,
    pub severity: Severity,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            every: Duration::from_secs(300),
            train_window: Duration::from_secs(1800),
            metrics: vec![Metric::Cpu, Metric::RssMb, Metric::LatencyMs],
            baseline_window: Duration::from_secs(600),
            clusters: 8,
            max_train_rows: 4096,
            min_train_rows: 300,
            percentile: 0.99,
            score_threshold: 1.5,
            consecutive: 5,
            clear_after: 10,
            learn_after: Duration::from_secs(900),
            seed: 42,
            severity: Severity::Info,
        }
    }
}

/// Overrides for one metric; absent fields keep the level below's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<bool>,
    /// The alert threshold (upper): `cpu` 80 means the agent's `cpu > 80`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Raise a prediction when the breach is expected within this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<Duration>,
}

/// Overrides for one app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// `false` switches forecasting and anomaly detection off for the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<Metric, MetricOverride>,
}

/// The resolved settings of one (app, metric).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSettings {
    /// Forecasting runs for this series: every switch is on and there is a
    /// threshold.
    pub forecast: bool,
    pub threshold: Option<f64>,
    pub horizon_ms: i64,
}

impl MetricSettings {
    /// Built-in defaults: `cpu` forecast at 80 within 5 min; `rss_mb` and
    /// `latency_ms` forecast once given a threshold (30 min and 5 min
    /// horizons); `host_cpu` off.
    pub fn default_for(metric: Metric) -> Self {
        let (forecast, threshold, horizon_s) = match metric {
            Metric::Cpu => (true, Some(80.0), 300),
            Metric::HostCpu => (false, None, 300),
            Metric::RssMb => (true, None, 1800),
            Metric::LatencyMs => (true, None, 300),
        };
        Self {
            forecast,
            threshold,
            horizon_ms: horizon_s * 1000,
        }
    }

    fn apply(&mut self, o: &MetricOverride) {
        if let Some(f) = o.forecast {
            self.forecast = f;
        }
        if let Some(t) = o.threshold {
            self.threshold = Some(t);
        }
        if let Some(h) = o.horizon {
            self.horizon_ms = h.as_millis_i64();
        }
    }
}

/// One problem found by [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key_path}: {message}")]
pub struct ConfigProblem {
    /// Relative to the predict section, e.g. `forecast.windows[1]`.
    pub key_path: String,
    pub message: String,
}

impl Config {
    /// Whether anything runs for `app` at all.
    pub fn app_enabled(&self, app: &str) -> bool {
        self.enabled && self.apps.get(app).and_then(|a| a.enabled).unwrap_or(true)
    }

    /// The resolved settings of `metric` for `app`: built-in default, then
    /// `metrics`, then `apps.<app>.metrics`.
    pub fn metric(&self, app: &str, metric: Metric) -> MetricSettings {
        let mut s = MetricSettings::default_for(metric);
        if let Some(o) = self.metrics.get(&metric) {
            s.apply(o);
        }
        let app_cfg = self.apps.get(app);
        if let Some(o) = app_cfg.and_then(|a| a.metrics.get(&metric)) {
            s.apply(o);
        }
        s.forecast =
            s.forecast && s.threshold.is_some() && self.forecast.enabled && self.app_enabled(app);
        s
    }

    /// Whether `app` gets an anomaly model.
    pub fn anomaly_enabled(&self, app: &str) -> bool {
        self.anomaly.enabled
            && self.app_enabled(app)
            && self.apps.get(app).and_then(|a| a.anomaly).unwrap_or(true)
    }

    /// Checks everything serde cannot, reporting every problem at once.
    pub fn validate(&self) -> Result<(), Vec<ConfigProblem>> {
        let mut p = Vec::new();
        let mut bad = |key: String, message: &str| {
            p.push(ConfigProblem {
                key_path: key,
                message: message.to_owned(),
            })
        };
        let h = &self.history;
        let raw_ms = h.raw_retention.as_millis_i64();
        let coarse_res = h.coarse_resolution.as_millis_i64();
        let coarse_ms = h.coarse_retention.as_millis_i64();
        if !(10_000..=3_600_000).contains(&raw_ms) {
            bad("history.raw_retention".into(), "must be between 10s and 1h");
        }
        if !(2_000..=3_600_000).contains(&coarse_res) || coarse_res % 1000 != 0 {
            bad(
                "history.coarse_resolution".into(),
                "must be whole seconds between 2s and 1h",
            );
        }
        if coarse_res > 0 && (coarse_ms < coarse_res || coarse_ms / coarse_res.max(1) > 100_000) {
            bad(
                "history.coarse_retention".into(),
                "must hold at least one and at most 100000 buckets",
            );
        }
        if h.stale_after.as_millis_i64() < 1_000 {
            bad("history.stale_after".into(), "must be at least 1s");
        }

        let f = &self.forecast;
        if f.every.as_millis_i64() < 100 {
            bad("forecast.every".into(), "must be at least 100ms");
        }
        for (i, w) in f.windows.iter().enumerate() {
            let ms = w.as_millis_i64();
            if ms < 3_000 || ms > raw_ms {
                bad(
                    format!("forecast.windows[{i}]"),
                    "must be at least 3s and at most history.raw_retention",
                );
            }
        }
        for (i, w) in f.coarse_windows.iter().enumerate() {
            let ms = w.as_millis_i64();
            if ms < 3 * coarse_res || ms > coarse_ms {
                bad(
                    format!("forecast.coarse_windows[{i}]"),
                    "must span at least 3 buckets and at most history.coarse_retention",
                );
            }
        }
        if f.windows.is_empty() && f.coarse_windows.is_empty() && f.enabled {
            bad("forecast.windows".into(), "at least one window is needed");
        }
        if !(f.max_window_per_horizon.is_finite() && f.max_window_per_horizon > 0.0) {
            bad(
                "forecast.max_window_per_horizon".into(),
                "must be a positive number",
            );
        }
        if !(f.max_extrapolation.is_finite() && f.max_extrapolation > 0.0) {
            bad(
                "forecast.max_extrapolation".into(),
                "must be a positive number",
            );
        }
        if f.min_points < 3 {
            bad("forecast.min_points".into(), "must be at least 3");
        }
        if !(0.0..=1.0).contains(&f.min_coverage) {
            bad("forecast.min_coverage".into(), "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&f.min_r2) {
            bad("forecast.min_r2".into(), "must be between 0 and 1");
        }
        if !(f.min_t.is_finite() && f.min_t > 0.0) {
            bad("forecast.min_t".into(), "must be a positive number");
        }
        if !(f.curvature_t.is_finite() && f.curvature_t > 0.0) {
            bad("forecast.curvature_t".into(), "must be a positive number");
        }
        if !(f.min_noise_t.is_finite() && f.min_noise_t >= 0.0) {
            bad("forecast.min_noise_t".into(), "must be a number at least 0");
        }
        if f.reference_gap.as_millis_i64() >= raw_ms {
            bad(
                "forecast.reference_gap".into(),
                "must be shorter than history.raw_retention",
            );
        }
        if f.min_reference_points < 3 {
            bad("forecast.min_reference_points".into(), "must be at least 3");
        }
        if i64::from(f.min_reference_points) * 1000 > raw_ms - f.reference_gap.as_millis_i64() {
            bad(
                "forecast.min_reference_points".into(),
                "must fit in history.raw_retention minus forecast.reference_gap",
            );
        }
        if f.confirm == 0 {
            bad("forecast.confirm".into(), "must be at least 1");
        }
        if f.clear_after == 0 {
            bad("forecast.clear_after".into(), "must be at least 1");
        }

        let a = &self.anomaly;
        if a.every.as_millis_i64() < 1_000 {
            bad("anomaly.every".into(), "must be at least 1s");
        }
        if a.train_window.as_millis_i64() < 10_000 {
            bad("anomaly.train_window".into(), "must be at least 10s");
        }
        if a.metrics.is_empty() && a.enabled {
            bad("anomaly.metrics".into(), "at least one metric is needed");
        }
        if a.metrics.len() > 4 {
            bad("anomaly.metrics".into(), "at most 4 metrics");
        }
        if a.baseline_window.as_millis_i64() < 1_000 {
            bad("anomaly.baseline_window".into(), "must be at least 1s");
        }
        for (i, m) in a.metrics.iter().enumerate() {
            if a.metrics[..i].contains(m) {
                bad(format!("anomaly.metrics[{i}]"), "listed twice");
            }
        }
        if !(1..=64).contains(&a.clusters) {
            bad("anomaly.clusters".into(), "must be between 1 and 64");
        }
        if !(16..=1_000_000).contains(&a.max_train_rows) {
            bad(
                "anomaly.max_train_rows".into(),
                "must be between 16 and 1000000",
            );
        }
        if a.min_train_rows < a.clusters.max(2) || a.min_train_rows > a.max_train_rows {
            bad(
                "anomaly.min_train_rows".into(),
                "must be at least clusters and at most max_train_rows",
            );
        }
        if !(a.percentile > 0.5 && a.percentile < 1.0) {
            bad(
                "anomaly.percentile".into(),
                "must be between 0.5 and 1 (exclusive)",
            );
        }
        if !(a.score_threshold.is_finite() && a.score_threshold > 0.0) {
            bad(
                "anomaly.score_threshold".into(),
                "must be a positive number",
            );
        }
        if a.consecutive == 0 {
            bad("anomaly.consecutive".into(), "must be at least 1");
        }
        if a.clear_after == 0 {
            bad("anomaly.clear_after".into(), "must be at least 1");
        }

        let mut check_metric = |path: String, o: &MetricOverride| {
            if let Some(t) = o.threshold
                && !t.is_finite()
            {
                bad(format!("{path}.threshold"), "must be a finite number");
            }
            if let Some(hz) = o.horizon
                && hz.as_millis_i64() < 1_000
            {
                bad(format!("{path}.horizon"), "must be at least 1s");
            }
        };
        for (m, o) in &self.metrics {
            check_metric(format!("metrics.{m}"), o);
        }
        for (app, c) in &self.apps {
            for (m, o) in &c.metrics {
                check_metric(format!("apps.{app}.metrics.{m}"), o);
            }
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, fincorp_api::yaml::Diagnostics> {
        fincorp_api::yaml::Document::from_text(std::path::Path::new("predict.yaml"), yaml).parse()
    }

    #[test]
    fn defaults_validate_and_resolve() {
        let c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        let cpu = c.metric("FINCORP-APP-TRANSPROC", Metric::Cpu);
        assert_eq!(
            (cpu.forecast, cpu.threshold, cpu.horizon_ms),
            (true, Some(80.0), 300_000)
        );
        // No threshold, no forecast.
        assert!(!c.metric("X", Metric::RssMb).forecast);
        assert!(!c.metric("X", Metric::HostCpu).forecast);
        assert!(c.anomaly_enabled("X"));
    }

    #[test]
    fn app_overrides_metric_overrides_default_and_switches_turn_things_off() {
        let yaml = r#"
metrics:
  rss_mb: { threshold: 4096 }
apps:
  FINCORP-APP-CORE:
    metrics:
      rss_mb: { threshold: 6144, horizon: 45m }
      cpu: { forecast: false }
  FINCORP-APP-HFT:
    anomaly: false
  FINCORP-APP-CRM:
    enabled: false
"#;
        let c = parse(yaml).unwrap();
        assert_eq!(c.validate(), Ok(()));
        let core = c.metric("FINCORP-APP-CORE", Metric::RssMb);
        assert_eq!(
            (core.forecast, core.threshold, core.horizon_ms),
            (true, Some(6144.0), 2_700_000)
        );
        assert_eq!(c.metric("other", Metric::RssMb).threshold, Some(4096.0));
        assert!(!c.metric("FINCORP-APP-CORE", Metric::Cpu).forecast);
        assert!(!c.anomaly_enabled("FINCORP-APP-HFT"));
        assert!(c.metric("FINCORP-APP-HFT", Metric::Cpu).forecast);
        assert!(!c.metric("FINCORP-APP-CRM", Metric::Cpu).forecast);
        assert!(!c.anomaly_enabled("FINCORP-APP-CRM"));

        let off = parse("enabled: false").unwrap();
        assert!(!off.metric("A", Metric::Cpu).forecast && !off.anomaly_enabled("A"));
        let no_forecast = parse("forecast: { enabled: false }").unwrap();
        assert!(!no_forecast.metric("A", Metric::Cpu).forecast && no_forecast.anomaly_enabled("A"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(parse("forecast: { windowz: [] }").is_err());
        assert!(parse("metrics: { mem: { threshold: 1 } }").is_err());
    }

    #[test]
    fn validate_reports_every_problem_with_its_path() {
        let yaml = r#"
forecast:
  windows: [1s, 10m]
  min_r2: 1.5
anomaly:
  percentile: 1.0
  metrics: [cpu, cpu]
apps:
  A:
    metrics:
      cpu: { horizon: 0s }
"#;
        let c = parse(yaml).unwrap();
        let paths: Vec<String> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|p| p.key_path)
            .collect();
        assert_eq!(
            paths,
            [
                "forecast.windows[0]",
                "forecast.windows[1]",
                "forecast.min_r2",
                "anomaly.metrics[1]",
                "anomaly.percentile",
                "apps.A.metrics.cpu.horizon",
            ]
        );
    }
}
