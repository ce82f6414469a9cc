//! What the predictor tells the correlator, and how it becomes an alert.
//!
//! A [`Signal`] is one transition of a predicted breach or an anomaly:
//! firing (raised, or refreshed with a new estimate) or resolved (with a
//! [`ClearReason`]). [`Signal::to_alert`] gives the fields of the
//! correlator's `core::Alert` with source `predict`:
//!
//! | kind | name | severity | metric | value | threshold |
//! |---|---|---|---|---|---|
//! | predicted | `predicted_<metric>_breach` | warning | the metric | level now (fitted) | the breach threshold |
//! | anomaly | `anomaly_<metric>` | info | the metric that contributes most | anomaly score | score threshold |
//!
//! The explanation goes into the summary (one sentence) and the labels
//! (`window_s`, `slope_per_s`, `r2`, `t_stat`, `predicted_breach_at`,
//! `lead_s`, `score`, ...), so the incident timeline shows what the
//! prediction was based on. Event ids are deterministic, so a replay of the
//! same stream produces the same ids and the correlator's dedup holds.

use std::collections::BTreeMap;

use fincorp_api::wire::{AlertStatus, Severity};
use serde::Serialize;

use crate::{Metric, UnixMs};

/// Which model spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    Predicted,
    Anomaly,
}

/// Why a signal resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClearReason {
    /// The predicted breach happened: a sample crossed the threshold.
    Breached,
    /// The trend no longer predicts a breach within the horizon.
    NoLongerHolds,
    /// The behaviour is back within the model's normal.
    Normal,
    /// No samples for `history.stale_after`.
    Stale,
    /// Switched off by configuration.
    Disabled,
}

impl ClearReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ClearReason::Breached => "breached",
            ClearReason::NoLongerHolds => "no_longer_holds",
            ClearReason::Normal => "normal",
            ClearReason::Stale => "stale",
            ClearReason::Disabled => "disabled",
        }
    }
}

/// The inputs and outputs of a forecast, for the incident timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastExplanation {
    /// The sliding window whose fit was used.
    pub window_ms: i64,
    pub points: u32,
    pub slope_per_s: f64,
    /// The fitted value at `evaluated_at_ms`.
    pub level: f64,
    pub r2: f64,
    /// The slope's t-statistic, corrected for autocorrelation.
    pub t_stat: f64,
    /// Lag-1 autocorrelation of the residuals.
    pub rho: f64,
    /// The standard deviation of the series' normal variability, from its
    /// history before the windows.
    pub noise_sd: f64,
    /// The slope's t-statistic against that normal variability (AR(1) plus
    /// white noise): how unlikely the trend is as mere wander.
    pub noise_t: f64,
    /// t-statistic of the time² term, when the curvature check ran.
    pub curvature_t: Option<f64>,
    pub threshold: f64,
    pub horizon_ms: i64,
    pub evaluated_at_ms: UnixMs,
    pub predicted_breach_at_ms: UnixMs,
    /// `predicted_breach_at_ms - evaluated_at_ms`.
    pub lead_ms: i64,
    /// `horizon / time to breach`: above 1 inside the horizon, higher is
    /// more urgent.
    pub score: f64,
}

/// The inputs and outputs of an anomaly score, for the incident timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyExplanation {
    /// Distance to the nearest centroid over the training percentile.
    pub score: f64,
    pub score_threshold: f64,
    /// The highest score of the episode so far.
    pub max_score: f64,
    /// Feature name (`cpu`, `d_cpu`, ...) and raw value.
    pub features: Vec<(String, f64)>,
    /// The feature contributing most to the distance.
    pub dominant: String,
    pub centroid: usize,
    pub clusters: usize,
    pub trained_at_ms: UnixMs,
    pub training_rows: usize,
}

/// The explanation carried by a signal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum Explanation {
    Forecast(ForecastExplanation),
    Anomaly(AnomalyExplanation),
}

/// One transition of a prediction or an anomaly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub kind: SignalKind,
    pub status: AlertStatus,
    pub host: String,
    pub app: String,
    pub metric: Metric,
    /// When the episode was raised (the alert's `starts_at_ms`).
    pub starts_at_ms: UnixMs,
    pub at_ms: UnixMs,
    pub severity: Severity,
    /// For a resolved signal, why.
    pub cleared: Option<ClearReason>,
    /// The latest explanation (for a resolved signal, the last one raised).
    pub explanation: Explanation,
}

/// The fields of the correlator's `core::Alert`, field for field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertParts {
    pub event_id: String,
    /// Always `predict`.
    pub source: String,
    pub fingerprint: String,
    pub status: AlertStatus,
    pub name: String,
    pub host: String,
    pub app: Option<String>,
    pub severity: Severity,
    pub metric: String,
    pub value: f64,
    pub threshold: f64,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
    pub starts_at_ms: UnixMs,
    pub at_ms: UnixMs,
}

/// A number for humans: at most 4 decimals below 1, 2 below 100, none
/// above, without trailing zeros.
fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let a = x.abs();
    let s = if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

impl Signal {
    /// `predicted_cpu_breach` or `anomaly_cpu`.
    pub fn alert_name(&self) -> String {
        match self.kind {
            SignalKind::Predicted => format!("predicted_{}_breach", self.metric),
            SignalKind::Anomaly => format!("anomaly_{}", self.metric),
        }
    }

    /// Stable per (kind, host, app, metric): every transition of one episode
    /// and of later episodes of the same series shares it.
    pub fn fingerprint(&self) -> String {
        let kind = match self.kind {
            SignalKind::Predicted => "predicted",
            SignalKind::Anomaly => "anomaly",
        };
        format!("predict:{kind}:{}:{}:{}", self.host, self.app, self.metric)
    }

    /// Unique per transition and deterministic.
    pub fn event_id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.fingerprint(),
            self.starts_at_ms,
            self.at_ms,
            self.status.as_str()
        )
    }

    /// One sentence for the timeline.
    pub fn summary(&self) -> String {
        let what = format!("{} of {} on {}", self.metric, self.app, self.host);
        let body = match &self.explanation {
            Explanation::Forecast(x) => format!(
                "{what} is predicted to cross {} in {:.0} s (at {}): {} {}/s over the last {} s ({} points), level {}, R² {}, t {}",
                num(x.threshold),
                x.lead_ms as f64 / 1000.0,
                fincorp_api::format_ms(x.predicted_breach_at_ms),
                if x.slope_per_s >= 0.0 {
                    "rising"
                } else {
                    "falling"
                },
                num(x.slope_per_s.abs()),
                x.window_ms / 1000,
                x.points,
                num(x.level),
                num(x.r2),
                num(x.t_stat),
            ),
            Explanation::Anomaly(x) => format!(
                "{what} behaves unlike its recent normal, below its alert thresholds: anomaly score {} (threshold {}), mostly {}",
                num(x.score),
                num(x.score_threshold),
                x.dominant,
            ),
        };
        match (self.status, self.cleared) {
            (AlertStatus::Firing, _) => body,
            (AlertStatus::Resolved, reason) => format!(
                "resolved ({}): {body}",
                reason.map(ClearReason::as_str).unwrap_or("resolved")
            ),
        }
    }

    /// The explanation as alert labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        let kind = match self.kind {
            SignalKind::Predicted => "predicted",
            SignalKind::Anomaly => "anomaly",
        };
        l.insert("predict_kind".into(), kind.into());
        if let Some(r) = self.cleared {
            l.insert("cleared".into(), r.as_str().into());
        }
        match &self.explanation {
            Explanation::Forecast(x) => {
                l.insert("model".into(), "linfa-linear ols".into());
                l.insert("window_s".into(), (x.window_ms / 1000).to_string());
                l.insert("points".into(), x.points.to_string());
                l.insert("slope_per_s".into(), num(x.slope_per_s));
                l.insert("level".into(), num(x.level));
                l.insert("r2".into(), num(x.r2));
                l.insert("t_stat".into(), num(x.t_stat));
                l.insert("rho".into(), num(x.rho));
                l.insert("noise_sd".into(), num(x.noise_sd));
                l.insert("noise_t".into(), num(x.noise_t));
                if let Some(c) = x.curvature_t {
                    l.insert("curvature_t".into(), num(c));
                }
                l.insert("threshold".into(), num(x.threshold));
                l.insert("horizon_s".into(), (x.horizon_ms / 1000).to_string());
                l.insert(
                    "evaluated_at".into(),
                    fincorp_api::format_ms(x.evaluated_at_ms),
                );
                l.insert(
                    "predicted_breach_at".into(),
                    fincorp_api::format_ms(x.predicted_breach_at_ms),
                );
                l.insert("lead_s".into(), format!("{:.0}", x.lead_ms as f64 / 1000.0));
                l.insert("score".into(), num(x.score));
            }
            Explanation::Anomaly(x) => {
                l.insert("model".into(), "linfa-clustering kmeans".into());
                l.insert("score".into(), num(x.score));
                l.insert("score_threshold".into(), num(x.score_threshold));
                l.insert("max_score".into(), num(x.max_score));
                let features: Vec<String> = x
                    .features
                    .iter()
                    .map(|(k, v)| format!("{k}={}", num(*v)))
                    .collect();
                l.insert("features".into(), features.join(","));
                l.insert("dominant".into(), x.dominant.clone());
                l.insert("centroid".into(), format!("{}/{}", x.centroid, x.clusters));
                l.insert("trained_at".into(), fincorp_api::format_ms(x.trained_at_ms));
                l.insert("training_rows".into(), x.training_rows.to_string());
            }
        }
        l
    }

    /// The alert to feed the correlation core.
    pub fn to_alert(&self) -> AlertParts {
        let (value, threshold) = match &self.explanation {
            Explanation::Forecast(x) => (x.level, x.threshold),
            Explanation::Anomaly(x) => (x.score, x.score_threshold),
        };
        AlertParts {
            event_id: self.event_id(),
            source: "predict".into(),
            fingerprint: self.fingerprint(),
            status: self.status,
            name: self.alert_name(),
            host: self.host.clone(),
            app: Some(self.app.clone()),
            severity: self.severity,
            metric: self.metric.name().into(),
            value,
            threshold,
            summary: self.summary(),
            labels: self.labels(),
            starts_at_ms: self.starts_at_ms,
            at_ms: self.at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forecast() -> Signal {
        Signal {
            kind: SignalKind::Predicted,
            status: AlertStatus::Firing,
            host: "web01".into(),
            app: "FINCORP-APP-TRANSPROC".into(),
            metric: Metric::Cpu,
            starts_at_ms: 1_700_000_000_000,
            at_ms: 1_700_000_000_000,
            severity: Severity::Warning,
            cleared: None,
            explanation: Explanation::Forecast(ForecastExplanation {
                window_ms: 60_000,
                points: 58,
                slope_per_s: 0.4231,
                level: 55.5,
                r2: 0.93,
                t_stat: 14.2,
                rho: 0.2,
                noise_sd: 2.0,
                noise_t: 12.7,
                curvature_t: Some(0.4),
                threshold: 80.0,
                horizon_ms: 300_000,
                evaluated_at_ms: 1_700_000_000_000,
                predicted_breach_at_ms: 1_700_000_058_000,
                lead_ms: 58_000,
                score: 5.17,
            }),
        }
    }

    #[test]
    fn a_prediction_becomes_an_explained_alert() {
        let a = forecast().to_alert();
        assert_eq!(a.name, "predicted_cpu_breach");
        assert_eq!(a.source, "predict");
        assert_eq!(
            a.fingerprint,
            "predict:predicted:web01:FINCORP-APP-TRANSPROC:cpu"
        );
        assert_eq!(
            a.event_id,
            "predict:predicted:web01:FINCORP-APP-TRANSPROC:cpu:1700000000000:1700000000000:firing"
        );
        assert_eq!(
            (a.severity, a.value, a.threshold),
            (Severity::Warning, 55.5, 80.0)
        );
        assert_eq!(
            a.summary,
            "cpu of FINCORP-APP-TRANSPROC on web01 is predicted to cross 80 in 58 s (at 2023-11-14T22:14:18.000Z): \
             rising 0.4231/s over the last 60 s (58 points), level 55.5, R² 0.93, t 14.2"
        );
        for (k, v) in [
            ("window_s", "60"),
            ("slope_per_s", "0.4231"),
            ("r2", "0.93"),
            ("t_stat", "14.2"),
            ("lead_s", "58"),
            ("score", "5.17"),
            ("predicted_breach_at", "2023-11-14T22:14:18.000Z"),
        ] {
            assert_eq!(a.labels.get(k).map(String::as_str), Some(v), "{k}");
        }
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(
            [80.0, 0.93, 55.5, 14.2, 0.000_123_4, 1234.6, -0.5, f64::NAN].map(num),
            [
                "80", "0.93", "55.5", "14.2", "0.0001", "1235", "-0.5", "n/a"
            ]
        );
    }

    #[test]
    fn a_resolved_signal_says_why_and_keeps_the_fingerprint() {
        let mut s = forecast();
        let firing = s.to_alert();
        s.status = AlertStatus::Resolved;
        s.cleared = Some(ClearReason::Breached);
        s.at_ms += 30_000;
        let a = s.to_alert();
        assert_eq!(a.fingerprint, firing.fingerprint);
        assert_ne!(a.event_id, firing.event_id);
        assert!(
            a.summary.starts_with("resolved (breached): cpu of"),
            "{}",
            a.summary
        );
        assert_eq!(a.labels["cleared"], "breached");
    }

    #[test]
    fn an_anomaly_carries_its_score_and_features() {
        let s = Signal {
            kind: SignalKind::Anomaly,
            status: AlertStatus::Firing,
            host: "h".into(),
            app: "A".into(),
            metric: Metric::LatencyMs,
            starts_at_ms: 5,
            at_ms: 5,
            severity: Severity::Info,
            cleared: None,
            explanation: Explanation::Anomaly(AnomalyExplanation {
                score: 3.5,
                score_threshold: 1.5,
                max_score: 3.5,
                features: vec![("cpu".into(), 40.0), ("latency_ms".into(), 180.0)],
                dominant: "latency_ms".into(),
                centroid: 2,
                clusters: 8,
                trained_at_ms: 0,
                training_rows: 4096,
            }),
        };
        let a = s.to_alert();
        assert_eq!(
            (a.name.as_str(), a.metric.as_str()),
            ("anomaly_latency_ms", "latency_ms")
        );
        assert_eq!(
            (a.value, a.threshold, a.severity),
            (3.5, 1.5, Severity::Info)
        );
        assert_eq!(a.labels["features"], "cpu=40,latency_ms=180");
        assert!(
            a.summary
                .contains("anomaly score 3.5 (threshold 1.5), mostly latency_ms"),
            "{}",
            a.summary
        );
    }
}
